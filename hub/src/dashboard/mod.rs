//! The read-only web dashboard (`flotilla-hub run --dashboard`): its listener, who may
//! use it, routing and the response headers. The pages are in `pages` (HTML rendered on
//! the hub from the Admin API's read functions), escaping in `html`, the live feed in
//! `events` (server-sent events from the stream `Admin.Watch` serves), the rollout chart
//! in `chart`, and the page's one script and stylesheet are embedded files
//! (`app.js`, `style.css`), so the hub stays one binary with no front-end build.
//!
//! Access is the Admin API's: on `--dashboard-tls` the listener is the hub's own TLS
//! (same certificate, same trusted CAs, followed through a CA rotation) and every
//! request needs a client certificate of an operator with the viewer or admin role
//! (`server::require_operator_der`); without TLS it may only bind a loopback address,
//! for an operator on the hub's host or behind `ssh -L`. It must not change anything:
//! only GET is served, and it reads through functions that write nothing.

mod chart;
mod events;
mod html;
mod pages;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use flotilla_identity::Role;
use flotilla_telemetry::admission::{Admission, Guarded};
use flotilla_telemetry::hyper::body::Frame;
use flotilla_telemetry::hyper::header::{self, HeaderValue};
use flotilla_telemetry::hyper::{Method, Request, Response, StatusCode};
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::fleet::Fleet;
use crate::http::HttpPortLimits;
use crate::server::AdminService;

/// `flotilla-hub run` flags for the dashboard (off by default).
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// Serve the read-only web dashboard (docs/dashboard.md).
    #[arg(long)]
    pub dashboard: bool,
    /// Where the dashboard listens. Without --dashboard-tls, a loopback address only.
    #[arg(long, default_value = "127.0.0.1:7480", requires = "dashboard")]
    pub dashboard_listen: SocketAddr,
    /// Serve the dashboard over the hub's TLS; every request then needs an operator's
    /// client certificate (admin or viewer role) signed by the hub's CA.
    #[arg(long, requires = "dashboard")]
    pub dashboard_tls: bool,
}

impl DashboardArgs {
    /// The dashboard's config when it is on, after refusing an unsafe listener.
    pub fn config(&self) -> Result<Option<DashboardConfig>, DashboardError> {
        if !self.dashboard {
            return Ok(None);
        }
        let config = DashboardConfig {
            listen: self.dashboard_listen,
            tls: self.dashboard_tls,
        };
        config.check()?;
        Ok(Some(config))
    }
}

/// Where the dashboard listens and how (`flotilla-hub run --dashboard-*`).
#[derive(Debug, Clone, Copy)]
pub struct DashboardConfig {
    pub listen: SocketAddr,
    /// Serve over the hub's TLS and require an operator's client certificate.
    pub tls: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(
        "--dashboard-listen {0}: without --dashboard-tls the dashboard only listens on a loopback address (127.0.0.1:PORT or [::1]:PORT), because plain HTTP has no way to tell who is asking; add --dashboard-tls to serve it to other hosts, where every request needs an admin or viewer client certificate signed by the hub's CA"
    )]
    PlainNotLoopback(SocketAddr),
    #[error("dashboard: listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl DashboardConfig {
    /// Refuses a plain listener that other hosts could reach.
    pub fn check(&self) -> Result<(), DashboardError> {
        if self.tls || self.listen.ip().is_loopback() {
            Ok(())
        } else {
            Err(DashboardError::PlainNotLoopback(self.listen))
        }
    }
}

/// Who is on the other end of a connection, decided once per connection.
enum Access {
    /// A plain loopback connection: someone on the hub's host.
    Local,
    /// An operator's verified certificate with the viewer or admin role.
    Operator,
    /// No usable certificate: every request gets this status and reason.
    Refused(StatusCode, String),
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// Serves the dashboard until the task is dropped. Connections are capped and their
/// request heads timed like the HTTP port's (`--http-max-connections`,
/// `--http-header-timeout`).
pub async fn serve(
    fleet: Arc<Fleet>,
    config: DashboardConfig,
    limits: HttpPortLimits,
) -> Result<(), DashboardError> {
    config.check()?;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| DashboardError::Listen {
                addr: config.listen,
                source,
            })?;
    tracing::info!(listen = %config.listen, tls = config.tls, "dashboard listening");
    let admission = Admission::new(limits.max_connections);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Usually EMFILE; back off briefly instead of spinning.
                tracing::warn!(error = %e, "dashboard accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = admission.admit();
        let fleet = fleet.clone();
        tokio::spawn(async move {
            if !config.tls {
                let io = Guarded::new(tcp).evictable(admitted);
                return serve_connection(io, fleet, Access::Local, limits).await;
            }
            // The gRPC port's config (certificate and trusted CAs as of now), speaking
            // HTTP/1.1 instead of h2.
            let mut tls = (*fleet.pki().tls).clone();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            let stream =
                match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "dashboard TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "dashboard TLS handshake timed out");
                        return;
                    }
                };
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first());
            let access = match leaf.map(|der| crate::server::require_operator_der(der, Role::Viewer)) {
                None => Access::Refused(
                    StatusCode::UNAUTHORIZED,
                    "a client certificate is required: an operator's (flotilla-hub admin issue --role viewer or admin), signed by the hub's CA".into(),
                ),
                Some(Err(status)) => {
                    tracing::info!(%peer, reason = status.message(), "dashboard refused a certificate");
                    let code = if status.code() == tonic::Code::PermissionDenied {
                        StatusCode::FORBIDDEN
                    } else {
                        StatusCode::UNAUTHORIZED
                    };
                    Access::Refused(code, status.message().to_string())
                }
                Some(Ok(_)) => Access::Operator,
            };
            serve_connection(
                Guarded::new(stream).evictable(admitted),
                fleet,
                access,
                limits,
            )
            .await;
        });
    }
}

