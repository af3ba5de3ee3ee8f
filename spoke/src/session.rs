//! The agent: one Sync stream to the hub at a time, reconnecting with jittered backoff,
//! and an enforcement loop that keeps the target equal to the cached desired state
//! whether or not the hub is reachable. A bundle whose apply fails is retried with its
//! own jittered backoff (`backoff::BundleRetries`), not at every round: a watch event
//! does not bring it forward (a failing apply's own writes make watch events), a new
//! Assign from the hub is applied at once.
//!
//! The stream also carries the certificate's renewal (at two thirds of its lifetime, or
//! when the hub sends `RenewNow`); a certificate that expired while the hub was away is
//! recovered (`enroll::recover`) before the next dial. A permanent refusal ends
//! `run_forever` (or slows it to one try every 10 minutes under `--on-refusal retry`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use flotilla_identity::Identity;
use flotilla_model::{ContentDigest, DeployOptions, Labels, State};
use flotilla_proto::limits::MAX_CONTENT_BYTES;
use flotilla_proto::v1::{
    Applied, ClusterCapabilities, Hello, HubMsg, Renew, ResourceStatus, SpokeMsg,
    Status as StatusMsg, hub_msg, spoke_client::SpokeClient, spoke_msg,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::{Backoff, BundleRetries};
use crate::enroll::Refused;
use crate::metrics::{SpokeMetrics, StateLabel};
use crate::reassembly::{Chunk, Reassembly};
use crate::state_dir::{CachedAssignment, StateDir};
use crate::target::{Desired, Target, check_bundle_name};

/// Content the hub expected us to hold is gone: reconnect so Hello tells it the truth.
#[derive(Debug)]
struct Resync(String);

/// Largest message the spoke accepts: an Assign with up to 16 MiB of content inline
/// (`MAX_INLINE_CONTENT_BYTES`) plus framing. Larger content comes in `ContentChunk`s,
/// up to `MAX_CONTENT_BYTES` in all (`reassembly`).
const MAX_INBOUND_MESSAGE: usize = 20 * 1024 * 1024;
/// A connection that lasted this long resets the backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);
/// A failing bundle's first retry comes after about this long...
const RETRY_BASE: Duration = Duration::from_secs(1);
/// ...and the delay doubles up to this.
const RETRY_MAX: Duration = Duration::from_secs(300);

pub struct Agent {
    pub cluster: String,
    pub hub: String,
    pub labels: Labels,
    pub state: StateDir,
    pub target: Box<dyn Target>,
    pub heartbeat: Duration,
    pub enforce_every: Duration,
    cache: Mutex<BTreeMap<String, CachedAssignment>>,
    /// The outbound half of the current stream, if connected.
    outbound: Mutex<Option<mpsc::Sender<SpokeMsg>>>,
    /// Serialises everything that changes the target (assign, unassign, enforcement), so
    /// an enforcement round never re-applies a deployment an Assign just replaced.
    apply_lock: tokio::sync::Mutex<()>,
    /// When each failing bundle may be applied again. Written by `apply_desired`,
    /// `unassign` and `enforce`, which hold `apply_lock`.
    retries: Mutex<BundleRetries>,
    /// Wakes the enforcement loop when a retry was scheduled, so it sleeps until the
    /// earliest one.
    retry_scheduled: tokio::sync::Notify,
    pub metrics: SpokeMetrics,
    /// Streams opened so far; every one after the first counts as a reconnect.
    streams_opened: std::sync::atomic::AtomicU64,
    /// Woken by an enforcement round that found a bundle's cached content gone: the
    /// open stream ends, and the next Hello tells the hub which content we lack.
    lost_content: tokio::sync::Notify,
}

impl Agent {
    /// Refreshes the per-state bundle gauge and encodes every metric.
    pub fn scrape_metrics(&self) -> String {
        let mut by_state: BTreeMap<State, i64> = BTreeMap::new();
        for a in self.cache().values() {
            *by_state.entry(a.state).or_default() += 1;
        }
        for s in State::ALL {
            self.metrics
                .bundles
                .get_or_create(&StateLabel {
                    state: s.to_string(),
                })
                .set(by_state.get(&s).copied().unwrap_or(0));
        }
        self.metrics.encode()
    }

    pub fn new(
        cluster: String,
        hub: String,
        labels: Labels,
        state: StateDir,
        target: Box<dyn Target>,
    ) -> Result<Self> {
        let cache = state.load_assignments()?;
        Ok(Agent {
            cluster,
            hub,
            labels,
            state,
            target,
            heartbeat: Duration::from_secs(10),
            enforce_every: Duration::from_secs(5),
            cache: Mutex::new(cache),
            outbound: Mutex::new(None),
            apply_lock: tokio::sync::Mutex::new(()),
            retries: Mutex::new(BundleRetries::new(RETRY_BASE, RETRY_MAX)),
            retry_scheduled: tokio::sync::Notify::new(),
            metrics: SpokeMetrics::default(),
            streams_opened: std::sync::atomic::AtomicU64::new(0),
            lost_content: tokio::sync::Notify::new(),
        })
    }

    fn retries(&self) -> std::sync::MutexGuard<'_, BundleRetries> {
        // Each call leaves the schedule whole; a panic elsewhere cannot break it.
        self.retries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules the next try of a bundle that just failed, or forgets its failures.
    fn note_result(&self, bundle: &str, deployment_id: &str, state: State) {
        if state == State::ErrApplied {
            let due = self.retries().failed(bundle, deployment_id, Instant::now());
            tracing::info!(
                bundle,
                retry_in_ms = due.saturating_duration_since(Instant::now()).as_millis() as u64,
                "apply failed; retrying after a backoff"
            );
            self.retry_scheduled.notify_one();
        } else {
            self.retries().forget(bundle);
        }
    }

    fn cache(&self) -> BTreeMap<String, CachedAssignment> {
        self.cache.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn update_cache(&self, f: impl FnOnce(&mut BTreeMap<String, CachedAssignment>)) -> Result<()> {
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| anyhow!("assignment cache lock poisoned"))?;
        f(&mut cache);
        self.state.save_assignments(&cache)?;
        self.state.prune_content(&cache);
        Ok(())
    }

    /// Runs `f` on a blocking thread (state-dir file I/O stays off the runtime).
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Agent) -> T + Send + 'static,
    ) -> Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .context("state dir task")
    }

    fn send(&self, msg: spoke_msg::Msg) {
        let tx = self.outbound.lock().ok().and_then(|o| o.clone());
        if let Some(tx) = tx {
            // A full buffer means the hub is not reading; the status is re-sent on the
            // next connect from the cache, so dropping it here loses nothing.
            let _ = tx.try_send(SpokeMsg { msg: Some(msg) });
        }
    }

    fn report(&self, a: &CachedAssignment) {
        self.send(spoke_msg::Msg::Status(StatusMsg {
            bundle: a.bundle.clone(),
            deployment_id: a.deployment_id.clone(),
            state: a.state.to_string(),
            message: a.message.clone(),
            resources: a.resources.iter().map(ResourceStatus::from).collect(),
            cluster_name: String::new(),
        }));
    }

    /// Applies one assignment. A bad assignment is reported as ErrApplied and the stream
    /// goes on; only content we were expected to hold but lost forces a resync (a new
    /// stream, whose Hello tells the hub what we really hold).
    async fn assign(self: &Arc<Self>, msg: flotilla_proto::v1::Assign) -> Result<(), Resync> {
        let _serial = self.apply_lock.lock().await;
        let msg = Arc::new(msg);
        let m = msg.clone();
        let prepared = self
            .blocking(move |a| a.prepare(&m))
            .await
            .map_err(|e| Resync(format!("{e:#}")))?;
        let result = match prepared? {
            Ok(desired) => self.apply_desired(desired).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.refuse(&msg, &format!("{e:#}"));
        }
        Ok(())
    }

    /// Reports an assignment that cannot be carried out as ErrApplied. The bundle's
    /// previous deployment, if any, stays cached and enforced.
    fn refuse(&self, msg: &flotilla_proto::v1::Assign, why: &str) {
        let failed = CachedAssignment {
            bundle: msg.bundle.clone(),
            deployment_id: msg.deployment_id.clone(),
            digest: ContentDigest::parse(&msg.content_digest)
                .unwrap_or_else(|| ContentDigest::of(b"")),
            options: DeployOptions::default(),
            state: State::ErrApplied,
            message: why.to_string(),
            resources: Vec::new(),
        };
        tracing::warn!(bundle = %msg.bundle, error = %failed.message, "assignment refused");
        self.report(&failed);
    }

    /// Checks an Assign and stores its content. Blocking (file I/O).
    fn prepare(
        &self,
        msg: &flotilla_proto::v1::Assign,
    ) -> Result<Result<(CachedAssignment, Desired)>, Resync> {
        let digest = ContentDigest::parse(&msg.content_digest);
        if !content_included(msg)
            && digest
                .as_ref()
                .is_some_and(|d| self.state.load_content(d).is_none())
        {
            return Err(Resync(format!(
                "hub assumed we hold {} for {}, but it is not in the cache",
                msg.content_digest, msg.bundle
            )));
        }
        Ok(self.try_prepare(msg))
    }

    fn try_prepare(&self, msg: &flotilla_proto::v1::Assign) -> Result<(CachedAssignment, Desired)> {
        check_bundle_name(&msg.bundle)?;
        let digest = ContentDigest::parse(&msg.content_digest)
            .ok_or_else(|| anyhow!("malformed content digest {:?}", msg.content_digest))?;
        let content = if content_included(msg) {
            if ContentDigest::of(&msg.content) != digest {
                bail!("content of bundle {} does not match its digest", msg.bundle);
            }
            msg.content.to_vec()
        } else {
            self.state
                .load_content(&digest)
                .ok_or_else(|| anyhow!("content {digest} is not in the cache"))?
        };
        let options = DeployOptions::try_from(msg.options.clone().unwrap_or_default())
            .with_context(|| format!("options of bundle {}", msg.bundle))?;
        let entry = CachedAssignment {
            bundle: msg.bundle.clone(),
            deployment_id: msg.deployment_id.clone(),
            digest: digest.clone(),
            options,
            state: State::WaitApplied,
            message: String::new(),
            resources: Vec::new(),
        };
        self.report(&entry);
        self.state.save_content(&digest, &content)?;
        let desired = entry.desired(content);
        Ok((entry, desired))
    }

    async fn apply_desired(
        self: &Arc<Self>,
        (mut entry, desired): (CachedAssignment, Desired),
    ) -> Result<()> {
        let started = Instant::now();
        let applied = self.target.apply(&desired).await;
        self.metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        match applied {
            Ok(outcome) => {
                tracing::info!(bundle = %entry.bundle, deployment = %entry.deployment_id, state = %outcome.state, "applied");
                entry.set(outcome);
            }
            Err(e) => {
                entry.state = State::ErrApplied;
                entry.message = format!("{e:#}");
                tracing::warn!(bundle = %entry.bundle, error = %entry.message, "apply failed");
            }
        }
        self.note_result(&entry.bundle, &entry.deployment_id, entry.state);
        self.report(&entry);
        self.blocking(move |a| {
            a.update_cache(|c| {
                c.insert(entry.bundle.clone(), entry);
            })
        })
        .await?
    }

    /// Forgets `bundle`; its objects stay when the hub says so (`source remove
    /// --keep-resources`) or the bundle itself keeps its resources.
    async fn unassign(self: &Arc<Self>, bundle: String, hub_keeps: bool) -> Result<()> {
        let _serial = self.apply_lock.lock().await;
        let keep = hub_keeps
            || self
                .cache()
                .get(&bundle)
                .is_some_and(|a| a.options.keep_resources);
        self.target.remove(&bundle, keep).await?;
        self.retries().forget(&bundle);
        tracing::info!(bundle, kept = keep, "unassigned");
        self.blocking(move |a| {
            a.update_cache(|c| {
                c.remove(&bundle);
            })
        })
        .await?
    }

    /// One enforcement round over the cached bundles (all, or `only` these;
    /// `target::enforce`): drifted
    /// bundles that opted into correctDrift are re-applied, the others reported
    /// Modified; health changes are reported as they happen. A failed bundle is applied
    /// again only once its retry is due.
    pub async fn enforce(self: &Arc<Self>, only: Option<&BTreeSet<String>>) {
        let _serial = self.apply_lock.lock().await;
        for a in self.cache().into_values() {
            if only.is_some_and(|o| !o.contains(&a.bundle)) {
                continue;
            }
            if a.state == State::ErrApplied
                && !self
                    .retries()
                    .due(&a.bundle, &a.deployment_id, Instant::now())
            {
                continue;
            }
            let digest = a.digest.clone();
            let content = match self
                .blocking(move |ag| ag.state.load_content(&digest))
                .await
            {
                Ok(Some(content)) => content,
                Ok(None) => {
                    // Deleted or corrupt: only the hub can give it back.
                    tracing::warn!(bundle = %a.bundle, digest = %a.digest, "cached content is missing or corrupt; resyncing with the hub");
                    self.lost_content.notify_waiters();
                    continue;
                }
                Err(_) => continue,
            };
            let desired = a.desired(content);
            let Some(outcome) =
                crate::target::enforce(self.target.as_ref(), &desired, a.state, &|| {
                    self.metrics.drift_events.inc();
                })
                .await
            else {
                continue;
            };
            if a.state == State::ErrApplied || outcome.state == State::ErrApplied {
                self.note_result(&a.bundle, &a.deployment_id, outcome.state);
            }
            if outcome.state == a.state
                && outcome.message == a.message
                && outcome.resources == a.resources
            {
                continue;
            }
            let mut updated = a;
            updated.set(outcome);
            tracing::info!(bundle = %updated.bundle, state = %updated.state, message = %updated.message, "bundle state changed");
            self.report(&updated);
            let _ = self
                .blocking(move |ag| {
                    ag.update_cache(|c| {
                        // An Unassign may have raced this round; do not bring it back.
                        if c.contains_key(&updated.bundle) {
                            c.insert(updated.bundle.clone(), updated);
                        }
                    })
                })
                .await;
        }
    }
}

