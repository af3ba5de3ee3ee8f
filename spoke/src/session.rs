//! The agent: one Sync stream to the hub at a time, reconnecting with jittered backoff,
//! and an enforcement loop that keeps the target equal to the cached desired state
//! whether or not the hub is reachable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use flotilla_model::{ContentDigest, Labels, State};
use flotilla_proto::v1::{
    Applied, Hello, HubMsg, SpokeMsg, Status as StatusMsg, hub_msg, spoke_client::SpokeClient,
    spoke_msg,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::Backoff;
use crate::state_dir::{CachedAssignment, StateDir};
use crate::target::{Target, check_bundle_name};

/// Largest Assign the spoke accepts (a 16 MiB bundle plus framing).
const MAX_INBOUND_MESSAGE: usize = 20 * 1024 * 1024;
/// A connection that lasted this long resets the backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

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
}

impl Agent {
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
        })
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
            resources: Vec::new(),
            cluster_name: String::new(),
        }));
    }

    /// Applies one assignment to the target. Blocking (file I/O).
    fn assign(&self, msg: flotilla_proto::v1::Assign) -> Result<()> {
        check_bundle_name(&msg.bundle)?;
        let digest = ContentDigest::parse(&msg.content_digest)
            .ok_or_else(|| anyhow!("malformed content digest {:?}", msg.content_digest))?;
        let content = if msg.content.is_empty() {
            self.state.load_content(&digest).ok_or_else(|| {
                anyhow!("hub assumed we hold {digest}, but it is not in the cache")
            })?
        } else {
            if ContentDigest::of(&msg.content) != digest {
                bail!("content of bundle {} does not match its digest", msg.bundle);
            }
            msg.content.to_vec()
        };
        let opts = msg.options.unwrap_or_default();
        let mut entry = CachedAssignment {
            bundle: msg.bundle.clone(),
            deployment_id: msg.deployment_id.clone(),
            digest: digest.clone(),
            keep_resources: opts.keep_resources,
            correct_drift: opts.correct_drift,
            state: State::WaitApplied,
            message: String::new(),
        };
        self.report(&entry);
        self.state.save_content(&digest, &content)?;
        match self.target.apply(&msg.bundle, &msg.deployment_id, &content) {
            Ok(()) => {
                entry.state = State::Ready;
                tracing::info!(bundle = %msg.bundle, deployment = %msg.deployment_id, "applied");
            }
            Err(e) => {
                entry.state = State::ErrApplied;
                entry.message = format!("{e:#}");
                tracing::warn!(bundle = %msg.bundle, error = %entry.message, "apply failed");
            }
        }
        self.report(&entry);
        self.update_cache(|c| {
            c.insert(entry.bundle.clone(), entry);
        })
    }

    fn unassign(&self, bundle: &str) -> Result<()> {
        let keep = self.cache().get(bundle).is_some_and(|a| a.keep_resources);
        if !keep {
            self.target.remove(bundle)?;
        }
        tracing::info!(bundle, kept = keep, "unassigned");
        self.update_cache(|c| {
            c.remove(bundle);
        })
    }

    /// Compares the target with the cache; re-applies drifted bundles that opted into
    /// correctDrift, reports the others Modified. Blocking.
    pub fn enforce(&self) {
        for a in self.cache().into_values() {
            let Some(content) = self.state.load_content(&a.digest) else {
                continue;
            };
            let in_sync = self.target.in_sync(&a.bundle, &a.deployment_id, &content);
            let next = match (in_sync, a.state, a.correct_drift) {
                (true, State::Modified, _) => Some((State::Ready, String::new())),
                (true, _, _) => None,
                (false, _, true) => {
                    match self.target.apply(&a.bundle, &a.deployment_id, &content) {
                        Ok(()) => {
                            tracing::info!(bundle = %a.bundle, "drift corrected");
                            (a.state != State::Ready).then(|| (State::Ready, String::new()))
                        }
                        Err(e) => {
                            Some((State::ErrApplied, format!("re-applying after drift: {e:#}")))
                        }
                    }
                }
                (false, State::Modified, false) => None,
                (false, _, false) => Some((
                    State::Modified,
                    "target differs from the applied deployment".to_string(),
                )),
            };
            if let Some((state, message)) = next {
                let updated = CachedAssignment {
                    state,
                    message,
                    ..a
                };
                self.report(&updated);
                let _ = self.update_cache(|c| {
                    c.insert(updated.bundle.clone(), updated);
                });
            }
        }
    }
}

/// Runs until the process is stopped.
pub async fn run_forever(agent: Arc<Agent>) {
    let enforcer = agent.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(enforcer.enforce_every);
        loop {
            tick.tick().await;
            let a = enforcer.clone();
            let _ = tokio::task::spawn_blocking(move || a.enforce()).await;
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

async fn sync_once(agent: &Arc<Agent>) -> Result<()> {
    let creds = agent.state.credentials()?;
    let channel = flotilla_identity::connect(&agent.hub, &creds).await?;
    let mut client = SpokeClient::new(channel).max_decoding_message_size(MAX_INBOUND_MESSAGE);
    let cache = agent.cache();
    let (tx, rx) = mpsc::channel(256);
    let hello = Hello {
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
    tracing::info!(hub = %agent.hub, cluster = %agent.cluster, "connected");
    // Tell the hub what happened while we were away.
    for a in cache.values() {
        agent.report(a);
    }
    let mut heartbeat = tokio::time::interval(agent.heartbeat);
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let msg: Option<HubMsg> = msg.map_err(|s| anyhow!("stream: {}", s.message()))?;
                let Some(msg) = msg else { return Ok(()) };
                handle(agent, msg).await?;
            }
            _ = heartbeat.tick() => {
                agent.send(spoke_msg::Msg::Heartbeat(Default::default()));
            }
        }
    }
}

async fn handle(agent: &Arc<Agent>, msg: HubMsg) -> Result<()> {
    let a = agent.clone();
    match msg.msg {
        Some(hub_msg::Msg::Assign(assign)) => {
            let bundle = assign.bundle.clone();
            tokio::task::spawn_blocking(move || a.assign(assign))
                .await
                .context("apply task")?
                .with_context(|| format!("assignment of {bundle}"))
        }
        Some(hub_msg::Msg::Unassign(u)) => {
            tokio::task::spawn_blocking(move || a.unassign(&u.bundle))
                .await
                .context("unassign task")?
        }
        Some(hub_msg::Msg::Certificate(_)) | Some(hub_msg::Msg::Ping(_)) | None => Ok(()),
    }
}
