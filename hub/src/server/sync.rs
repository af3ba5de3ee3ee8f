//! `Spoke.Sync`: one session per connected spoke, run as the stream the hub answers
//! with: HTTP/2 polls it for the next message to send, and each poll waits for a close,
//! a change of the cluster's assignments, a renewal or the spoke's next message. No
//! task or channel of its own stands between the session and its stream.
//!
//! The session is level-triggered: it remembers what it has told the spoke (`sent`) and,
//! whenever its cluster's assignments change, sends only the difference. On (re)connect
//! `sent` starts from the spoke's own `Hello.applied`, so an unchanged spoke receives
//! nothing, and content the spoke already holds is never resent.
//!
//! Content addressing (`docs/protocol.md`): an Assign says whether it carries the
//! content (`content_included`), so the empty bundle is no special case; a bundle the
//! spoke runs but whose content it no longer holds (its Hello leaves the digest out) is
//! sent again with content; content over 16 MiB goes first in `ContentChunk`s (slices of
//! the hub's one copy) and the Assign follows with `content_chunked`; content over
//! `--max-content-bytes` (at most the 64 MiB ceiling) is never sent, and only that
//! bundle shows ErrApplied on that cluster.
//!
//! **Architecture Invariant:** the cluster is the one named by the verified client
//! certificate. A message that names another cluster, or reports on a bundle not
//! assigned to this one, closes the stream.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use flotilla_model::{ClusterName, ContentDigest, DeploymentId, ResourceStatus, State};
use flotilla_proto::limits::{CONTENT_CHUNK_BYTES, MAX_CONTENT_BYTES, MAX_INLINE_CONTENT_BYTES};
use flotilla_proto::v1::{
    Assign, BundleOptions, Certificate, ContentChunk, HubMsg, RenewNow, SpokeMsg, Unassign,
    hub_msg, spoke_msg,
};
use tokio::sync::Notify;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::commands::HelloReport;
use crate::fleet::{EventKind, Fleet, SessionHandle};
use crate::records::{CapabilitiesRecord, StatusRecord, now_unix};
use crate::server::peer;
use crate::server::wire::{
    self, Encoded, Outbound, OutboundStream, Queued, SyncHandler, WireCache,
};

// A chunk, and an Assign with its content inline, each fit in one message with room to
// spare for the other fields.
const _: () = assert!(
    CONTENT_CHUNK_BYTES + 64 * 1024 < super::MAX_OUTBOUND_MESSAGE
        && MAX_INLINE_CONTENT_BYTES + 64 * 1024 < super::MAX_OUTBOUND_MESSAGE
);

pub struct SpokeService {
    fleet: Arc<Fleet>,
    /// Largest bundle content sent to a spoke.
    max_content_bytes: u64,
    /// Assigns encoded once for every session (`wire::evict_gone` keeps it to the live
    /// deployments).
    pub wire_cache: Arc<WireCache>,
}

impl SpokeService {
    pub fn new(fleet: Arc<Fleet>, max_content_bytes: u64) -> Self {
        SpokeService {
            fleet,
            max_content_bytes,
            wire_cache: Arc::new(WireCache::new(wire::WIRE_CACHE_BYTES)),
        }
    }
}

