//! The hub's TLS listener, built directly on rustls so the policy is ours:
//! TLS 1.3 only, client certificates optional at the handshake (registration has none
//! yet) but always verified against the trusted CA bundle when presented, and handshakes
//! run in their own tasks so a slow or hostile client cannot stall the accept loop.
//! Each handshake reads the current config, so a live CA rotation (new trusted roots)
//! applies to the next connection without a restart; established ones keep theirs.
//!
//! It also owns the port's connection budgets (see `ConnectionLimits`): a connection
//! that has not presented a verified client certificate sits in a capped pool where the
//! oldest is evicted by a newcomer, and must finish its handshake, send its HTTP/2
//! preface and end within deadlines; a connection with a verified certificate moves to a
//! separate, larger budget, so nobody without a certificate can starve spokes and admins.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use flotilla_telemetry::admission::{Admission, Guarded};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use super::ConnectionLimits;
use crate::metrics::{ConnectionLabels, DroppedLabels, HubMetrics};

/// Length of the HTTP/2 client connection preface (`PRI * HTTP/2.0...`), which every
/// gRPC client sends first.
const H2_PREFACE_LEN: usize = 24;

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
    // Spokes hold one long-lived connection each and make a new one only after a
    // restart or a lost link; nobody resumes. rustls' defaults (two tickets per
    // handshake, a cache of 256 sessions that keeps each peer's certificate chain) cost
    // a write and a cache churn per handshake, 10,000 of them when a fleet reconnects.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// One gRPC connection: the TLS stream under its budget and deadlines, and who is
/// calling (read once, from the verified certificate, at the handshake).
pub struct GrpcConn {
    stream: Guarded<TlsStream<TcpStream>>,
    peer: PeerInfo,
}

/// What every request on a connection knows about its caller (a request extension):
/// the address, and the identity and serial of the verified leaf certificate. Kept
/// instead of tonic's `TlsConnectInfo`, which copies the whole certificate chain per
/// connection (memory per idle spoke, issue 18).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// `None` without a client certificate.
    pub leaf: Option<Arc<PeerLeaf>>,
}

/// The verified leaf certificate, parsed; an error says why it names nobody.
#[derive(Debug)]
pub struct PeerLeaf {
    pub identity: Result<flotilla_identity::Identity, String>,
    pub serial_hex: Result<String, String>,
}

impl PeerInfo {
    fn of(stream: &TlsStream<TcpStream>) -> PeerInfo {
        let (tcp, tls) = stream.get_ref();
        let leaf = tls.peer_certificates().and_then(|c| c.first()).map(|der| {
            Arc::new(PeerLeaf {
                identity: flotilla_identity::Identity::from_cert_der(der)
                    .map_err(|e| e.to_string()),
                serial_hex: flotilla_identity::Identity::serial_hex(der).map_err(|e| e.to_string()),
            })
        });
        PeerInfo {
            remote_addr: tcp.peer_addr().ok(),
            leaf,
        }
    }
}

impl Connected for GrpcConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, b)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Counts a connection in a gauge for as long as it lives.
struct Counted(Gauge);

