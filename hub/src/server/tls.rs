//! The hub's TLS listener, built directly on rustls so the policy is ours:
//! TLS 1.3 only, client certificates optional at the handshake (registration has none
//! yet) but always verified against the trusted CA bundle when presented, and handshakes
//! run in their own tasks so a slow or hostile client cannot stall the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS setup: {0}")]
    Config(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn cfg_err(e: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError::Config(e.to_string())
}

/// Builds the server config: serving chain + key, and every CA in `trusted_cas_pem` as a
/// root for client certificates (more than one during a CA rotation).
pub fn server_config(
    cert_chain_pem: &str,
    key_pem: &str,
    trusted_cas_pem: &str,
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(cfg_err)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(cfg_err)?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(trusted_cas_pem.as_bytes()) {
        roots.add(ca.map_err(cfg_err)?).map_err(cfg_err)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(cfg_err)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cfg_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(cfg_err)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts TCP connections on `listen`, completes TLS handshakes concurrently, and yields
/// established streams. Failed handshakes are logged and dropped.
pub async fn incoming(
    listen: SocketAddr,
    config: rustls::ServerConfig,
) -> Result<mpsc::Receiver<Result<TlsStream<TcpStream>, std::io::Error>>, TlsSetupError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| TlsSetupError::Listen {
            addr: listen,
            source,
        })?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Usually EMFILE; back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    Ok(rx)
}
