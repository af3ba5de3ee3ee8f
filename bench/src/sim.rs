//! A simulated spoke: enrolls like `flotilla-spoke` (pins the hub CA from the join
//! string, generates its own key and CSR, registers with the token), then holds its own
//! mTLS connection and Sync stream, answers every Assign with Status Ready after a
//! no-op apply (or a write into a directory; WaitApplied first only when that takes longer
//! than `wait_report_after`, as in the real spoke), and sends a Heartbeat every
//! interval. It keeps only digests, never bundle content, so ten thousand fit in memory.
//!
//! **Invariant:** nothing that arrives from the network can make it panic; a bad
//! message becomes an ErrApplied status or a counted error, as in the real spoke.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use flotilla_identity::{Credentials, JoinString, csr, pin};
use flotilla_model::ContentDigest;
use flotilla_proto::v1::{
    Applied, Hello, HubMsg, RegisterRequest, SpokeMsg, Status as StatusMsg, hub_msg,
    registration_client::RegistrationClient, spoke_msg,
};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::net::{self, Dial};
use crate::sync_call::SyncCall;

/// Largest Assign accepted, as in the real spoke.
const MAX_INBOUND_MESSAGE: usize = 20 * 1024 * 1024;
/// An apply slower than this reports WaitApplied first: the real spoke's default
/// (`Agent::wait_report_after`).
pub const WAIT_REPORT_AFTER: Duration = Duration::from_secs(1);
/// Reconnect attempts before a simulated spoke gives up (it counts as failed).
const MAX_RECONNECTS: u32 = 50;

/// What every simulated spoke shares.
#[derive(Debug)]
pub struct SimSettings {
    pub join: JoinString,
    pub labels: BTreeMap<String, String>,
    pub heartbeat: Duration,
    /// An apply slower than this reports WaitApplied before its outcome; zero reports it
    /// before every apply.
    pub wait_report_after: Duration,
    /// Write each bundle to `DIR/<spoke>/<bundle>.yaml` instead of a no-op apply.
    pub write_dir: Option<PathBuf>,
    /// Ready reports queued by all the simulated spokes together. A fan-out looks at the
    /// spokes one by one only once this says enough of them can be done.
    pub ready_reports: AtomicU64,
}

/// What one bundle looks like on one simulated spoke.
#[derive(Debug, Clone)]
pub struct BundleSeen {
    pub deployment_id: String,
    pub received: Instant,
    /// When Ready was queued for this deployment (None if the apply failed).
    pub ready: Option<Instant>,
}

/// Counters of one simulated spoke; the scenario driver reads them.
#[derive(Debug, Default)]
pub struct SpokeStats {
    /// Every byte received on the Sync connection (TLS records included).
    pub received_bytes: Arc<AtomicU64>,
    pub assign_msgs: AtomicU64,
    /// Encoded size of the Assign messages (protobuf, before gRPC/HTTP/2/TLS framing).
    pub assign_encoded_bytes: AtomicU64,
    pub assign_content_bytes: AtomicU64,
    pub statuses_sent: AtomicU64,
    pub connected: AtomicBool,
    pub first_connected: OnceLock<Instant>,
    pub connects: AtomicU64,
    pub errors: AtomicU64,
    /// Set when the spoke gave up (enrollment failed, or too many reconnects).
    pub failed: OnceLock<String>,
    pub last_error: Mutex<Option<String>>,
    pub bundles: Mutex<HashMap<String, BundleSeen>>,
}

impl SpokeStats {
    fn error(&self, e: &anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(format!("{e:#}"));
        }
    }

    /// The deployment and Ready time of `bundle`, if it is Ready.
    pub fn ready_of(&self, bundle: &str) -> Option<(String, Instant)> {
        let b = self.bundles.lock().ok()?;
        let seen = b.get(bundle)?;
        Some((seen.deployment_id.clone(), seen.ready?))
    }

    /// When `bundle` became Ready on a deployment other than `before`, if it has:
    /// what a fan-out waits for, read without copying the deployment id.
    pub fn ready_on_new(&self, bundle: &str, before: Option<&str>) -> Option<Instant> {
        let b = self.bundles.lock().ok()?;
        let seen = b.get(bundle)?;
        (Some(seen.deployment_id.as_str()) != before)
            .then_some(seen.ready)
            .flatten()
    }

    /// How many bundles are Ready, and the last Ready time among them.
    pub fn ready_count(&self) -> (usize, Option<Instant>) {
        let Ok(b) = self.bundles.lock() else {
            return (0, None);
        };
        let ready = b.values().filter_map(|s| s.ready);
        (ready.clone().count(), ready.max())
    }
}

