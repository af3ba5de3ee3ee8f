//! The hub's plain-HTTP side door (`--http-listen`): `/metrics` for Prometheus,
//! `/healthz`, and `/webhooks/{github,gitlab,gitea}` for push events. It carries no fleet
//! data beyond aggregate metrics and accepts only signed webhook deliveries; put it behind
//! your ingress's TLS like any webhook endpoint.

mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use flotilla_telemetry::hyper::{Method, StatusCode};
use flotilla_telemetry::{HttpRequest, HttpResponse, METRICS_CONTENT_TYPE, reply, serve_http};

use crate::fleet::Fleet;

/// Webhook payloads larger than this are refused (pushes with many commits are far
/// below 1 MiB in practice).
const MAX_BODY: usize = 1024 * 1024;

pub async fn serve(
    fleet: Arc<Fleet>,
    listen: SocketAddr,
    webhook_secret: Option<String>,
) -> std::io::Result<()> {
    let secret = Arc::new(webhook_secret);
    serve_http(listen, MAX_BODY, move |req| {
        let (fleet, secret) = (fleet.clone(), secret.clone());
        async move { route(req, &fleet, secret.as_deref()) }
    })
    .await
}

fn route(req: HttpRequest, fleet: &Fleet, secret: Option<&str>) -> HttpResponse {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/metrics") => {
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
            reply(status, "application/json", text)
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}
