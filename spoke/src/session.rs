//! The agent: one Sync stream to the hub at a time, reconnecting with jittered backoff,
//! and an enforcement loop that keeps the target equal to the cached desired state
//! whether or not the hub is reachable. A bundle whose apply fails is retried with its
//! own jittered backoff (`backoff::BundleRetries`), not at every round: a watch event
//! does not bring it forward (a failing apply's own writes make watch events), a new
//! Assign from the hub is applied at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use flotilla_identity::Identity;
use flotilla_model::{ContentDigest, Labels, State};
use flotilla_proto::v1::{
    Applied, ClusterCapabilities, Hello, HubMsg, Renew, ResourceStatus, SpokeMsg,
    Status as StatusMsg, hub_msg, spoke_client::SpokeClient, spoke_msg,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::{Backoff, BundleRetries};
use crate::metrics::{SpokeMetrics, StateLabel};
use crate::state_dir::{CachedAssignment, StateDir};
use crate::target::{Desired, Target, check_bundle_name};

/// Content the hub expected us to hold is gone: reconnect so Hello tells it the truth.
#[derive(Debug)]
struct Resync(String);

/// Largest Assign the spoke accepts (a 16 MiB bundle plus framing).
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
            resources: a
                .resources
                .iter()
                .map(|r| ResourceStatus {
                    api_version: r.api_version.clone(),
                    kind: r.kind.clone(),
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    state: r.state.to_string(),
                    message: r.message.clone(),
                })
                .collect(),
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
            let failed = CachedAssignment {
                bundle: msg.bundle.clone(),
                deployment_id: msg.deployment_id.clone(),
                digest: ContentDigest::parse(&msg.content_digest)
                    .unwrap_or_else(|| ContentDigest::of(b"")),
                keep_resources: false,
                correct_drift: false,
                force: false,
                state: State::ErrApplied,
                message: format!("{e:#}"),
                resources: Vec::new(),
                compare_patches_json: String::new(),
            };
            tracing::warn!(bundle = %msg.bundle, error = %failed.message, "assignment refused");
            self.report(&failed);
        }
        Ok(())
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
        let opts = msg.options.clone().unwrap_or_default();
        let entry = CachedAssignment {
            bundle: msg.bundle.clone(),
            deployment_id: msg.deployment_id.clone(),
            digest: digest.clone(),
            keep_resources: opts.keep_resources,
            correct_drift: opts.correct_drift,
            force: opts.force,
            state: State::WaitApplied,
            message: String::new(),
            resources: Vec::new(),
            compare_patches_json: opts.compare_patches_json.clone(),
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

    async fn unassign(self: &Arc<Self>, bundle: String) -> Result<()> {
        let _serial = self.apply_lock.lock().await;
        let keep = self.cache().get(&bundle).is_some_and(|a| a.keep_resources);
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

/// Runs until the process is stopped.
pub async fn run_forever(agent: Arc<Agent>) {
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
        match sync_once(&agent).await {
            Ok(()) => tracing::info!(hub = %agent.hub, "hub closed the stream"),
            Err(e) => {
                tracing::warn!(hub = %agent.hub, error = %format!("{e:#}"), "sync stream failed")
            }
        }
        if let Ok(mut o) = agent.outbound.lock() {
            *o = None;
        }
        if started.elapsed() >= STABLE_CONNECTION {
            backoff.reset();
        }
        let delay = backoff.next_delay();
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

/// Refuses to dial with an expired certificate, saying how to recover.
fn check_not_expired(agent: &Agent) -> Result<()> {
    let (_, not_after) = Identity::validity(&agent.state.leaf_der()?)?;
    if not_after <= unix_now() {
        bail!(
            "the client certificate of cluster {} expired (unix time {not_after}) and can no longer be renewed; \
             to re-join, ask an admin to run `flotilla cluster delete {}` and `flotilla token create`, \
             then remove {} and start again with --join",
            agent.cluster,
            agent.cluster,
            agent.state.path().display()
        );
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
    check_not_expired(agent)?;
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
        .map_err(|s| anyhow!("hub refused the stream: {}", s.message()))?
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
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(renewal.due), if renewal.pending.is_none() => {
                renewal.start(agent)?;
            }
            msg = inbound.message() => {
                let msg: Option<HubMsg> = msg.map_err(|s| anyhow!("stream: {}", s.message()))?;
                let Some(msg) = msg else { return Ok(()) };
                match msg.msg {
                    Some(hub_msg::Msg::Assign(a)) => queue_work(&work, Work::Assign(a)).await?,
                    Some(hub_msg::Msg::Unassign(u)) => queue_work(&work, Work::Unassign(u.bundle)).await?,
                    Some(hub_msg::Msg::Certificate(c)) => {
                        renewal.install(agent, &c.cert_chain_pem, &c.ca_bundle_pem)?
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
    Unassign(String),
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
            Work::Unassign(bundle) => agent.unassign(bundle).await.map_err(|e| format!("{e:#}")),
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
