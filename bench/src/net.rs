//! One TLS connection per simulated spoke, with every byte the hub sends counted at the
//! TCP layer (TLS records, HTTP/2 frames, gRPC framing: all of it), and an optional
//! source address in 127.0.0.0/8 so many connections need not share one address's ports.
//!
//! **Invariant:** every channel made here owns its own TCP connection; nothing is shared
//! between simulated spokes.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result};
use flotilla_identity::{Credentials, HUB_SERVER_NAME};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A TCP stream that adds every byte it reads to a shared counter.
pub struct CountingStream {
    inner: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        res
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    // Forwarded, so a write of several TLS records is one syscall, as on a bare socket.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where and how a simulated spoke dials.
#[derive(Clone, Debug)]
pub struct Dial {
    pub hub: SocketAddr,
    /// Further hub replicas: after a failed or ended session the simulated spoke moves
    /// to the next address in turn (`hub`, then these), as a real spoke moves on when
    /// its address stops answering.
    pub others: Vec<SocketAddr>,
    /// Source address to bind, e.g. 127.0.0.7; `None` lets the kernel choose.
    pub source: Option<IpAddr>,
}

impl Dial {
    /// The same dial, starting at the address after the current one.
    pub fn rotated(&self) -> Dial {
        let mut all = Vec::with_capacity(self.others.len() + 1);
        all.extend(self.others.iter().copied());
        all.push(self.hub);
        Dial {
            hub: all[0],
            others: all[1..].to_vec(),
            source: self.source,
        }
    }
}

/// A TCP connection to the dial's hub, from its source address, counting what it reads.
async fn tcp(dial: &Dial, received: Arc<AtomicU64>) -> io::Result<CountingStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = dial.source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(dial.hub).await?;
    stream.set_nodelay(true)?;
    Ok(CountingStream {
        inner: stream,
        read: received,
    })
}

/// Opens a new tonic channel to the hub as `creds` (mTLS when it holds a client
/// certificate), counting received bytes into `received`. For the unary calls
/// (registration); the Sync stream goes over [`connect`].
pub async fn channel(
    dial: &Dial,
    creds: &Credentials,
    received: Arc<AtomicU64>,
) -> Result<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&creds.ca_pem))
        .domain_name(HUB_SERVER_NAME);
    if let (Some(cert), Some(key)) = (&creds.cert_pem, &creds.key_pem) {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let hub = dial.hub;
    let dial = dial.clone();
    let connector = tower::service_fn(move |_uri| {
        let (dial, received) = (dial.clone(), received.clone());
        async move { tcp(&dial, received).await.map(TokioIo::new) }
    });
    Endpoint::from_shared(format!("https://{hub}"))
        .context("hub address")?
        .tls_config(tls)
        .context("TLS config")?
        .connect_timeout(Duration::from_secs(20))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect_with_connector(connector)
        .await
        .map_err(|e| anyhow::anyhow!(flotilla_identity::channel::error_chain(&e)))
        .with_context(|| format!("connecting to {hub}"))
}

/// Opens a new mTLS connection to the hub as `creds` (which must hold a client
/// certificate), offering HTTP/2 as tonic does, counting received bytes into `received`.
pub async fn connect(
    dial: &Dial,
    creds: &Credentials,
    received: Arc<AtomicU64>,
) -> Result<TlsStream<CountingStream>> {
    let (Some(cert_pem), Some(key_pem)) = (&creds.cert_pem, &creds.key_pem) else {
        anyhow::bail!("no client certificate to present");
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(creds.ca_pem.as_bytes()) {
        roots.add(ca.context("hub CA")?).context("hub CA")?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("client certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("client key")?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .context("TLS config")?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .context("TLS config")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(HUB_SERVER_NAME).context("hub server name")?;
    let connecting = async {
        let tcp = tcp(dial, received).await?;
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    };
    tokio::time::timeout(Duration::from_secs(20), connecting)
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("connecting to {}", dial.hub))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Sync stream is mutual TLS only: without a certificate it is refused here,
    /// before anything is dialled (nothing listens on port 9).
    #[tokio::test]
    async fn a_sync_connection_without_a_client_certificate_is_refused_before_dialling() {
        let dial = Dial {
            hub: "127.0.0.1:9".parse().expect("address"),
            others: Vec::new(),
            source: None,
        };
        let anonymous = Credentials {
            ca_pem: String::new(),
            cert_pem: None,
            key_pem: None,
        };
        let Err(err) = connect(&dial, &anonymous, Arc::new(AtomicU64::new(0))).await else {
            panic!("connected without a certificate");
        };
        assert_eq!(err.to_string(), "no client certificate to present");
    }
}