async fn serve_connection<I>(io: I, fleet: Arc<Fleet>, access: Access, limits: HttpPortLimits)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let access = Arc::new(access);
    let svc = flotilla_telemetry::hyper::service::service_fn(
        move |req: Request<flotilla_telemetry::hyper::body::Incoming>| {
            let (fleet, access) = (fleet.clone(), access.clone());
            async move {
                let response = respond(&fleet, &access, req.method(), req.uri().path()).await;
                Ok::<_, Infallible>(response)
            }
        },
    );
    let _ = flotilla_telemetry::hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// The headers every answer carries: no script or style but the dashboard's own files,
/// no framing, no caching of fleet state, no MIME sniffing, no referrer.
const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-resource-policy", "same-origin"),
];

fn answer(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (k, v) in SECURITY_HEADERS {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

fn error_page(status: StatusCode, message: &str) -> Response<Body> {
    let mut page = html::Page::new(status.canonical_reason().unwrap_or("Error"));
    page.p("error", message);
    answer(status, HTML, full(page.finish()))
}

async fn respond(
    fleet: &Arc<Fleet>,
    access: &Access,
    method: &Method,
    path: &str,
) -> Response<Body> {
    if let Access::Refused(status, why) = access {
        return answer(*status, TEXT, full(format!("{why}\n")));
    }
    if method != Method::GET {
        let mut r = answer(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            full("the dashboard is read-only: only GET is served\n"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let admin = AdminService::new(fleet.clone());
    let page = |p: Option<String>, what: &str| match p {
        Some(html) => answer(StatusCode::OK, HTML, full(html)),
        None => error_page(StatusCode::NOT_FOUND, &format!("{what} not found")),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => answer(StatusCode::OK, HTML, full(pages::overview(&admin))),
        ["clusters", name] => match html::unseg(name) {
            Some(name) => page(
                pages::cluster(&admin, &fleet.history, &name).await,
                &format!("cluster {name:?}"),
            ),
            None => error_page(StatusCode::NOT_FOUND, "malformed cluster name"),
        },
        ["bundles", name] => match html::unseg(name) {
            Some(name) => page(
                pages::bundle(&admin, &fleet.history, &name).await,
                &format!("bundle {name:?}"),
            ),
            None => error_page(StatusCode::NOT_FOUND, "malformed bundle name"),
        },
        ["events"] => {
            let frames = events::stream(fleet.events.subscribe())
                .map(|b| Ok::<_, Infallible>(Frame::data(b)));
            answer(
                StatusCode::OK,
                "text/event-stream",
                BodyExt::boxed_unsync(StreamBody::new(frames)),
            )
        }
        ["static", "app.js"] => answer(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            full(include_str!("app.js")),
        ),
        ["static", "style.css"] => answer(
            StatusCode::OK,
            "text/css; charset=utf-8",
            full(include_str!("style.css")),
        ),
        // Browsers ask for it unprompted; there is none.
        ["favicon.ico"] => answer(StatusCode::NO_CONTENT, TEXT, full("")),
        _ => error_page(StatusCode::NOT_FOUND, "no such page"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_listener_must_be_loopback_and_a_tls_one_may_be_anywhere() {
        let at = |s: &str, tls| DashboardConfig {
            listen: s.parse().expect("address"),
            tls,
        };
        assert!(at("127.0.0.1:7480", false).check().is_ok());
        assert!(at("[::1]:7480", false).check().is_ok());
        let refused = at("0.0.0.0:7480", false).check().expect_err("refused");
        assert!(refused.to_string().contains("--dashboard-tls"), "{refused}");
        assert!(at("0.0.0.0:7480", true).check().is_ok());
    }
}