impl Counted {
    fn new(gauge: Gauge) -> Counted {
        gauge.inc();
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn gauge(connections: &Family<ConnectionLabels, Gauge>, state: &'static str) -> Gauge {
    connections
        .get_or_create(&ConnectionLabels {
            listener: "grpc",
            state,
        })
        .clone()
}

/// Accepts TCP connections on `listen`, completes TLS handshakes concurrently, and yields
/// established streams within the budgets and deadlines of `limits`. Failed, slow and
/// evicted handshakes are logged and dropped. `config` gives the server config for each
/// handshake.
pub async fn incoming(
    listen: SocketAddr,
    config: impl Fn() -> Arc<rustls::ServerConfig> + Send + 'static,
    limits: ConnectionLimits,
    metrics: &HubMetrics,
) -> Result<mpsc::Receiver<Result<GrpcConn, std::io::Error>>, TlsSetupError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| TlsSetupError::Listen {
            addr: listen,
            source,
        })?;
    let connections = metrics.connections.clone();
    let dropped = metrics.connections_dropped.clone();
    let evicted = dropped
        .get_or_create(&DroppedLabels {
            listener: "grpc",
            reason: "evicted",
        })
        .clone();
    let unauthenticated = Admission::on_evict(limits.max_unauthenticated, move || {
        evicted.inc();
    });
    let authenticated = Arc::new(Semaphore::new(limits.max_authenticated));
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
            let admitted = unauthenticated.admit();
            let pending = Counted::new(gauge(&connections, "unauthenticated"));
            let (acceptor, tx) = (TlsAcceptor::from(config()), tx.clone());
            let authenticated = authenticated.clone();
            let (connections, dropped) = (connections.clone(), dropped.clone());
            tokio::spawn(async move {
                let mut admitted = admitted;
                let handshake = tokio::select! {
                    r = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)) => r,
                    () = admitted.evicted() => {
                        tracing::debug!(%peer, "evicted during the TLS handshake by newer connections");
                        return;
                    }
                };
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let has_cert = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                let peer_info = PeerInfo::of(&stream);
                let conn = if has_cert {
                    // Verified by rustls against the trusted CAs: leave the pool.
                    drop((admitted, pending));
                    let Ok(permit) = authenticated.try_acquire_owned() else {
                        tracing::warn!(%peer, max = limits.max_authenticated, "authenticated connection budget full; closing");
                        dropped
                            .get_or_create(&DroppedLabels {
                                listener: "grpc",
                                reason: "over_budget",
                            })
                            .inc();
                        return;
                    };
                    Guarded::new(stream)
                        .holding(permit)
                        .holding(Counted::new(gauge(&connections, "authenticated")))
                } else {
                    Guarded::new(stream)
                        .evictable(admitted)
                        .max_age(limits.unauthenticated_max_age)
                        .holding(pending)
                };
                let conn = conn.first_bytes(H2_PREFACE_LEN, limits.preface_timeout);
                let _ = tx
                    .send(Ok(GrpcConn {
                        stream: conn,
                        peer: peer_info,
                    }))
                    .await;
            });
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The patched rustls (`vendor/rustls`) releases a connection's record buffer when a
    /// read finds nothing; a record that arrives in pieces, with reads finding nothing
    /// between them, must survive that, and a released buffer must come back for the
    /// next record. A 7-byte pipe splits every record (handshake and data, both ways)
    /// into pieces with a pending read after each.
    #[tokio::test]
    async fn records_that_arrive_a_few_bytes_at_a_time_are_joined_across_idle_reads() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rcgen::generate_simple_self_signed(vec!["hub.test".to_string()])
            .expect("self-signed certificate");
        let cert = key.cert.der().clone();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
            )
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("trust the certificate");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();

        let (client_io, server_io) = tokio::io::duplex(7);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from("hub.test").expect("name");
        let message: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();

        let echo = tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await.expect("handshake, server");
            for _ in 0..2 {
                let mut got = vec![0u8; 40_000];
                tls.read_exact(&mut got).await.expect("read the message");
                tls.write_all(&got).await.expect("echo it");
                tls.flush().await.expect("flush");
            }
        });
        let tls = connector
            .connect(name, client_io)
            .await
            .expect("handshake, client");
        // Reading while writing: the pipe holds 7 bytes, so each side must drain the
        // other (the server also sends its session tickets).
        let (mut rd, mut wr) = tokio::io::split(tls);
        let sent = message.clone();
        let writer = tokio::spawn(async move {
            // Twice: the second message comes after the connection went idle.
            for _ in 0..2 {
                wr.write_all(&sent).await.expect("send");
                wr.flush().await.expect("flush");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            wr
        });
        for _ in 0..2 {
            let mut back = vec![0u8; message.len()];
            rd.read_exact(&mut back).await.expect("read the echo");
            assert_eq!(back, message);
        }
        let _wr = writer.await.expect("the client writer ends");
        echo.await.expect("the server side ends");
    }
}