/// What the agent does when the hub refuses it for good (revoked, deleted, expired
/// beyond the recovery grace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnRefusal {
    /// Stop, with the refusal's exit code (`docs/operations.md`).
    Exit,
    /// Keep enforcing the cached state and ask the hub again every `REFUSED_RETRY`.
    Retry,
}

/// How often a refused spoke asks again under `--on-refusal retry`.
const REFUSED_RETRY: Duration = Duration::from_secs(600);

/// Runs until the process is stopped, or until the hub refuses this spoke for good
/// under `OnRefusal::Exit`.
pub async fn run_forever(agent: Arc<Agent>, on_refusal: OnRefusal) -> Refused {
    let enforcer = agent.clone();
    tokio::spawn(async move {
        // A round runs at every tick, and at once when the target's watches see a change.
        // A target without watches never signals.
        let changes = enforcer.target.changes().unwrap_or_default();
        let mut tick = tokio::time::interval(enforcer.enforce_every);
        loop {
            // A tick checks every bundle; a watch event only the bundles it touched; a
            // retry only the failed bundles that are due.
            let next_retry = enforcer.retries().next_due();
            let only = tokio::select! {
                _ = tick.tick() => None,
                _ = changes.notified() => enforcer.target.changed_bundles(),
                _ = tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now).into()), if next_retry.is_some() => {
                    Some(enforcer.retries().take_due(Instant::now()))
                }
                // A new retry may be due before the one slept for: look again.
                _ = enforcer.retry_scheduled.notified() => continue,
            };
            enforcer.enforce(only.as_ref()).await;
        }
    });
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let started = Instant::now();
        let mut refused = false;
        match sync_once(&agent).await {
            Ok(()) => tracing::info!(hub = %agent.hub, "hub closed the stream"),
            Err(e) => match e.downcast::<Refused>() {
                Ok(r) if on_refusal == OnRefusal::Exit => return r,
                Ok(r) => {
                    refused = true;
                    tracing::error!(hub = %agent.hub, refusal = %r.refusal, error = %r.message, retry_in_s = REFUSED_RETRY.as_secs(), "refused by the hub; still enforcing the cached state");
                }
                Err(e) => {
                    tracing::warn!(hub = %agent.hub, error = %format!("{e:#}"), "sync stream failed")
                }
            },
        }
        if let Ok(mut o) = agent.outbound.lock() {
            *o = None;
        }
        if started.elapsed() >= STABLE_CONNECTION {
            backoff.reset();
        }
        let delay = if refused {
            REFUSED_RETRY
        } else {
            backoff.next_delay()
        };
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting after backoff"
        );
        tokio::time::sleep(delay).await;
    }
}

