//! Observability plumbing shared by `flotilla-hub` and `flotilla-spoke`: log setup
//! (`--log-level`, `--log-format text|json`) and a small plain-HTTP listener that hands
//! each request, body read up to a limit, to a caller-supplied router.
//!
//! **Architecture Invariant:** nothing here knows about fleets, bundles or metrics
//! contents; callers bring their own routes and registries.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use hyper;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr with an `EnvFilter` directive; colours only on a terminal.
pub fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

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

/// Serves HTTP/1.1 on `listen` until the task is dropped; `route` answers each request.
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
    tracing::info!(%listen, "HTTP listener");
    let route = Arc::new(route);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let route = route.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let route = route.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = Limited::new(body, max_body)
                        .collect()
                        .await
                        .ok()
                        .map(|b| b.to_bytes());
                    let r = HttpRequest {
                        method: parts.method,
                        path: parts.uri.path().to_string(),
                        query: parts.uri.query().unwrap_or("").to_string(),
                        headers: parts.headers,
                        body,
                    };
                    Ok::<_, Infallible>(route(r).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
