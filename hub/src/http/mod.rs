//! The hub's plain-HTTP side door (`--http-listen`): `/metrics` for Prometheus,
//! `/healthz`, and `/webhooks/{github,gitlab,gitea}` for push events. It carries no fleet
//! data beyond aggregate metrics and accepts only signed webhook deliveries; put it behind
//! your ingress's TLS like any webhook endpoint.

mod webhook;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::fleet::Fleet;

/// Webhook payloads larger than this are refused (GitHub caps deliveries at 25 MB; pushes
/// with many commits are far below 1 MiB in practice).
const MAX_BODY: usize = 1024 * 1024;

pub async fn serve(
    fleet: Arc<Fleet>,
    listen: SocketAddr,
    webhook_secret: Option<String>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(%listen, "HTTP listener for /metrics, /healthz and webhooks");
    let secret = Arc::new(webhook_secret);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (fleet, secret) = (fleet.clone(), secret.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (fleet, secret) = (fleet.clone(), secret.clone());
                async move { Ok::<_, Infallible>(route(req, &fleet, secret.as_deref()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn route(
    req: Request<Incoming>,
    fleet: &Fleet,
    secret: Option<&str>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            fleet.scrape_metrics(),
        ),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::POST, path) if path.starts_with("/webhooks/") => {
            let provider = path.trim_start_matches("/webhooks/").to_string();
            let headers = req.headers().clone();
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    fleet.metrics.webhooks_rejected.inc();
                    return reply(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "text/plain",
                        "payload too large\n",
                    );
                }
            };
            let (status, text) = webhook::handle(fleet, secret, &provider, &headers, &body);
            if status.is_success() {
                fleet.metrics.webhooks_accepted.inc();
            } else {
                fleet.metrics.webhooks_rejected.inc();
            }
            reply(status, "application/json", text)
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}