/// Enrolls as `name` at `dial.hub` (one of the join string's addresses): pins the CA,
/// makes a key and CSR, registers. Returns credentials.
pub async fn enroll(settings: &SimSettings, name: &str, dial: &Dial) -> Result<Credentials> {
    let ca_der = pin::fetch_pinned_ca(&dial.hub.to_string(), &settings.join.ca_sha256)
        .await
        .context("pinning the hub CA")?;
    let ca_pem = flotilla_identity::der_to_pem(&ca_der);
    let (key_pem, csr_pem) = csr::generate_csr(name)?;
    let anonymous = Credentials {
        ca_pem: ca_pem.clone(),
        cert_pem: None,
        key_pem: None,
    };
    let channel = net::channel(dial, &anonymous, Arc::new(AtomicU64::new(0))).await?;
    let resp = RegistrationClient::new(channel)
        .register(RegisterRequest {
            token: settings.join.token.clone(),
            csr_pem,
            requested_name: name.to_string(),
            labels: settings.labels.clone(),
            agent_version: concat!("flotilla-bench/", env!("CARGO_PKG_VERSION")).into(),
        })
        .await
        .map_err(|s| anyhow!("registration refused: {}", s.message()))?
        .into_inner();
    if resp.cluster_id != name {
        bail!("hub registered us as {:?}, not {name:?}", resp.cluster_id);
    }
    Ok(Credentials {
        ca_pem,
        cert_pem: Some(resp.cert_chain_pem),
        key_pem: Some(key_pem),
    })
}

/// What the spoke enforces, the way a real spoke caches it.
#[derive(Default)]
struct Held {
    applied: BTreeMap<String, Applied>,
    digests: HashSet<String>,
    ready: BTreeMap<String, bool>,
}

/// Runs one simulated spoke until `stop` turns true; reconnects like the real spoke,
/// to the next of the dial's addresses.
pub async fn run(
    settings: Arc<SimSettings>,
    name: String,
    mut dial: Dial,
    creds: Credentials,
    stats: Arc<SpokeStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut held = Held::default();
    let mut attempts = 0u32;
    while !*stop.borrow() {
        let started = Instant::now();
        let result = tokio::select! {
            r = session(&settings, &name, &dial, &creds, &stats, &mut held) => r,
            _ = stop.changed() => return,
        };
        stats.connected.store(false, Ordering::Relaxed);
        if let Err(e) = result {
            stats.error(&e);
        }
        dial = dial.rotated();
        if started.elapsed() > Duration::from_secs(30) {
            attempts = 0;
        }
        attempts += 1;
        if attempts > MAX_RECONNECTS {
            let _ = stats
                .failed
                .set(format!("gave up after {MAX_RECONNECTS} reconnects"));
            return;
        }
        let delay = Duration::from_millis(500 * u64::from(attempts.min(10)));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn session(
    settings: &SimSettings,
    name: &str,
    dial: &Dial,
    creds: &Credentials,
    stats: &SpokeStats,
    held: &mut Held,
) -> Result<()> {
    let tls = net::connect(dial, creds, stats.received_bytes.clone()).await?;
    let hello = SpokeMsg {
        msg: Some(spoke_msg::Msg::Hello(Hello {
            agent_version: concat!("flotilla-bench/", env!("CARGO_PKG_VERSION")).into(),
            labels: settings.labels.clone(),
            applied: held.applied.values().cloned().collect(),
            digests: held.digests.iter().cloned().collect(),
            cluster_name: name.to_string(),
            capabilities: None,
        })),
    };
    let mut call = SyncCall::open(tls, dial.hub, &hello, MAX_INBOUND_MESSAGE).await?;
    stats.connected.store(true, Ordering::Relaxed);
    stats.connects.fetch_add(1, Ordering::Relaxed);
    let _ = stats.first_connected.set(Instant::now());
    // Like the real spoke: tell the hub what happened while we were away.
    for (bundle, a) in &held.applied {
        let ok = held.ready.get(bundle).copied().unwrap_or(false);
        send_status(
            &mut call,
            stats,
            bundle,
            &a.deployment_id,
            if ok { "Ready" } else { "ErrApplied" },
            "",
        )?;
    }
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            msg = call.next() => msg?,
            _ = heartbeat.tick() => {
                call.send(&SpokeMsg { msg: Some(spoke_msg::Msg::Heartbeat(Default::default())) })?;
                continue;
            }
        };
        let Some(msg) = msg else { return Ok(()) };
        handle(settings, name, stats, held, &mut call, msg).await?;
    }
}

