//! The agent: one Sync stream to the hub at a time, dialling the hub's addresses in
//! turn with jittered backoff (`dial::Dialer`), and an enforcement loop that keeps the
//! target equal to the cached desired state whether or not any hub is reachable. A
//! bundle whose apply fails is retried with its own jittered backoff
//! (`backoff::BundleRetries`), not at every round: a watch event does not bring it
//! forward (a failing apply's own writes make watch events), a new Assign from the hub
//! is applied at once.
//!
//! How a stream ends is returned as data ([`Ended`]), and so is what a message from the
//! hub leads to ([`Next`]); `run_forever` acts on them. The certificate belongs to its
//! own task (`renewal::Certificates`): a stream dials with the latest credentials and
//! forwards the hub's renewal messages to it. A permanent refusal ends `run_forever` (or
//! slows it to one try every 10 minutes under `--on-refusal retry`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use flotilla_model::{ContentDigest, DeployOptions, Labels, State};
use flotilla_proto::limits::MAX_CONTENT_BYTES;
use flotilla_proto::v1::{
    Applied, ClusterCapabilities, Hello, HubMsg, ResourceStatus, SpokeMsg, Status as StatusMsg,
    hub_msg, spoke_client::SpokeClient, spoke_msg,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::applier::{Applier, Desired, check_bundle_name};
use crate::backoff::{Backoff, BundleRetries};
use crate::dial::Dialer;
use crate::enroll::Refused;
use crate::metrics::{SpokeMetrics, StateLabel};
use crate::reassembly::{Chunk, Reassembly};
use crate::renewal::Certificates;
use crate::state_dir::{CachedAssignment, StateDir};

/// What handling a message from the hub leads to.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The stream goes on: the message was carried out, or refused alone (reported
    /// ErrApplied).
    Continue,
    /// End this stream and dial again, so the next Hello tells the hub what we really
    /// hold (content it expected us to hold is gone, or an Unassign failed).
    Resync(String),
}

/// What an Assign comes to once checked.
#[derive(Debug)]
enum Prepared {
    /// Its content is stored; the bundle is ready to apply.
    Apply(Box<(CachedAssignment, Desired)>),
    /// It cannot be carried out (bad name, digest or content): that bundle alone fails.
    Refuse(String),
    /// It names content we were expected to hold but do not.
    Resync(String),
}

/// How one Sync stream ended, which says what the agent does next.
#[must_use]
#[derive(Debug)]
enum Ended {
    /// No stream opened at this address (it is down, or its TLS or the hub refused the
    /// stream for now): try the next address.
    Unreachable(anyhow::Error),
    /// A stream ran and ended (the hub closed it, it broke, or we asked for a resync):
    /// dial again after a backoff.
    Closed(String),
    /// The hub refused this spoke for good.
    Refused(Refused),
}

/// Largest message the spoke accepts: an Assign with up to 16 MiB of content inline
/// (`MAX_INLINE_CONTENT_BYTES`) plus framing. Larger content comes in `ContentChunk`s,
/// up to `MAX_CONTENT_BYTES` in all (`reassembly`).
const MAX_INBOUND_MESSAGE: usize = 20 * 1024 * 1024;
/// A failing bundle's first retry comes after about this long...
const RETRY_BASE: Duration = Duration::from_secs(1);
/// ...and the delay doubles up to this.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How long an apply may take before the hub hears WaitApplied for it
/// (`Agent::wait_report_after`). The hub shows a deployment it assigned as WaitApplied
/// until the spoke reports on it anyway, so the early report only tells it that the
/// Assign arrived.
const WAIT_REPORT_AFTER: Duration = Duration::from_secs(1);

