//! `flotilla-kube-test-server`: runs the Kubernetes API TEST SERVER until Ctrl-C.
//! Not a Kubernetes API server for production.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use flotilla_kube_test_server::{Options, TestServer};

/// A Kubernetes API TEST SERVER for flotilla's tests (in memory, loopback only).
/// It is NOT a Kubernetes API server for production. kubectl and kube-rs can talk
/// to it through the kubeconfig it writes.
#[derive(Debug, Parser)]
#[command(name = "flotilla-kube-test-server", version)]
struct Config {
    /// HTTPS address to listen on (a bearer token is required there).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Plain HTTP address to listen on, unauthenticated (omit to disable).
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Where to write a kubeconfig (mode 0600) for the HTTPS endpoint.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Bearer token to require (random when omitted).
    #[arg(long, env = "FLOTILLA_KUBE_TEST_SERVER_TOKEN")]
    token: Option<String>,
    /// Watch events kept; older resourceVersions get 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 10)]
    bookmark_interval_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = Config::parse();
    let server = TestServer::start(Options {
        https_addr: cfg.listen,
        http_addr: cfg.http_listen,
        token: cfg.token,
        watch_history: cfg.watch_history,
        bookmark_interval: Duration::from_secs(cfg.bookmark_interval_secs.clamp(1, 86_400)),
        seed_namespaces: true,
    })
    .await?;
    if let Some(path) = &cfg.kubeconfig_out {
        server.write_kubeconfig(path)?;
        tracing::info!("kube test server: kubeconfig written to {}", path.display());
    }
    println!(
        "flotilla-kube-test-server (TEST SERVER) https: {}",
        server.https_url()
    );
    if let Some(u) = server.http_url() {
        println!("flotilla-kube-test-server (TEST SERVER) http: {u}");
    }
    tokio::signal::ctrl_c().await?;
    tracing::info!("kube test server: shutting down");
    server.shutdown().await;
    Ok(())
}