/// Queues a status report; it goes out the next time the call is waited on.
fn send_status(
    call: &mut SyncCall<impl AsyncRead + AsyncWrite + Unpin>,
    stats: &SpokeStats,
    bundle: &str,
    deployment_id: &str,
    state: &str,
    message: &str,
) -> Result<()> {
    call.send(&SpokeMsg {
        msg: Some(spoke_msg::Msg::Status(StatusMsg {
            bundle: bundle.to_string(),
            deployment_id: deployment_id.to_string(),
            state: state.to_string(),
            message: message.to_string(),
            resources: Vec::new(),
            cluster_name: String::new(),
        })),
    })?;
    stats.statuses_sent.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn handle(
    settings: &SimSettings,
    name: &str,
    stats: &SpokeStats,
    held: &mut Held,
    call: &mut SyncCall<impl AsyncRead + AsyncWrite + Unpin>,
    msg: HubMsg,
) -> Result<()> {
    let encoded = msg.encoded_len() as u64;
    match msg.msg {
        Some(hub_msg::Msg::Assign(a)) => {
            let received = Instant::now();
            stats.assign_msgs.fetch_add(1, Ordering::Relaxed);
            stats
                .assign_encoded_bytes
                .fetch_add(encoded, Ordering::Relaxed);
            stats
                .assign_content_bytes
                .fetch_add(a.content.len() as u64, Ordering::Relaxed);
            // As the real spoke: WaitApplied only for an apply slower than its window,
            // and before every apply for a zero window. The apply is polled first, so
            // one that finishes at once (the no-op apply always does) registers no timer.
            let outcome = {
                let mut applying = pin!(apply(settings, name, held, &a));
                if settings.wait_report_after.is_zero() {
                    send_status(call, stats, &a.bundle, &a.deployment_id, "WaitApplied", "")?;
                    call.drive(applying).await?
                } else {
                    let window =
                        tokio::time::timeout(settings.wait_report_after, applying.as_mut());
                    match call.drive(window).await? {
                        Ok(done) => done,
                        Err(_) => {
                            send_status(
                                call,
                                stats,
                                &a.bundle,
                                &a.deployment_id,
                                "WaitApplied",
                                "",
                            )?;
                            call.drive(applying).await?
                        }
                    }
                }
            };
            let ready = match &outcome {
                Ok(()) => {
                    send_status(call, stats, &a.bundle, &a.deployment_id, "Ready", "")?;
                    Some(Instant::now())
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    send_status(call, stats, &a.bundle, &a.deployment_id, "ErrApplied", &msg)?;
                    None
                }
            };
            held.ready.insert(a.bundle.clone(), ready.is_some());
            held.applied.insert(
                a.bundle.clone(),
                Applied {
                    bundle: a.bundle.clone(),
                    deployment_id: a.deployment_id.clone(),
                    content_digest: a.content_digest.clone(),
                },
            );
            let counts = ready.is_some();
            if let Ok(mut b) = stats.bundles.lock() {
                b.insert(
                    a.bundle,
                    BundleSeen {
                        deployment_id: a.deployment_id,
                        received,
                        ready,
                    },
                );
            }
            // Counted once the Ready is in `bundles`, where a fan-out that reads the
            // count next looks for it.
            if counts {
                settings.ready_reports.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(hub_msg::Msg::Unassign(u)) => {
            held.applied.remove(&u.bundle);
            held.ready.remove(&u.bundle);
            if let Ok(mut b) = stats.bundles.lock() {
                b.remove(&u.bundle);
            }
            if let Some(dir) = &settings.write_dir
                && flotilla_model::names::is_dns_label(&u.bundle)
            {
                let _ =
                    tokio::fs::remove_file(dir.join(name).join(format!("{}.yaml", u.bundle))).await;
            }
        }
        // Simulated spokes keep their first certificate for a whole run, and their
        // bundles are small enough to ride inline.
        Some(hub_msg::Msg::Certificate(_))
        | Some(hub_msg::Msg::RenewNow(_))
        | Some(hub_msg::Msg::ContentChunk(_))
        | Some(hub_msg::Msg::Ping(_))
        | None => {}
    }
    Ok(())
}

/// The no-op apply: checks the content against its digest (as the real spoke does) and,
/// with a directory target, writes it.
async fn apply(
    settings: &SimSettings,
    name: &str,
    held: &mut Held,
    a: &flotilla_proto::v1::Assign,
) -> Result<()> {
    if a.content.is_empty() {
        if !held.digests.contains(&a.content_digest) {
            bail!("hub assumed we hold {}, but we do not", a.content_digest);
        }
    } else if ContentDigest::of(&a.content).as_str() != a.content_digest {
        bail!("content of bundle {} does not match its digest", a.bundle);
    } else {
        held.digests.insert(a.content_digest.clone());
    }
    if let Some(dir) = &settings.write_dir {
        if !flotilla_model::names::is_dns_label(&a.bundle) {
            bail!("bundle name {:?} is not a DNS label", a.bundle);
        }
        let dir = dir.join(name);
        tokio::fs::create_dir_all(&dir).await?;
        if !a.content.is_empty() {
            let tmp = dir.join(format!(".{}.tmp", a.bundle));
            tokio::fs::write(&tmp, &a.content).await?;
            tokio::fs::rename(&tmp, dir.join(format!("{}.yaml", a.bundle))).await?;
        }
    }
    Ok(())
}
