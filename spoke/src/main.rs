//! `flotilla-spoke`: parses arguments and hands over to `flotilla_spoke::cli::run`.

use clap::Parser;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = flotilla_spoke::cli::Args::parse();
    flotilla_spoke::cli::init_tracing(&args);
    if let Err(e) = flotilla_spoke::cli::run(args).await {
        // One line, and an exit code that says which refusal (docs/operations.md).
        eprintln!("error: {e:#}");
        std::process::exit(flotilla_spoke::cli::exit_code(&e));
    }
}