/// When to renew: at two thirds of the current certificate's lifetime.
fn renewal_due(state: &StateDir) -> Result<tokio::time::Instant> {
    let (not_before, not_after) = Identity::validity(&state.leaf_der()?)?;
    let now = unix_now();
    let due = not_before + (not_after - not_before) * 2 / 3;
    let wait = u64::try_from(due - now).unwrap_or(0);
    Ok(tokio::time::Instant::now() + Duration::from_secs(wait))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Recovers an expired certificate before dialling with it: TLS would refuse it.
async fn recover_if_expired(agent: &Agent) -> Result<()> {
    let not_after = agent.state.leaf_expiry()?;
    if not_after <= unix_now() {
        crate::enroll::recover(&agent.state, &agent.cluster, &agent.hub).await?;
    }
    Ok(())
}

/// A certificate renewal on the open stream: a new key is generated here, only its CSR
/// is sent, and the key is installed together with the certificate the hub returns.
struct Renewal {
    /// The new key, while its certificate is on the way.
    pending: Option<String>,
    due: tokio::time::Instant,
}

impl Renewal {
    fn start(&mut self, agent: &Agent) -> Result<()> {
        let (key_pem, csr_pem) = flotilla_identity::csr::generate_csr(&agent.cluster)?;
        self.pending = Some(key_pem);
        tracing::info!(cluster = %agent.cluster, "renewing the client certificate");
        agent.send(spoke_msg::Msg::Renew(Renew { csr_pem }));
        Ok(())
    }

    fn install(&mut self, agent: &Agent, chain_pem: &str, ca_bundle_pem: &str) -> Result<()> {
        let Some(key_pem) = self.pending.take() else {
            bail!("hub sent a certificate we did not ask for");
        };
        let ders = flotilla_identity::pem_to_ders(chain_pem)?;
        let leaf = ders.first().context("empty certificate chain")?;
        match Identity::from_cert_der(leaf)? {
            Identity::Cluster(c) if c.as_str() == agent.cluster => {}
            other => bail!(
                "hub sent a certificate for {other}, not cluster {}",
                agent.cluster
            ),
        }
        if !ca_bundle_pem.is_empty() {
            // During a CA rotation this adds the new CA before the hub starts serving
            // with it; it never removes the CA the current connection relies on.
            flotilla_identity::pem_to_ders(ca_bundle_pem)?;
            agent.state.save_trust(ca_bundle_pem)?;
        }
        agent.state.save_renewed(&key_pem, chain_pem)?;
        self.due = renewal_due(&agent.state)?;
        tracing::info!(cluster = %agent.cluster, "client certificate renewed; the stream stays up");
        Ok(())
    }
}

async fn sync_once(agent: &Arc<Agent>) -> Result<()> {
    recover_if_expired(agent).await?;
    let creds = agent.state.credentials()?;
    let channel = flotilla_identity::connect(&agent.hub, &creds).await?;
    let mut client = SpokeClient::new(channel).max_decoding_message_size(MAX_INBOUND_MESSAGE);
    let cache = agent.cache();
    let (tx, rx) = mpsc::channel(256);
    let capabilities = agent
        .target
        .capabilities()
        .await
        .map(|c| ClusterCapabilities {
            kube_version: c.kube_version,
            api_versions: c.api_versions,
        });
    let hello = Hello {
        capabilities,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        labels: agent.labels.clone(),
        applied: cache
            .values()
            .map(|a| Applied {
                bundle: a.bundle.clone(),
                deployment_id: a.deployment_id.clone(),
                content_digest: a.digest.to_string(),
            })
            .collect(),
        digests: agent
            .state
            .digests(&cache)
            .iter()
            .map(ToString::to_string)
            .collect(),
        cluster_name: agent.cluster.clone(),
    };
    tx.send(SpokeMsg {
        msg: Some(spoke_msg::Msg::Hello(hello)),
    })
    .await
    .context("queueing Hello")?;
    let mut inbound = client
        .sync(ReceiverStream::new(rx))
        .await
        .map_err(|s| crate::enroll::call_error("hub refused the stream", s))?
        .into_inner();
    if let Ok(mut o) = agent.outbound.lock() {
        *o = Some(tx.clone());
    }
    tracing::info!(hub = %agent.hub, cluster = %agent.cluster, "sync stream open");
    if agent
        .streams_opened
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        > 0
    {
        agent.metrics.reconnects.inc();
    }
    // Tell the hub what happened while we were away.
    for a in cache.values() {
        agent.report(a);
    }
    let mut heartbeat = tokio::time::interval(agent.heartbeat);
    let mut renewal = Renewal {
        pending: None,
        due: renewal_due(&agent.state)?,
    };
    // Applying can take long (a CRD waits to be Established, an enforcement round holds
    // the target), so assignments run in a worker of this stream, in the order they came,
    // while this loop keeps heartbeats and renewal going. The worker ends when the
    // stream does (its queue closes) or asks for a resync.
    let (work, queue) = mpsc::channel::<Work>(WORK_BUFFER);
    let (failed_tx, mut failed) = mpsc::channel::<String>(1);
    tokio::spawn(work_through(agent.clone(), queue, failed_tx));
    let mut chunks = Reassembly::new(MAX_CONTENT_BYTES);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(renewal.due), if renewal.pending.is_none() => {
                renewal.start(agent)?;
            }
            msg = inbound.message() => {
                let msg: Option<HubMsg> = msg.map_err(|s| anyhow!("stream: {}", s.message()))?;
                let Some(msg) = msg else { return Ok(()) };
                match msg.msg {
                    Some(hub_msg::Msg::ContentChunk(c)) => chunks.push(Chunk {
                        digest: c.content_digest,
                        total: c.total_size,
                        offset: c.offset,
                        data: &c.data,
                    }),
                    Some(hub_msg::Msg::Assign(a)) => {
                        queue_work(&work, assign_work(a, &mut chunks)).await?
                    }
                    Some(hub_msg::Msg::Unassign(u)) => {
                        queue_work(&work, Work::Unassign(u.bundle, u.keep_resources)).await?
                    }
                    Some(hub_msg::Msg::Certificate(c)) => {
                        renewal.install(agent, &c.cert_chain_pem, &c.ca_bundle_pem)?
                    }
                    Some(hub_msg::Msg::RenewNow(_)) => {
                        // A CA rotation: renew at once unless a renewal is under way.
                        if renewal.pending.is_none() {
                            tracing::info!(cluster = %agent.cluster, "the hub asked for a renewal now");
                            renewal.start(agent)?;
                        }
                    }
                    Some(hub_msg::Msg::Ping(_)) | None => {}
                }
            }
            Some(why) = failed.recv() => bail!("{why}"),
            _ = agent.lost_content.notified() => bail!("resyncing: cached content was lost"),
            _ = heartbeat.tick() => {
                agent.send(spoke_msg::Msg::Heartbeat(Default::default()));
            }
        }
    }
}

