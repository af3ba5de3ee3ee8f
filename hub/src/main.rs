//! `flotilla-hub`: parses arguments and hands over to `flotilla_hub::cli::run`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // gix's https client and tonic share rustls; pick the ring provider once, up front.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = flotilla_hub::cli::Args::parse();
    flotilla_hub::cli::init_tracing(&args.log);
    flotilla_hub::cli::run(args).await
}