#[tonic::async_trait]
impl SyncHandler for SpokeService {
    async fn sync(
        &self,
        request: Request<Streaming<SpokeMsg>>,
    ) -> Result<Response<OutboundStream>, Status> {
        let cluster = peer::require_cluster(&self.fleet, &request)?;
        let mut inbound = request.into_inner();
        let hello = match inbound.next().await {
            Some(Ok(SpokeMsg {
                msg: Some(spoke_msg::Msg::Hello(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        check_claimed_name(&cluster, &hello.cluster_name)?;
        self.fleet.hello(
            &cluster,
            HelloReport {
                labels: hello.labels.clone(),
                agent_version: hello.agent_version.clone(),
                capabilities: hello.capabilities.as_ref().map(|c| CapabilitiesRecord {
                    kube_version: c.kube_version.clone(),
                    api_versions: c.api_versions.clone(),
                }),
            },
        )?;

        let notify = Arc::new(Notify::new());
        let close = Arc::new(Notify::new());
        let close_reason = Arc::new(std::sync::Mutex::new(None));
        let id = self.fleet.next_session_id();
        if let Some(old) = self.fleet.sessions.insert(
            cluster.clone(),
            SessionHandle {
                id,
                notify: notify.clone(),
                close: close.clone(),
                close_reason: close_reason.clone(),
            },
        ) {
            // A reconnect replaces a stream the hub has not noticed is dead yet.
            old.close.notify_one();
        }
        let digests: HashSet<ContentDigest> = hello
            .digests
            .iter()
            .filter_map(|d| ContentDigest::parse(d))
            .collect();
        let mut session = Session {
            fleet: self.fleet.clone(),
            wire_cache: self.wire_cache.clone(),
            cluster: cluster.clone(),
            id,
            inbound,
            out: VecDeque::new(),
            ended: false,
            notify,
            close,
            close_reason,
            sent: hello
                .applied
                .iter()
                .map(|a| (Arc::from(a.bundle.as_str()), Sent::from_hello(a, &digests)))
                .collect(),
            digests,
            max_content_bytes: self.max_content_bytes,
            too_large: HashMap::new(),
            renew_due: None,
            renew_asked: None,
        };
        tracing::info!(cluster = %cluster, session = id, applied = hello.applied.len(), "spoke connected");
        self.fleet
            .emit_cluster(EventKind::ClusterConnected, &cluster, "");
        crate::renewals::on_connect(&self.fleet, &cluster);
        session.refresh_renewal();
        // Whatever differs goes out first; later changes arrive through `notify`.
        session.push_diff();
        Ok(Response::new(Box::pin(futures::stream::unfold(
            session,
            |mut s| async move {
                let next = s.next_out().await?;
                Some((next, s))
            },
        ))))
    }
}

/// `t` cut to its first 4,096 characters; a string that short already (every report of
/// a healthy spoke) is kept as it came, without a copy.
fn clip(t: String) -> String {
    const MAX_CHARS: usize = 4096;
    // Bytes bound characters, so a string of at most MAX_CHARS bytes needs no count.
    if t.len() <= MAX_CHARS {
        t
    } else {
        t.chars().take(MAX_CHARS).collect()
    }
}

fn check_claimed_name(cluster: &ClusterName, claimed: &str) -> Result<(), Status> {
    if claimed.is_empty() || claimed == cluster.as_str() {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "certificate identifies cluster {cluster}, but the message claims {claimed:?}"
        )))
    }
}

/// One bundle as the spoke was told to run it. Either part is `None` when the spoke
/// reported something malformed in its Hello, which then never matches and is resent.
struct Sent {
    deployment_id: Option<DeploymentId>,
    digest: Option<ContentDigest>,
}

impl Sent {
    /// A bundle the spoke says it runs. Unless it also lists the content among the
    /// digests it holds (`held`), it lost that content (a deleted or corrupt cache
    /// file) and cannot enforce it: the deployment does not count, so it is resent
    /// with its content.
    fn from_hello(a: &flotilla_proto::v1::Applied, held: &HashSet<ContentDigest>) -> Self {
        let digest = ContentDigest::parse(&a.content_digest);
        let deployment_id = DeploymentId::parse(&a.deployment_id)
            .filter(|_| digest.as_ref().is_some_and(|d| held.contains(d)));
        Sent {
            deployment_id,
            digest,
        }
    }

    /// Whether the spoke runs deployment `id`, so there is nothing to send.
    fn runs(&self, id: &DeploymentId) -> bool {
        self.deployment_id.as_ref() == Some(id)
    }
}

struct Session {
    fleet: Arc<Fleet>,
    wire_cache: Arc<WireCache>,
    cluster: ClusterName,
    id: u64,
    /// The spoke's messages.
    inbound: Streaming<SpokeMsg>,
    /// Messages to send, in order; HTTP/2 takes them one per poll of the stream. Boxed,
    /// so the queue an idle session keeps is a few pointers.
    out: VecDeque<Queued>,
    /// Set once the stream is to end (after what `out` still holds).
    ended: bool,
    notify: Arc<Notify>,
    close: Arc<Notify>,
    close_reason: Arc<std::sync::Mutex<Option<String>>>,
    /// What the spoke has been told to run, by bundle. Keys and ids are shared with the
    /// fleet's assignments once the hub has sent them.
    sent: BTreeMap<Arc<str>, Sent>,
    /// Content the spoke holds; never resent. The spoke keeps only content that an
    /// assignment refers to, so this shrinks to match `sent` after every change.
    digests: HashSet<ContentDigest>,
    /// Largest bundle content this session sends.
    max_content_bytes: u64,
    /// Deployments not sent because their content is over `max_content_bytes`, by bundle.
    /// The spoke still runs (and reports) the bundle's previous deployment; those
    /// reports must not replace the ErrApplied the hub recorded for this one.
    too_large: HashMap<Arc<str>, DeploymentId>,
    /// When to ask the spoke to renew now (unix ms; `renewals.rs`), and the due time
    /// it was last asked for, so one request is sent once.
    renew_due: Option<i64>,
    renew_asked: Option<i64>,
}

impl Session {
    /// The next message to send to the spoke, or `None` once the stream ends.
    async fn next_out(&mut self) -> Option<Result<Outbound, Status>> {
        loop {
            if let Some(q) = self.out.pop_front() {
                return Some(*q);
            }
            if self.ended {
                return None;
            }
            self.step().await;
        }
    }

    /// Waits for one thing to happen and handles it, queueing what it sends.
    async fn step(&mut self) {
        let renew_in = self.renew_due.map(crate::renewals::Renewals::until);
        // Biased, in this order: a close wins; then the assignments go out before the
        // spoke's reports are handled, so during a fan-out the sends do not queue behind
        // status handling (and no random branch order is drawn per message).
        tokio::select! {
            biased;
            _ = self.close.notified() => {
                let reason = self
                    .close_reason
                    .lock()
                    .ok()
                    .and_then(|r| r.clone())
                    .unwrap_or_else(|| "replaced by a newer stream".into());
                tracing::info!(cluster = %self.cluster, session = self.id, %reason, "closing spoke stream");
                self.end(Status::permission_denied(reason));
            }
            _ = self.notify.notified() => {
                self.refresh_renewal();
                self.push_diff();
            }
            // An async block, so a session with no renewal due reads no clock and builds
            // no timer per message.
            _ = async {
                match renew_in {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => self.ask_to_renew(),
            msg = self.inbound.next() => match msg {
                // Boxed: inline, a renewal's state would make every idle session's
                // future as large as it (issue 18, memory per idle spoke).
                Some(Ok(m)) => {
                    if let Err(status) = Box::pin(self.handle(m)).await {
                        tracing::warn!(cluster = %self.cluster, error = %status.message(), "closing spoke stream");
                        self.end(status);
                    }
                }
                Some(Err(e)) => {
                    // e.g. an oversized or undecodable message: tell this spoke why and
                    // end only its stream.
                    tracing::info!(cluster = %self.cluster, error = %e.message(), "spoke stream error");
                    self.end(e);
                }
                None => self.ended = true,
            },
        }
    }

    fn send(&mut self, msg: Outbound) {
        self.out.push_back(Box::new(Ok(msg)));
    }

    /// Ends the stream with `status`, after what is already queued.
    fn end(&mut self, status: Status) {
        self.out.push_back(Box::new(Err(status)));
        self.ended = true;
    }

    async fn handle(&mut self, msg: SpokeMsg) -> Result<(), Status> {
        match msg.msg {
            Some(spoke_msg::Msg::Status(s)) => self.on_status(s),
            Some(spoke_msg::Msg::Heartbeat(_)) => {
                self.fleet.seen(&self.cluster);
                Ok(())
            }
            Some(spoke_msg::Msg::Hello(_)) => {
                Err(Status::invalid_argument("Hello may only be sent once"))
            }
            Some(spoke_msg::Msg::Renew(r)) => self.on_renew(&r.csr_pem).await,
            None => Err(Status::invalid_argument("empty message")),
        }
    }

    /// Takes over the renewal the hub wants of this cluster, unless already asked for.
    fn refresh_renewal(&mut self) {
        let due = self.fleet.renewals.due(&self.cluster);
        self.renew_due = due.filter(|d| Some(*d) != self.renew_asked);
    }

    /// Sends `RenewNow`; the spoke answers with a `Renew` on this stream.
    fn ask_to_renew(&mut self) {
        self.renew_asked = self.renew_due.take();
        tracing::info!(cluster = %self.cluster, "asking the spoke to renew its certificate now");
        self.send(Outbound::msg(HubMsg {
            msg: Some(hub_msg::Msg::RenewNow(RenewNow {})),
        }));
    }

    /// Issues a fresh certificate for a new key, on the open stream. The new serial is
    /// durable before the certificate leaves, so a crash cannot strand the spoke.
    async fn on_renew(&mut self, csr_pem: &str) -> Result<(), Status> {
        let issued = self
            .fleet
            .renew_cluster_cert(&self.cluster, csr_pem)
            .await?;
        self.renew_due = None;
        let msg = HubMsg {
            msg: Some(hub_msg::Msg::Certificate(Certificate {
                cert_chain_pem: issued.chain,
                ca_bundle_pem: self.fleet.trust_pem(),
            })),
        };
        self.send(Outbound::msg(msg));
        Ok(())
    }

    fn on_status(&mut self, s: flotilla_proto::v1::Status) -> Result<(), Status> {
        check_claimed_name(&self.cluster, &s.cluster_name)?;
        self.fleet.seen(&self.cluster);
        let assigned = self.fleet.assignments_of(&self.cluster);
        if !assigned.contains_key(s.bundle.as_str()) && !self.sent.contains_key(s.bundle.as_str()) {
            return Err(Status::permission_denied(format!(
                "bundle {:?} is not assigned to cluster {}",
                s.bundle, self.cluster
            )));
        }
        let state: State = s.state.parse().map_err(Status::invalid_argument)?;
        if self
            .too_large
            .get(s.bundle.as_str())
            .is_some_and(|id| id.as_str() != s.deployment_id)
        {
            return Ok(());
        }
        let resources = s
            .resources
            .iter()
            .take(10_000)
            .map(|r| {
                let r = ResourceStatus::try_from(r)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                Ok(ResourceStatus {
                    api_version: clip(r.api_version),
                    kind: clip(r.kind),
                    namespace: clip(r.namespace),
                    name: clip(r.name),
                    state: r.state,
                    message: clip(r.message),
                })
            })
            .collect::<Result<_, Status>>()?;
        let record = StatusRecord {
            deployment_id: clip(s.deployment_id),
            state,
            message: clip(s.message),
            resources,
            updated_at: now_unix(),
        };
        self.fleet.record_status(&self.cluster, &s.bundle, record);
        Ok(())
    }

    /// Records that deployment `id` of `bundle` is not sent: its content is `len` bytes,
    /// over what this hub sends (`--max-content-bytes`, at most the 64 MiB a spoke
    /// accepts). Only this bundle on this cluster fails; the stream and the cluster's
    /// other bundles go on.
    fn refuse_too_large(&mut self, bundle: &Arc<str>, id: &DeploymentId, len: usize) {
        let message = format!(
            "deployment {id} of bundle {bundle} renders to {len} bytes, over the {} bytes \
             the hub sends to a spoke (--max-content-bytes; the ceiling is {MAX_CONTENT_BYTES}); \
             not sent, the cluster keeps its previous deployment",
            self.max_content_bytes
        );
        tracing::warn!(cluster = %self.cluster, bundle = &**bundle, deployment = %id, bytes = len, limit = self.max_content_bytes, "bundle content too large; not sent");
        self.too_large.insert(bundle.clone(), id.clone());
        // Counted as told, so it is not retried until the deployment changes or the
        // spoke reconnects; the spoke's own reports are about its previous deployment.
        self.sent.insert(
            bundle.clone(),
            Sent {
                deployment_id: Some(id.clone()),
                digest: None,
            },
        );
        self.fleet.record_status(
            &self.cluster,
            bundle,
            StatusRecord {
                deployment_id: id.to_string(),
                state: State::ErrApplied,
                message,
                resources: Vec::new(),
                updated_at: now_unix(),
            },
        );
    }

    /// Queues Assign/Unassign for everything that differs from what the spoke runs.
    fn push_diff(&mut self) {
        let desired = self.fleet.assignments_of(&self.cluster);
        for (bundle, a) in desired.iter() {
            let Some(d) = &a.desired else { continue };
            if self
                .sent
                .get(bundle)
                .is_some_and(|s| s.runs(&d.deployment_id))
            {
                continue;
            }
            let with_content = !self.digests.contains(&d.digest);
            let content_len = if with_content {
                self.fleet.contents.get(&d.digest).map(|c| c.len())
            } else {
                Some(0)
            };
            let sent_len = match content_len {
                Some(len) if len as u64 > self.max_content_bytes => {
                    self.refuse_too_large(bundle, &d.deployment_id, len);
                    continue;
                }
                Some(len) if len > MAX_INLINE_CONTENT_BYTES => {
                    chunked_assign(&self.fleet, bundle, d).map(|messages| {
                        messages.into_iter().for_each(|m| self.send(m));
                        len
                    })
                }
                Some(_) => encoded_assign(&self.fleet, &self.wire_cache, bundle, d, with_content)
                    .map(|e| {
                        self.send(Outbound::Encoded(e.bytes));
                        e.content_len
                    }),
                None => None,
            };
            let Some(content_len) = sent_len else {
                tracing::error!(cluster = %self.cluster, bundle = &**bundle, digest = %d.digest, "content missing from the hub's store");
                continue;
            };
            self.too_large.remove(bundle);
            self.fleet.metrics.assigns_sent.inc();
            self.fleet
                .metrics
                .assign_content_bytes
                .inc_by(content_len as u64);
            self.digests.insert(d.digest.clone());
            self.sent.insert(
                bundle.clone(),
                Sent {
                    deployment_id: Some(d.deployment_id.clone()),
                    digest: Some(d.digest.clone()),
                },
            );
        }
        let gone: Vec<Arc<str>> = self
            .sent
            .keys()
            .filter(|b| desired.get(&***b).is_none_or(|a| a.desired.is_none()))
            .cloned()
            .collect();
        for bundle in gone {
            self.sent.remove(&bundle);
            self.too_large.remove(&bundle);
            let keep_resources = self.fleet.kept_bundles.contains_key(&*bundle);
            self.send(Outbound::msg(HubMsg {
                msg: Some(hub_msg::Msg::Unassign(Unassign {
                    keep_resources,
                    bundle: bundle.to_string(),
                })),
            }));
        }
        let referenced: HashSet<&ContentDigest> = self
            .sent
            .values()
            .filter_map(|s| s.digest.as_ref())
            .collect();
        self.digests.retain(|d| referenced.contains(d));
    }
}

/// The stream ended, or the spoke went away (HTTP/2 drops the stream): the session is
/// over.
impl Drop for Session {
    fn drop(&mut self) {
        let ours = self
            .fleet
            .sessions
            .remove_if(&self.cluster, |_, s| s.id == self.id)
            .is_some();
        if ours {
            // A newer stream of this cluster schedules its own renewal.
            self.fleet.renewals.clear(&self.cluster);
        }
        self.fleet.seen(&self.cluster);
        tracing::info!(cluster = %self.cluster, session = self.id, "spoke disconnected");
        self.fleet
            .emit_cluster(EventKind::ClusterDisconnected, &self.cluster, "");
    }
}

/// The Assign for `bundle` at deployment `d`, encoded once per (bundle, deployment,
/// with or without content) and shared by every session that sends it. `None` if the
/// content is missing.
fn encoded_assign(
    fleet: &Fleet,
    cache: &WireCache,
    bundle: &Arc<str>,
    d: &crate::records::Desired,
    with_content: bool,
) -> Option<Encoded> {
    let key = (bundle.clone(), d.deployment_id.clone(), with_content);
    cache.get_or_encode(&key, || {
        let content = if with_content {
            fleet.contents.get(&d.digest)?.clone()
        } else {
            Bytes::new()
        };
        let content_len = content.len();
        Some(Encoded {
            bytes: wire::encode(&assign_msg(bundle, d, content, with_content, false)),
            content_len,
        })
    })
}

/// A content over one message: its chunks (slices of the hub's one copy, so every
/// spoke that lacks the digest is sent the same bytes and nothing is copied per
/// session), then the Assign that uses them. `None` if the content is missing.
fn chunked_assign(
    fleet: &Fleet,
    bundle: &str,
    d: &crate::records::Desired,
) -> Option<Vec<Outbound>> {
    let content = fleet.contents.get(&d.digest)?.clone();
    let mut out: Vec<Outbound> = content_chunks(&d.digest, &content)
        .map(|c| {
            Outbound::msg(HubMsg {
                msg: Some(hub_msg::Msg::ContentChunk(c)),
            })
        })
        .collect();
    out.push(Outbound::msg(assign_msg(
        bundle,
        d,
        Bytes::new(),
        false,
        true,
    )));
    Some(out)
}

/// `content` cut into `CONTENT_CHUNK_BYTES` pieces, in order.
fn content_chunks<'a>(
    digest: &'a ContentDigest,
    content: &'a Bytes,
) -> impl Iterator<Item = ContentChunk> + 'a {
    (0..content.len())
        .step_by(CONTENT_CHUNK_BYTES)
        .map(move |start| ContentChunk {
            content_digest: digest.to_string(),
            total_size: content.len() as u64,
            offset: start as u64,
            data: content.slice(start..(start + CONTENT_CHUNK_BYTES).min(content.len())),
        })
}

fn assign_msg(
    bundle: &str,
    d: &crate::records::Desired,
    content: Bytes,
    content_included: bool,
    content_chunked: bool,
) -> HubMsg {
    HubMsg {
        msg: Some(hub_msg::Msg::Assign(Assign {
            bundle: bundle.to_string(),
            deployment_id: d.deployment_id.to_string(),
            content_digest: d.digest.to_string(),
            content,
            content_included,
            options: Some(BundleOptions::from(&d.options)),
            content_chunked,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_content_in_order_as_slices_of_the_one_copy() {
        let content = Bytes::from(vec![7u8; 2 * CONTENT_CHUNK_BYTES + 10]);
        let digest = ContentDigest::of(&content);
        let chunks: Vec<ContentChunk> = content_chunks(&digest, &content).collect();
        assert_eq!(
            chunks
                .iter()
                .map(|c| (c.offset, c.data.len()))
                .collect::<Vec<_>>(),
            [
                (0, CONTENT_CHUNK_BYTES),
                (CONTENT_CHUNK_BYTES as u64, CONTENT_CHUNK_BYTES),
                (2 * CONTENT_CHUNK_BYTES as u64, 10)
            ]
        );
        let whole: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
        assert_eq!(ContentDigest::of(&whole), digest);
        for c in &chunks {
            assert_eq!(c.total_size, content.len() as u64);
            assert_eq!(c.content_digest, digest.as_str());
            let start = content.as_ptr() as usize;
            let at = c.data.as_ptr() as usize;
            assert!(
                (start..start + content.len()).contains(&at),
                "a chunk is a slice of the stored content, not a copy"
            );
        }
    }

    #[test]
    fn clip_keeps_short_strings_and_cuts_long_ones_at_a_character_boundary() {
        assert_eq!(clip("Ready".into()), "Ready");
        let exact = "é".repeat(2048);
        assert_eq!(clip(exact.clone()), exact, "4,096 bytes are kept whole");
        let long = "é".repeat(5000);
        let cut = clip(long);
        assert_eq!(cut.chars().count(), 4096);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_message_claiming_another_cluster_is_refused() {
        let c = ClusterName::new("dev").expect("name");
        assert!(check_claimed_name(&c, "").is_ok());
        assert!(check_claimed_name(&c, "dev").is_ok());
        let err = check_claimed_name(&c, "prod").expect_err("refused");
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn a_malformed_id_or_digest_in_hello_never_matches_so_the_bundle_is_resent() {
        let digest = ContentDigest::of(b"content");
        let id = DeploymentId::compute(&digest, "{}");
        let applied = |deployment_id: &str, content_digest: &str| flotilla_proto::v1::Applied {
            bundle: "web".into(),
            deployment_id: deployment_id.into(),
            content_digest: content_digest.into(),
        };
        let held = HashSet::from([digest.clone()]);
        let good = Sent::from_hello(&applied(id.as_str(), digest.as_str()), &held);
        assert!(good.runs(&id));
        assert_eq!(good.digest.as_ref(), Some(&digest));

        let bad = Sent::from_hello(&applied(&format!("{id}../"), "sha256:nothex"), &held);
        assert!(!bad.runs(&id), "a malformed id must not count as deployed");
        assert_eq!(
            bad.digest, None,
            "a malformed digest is not content the spoke holds"
        );
    }

    #[test]
    fn a_bundle_whose_content_the_spoke_no_longer_holds_does_not_count_as_deployed() {
        let digest = ContentDigest::of(b"content");
        let id = DeploymentId::compute(&digest, "{}");
        let applied = flotilla_proto::v1::Applied {
            bundle: "web".into(),
            deployment_id: id.to_string(),
            content_digest: digest.to_string(),
        };
        let lost = Sent::from_hello(&applied, &HashSet::new());
        assert!(!lost.runs(&id), "lost content must be resent");
        assert_eq!(
            lost.digest.as_ref(),
            Some(&digest),
            "the bundle stays known, so an Unassign still reaches it"
        );
    }
}
