//! `AuditLayer`: a tower layer around the hub's gRPC server that records every call of
//! the Admin and Registration services except the reads in `READ_ONLY`. Classifying by
//! exclusion means a mutating RPC added later is audited without anyone remembering to.
//!
//! It reads the caller from the verified TLS connection (the same certificate
//! `server::peer` checks), the key request fields from the request body (bounded by
//! `MAX_AUDITED_BODY`, then handed on unchanged), and the result from the response
//! headers: tonic answers a failed unary call with a trailers-only response whose
//! headers carry `grpc-status`, and a successful one with headers without it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use super::{Audit, AuditRecord, fields};

/// Admin methods that change nothing; every other Admin and Registration method is
/// audited. Keep in step with the proto (`tests/tests/audit.rs` checks each one).
pub const READ_ONLY: &[&str] = &[
    "Admin/ListClusters",
    "Admin/ListSources",
    "Admin/ListBundles",
    "Admin/GetStatus",
    "Admin/ListTokens",
    "Admin/ListGroups",
    "Admin/Targets",
    "Admin/Watch",
    "Admin/RolloutStatus",
    "Admin/CaStatus",
    "Admin/History",
    "Admin/Where",
    "Admin/Audit",
];

const AUDITED_SERVICES: &[&str] = &["flotilla.v1.Admin", "flotilla.v1.Registration"];

/// The hub never reads a larger request on these services (`server::MAX_INBOUND_MESSAGE`
/// plus the frame header); a larger one is handed on empty and fails there.
const MAX_AUDITED_BODY: usize = 4 * 1024 * 1024 + 5;

/// `Service/Method` for a gRPC path of an audited method, `None` otherwise.
pub fn audited_method(path: &str) -> Option<String> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if !AUDITED_SERVICES.contains(&service) {
        return None;
    }
    let short = service.rsplit('.').next().unwrap_or(service);
    let m = format!("{short}/{method}");
    (!READ_ONLY.contains(&m.as_str())).then_some(m)
}

#[derive(Clone)]
pub struct AuditLayer {
    audit: Arc<Audit>,
}

impl AuditLayer {
    pub fn new(audit: Arc<Audit>) -> Self {
        AuditLayer { audit }
    }
}

impl<S> tower_layer::Layer<S> for AuditLayer {
    type Service = AuditService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuditService {
            inner,
            audit: self.audit.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    audit: Arc<Audit>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ResBody> tower_service::Service<http::Request<tonic::body::Body>> for AuditService<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(method) = audited_method(req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        // The service that was polled ready serves this call; the clone serves the next.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let audit = self.audit.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let (who, peer) = caller(&parts.extensions);
            let frame = Limited::new(body, MAX_AUDITED_BODY)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let fields = fields::key_fields(&method, &frame);
            let req =
                http::Request::from_parts(parts, tonic::body::Body::new(Full::<Bytes>::new(frame)));
            let response = inner.call(req).await;
            let (result, message) = match &response {
                Ok(r) => match tonic::Status::from_header_map(r.headers()) {
                    Some(s) if s.code() != tonic::Code::Ok => {
                        (format!("{:?}", s.code()), fields::cut(s.message()))
                    }
                    _ => ("Ok".to_string(), String::new()),
                },
                Err(_) => (
                    "Internal".to_string(),
                    "the call failed in transport".into(),
                ),
            };
            let who = match (&who, fields.get("token_id")) {
                (None, Some(id)) => format!("token/{id}"),
                _ => who.unwrap_or_else(|| "anonymous".into()),
            };
            audit.record(AuditRecord {
                seq: 0,
                time: 0,
                who,
                method,
                fields,
                peer,
                result,
                message,
            });
            response
        })
    }
}

/// The identity in the caller's verified client certificate (if it sent one) and its
/// address.
fn caller(ext: &http::Extensions) -> (Option<String>, String) {
    let Some(info) = ext.get::<crate::server::PeerInfo>() else {
        return (None, String::new());
    };
    let peer = info.remote_addr.map(|a| a.to_string()).unwrap_or_default();
    let who = info.leaf.as_ref().map(|leaf| match &leaf.identity {
        Ok(id) => id.to_string(),
        Err(e) => format!("unidentified ({e})"),
    });
    (who, peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass_and_everything_else_on_admin_and_registration_is_audited() {
        assert_eq!(audited_method("/flotilla.v1.Admin/ListClusters"), None);
        assert_eq!(
            audited_method("/flotilla.v1.Admin/AddSource").as_deref(),
            Some("Admin/AddSource")
        );
        assert_eq!(
            audited_method("/flotilla.v1.Admin/SomethingNew").as_deref(),
            Some("Admin/SomethingNew")
        );
        assert_eq!(
            audited_method("/flotilla.v1.Registration/Register").as_deref(),
            Some("Registration/Register")
        );
        assert_eq!(audited_method("/flotilla.v1.Spoke/Sync"), None);
        assert_eq!(audited_method("/grpc.health.v1.Health/Check"), None);
    }
}
