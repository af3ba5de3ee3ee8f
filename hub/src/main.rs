//! `flotilla-hub`: parses arguments and hands over to `flotilla_hub::cli::run`.

use clap::Parser;

#[tokio::main]
async fn main() {
    // gix's https client and tonic share rustls; pick the ring provider once, up front.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = flotilla_hub::cli::Args::parse();
    flotilla_hub::cli::init_tracing(&args.log);
    if let Err(e) = flotilla_hub::cli::run(args).await {
        // One line with the cause chain, never a backtrace (even with RUST_BACKTRACE set).
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