pub struct Agent {
    pub cluster: String,
    /// The hub's addresses, dialled in turn (`dial::Dialer`).
    pub hubs: Vec<String>,
    pub labels: Labels,
    pub state: StateDir,
    pub target: Box<dyn Applier>,
    pub heartbeat: Duration,
    pub enforce_every: Duration,
    /// An apply that takes longer than this is reported WaitApplied first; a quicker
    /// one only with its outcome, so a fan-out costs the hub one report per spoke, not
    /// two (issue 18). Zero reports WaitApplied before every apply.
    pub wait_report_after: Duration,
    cache: Mutex<BTreeMap<String, CachedAssignment>>,
    /// The outbound half of the current stream, if connected. The certificate task
    /// watches it to send renewals on the stream that is open.
    outbound: watch::Sender<Option<mpsc::Sender<SpokeMsg>>>,
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
        hubs: Vec<String>,
        labels: Labels,
        state: StateDir,
        target: Box<dyn Applier>,
    ) -> Result<Self> {
        if hubs.is_empty() {
            bail!("no hub address to dial");
        }
        let cache = state.load_assignments()?;
        Ok(Agent {
            cluster,
            hubs,
            labels,
            state,
            target,
            heartbeat: Duration::from_secs(10),
            enforce_every: Duration::from_secs(5),
            wait_report_after: WAIT_REPORT_AFTER,
            cache: Mutex::new(cache),
            outbound: watch::Sender::new(None),
            apply_lock: tokio::sync::Mutex::new(()),
            retries: Mutex::new(BundleRetries::new(RETRY_BASE, RETRY_MAX)),
            retry_scheduled: tokio::sync::Notify::new(),
            metrics: SpokeMetrics::default(),
            streams_opened: std::sync::atomic::AtomicU64::new(0),
            lost_content: tokio::sync::Notify::new(),
        })
    }

    /// Follows the outbound half of the open stream (None while disconnected).
    pub fn subscribe_outbound(&self) -> watch::Receiver<Option<mpsc::Sender<SpokeMsg>>> {
        self.outbound.subscribe()
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
        let tx = self.outbound.borrow().clone();
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
    async fn assign(self: &Arc<Self>, msg: flotilla_proto::v1::Assign) -> Next {
        let _serial = self.apply_lock.lock().await;
        let msg = Arc::new(msg);
        let m = msg.clone();
        let prepared = match self.blocking(move |a| a.prepare(&m)).await {
            Ok(p) => p,
            Err(e) => Prepared::Resync(format!("{e:#}")),
        };
        match prepared {
            Prepared::Apply(ready) => {
                if let Err(e) = self.apply_desired(*ready).await {
                    self.refuse(&msg, &format!("{e:#}"));
                }
                Next::Continue
            }
            Prepared::Refuse(why) => {
                self.refuse(&msg, &why);
                Next::Continue
            }
            Prepared::Resync(why) => Next::Resync(why),
        }
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
    fn prepare(&self, msg: &flotilla_proto::v1::Assign) -> Prepared {
        let digest = ContentDigest::parse(&msg.content_digest);
        if !content_included(msg)
            && digest
                .as_ref()
                .is_some_and(|d| self.state.load_content(d).is_none())
        {
            return Prepared::Resync(format!(
                "hub assumed we hold {} for {}, but it is not in the cache",
                msg.content_digest, msg.bundle
            ));
        }
        match self.try_prepare(msg) {
            Ok(ready) => Prepared::Apply(Box::new(ready)),
            Err(e) => Prepared::Refuse(format!("{e:#}")),
        }
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
        self.state.save_content(&digest, &content)?;
        let desired = entry.desired(content);
        Ok((entry, desired))
    }

    async fn apply_desired(
        self: &Arc<Self>,
        (mut entry, desired): (CachedAssignment, Desired),
    ) -> Result<()> {
        let started = Instant::now();
        // `entry` is WaitApplied here. Only a slow apply reports that step; the outcome
        // (Ready, NotReady or ErrApplied) is reported at once whenever it comes.
        let apply = self.target.apply(&desired);
        tokio::pin!(apply);
        // A zero window reports before any apply without a timer: a zero sleep is due
        // only at the timer's next tick, which an instant apply would beat.
        let applied = if self.wait_report_after.is_zero() {
            self.report(&entry);
            apply.await
        } else {
            // The apply first: one already done when polled needs no timer, and an
            // outcome that comes with the window's end is reported without WaitApplied.
            tokio::select! {
                biased;
                done = &mut apply => done,
                _ = tokio::time::sleep(self.wait_report_after) => {
                    self.report(&entry);
                    apply.await
                }
            }
        };
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
    /// `applier::enforce`): drifted
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
                crate::applier::enforce(self.target.as_ref(), &desired, a.state, &|| {
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
/// under `OnRefusal::Exit`. `certs` owns the certificate the streams dial with.
pub async fn run_forever(agent: Arc<Agent>, certs: Certificates, on_refusal: OnRefusal) -> Refused {
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
    let mut dialer = Dialer::new(
        agent.hubs.clone(),
        &agent.cluster,
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
    );
    loop {
        let hub = dialer.current().to_string();
        let started = Instant::now();
        let delay = match sync_once(&agent, &certs, &hub).await {
            Ended::Unreachable(e) => {
                let delay = dialer.unreachable();
                tracing::warn!(%hub, next = %dialer.current(), error = %format!("{e:#}"), "cannot reach the hub at this address");
                delay
            }
            Ended::Closed(why) => {
                dialer.connected();
                tracing::info!(%hub, why, "sync stream ended");
                dialer.ended(started.elapsed())
            }
            Ended::Refused(r) if on_refusal == OnRefusal::Exit => return r,
            Ended::Refused(r) => {
                tracing::error!(%hub, refusal = %r.refusal, error = %r.message, retry_in_s = REFUSED_RETRY.as_secs(), "refused by the hub; still enforcing the cached state");
                REFUSED_RETRY
            }
        };
        if !delay.is_zero() {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                hub = %dialer.current(),
                "reconnecting after backoff"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// One Sync stream with the hub at `hub`, from dialling to its end.
async fn sync_once(agent: &Arc<Agent>, certs: &Certificates, hub: &str) -> Ended {
    let (tx, inbound) = match open_stream(agent, certs, hub).await {
        Ok(opened) => opened,
        Err(e) => {
            return match e.downcast::<Refused>() {
                Ok(r) => Ended::Refused(r),
                Err(e) => Ended::Unreachable(e),
            };
        }
    };
    agent.outbound.send_replace(Some(tx));
    tracing::info!(%hub, cluster = %agent.cluster, "sync stream open");
    if agent
        .streams_opened
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        > 0
    {
        agent.metrics.reconnects.inc();
    }
    // Tell the hub what happened while we were away.
    for a in agent.cache().values() {
        agent.report(a);
    }
    let why = serve_stream(agent, certs, inbound).await;
    agent.outbound.send_replace(None);
    Ended::Closed(why)
}

/// Dials `hub` with the current credentials (recovering an expired certificate first:
/// TLS would refuse it) and opens the stream with our Hello.
async fn open_stream(
    agent: &Arc<Agent>,
    certs: &Certificates,
    hub: &str,
) -> Result<(mpsc::Sender<SpokeMsg>, tonic::Streaming<HubMsg>)> {
    if certs.current().expired() {
        certs.recover(hub).await?;
    }
    let creds = certs.current().creds.clone();
    let channel = flotilla_identity::connect(hub, &creds).await?;
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
    let inbound = client
        .sync(ReceiverStream::new(rx))
        .await
        .map_err(|s| crate::enroll::call_error("hub refused the stream", s))?
        .into_inner();
    Ok((tx, inbound))
}

/// Reads the open stream until it ends; returns why it ended.
async fn serve_stream(
    agent: &Arc<Agent>,
    certs: &Certificates,
    mut inbound: tonic::Streaming<HubMsg>,
) -> String {
    let mut heartbeat = tokio::time::interval(agent.heartbeat);
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
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(HubMsg { msg: Some(m) })) => m,
                    Ok(Some(HubMsg { msg: None })) => continue,
                    Ok(None) => return "the hub closed the stream".to_string(),
                    Err(s) => return format!("stream: {}", s.message()),
                };
                let queued = match msg {
                    hub_msg::Msg::ContentChunk(c) => {
                        chunks.push(Chunk {
                            digest: c.content_digest,
                            total: c.total_size,
                            offset: c.offset,
                            data: &c.data,
                        });
                        Ok(())
                    }
                    hub_msg::Msg::Assign(a) => work.send(assign_work(a, &mut chunks)).await,
                    hub_msg::Msg::Unassign(u) => {
                        work.send(Work::Unassign(u.bundle, u.keep_resources)).await
                    }
                    m @ (hub_msg::Msg::Certificate(_) | hub_msg::Msg::RenewNow(_)) => {
                        certs.hub_sent(&m).await;
                        Ok(())
                    }
                    hub_msg::Msg::Ping(_) => Ok(()),
                };
                if queued.is_err() {
                    return "the assignment worker stopped".to_string();
                }
            }
            Some(why) = failed.recv() => return format!("resyncing: {why}"),
            _ = agent.lost_content.notified() => return "resyncing: cached content was lost".to_string(),
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

/// Carries out one stream's assignments in order. A failure that needs a new stream
/// (lost content, an unassign that could not be carried out) is sent on `failed`.
async fn work_through(
    agent: Arc<Agent>,
    mut queue: mpsc::Receiver<Work>,
    failed: mpsc::Sender<String>,
) {
    while let Some(w) = queue.recv().await {
        let next = match w {
            Work::Assign(a) => agent.assign(a).await,
            Work::Refuse(a, why) => {
                agent.refuse(&a, &why);
                Next::Continue
            }
            Work::Unassign(bundle, keep) => match agent.unassign(bundle, keep).await {
                Ok(()) => Next::Continue,
                Err(e) => Next::Resync(format!("{e:#}")),
            },
        };
        if let Next::Resync(why) = next {
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
    use crate::applier::Outcome;

    fn agent(dir: &std::path::Path) -> Agent {
        let target = crate::applier::dir::DirApplier::new(&dir.join("out")).expect("dir target");
        Agent::new(
            "dev".into(),
            vec!["127.0.0.1:1".into()],
            Labels::default(),
            StateDir::new(&dir.join("state")),
            Box::new(target),
        )
        .expect("agent")
    }

    /// The assignment an Assign was prepared into; anything else fails the test.
    fn applied(p: Prepared) -> (CachedAssignment, Desired) {
        match p {
            Prepared::Apply(ready) => *ready,
            other => panic!("not prepared: {other:?}"),
        }
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
            let (entry, desired) = applied(a.prepare(&assign(b"", &empty, included)));
            assert_eq!(entry.digest, empty);
            assert!(desired.content.is_empty());
        }
    }

    #[test]
    fn content_the_hub_thinks_we_hold_but_we_do_not_asks_for_a_resync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = agent(dir.path());
        let digest = ContentDigest::of(b"kind: ConfigMap\n");
        let Prepared::Resync(why) = a.prepare(&assign(b"", &digest, false)) else {
            panic!("lost content must resync");
        };
        assert!(why.contains("not in the cache"), "{why}");
        let (_, desired) = applied(a.prepare(&assign(b"kind: ConfigMap\n", &digest, true)));
        assert_eq!(desired.content, b"kind: ConfigMap\n");
    }

    #[test]
    fn included_content_that_does_not_match_its_digest_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = agent(dir.path());
        let Prepared::Refuse(why) = a.prepare(&assign(b"", &ContentDigest::of(b"other"), true))
        else {
            panic!("refused");
        };
        assert!(why.contains("does not match its digest"), "{why}");
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
        let (_, desired) = applied(a.prepare(&whole));
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

    impl Applier for Refusing {
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
                vec!["hub:1".into()],
                Labels::default(),
                StateDir::new(dir.path()),
                Box::new(Refusing(applies.clone())),
            )
            .expect("an agent"),
        );
        let count = || applies.load(Ordering::SeqCst);
        assert_eq!(agent.assign(assign_deployment("d-1")).await, Next::Continue);
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
        assert_eq!(agent.assign(assign_deployment("d-2")).await, Next::Continue);
        assert_eq!(count(), 3);
    }

    // In-process tests of the whole agent against a fake hub (`fake_hub`): a real
    // mTLS gRPC stream on loopback, the real state dir and the directory applier.

    use crate::applier::dir::DirApplier;
    use crate::fake_hub::{CLUSTER, FakeHub, Seen};
    use flotilla_proto::v1::{RenewNow, Unassign};

    /// Starts an agent enrolled with `hub`'s CA that dials `hubs` in turn, and
    /// returns it with the folder its bundles go to.
    fn spoke_against(
        hub: &FakeHub,
        dir: &std::path::Path,
        hubs: &[&str],
    ) -> (Arc<Agent>, std::path::PathBuf) {
        spoke_reporting_waits_after(hub, dir, hubs, WAIT_REPORT_AFTER)
    }

    /// A spoke whose applies report WaitApplied once they take `wait_report_after`.
    fn spoke_reporting_waits_after(
        hub: &FakeHub,
        dir: &std::path::Path,
        hubs: &[&str],
        wait_report_after: Duration,
    ) -> (Arc<Agent>, std::path::PathBuf) {
        let state = hub.enrolled_state(&dir.join("state"), CLUSTER, hubs);
        let out = dir.join("out");
        let mut agent = Agent::new(
            CLUSTER.into(),
            hubs.iter().map(ToString::to_string).collect(),
            Labels::default(),
            state.clone(),
            Box::new(DirApplier::new(&out).expect("the out dir")),
        )
        .expect("an agent");
        agent.wait_report_after = wait_report_after;
        let agent = Arc::new(agent);
        let certs = Certificates::start(state, CLUSTER.into(), agent.subscribe_outbound())
            .expect("the certificate task");
        tokio::spawn(run_forever(agent.clone(), certs, OnRefusal::Exit));
        (agent, out)
    }

    fn assign_of(bundle: &str, content: &[u8]) -> Assign {
        let digest = ContentDigest::of(content);
        Assign {
            bundle: bundle.into(),
            deployment_id: flotilla_model::DeploymentId::compute(&digest, "{}").to_string(),
            content_digest: digest.to_string(),
            content: content.to_vec().into(),
            content_included: true,
            ..Default::default()
        }
    }

    /// The Hello that opened stream `n`, once it came.
    async fn hello(hub: &FakeHub, n: usize) -> Hello {
        hub.wait_for(&format!("the Hello of stream {n}"), |seen| {
            seen.iter().find_map(|s| match &s.msg {
                spoke_msg::Msg::Hello(h) if s.stream == n => Some(h.clone()),
                _ => None,
            })
        })
        .await
    }

    /// The first Status for `a`'s deployment in `state`, and the stream it came on.
    async fn status(hub: &FakeHub, a: &Assign, state: State) -> (usize, StatusMsg) {
        let what = format!("{state} for {} {}", a.bundle, a.deployment_id);
        hub.wait_for(&what, |seen| {
            seen.iter().find_map(|s: &Seen| match &s.msg {
                spoke_msg::Msg::Status(st)
                    if st.bundle == a.bundle
                        && st.deployment_id == a.deployment_id
                        && st.state == state.to_string() =>
                {
                    Some((s.stream, st.clone()))
                }
                _ => None,
            })
        })
        .await
    }

    /// Waits until `done` holds, looking again every few milliseconds.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let wait = async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("never: {what}"));
    }

    #[tokio::test]
    async fn an_assign_is_applied_and_reported_ready_on_the_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = FakeHub::start().await;
        let (_agent, out) = spoke_against(&hub, dir.path(), &[&hub.addr]);
        let first = hello(&hub, 1).await;
        assert_eq!(first.cluster_name, CLUSTER);
        assert!(first.applied.is_empty());

        let web = assign_of("web", b"kind: ConfigMap\nmetadata: {name: web}\n");
        assert!(hub.send(hub_msg::Msg::Assign(web.clone())).await);
        let (stream, _) = status(&hub, &web, State::Ready).await;
        assert_eq!(stream, 1);
        let written = std::fs::read_to_string(out.join("web.yaml")).expect("web.yaml");
        assert!(written.ends_with("metadata: {name: web}\n"), "{written}");
    }

    /// The states reported for `a`'s deployment so far, in order.
    async fn reported_states(hub: &FakeHub, a: &Assign) -> Vec<String> {
        hub.wait_for("the reports so far", |seen| {
            Some(
                seen.iter()
                    .filter_map(|s| match &s.msg {
                        spoke_msg::Msg::Status(st)
                            if st.bundle == a.bundle && st.deployment_id == a.deployment_id =>
                        {
                            Some(st.state.clone())
                        }
                        _ => None,
                    })
                    .collect(),
            )
        })
        .await
    }

    #[tokio::test]
    async fn an_apply_quicker_than_the_window_is_reported_once_with_its_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = FakeHub::start().await;
        // A window no apply reaches: WaitApplied is never due.
        let (_agent, _out) =
            spoke_reporting_waits_after(&hub, dir.path(), &[&hub.addr], Duration::from_secs(3600));
        hello(&hub, 1).await;
        let web = assign_of("web", b"kind: ConfigMap\nmetadata: {name: web}\n");
        assert!(hub.send(hub_msg::Msg::Assign(web.clone())).await);
        status(&hub, &web, State::Ready).await;
        assert_eq!(reported_states(&hub, &web).await, ["Ready"]);

        // A failure is not held back by the window either.
        let bad = Assign {
            content_digest: ContentDigest::of(b"other").to_string(),
            ..assign_of("bad", b"kind: ConfigMap\nmetadata: {name: bad}\n")
        };
        assert!(hub.send(hub_msg::Msg::Assign(bad.clone())).await);
        status(&hub, &bad, State::ErrApplied).await;
        assert_eq!(reported_states(&hub, &bad).await, ["ErrApplied"]);
    }

    #[tokio::test]
    async fn with_a_zero_window_waitapplied_comes_before_the_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = FakeHub::start().await;
        let (_agent, _out) =
            spoke_reporting_waits_after(&hub, dir.path(), &[&hub.addr], Duration::ZERO);
        hello(&hub, 1).await;
        let web = assign_of("web", b"kind: ConfigMap\nmetadata: {name: web}\n");
        assert!(hub.send(hub_msg::Msg::Assign(web.clone())).await);
        status(&hub, &web, State::Ready).await;
        assert_eq!(reported_states(&hub, &web).await, ["WaitApplied", "Ready"]);
    }

    #[tokio::test]
    async fn content_that_does_not_match_its_digest_fails_that_bundle_alone_and_the_stream_goes_on()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = FakeHub::start().await;
        let (agent, out) = spoke_against(&hub, dir.path(), &[&hub.addr]);
        hello(&hub, 1).await;

        let bad = Assign {
            content: b"kind: Secret\n".to_vec().into(),
            ..assign_of("bad", b"kind: ConfigMap\n")
        };
        assert!(hub.send(hub_msg::Msg::Assign(bad.clone())).await);
        let (stream, refused) = status(&hub, &bad, State::ErrApplied).await;
        assert_eq!(stream, 1);
        assert!(
            refused.message.contains("does not match its digest"),
            "{}",
            refused.message
        );
        assert!(!out.join("bad.yaml").exists());

        let good = assign_of("good", b"kind: ConfigMap\n");
        assert!(hub.send(hub_msg::Msg::Assign(good.clone())).await);
        let (stream, _) = status(&hub, &good, State::Ready).await;
        assert_eq!(stream, 1, "the same stream");
        assert!(
            !agent.cache().contains_key("bad"),
            "nothing cached for the refused bundle"
        );
    }

    #[tokio::test]
    async fn an_unassign_with_keep_forgets_the_bundle_and_leaves_its_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = FakeHub::start().await;
        let (agent, out) = spoke_against(&hub, dir.path(), &[&hub.addr]);
        hello(&hub, 1).await;
        let kept = assign_of("kept", b"kind: ConfigMap\n");
        let gone = assign_of("gone", b"kind: Secret\n");
        for a in [&kept, &gone] {
            assert!(hub.send(hub_msg::Msg::Assign(a.clone())).await);
            status(&hub, a, State::Ready).await;
        }

        for (bundle, keep_resources) in [("kept", true), ("gone", false)] {
            let unassign = Unassign {
                bundle: bundle.into(),
                keep_resources,
            };
            assert!(hub.send(hub_msg::Msg::Unassign(unassign)).await);
        }
        eventually("both bundles forgotten", || agent.cache().is_empty()).await;
        assert!(out.join("kept.yaml").exists(), "kept on the hub's word");
        assert!(!out.join("gone.yaml").exists(), "removed");
        // The next stream's Hello says so.
        hub.close_stream();
        assert!(hello(&hub, 2).await.applied.is_empty());
    }

    #[tokio::test]
    async fn after_a_reconnect_the_hello_says_what_the_spoke_holds_and_lost_content_is_asked_for_again()
     {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = FakeHub::start().await;
        let (_agent, _out) = spoke_against(&hub, dir.path(), &[&hub.addr]);
        hello(&hub, 1).await;
        let web = assign_of("web", b"kind: ConfigMap\n");
        assert!(hub.send(hub_msg::Msg::Assign(web.clone())).await);
        status(&hub, &web, State::Ready).await;

        // The hub goes away and comes back: the spoke tells it what it runs and holds.
        hub.close_stream();
        let second = hello(&hub, 2).await;
        let applied: Vec<_> = second
            .applied
            .iter()
            .map(|a| (a.bundle.as_str(), a.deployment_id.as_str()))
            .collect();
        assert_eq!(applied, [("web", web.deployment_id.as_str())]);
        assert_eq!(second.digests, std::slice::from_ref(&web.content_digest));

        // The cached content is lost; an Assign that relies on it makes the spoke
        // resync, and the next Hello no longer claims the content.
        let content = dir.path().join("state/content").join(format!(
            "{}.yaml",
            web.content_digest.trim_start_matches("sha256:")
        ));
        std::fs::remove_file(&content).expect("the cached content");
        let relying = Assign {
            content: Default::default(),
            content_included: false,
            ..web.clone()
        };
        assert!(hub.send(hub_msg::Msg::Assign(relying)).await);
        let third = hello(&hub, 3).await;
        assert!(third.digests.is_empty(), "{:?}", third.digests);
        assert_eq!(third.applied.len(), 1, "still enforcing web");

        assert!(hub.send(hub_msg::Msg::Assign(web.clone())).await);
        eventually("the content cached again", || content.exists()).await;
        // Its Ready from the cache came at the stream's start; this Assign's Ready
        // follows on the same stream.
        hub.wait_for("a second Ready on stream 3", |seen| {
            let ready = seen
                .iter()
                .filter(|s| {
                    s.stream == 3
                        && matches!(&s.msg, spoke_msg::Msg::Status(st)
                            if st.bundle == web.bundle && st.state == "Ready")
                })
                .count();
            (ready >= 2).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn with_two_hub_addresses_where_the_first_refuses_connections_the_spoke_is_ready_through_the_second()
     {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = FakeHub::start().await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
            l.local_addr().expect("its address").to_string()
        };
        // The dialer starts at an address chosen by the cluster's name: list the two so
        // that the closed one is dialled first.
        let mut hubs = vec![closed.clone(), hub.addr.clone()];
        let first = Dialer::new(
            hubs.clone(),
            CLUSTER,
            Backoff::new(Duration::ZERO, Duration::ZERO),
        );
        if first.current() != closed {
            hubs.reverse();
        }
        let hubs: Vec<&str> = hubs.iter().map(String::as_str).collect();
        let (agent, out) = spoke_against(&hub, dir.path(), &hubs);
        hello(&hub, 1).await;
        let web = assign_of("web", b"kind: ConfigMap\n");
        assert!(hub.send(hub_msg::Msg::Assign(web.clone())).await);
        status(&hub, &web, State::Ready).await;
        assert!(out.join("web.yaml").exists());
        let saved = agent.state.load_identity().expect("identity.json");
        assert_eq!(
            saved.hub_addresses(),
            hubs,
            "the state dir keeps both, in order"
        );
    }

    #[tokio::test]
    async fn a_renewal_the_hub_asks_for_happens_on_the_open_stream_and_is_installed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = FakeHub::start().await;
        let (agent, _out) = spoke_against(&hub, dir.path(), &[&hub.addr]);
        hello(&hub, 1).await;
        let before = agent.state.leaf_der().expect("a certificate");

        assert!(hub.send(hub_msg::Msg::RenewNow(RenewNow {})).await);
        hub.wait_for("a Renew", |seen| {
            seen.iter()
                .find(|s| matches!(s.msg, spoke_msg::Msg::Renew(_)))
                .map(|s| s.stream)
        })
        .await;
        eventually("the new certificate installed", || {
            agent.state.leaf_der().is_ok_and(|now| now != before)
        })
        .await;
        // The stream stayed up.
        let web = assign_of("web", b"kind: ConfigMap\n");
        assert!(hub.send(hub_msg::Msg::Assign(web.clone())).await);
        assert_eq!(status(&hub, &web, State::Ready).await.0, 1);
        // The next stream dials with the published new key and certificate.
        hub.close_stream();
        hello(&hub, 2).await;
    }
}
