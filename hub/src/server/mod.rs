//! The hub's gRPC server: Registration, Spoke and Admin on one TLS port, plus gRPC health
//! and reflection so `grpcurl` works.
//!
//! Client certificates are optional at the TLS layer (registration has none yet); every
//! service other than Registration refuses a caller without a verified certificate of
//! the right kind (see `peer`).
//!
//! Every connection lives under `ConnectionLimits`: budgets and deadlines at the TLS
//! layer (`tls`), HTTP/2 keepalive that reaps peers which stop answering, and a cap on
//! concurrent streams per connection. A cluster holds one Sync stream at a time: a new
//! stream replaces the old one (`sync`).

mod admin;
mod audit;
mod history;
mod peer;
mod registration;
mod sync;
mod tls;
mod wire;

pub(crate) use admin::AdminService;
pub(crate) use peer::require_operator_der;
pub use tls::{PeerInfo, server_config};

use std::net::SocketAddr;
use std::sync::Arc;

use flotilla_proto::v1::{admin_server::AdminServer, registration_server::RegistrationServer};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Server;

use crate::fleet::Fleet;

/// Largest message the hub accepts from a client. Spoke messages are small (status,
/// CSRs); this bounds what a misbehaving client can make the hub buffer.
pub const MAX_INBOUND_MESSAGE: usize = 4 * 1024 * 1024;
/// Largest message the hub sends, on `Spoke` and `Admin`. An `Assign` carries content up
/// to `flotilla_proto::limits::MAX_INLINE_CONTENT_BYTES` inline (spokes accept 20 MiB
/// messages); a larger content goes in `ContentChunk`s, and one over
/// `--max-content-bytes` is never sent (`sync::push_diff`).
pub const MAX_OUTBOUND_MESSAGE: usize = 20 * 1024 * 1024;

/// Marks spokes that stopped talking Offline: their stream is closed, so the status
/// shows Offline and a reconnect starts from a fresh Hello.
pub async fn watch_heartbeats(fleet: Arc<Fleet>, window: std::time::Duration) {
    let mut tick = tokio::time::interval((window / 3).max(std::time::Duration::from_secs(1)));
    loop {
        tick.tick().await;
        let now = crate::records::now_unix();
        let limit = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        let silent: Vec<_> = fleet
            .sessions
            .iter()
            .filter(|s| {
                fleet
                    .clusters
                    .get(s.key())
                    .is_some_and(|c| now.saturating_sub(c.last_seen) > limit)
            })
            .map(|s| s.key().clone())
            .collect();
        for c in silent {
            tracing::warn!(cluster = %c, window_secs = window.as_secs(), "no heartbeat; marking the cluster Offline");
            fleet.disconnect(&c, &format!("no heartbeat for {}s", window.as_secs()));
        }
    }
}

/// A store failure seen by a gRPC caller is the hub's fault, not theirs.
impl From<crate::store::StoreError> for tonic::Status {
    fn from(e: crate::store::StoreError) -> Self {
        tonic::Status::internal(e.to_string())
    }
}

/// A command's refusal as the gRPC status a caller can act on. A named `Refusal` rides
/// along in the status metadata, so a spoke stops instead of retrying.
impl From<crate::commands::CommandError> for tonic::Status {
    fn from(e: crate::commands::CommandError) -> Self {
        use crate::commands::CommandError as E;
        use flotilla_identity::Refusal;
        let message = e.to_string();
        match e {
            E::NotFound(_) => Status::not_found(message),
            E::Invalid(_) => Status::invalid_argument(message),
            E::Precondition(_) => Status::failed_precondition(message),
            E::Exists(_) => Status::already_exists(message),
            E::Internal(_) => Status::internal(message),
            E::Refused(r @ Refusal::Token, _) => r.tag(Status::unauthenticated(message)),
            E::Refused(r @ Refusal::NameTaken, _) => r.tag(Status::already_exists(message)),
            E::Refused(r, _) => r.status(message),
            E::Store(e) => e.into(),
        }
    }
}

/// How much of the gRPC port one peer, and all peers without a certificate together,
/// may hold. Set by `flotilla-hub run` flags (see `docs/operations.md`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time for a TCP connection to complete its TLS handshake.
    pub handshake_timeout: std::time::Duration,
    /// Time for a TLS connection to send its HTTP/2 preface.
    pub preface_timeout: std::time::Duration,
    /// Lifetime of a connection without a client certificate (registration, health).
    pub unauthenticated_max_age: std::time::Duration,
    /// Connections without a verified client certificate held at once; a newcomer over
    /// the cap evicts the oldest.
    pub max_unauthenticated: usize,
    /// Connections with a verified client certificate (spokes, operators) held at once;
    /// over it, a new one is closed.
    pub max_authenticated: usize,
    /// HTTP/2 PING interval; a peer that does not answer within `keepalive_timeout` is
    /// dropped.
    pub keepalive_interval: std::time::Duration,
    pub keepalive_timeout: std::time::Duration,
    /// Concurrent HTTP/2 streams (calls) per connection.
    pub max_streams_per_connection: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub async fn serve(
    fleet: Arc<Fleet>,
    listen: SocketAddr,
    max_content_bytes: u64,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let f = fleet.clone();
    let incoming =
        tls::incoming(listen, move || f.pki().tls.clone(), limits, &fleet.metrics).await?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<wire::SpokeWireServer<sync::SpokeService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(flotilla_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();

    let spoke_service = sync::SpokeService::new(
        fleet.clone(),
        max_content_bytes.min(flotilla_proto::limits::MAX_CONTENT_BYTES),
    );
    // Ends with the server (aborted below), or earlier if the fleet goes.
    let evictor = tokio::spawn(wire::evict_gone(
        spoke_service.wire_cache.clone(),
        fleet.live_deployments.subscribe(),
    ));
    let served = Server::builder()
        .layer(crate::audit::AuditLayer::new(fleet.audit.clone()))
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(limits.max_streams_per_connection)
        .add_service(health_service)
        .add_optional_service(reflection.ok())
        .add_service(
            RegistrationServer::new(registration::RegistrationService::new(fleet.clone()))
                .max_decoding_message_size(MAX_INBOUND_MESSAGE),
        )
        .add_service(wire::SpokeWireServer::new(
            spoke_service,
            MAX_INBOUND_MESSAGE,
            MAX_OUTBOUND_MESSAGE,
        ))
        .add_service(
            AdminServer::new(admin::AdminService::new(fleet))
                .max_decoding_message_size(MAX_INBOUND_MESSAGE)
                .max_encoding_message_size(MAX_OUTBOUND_MESSAGE),
        )
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown)
        .await;
    evictor.abort();
    served?;
    Ok(())
}
