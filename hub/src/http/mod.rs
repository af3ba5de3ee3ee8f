//! The hub's plain-HTTP side door (`--http-listen`): `/metrics` for Prometheus,
//! `/healthz`, and `/webhooks/{github,gitlab,gitea}` for push events. It carries no fleet
//! data beyond aggregate metrics and accepts only signed webhook deliveries; put it behind
//! your ingress's TLS like any webhook endpoint.

pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_telemetry::admission::Admission;
use flotilla_telemetry::hyper::{Method, StatusCode};
use flotilla_telemetry::{
    HttpLimits, HttpRequest, HttpResponse, METRICS_CONTENT_TYPE, reply, serve_http_with,
};

use crate::fleet::Fleet;
use crate::metrics::{ConnectionLabels, DroppedLabels};

/// Webhook payloads larger than this are refused (pushes with many commits are far
/// below 1 MiB in practice).
const MAX_BODY: usize = 1024 * 1024;

/// Deadlines and the connection cap of the HTTP port (`flotilla-hub run --http-*`).
#[derive(Debug, Clone, Copy)]
pub struct HttpPortLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
}

pub async fn serve(
    fleet: Arc<Fleet>,
    listen: SocketAddr,
    webhook_secret: Option<String>,
    limits: HttpPortLimits,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let evicted = fleet
        .metrics
        .connections_dropped
        .get_or_create(&DroppedLabels {
            listener: "http",
            reason: "evicted",
        })
        .clone();
    let admission = Admission::on_evict(limits.max_connections, move || {
        evicted.inc();
    });
    let http_limits = HttpLimits {
        max_body: MAX_BODY,
        header_timeout: limits.header_timeout,
        body_timeout: limits.body_timeout,
    };
    let secret = Arc::new(webhook_secret);
    let open = admission.clone();
    serve_http_with(listener, http_limits, admission, move |req| {
        let (fleet, secret, open) = (fleet.clone(), secret.clone(), open.clone());
        async move { route(req, &fleet, secret.as_deref(), &open) }
    })
    .await
}

fn route(req: HttpRequest, fleet: &Fleet, secret: Option<&str>, open: &Admission) -> HttpResponse {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/metrics") => {
            // Like the fleet gauges, the HTTP port's connection count is read at scrape time.
            let n = i64::try_from(open.len()).unwrap_or(i64::MAX);
            fleet
                .metrics
                .connections
                .get_or_create(&ConnectionLabels {
                    listener: "http",
                    state: "open",
                })
                .set(n);
            reply(StatusCode::OK, METRICS_CONTENT_TYPE, fleet.scrape_metrics())
        }
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::POST, path) if path.starts_with("/webhooks/") => {
            let provider = path.trim_start_matches("/webhooks/");
            let (status, text) = match &req.body {
                Some(body) => webhook::handle(fleet, secret, provider, &req.headers, body),
                None => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload too large\n".to_string(),
                ),
            };
            if status.is_success() {
                fleet.metrics.webhooks_accepted.inc();
            } else {
                fleet.metrics.webhooks_rejected.inc();
            }
            fleet.audit.webhook(provider, status.as_u16(), &text);
            reply(status, "application/json", text)
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}
