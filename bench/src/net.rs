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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
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

/// Opens a new TLS connection to the hub as `creds` (mTLS when it holds a client
/// certificate), counting received bytes into `received`.
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
    let (hub, source) = (dial.hub, dial.source);
    let connector = tower::service_fn(move |_uri| {
        let received = received.clone();
        async move {
            let socket = TcpSocket::new_v4()?;
            if let Some(ip) = source {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            let stream = socket.connect(hub).await?;
            stream.set_nodelay(true)?;
            Ok::<_, io::Error>(TokioIo::new(CountingStream {
                inner: stream,
                read: received,
            }))
        }
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