/// Whether an Assign carries its content. Hubs that predate `content_included` sent
/// content only when it was not empty, so non-empty content counts as included.
fn content_included(msg: &flotilla_proto::v1::Assign) -> bool {
    msg.content_included || !msg.content.is_empty()
}

/// Assignments queued per stream before the stream stops reading from the hub.
const WORK_BUFFER: usize = 64;

/// What the hub asked the target to do.
enum Work {
    Assign(flotilla_proto::v1::Assign),
    /// An Assign whose chunked content was refused, and why.
    Refuse(flotilla_proto::v1::Assign, String),
    /// The bundle, and whether the hub asks to leave its objects in place.
    Unassign(String, bool),
}

/// The work an Assign asks for. A chunked Assign takes the content its chunks just
/// brought (the digest is checked when it is prepared); if the chunks were refused or
/// did not arrive, it fails alone with the reason.
fn assign_work(mut a: flotilla_proto::v1::Assign, chunks: &mut Reassembly) -> Work {
    if !a.content_chunked {
        return Work::Assign(a);
    }
    match chunks.take(&a.content_digest) {
        Ok(content) => {
            a.content = content.into();
            a.content_included = true;
            Work::Assign(a)
        }
        Err(why) => {
            let why = format!("bundle {}: content refused: {why}", a.bundle);
            Work::Refuse(a, why)
        }
    }
}

