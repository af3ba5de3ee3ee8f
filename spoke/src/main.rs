//! `flotilla-spoke`: parses arguments and hands over to `flotilla_spoke::cli::run`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = flotilla_spoke::cli::Args::parse();
    flotilla_spoke::cli::init_tracing(&args);
    flotilla_spoke::cli::run(args).await
}
