//! A small plain-HTTP/1.1 listener that hands each request, body read up to a limit, to
//! a caller-supplied router, under limits that hold against hostile clients:
//!
//! - at most [`Admission::cap`] open connections; a newcomer over the cap evicts the
//!   oldest, so parked sockets cannot lock out a scraper or a webhook;
//! - a request head must arrive whole within `header_timeout` (hyper's
//!   `header_read_timeout`); the same timer runs while a kept-alive connection waits for
//!   its next request, so it is also the idle timeout;
//! - a request body must arrive whole within `body_timeout`, or the request is answered
//!   408 and the connection closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::admission::{Admission, Guarded};

/// A request as routers see it: head plus the whole body (or `None` when it was over
/// the limit).
pub struct HttpRequest {
    pub method: hyper::Method,
    pub path: String,
    /// The query string, without `?` (empty when there is none).
    pub query: String,
    pub headers: hyper::HeaderMap,
    pub body: Option<Bytes>,
}

pub type HttpResponse = Response<Full<Bytes>>;

/// A response with a status, a content type and a body.
pub fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The content type of what prometheus-client encodes (OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Deadlines and sizes for one HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body read; a larger one reaches the router as `body: None`.
    pub max_body: usize,
    /// Time for a whole request head to arrive, and for an idle kept-alive connection to
    /// start its next request.
    pub header_timeout: Duration,
    /// Time for a whole request body to arrive once its head is read.
    pub body_timeout: Duration,
}

/// Open connections held by default (scrapers and webhook senders need a handful).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

impl HttpLimits {
    /// Defaults that suit a scrape and webhook endpoint: 10 s for a head, 30 s for a body.
    pub fn with_max_body(max_body: usize) -> HttpLimits {
        HttpLimits {
            max_body,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves HTTP/1.1 on `listen` with default limits until the task is dropped; `route`
/// answers each request.
pub async fn serve_http<F, Fut>(
    listen: SocketAddr,
    max_body: usize,
    route: F,
) -> std::io::Result<()>
where
    F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    let listener = TcpListener::bind(listen).await?;
    serve_http_with(
        listener,
        HttpLimits::with_max_body(max_body),
        Admission::new(DEFAULT_MAX_CONNECTIONS),
        route,
    )
    .await
}

/// Serves HTTP/1.1 on `listener` under `limits`, holding connections in `admission`,
/// until the task is dropped.
pub async fn serve_http_with<F, Fut>(
    listener: TcpListener,
    limits: HttpLimits,
    admission: Admission,
    route: F,
) -> std::io::Result<()>
where
    F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    tracing::info!(listen = %listener.local_addr()?, max_connections = admission.cap(), "HTTP listener");
    let route = Arc::new(route);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Usually EMFILE; back off briefly instead of spinning.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let io = Guarded::new(tcp).evictable(admission.admit());
        let route = route.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let route = route.clone();
                async move { Ok::<_, Infallible>(answer(req, limits, route.as_ref()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }
}

async fn answer<F, Fut>(
    req: Request<hyper::body::Incoming>,
    limits: HttpLimits,
    route: &F,
) -> HttpResponse
where
    F: Fn(HttpRequest) -> Fut,
    Fut: Future<Output = HttpResponse>,
{
    let (parts, body) = req.into_parts();
    let collect = Limited::new(body, limits.max_body).collect();
    let body = match tokio::time::timeout(limits.body_timeout, collect).await {
        Ok(collected) => collected.ok().map(|b| b.to_bytes()),
        Err(_) => {
            let mut r = reply(
                StatusCode::REQUEST_TIMEOUT,
                "text/plain",
                "request body not received in time\n",
            );
            // The rest of the body may still be trickling in: drop the connection.
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    route(HttpRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const SHORT: Duration = Duration::from_millis(200);
    /// Only a guard against a hung test: every case ends long before it.
    const HANG_GUARD: Duration = Duration::from_secs(20);

    async fn start(cap: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let limits = HttpLimits {
            max_body: 1024,
            header_timeout: SHORT,
            body_timeout: SHORT,
        };
        tokio::spawn(serve_http_with(
            listener,
            limits,
            Admission::new(cap),
            |req: HttpRequest| async move {
                let n = req.body.map_or(0, |b| b.len());
                reply(StatusCode::OK, "text/plain", format!("got {n} bytes\n"))
            },
        ));
        addr
    }

    /// Everything the server sends until it closes the connection.
    async fn until_closed(tcp: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let read = tokio::time::timeout(HANG_GUARD, async {
            let mut buf = [0u8; 1024];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server never closed the connection");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_client_that_stalls_halfway_through_its_headers_is_cut_off() {
        let addr = start(8).await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("write");
        let got = until_closed(&mut tcp).await;
        assert!(!got.contains("200 OK"), "no request was served: {got}");
    }

    #[tokio::test]
    async fn a_connection_that_never_sends_a_request_is_cut_off() {
        let addr = start(8).await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let got = until_closed(&mut tcp).await;
        assert!(!got.contains("200 OK"), "{got}");
    }

    #[tokio::test]
    async fn a_kept_alive_connection_that_goes_idle_is_cut_off_after_its_answer() {
        let addr = start(8).await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let got = until_closed(&mut tcp).await;
        assert!(
            got.contains("200 OK") && got.contains("got 0 bytes"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn a_body_that_trickles_is_answered_408_and_the_connection_closed() {
        let addr = start(8).await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut rd, mut wr) = tcp.into_split();
        wr.write_all(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            .await
            .expect("write head");
        // The attacker: one byte at a time, far slower than the body deadline allows,
        // until the server hangs up.
        let trickle = tokio::spawn(async move {
            while wr.write_all(b"a").await.is_ok() {
                tokio::time::sleep(SHORT / 8).await;
            }
        });
        let mut out = Vec::new();
        let read = tokio::time::timeout(HANG_GUARD, rd.read_to_end(&mut out)).await;
        trickle.abort();
        assert!(read.is_ok(), "the server never closed the connection");
        let got = String::from_utf8_lossy(&out);
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    }

    #[tokio::test]
    async fn connections_over_the_cap_push_out_the_oldest_and_the_newest_is_served() {
        let addr = start(4).await;
        // Far longer deadlines would not matter: eviction, not a deadline, closes these.
        let mut parked = Vec::new();
        for _ in 0..4 {
            parked.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let mut fresh = TcpStream::connect(addr).await.expect("connect");
        fresh
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let got = until_closed(&mut fresh).await;
        assert!(got.contains("200 OK"), "the newcomer is served: {got}");
        let oldest = until_closed(&mut parked[0]).await;
        assert!(oldest.is_empty(), "{oldest}");
    }
}