async fn queue_work(work: &mpsc::Sender<Work>, w: Work) -> Result<()> {
    work.send(w)
        .await
        .map_err(|_| anyhow!("the assignment worker stopped"))
}

/// Carries out one stream's assignments in order. A failure that needs a new stream
/// (lost content, an unassign that could not be carried out) is sent on `failed`.
async fn work_through(
    agent: Arc<Agent>,
    mut queue: mpsc::Receiver<Work>,
    failed: mpsc::Sender<String>,
) {
    while let Some(w) = queue.recv().await {
        let result = match w {
            Work::Assign(a) => agent
                .assign(a)
                .await
                .map_err(|Resync(why)| format!("resyncing: {why}")),
            Work::Refuse(a, why) => {
                agent.refuse(&a, &why);
                Ok(())
            }
            Work::Unassign(bundle, keep) => agent
                .unassign(bundle, keep)
                .await
                .map_err(|e| format!("{e:#}")),
        };
        if let Err(why) = result {
            let _ = failed.send(why).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use flotilla_proto::v1::Assign;
    use futures::future::BoxFuture;

    use super::*;
    use crate::target::Outcome;

    fn agent(dir: &std::path::Path) -> Agent {
        let target = crate::target::dir::DirTarget::new(&dir.join("out")).expect("dir target");
        Agent::new(
            "dev".into(),
            "127.0.0.1:1".into(),
            Labels::default(),
            StateDir::new(&dir.join("state")),
            Box::new(target),
        )
        .expect("agent")
    }

    fn assign(content: &[u8], digest: &ContentDigest, content_included: bool) -> Assign {
        Assign {
            bundle: "b".into(),
            deployment_id: flotilla_model::DeploymentId::compute(digest, "{}").to_string(),
            content_digest: digest.to_string(),
            content: content.to_vec().into(),
            options: None,
            content_included,
            content_chunked: false,
        }
    }

    #[test]
    fn an_empty_bundle_is_prepared_as_nothing_to_apply_not_as_lost_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = agent(dir.path());
        let empty = ContentDigest::of(b"");
        for included in [true, false] {
            let (entry, desired) = a
                .prepare(&assign(b"", &empty, included))
                .unwrap_or_else(|Resync(why)| panic!("included={included}: resync: {why}"))
                .expect("prepared");
            assert_eq!(entry.digest, empty);
            assert!(desired.content.is_empty());
        }
    }

    #[test]
    fn content_the_hub_thinks_we_hold_but_we_do_not_asks_for_a_resync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = agent(dir.path());
        let digest = ContentDigest::of(b"kind: ConfigMap\n");
        let Err(Resync(why)) = a.prepare(&assign(b"", &digest, false)) else {
            panic!("lost content must resync");
        };
        assert!(why.contains("not in the cache"), "{why}");
        let (_, desired) = a
            .prepare(&assign(b"kind: ConfigMap\n", &digest, true))
            .unwrap_or_else(|Resync(why)| panic!("resync: {why}"))
            .expect("prepared");
        assert_eq!(desired.content, b"kind: ConfigMap\n");
    }

    #[test]
    fn included_content_that_does_not_match_its_digest_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = agent(dir.path());
        let err = a
            .prepare(&assign(b"", &ContentDigest::of(b"other"), true))
            .unwrap_or_else(|Resync(why)| panic!("resync: {why}"))
            .expect_err("refused");
        assert!(
            format!("{err:#}").contains("does not match its digest"),
            "{err:#}"
        );
    }

    #[test]
    fn a_chunked_assign_takes_its_chunks_or_fails_alone_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = agent(dir.path());
        let content = b"kind: ConfigMap\n".repeat(4);
        let digest = ContentDigest::of(&content);
        let chunked = Assign {
            content: Default::default(),
            content_chunked: true,
            ..assign(b"", &digest, false)
        };
        let mut chunks = Reassembly::new(1024);
        for (i, part) in content.chunks(10).enumerate() {
            chunks.push(Chunk {
                digest: digest.to_string(),
                total: content.len() as u64,
                offset: (i * 10) as u64,
                data: part,
            });
        }
        let Work::Assign(whole) = assign_work(chunked.clone(), &mut chunks) else {
            panic!("the chunks make the content");
        };
        let (_, desired) = a
            .prepare(&whole)
            .unwrap_or_else(|Resync(why)| panic!("resync: {why}"))
            .expect("prepared");
        assert_eq!(desired.content, content);

        // Over the ceiling: refused, for this bundle only, and nothing is kept.
        let mut small = Reassembly::new(8);
        small.push(Chunk {
            digest: digest.to_string(),
            total: content.len() as u64,
            offset: 0,
            data: &content[..8],
        });
        let Work::Refuse(_, why) = assign_work(chunked, &mut small) else {
            panic!("refused");
        };
        assert!(
            why.starts_with("bundle b: content refused:") && why.contains("over the 8 bytes"),
            "{why}"
        );
    }

    /// A target whose every apply fails, as one refused by the API server would; it
    /// counts the applies.
    struct Refusing(Arc<AtomicUsize>);

    impl Target for Refusing {
        fn apply<'a>(&'a self, d: &'a Desired) -> BoxFuture<'a, Result<Outcome>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Err(anyhow!("bundle {}: refused", d.bundle)) })
        }
        fn remove<'a>(&'a self, _: &'a str, _: bool) -> BoxFuture<'a, Result<()>> {
            Box::pin(async { Ok(()) })
        }
        fn check<'a>(&'a self, _: &'a Desired) -> BoxFuture<'a, Result<Outcome>> {
            Box::pin(async { Ok(Outcome::ready()) })
        }
    }

    fn assign_deployment(deployment_id: &str) -> flotilla_proto::v1::Assign {
        let content = format!("# {deployment_id}\n").into_bytes();
        flotilla_proto::v1::Assign {
            bundle: "web".into(),
            deployment_id: deployment_id.into(),
            content_digest: ContentDigest::of(&content).to_string(),
            content: content.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_failing_bundle_is_retried_after_a_backoff_not_at_every_round() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let applies = Arc::new(AtomicUsize::new(0));
        let agent = Arc::new(
            Agent::new(
                "c".into(),
                "hub".into(),
                Labels::default(),
                StateDir::new(dir.path()),
                Box::new(Refusing(applies.clone())),
            )
            .expect("an agent"),
        );
        let count = || applies.load(Ordering::SeqCst);
        agent
            .assign(assign_deployment("d-1"))
            .await
            .expect("assigned");
        assert_eq!(count(), 1);
        assert_eq!(agent.cache()["web"].state, State::ErrApplied);

        // Rounds (ticks, watch events) before the retry is due leave the bundle alone.
        for _ in 0..5 {
            agent.enforce(None).await;
        }
        assert_eq!(count(), 1, "not re-applied at every round");

        // Once due, one retry, and the next one waits longer.
        let due = agent.retries().next_due().expect("a retry is scheduled");
        let started = Instant::now();
        while count() < 2 {
            assert!(started.elapsed() < RETRY_BASE * 10, "the retry never came");
            let only = agent.retries().take_due(Instant::now());
            agent.enforce(Some(&only)).await;
            tokio::task::yield_now().await;
        }
        assert!(Instant::now() >= due);
        agent.enforce(None).await;
        assert_eq!(count(), 2);
        let next = agent.retries().next_due().expect("rescheduled");
        assert!(next > due);

        // A new deployment from the hub is applied at once.
        agent
            .assign(assign_deployment("d-2"))
            .await
            .expect("assigned");
        assert_eq!(count(), 3);
    }
}
