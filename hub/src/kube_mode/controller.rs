//! The kube-runtime controllers of Kubernetes mode: one per kind (Fleet's `GitRepo` and
//! `ClusterGroup`, flotilla's `Source`, `ClusterGroup` and `Cluster`), each a `Controller`
//! over its reflector of one namespace. A reconcile maps the object
//! ([`super::mapping`]), reads the Secrets it names, hands the result to the
//! [`ConfigSink`] when it differs from what was last applied, writes the status
//! ([`super::status`]) when it changed, and returns when to look again as an
//! [`Action`]. Errors go to [`error_policy`], which retries each object with
//! exponential backoff.
//!
//! Beside them runs the [`bundle_status`] writer, which learns from these reconciles
//! which object each source came from.
//!
//! Deletion goes through a finalizer (`flotilla.dev/hub`), so a source is removed from
//! the hub even when its object is deleted while the hub is down. The price, as with
//! Fleet's own controllers: an object cannot be deleted while no hub runs, unless its
//! finalizer is removed by hand.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_kube_types::{fleet, flotilla};
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{self, Event as Finalized};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::bundle_status::{self, Owners, owner_of};
use super::mapping::{self, MapError, SourceDraft};
use super::status::{self, Outcome};
use super::{
    ClusterLabels, ClusterView, ConfigSink, GroupSpec, KubeModeConfig, SinkError, SourceConfig,
};
use crate::records::{now_unix, rfc3339};

/// The finalizer the hub puts on every object it applied.
pub const FINALIZER: &str = "flotilla.dev/hub";

/// A source that is not Ready yet is looked at this often, so its condition turns Ready
/// soon after the hub publishes it.
const PENDING_RECHECK: Duration = Duration::from_secs(2);
/// Ready objects are looked at again this often (Secrets are not watched: a changed
/// Secret is picked up at the latest then).
const RESYNC: Duration = Duration::from_secs(60);
/// A missing Secret or an unregistered cluster may appear without the object changing.
const WAITING_RECHECK: Duration = Duration::from_secs(15);
/// The error policy's backoff: doubled per consecutive failure of one object.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum KubeModeError {
    #[error("reading kubeconfig {path}: {error}")]
    Kubeconfig { path: String, error: String },
    #[error("building the Kubernetes client: {0}")]
    Client(String),
}

/// What one reconcile can fail with; the error policy retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading Secret {namespace}/{name}: {source}")]
    Secret {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("writing the status of {kind} {namespace}/{name}: {source}")]
    Status {
        kind: &'static str,
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("the hub is unavailable: {0}")]
    Sink(SinkError),
}

/// The finalizer's wrapper around [`ReconcileError`], which is what `Controller` sees.
#[derive(Debug, thiserror::Error)]
#[error("{kind} {namespace}/{name}: {source}")]
pub struct Failed {
    kind: &'static str,
    namespace: String,
    name: String,
    source: Box<finalizer::Error<ReconcileError>>,
}

/// Runs every controller until the process stops, or until the future is dropped: with
/// replicas, `cli` runs it only while this replica leads (`ha::each_term`), so one
/// replica applies the objects and writes their status. Returns only when the client
/// cannot be built.
pub async fn run<S: ConfigSink>(config: KubeModeConfig, sink: Arc<S>) -> Result<(), KubeModeError> {
    let client = client(&config).await?;
    let owners = Arc::new(Owners::default());
    let ctx = Arc::new(Ctx {
        sink: sink.clone(),
        client: client.clone(),
        namespace: config.namespace.clone(),
        applied: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        owners: owners.clone(),
    });
    tracing::info!(namespace = %ctx.namespace, "kubernetes mode: watching GitRepos, Sources, ClusterGroups and Clusters");
    futures::join!(
        bundle_status::run(client, config.namespace, sink, owners),
        control::<fleet::GitRepo, S>(ctx.clone()),
        control::<flotilla::Source, S>(ctx.clone()),
        control::<fleet::ClusterGroup, S>(ctx.clone()),
        control::<flotilla::ClusterGroup, S>(ctx.clone()),
        control::<flotilla::Cluster, S>(ctx.clone()),
    );
    Ok(())
}

async fn client(config: &KubeModeConfig) -> Result<Client, KubeModeError> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let bad = |error: String| KubeModeError::Kubeconfig {
                path: path.display().to_string(),
                error,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| bad(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeModeError::Client(e.to_string()))?,
    };
    Client::try_from(kube_config).map_err(|e| KubeModeError::Client(e.to_string()))
}

/// Shared by the reconciles of every kind.
struct Ctx<S> {
    sink: Arc<S>,
    client: Client,
    namespace: String,
    /// What each object last applied to the sink, so an unchanged object (every resync,
    /// every status write) does not call it again. Written only by reconciles.
    applied: Mutex<HashMap<(Kind, String), Applied>>,
    /// Consecutive failures per object, for the error policy's backoff.
    failures: Mutex<HashMap<(Kind, String), u32>>,
    /// The object each source came from, for the `BundleStatus` writer.
    owners: Arc<Owners>,
}

/// What a configuration object is to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Source,
    Group,
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Applied {
    Source(Box<SourceConfig>),
    Group(GroupSpec),
    Cluster(ClusterLabels),
}

/// What an object asks of the hub, before its Secrets are read.
pub enum Desired {
    Source(Box<SourceDraft>),
    Group(GroupSpec),
    Cluster(ClusterLabels),
}

/// One kind of configuration object.
trait Configured:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    /// The kind's name in messages; with the API group, since Fleet and flotilla both
    /// have a `ClusterGroup`.
    const NAME: &'static str;
    fn desired(&self) -> Result<Desired, MapError>;
    /// The status after `outcome`, or None when it equals the one the object has.
    fn next_status(
        &self,
        outcome: &Outcome,
        view: Option<&ClusterView>,
        now: &str,
    ) -> Option<serde_json::Value>;
}

/// The status of a kind whose status is a `ConfigStatus`, when it changed.
fn next_config_status(
    old: Option<&flotilla::ConfigStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    now: &str,
) -> Option<serde_json::Value> {
    let new = status::config_status(old, generation, outcome, now);
    (old != Some(&new)).then(|| serde_json::to_value(new).unwrap_or_default())
}

impl Configured for fleet::GitRepo {
    const KIND: Kind = Kind::Source;
    const NAME: &'static str = "GitRepo.fleet.cattle.io";
    fn desired(&self) -> Result<Desired, MapError> {
        mapping::fleet_git_repo(&self.name_any(), &self.spec).map(|d| Desired::Source(Box::new(d)))
    }
    fn next_status(
        &self,
        o: &Outcome,
        _: Option<&ClusterView>,
        now: &str,
    ) -> Option<serde_json::Value> {
        next_config_status(self.status.as_ref(), self.metadata.generation, o, now)
    }
}

impl Configured for flotilla::Source {
    const KIND: Kind = Kind::Source;
    const NAME: &'static str = "Source.flotilla.dev";
    fn desired(&self) -> Result<Desired, MapError> {
        mapping::source(&self.name_any(), &self.spec).map(|d| Desired::Source(Box::new(d)))
    }
    fn next_status(
        &self,
        o: &Outcome,
        _: Option<&ClusterView>,
        now: &str,
    ) -> Option<serde_json::Value> {
        next_config_status(self.status.as_ref(), self.metadata.generation, o, now)
    }
}

impl Configured for fleet::ClusterGroup {
    const KIND: Kind = Kind::Group;
    const NAME: &'static str = "ClusterGroup.fleet.cattle.io";
    fn desired(&self) -> Result<Desired, MapError> {
        mapping::fleet_cluster_group(&self.name_any(), self.labels(), &self.spec)
            .map(Desired::Group)
    }
    fn next_status(
        &self,
        o: &Outcome,
        _: Option<&ClusterView>,
        now: &str,
    ) -> Option<serde_json::Value> {
        next_config_status(self.status.as_ref(), self.metadata.generation, o, now)
    }
}

impl Configured for flotilla::ClusterGroup {
    const KIND: Kind = Kind::Group;
    const NAME: &'static str = "ClusterGroup.flotilla.dev";
    fn desired(&self) -> Result<Desired, MapError> {
        mapping::cluster_group(&self.name_any(), self.labels(), &self.spec).map(Desired::Group)
    }
    fn next_status(
        &self,
        o: &Outcome,
        _: Option<&ClusterView>,
        now: &str,
    ) -> Option<serde_json::Value> {
        next_config_status(self.status.as_ref(), self.metadata.generation, o, now)
    }
}

impl Configured for flotilla::Cluster {
    const KIND: Kind = Kind::Cluster;
    const NAME: &'static str = "Cluster.flotilla.dev";
    fn desired(&self) -> Result<Desired, MapError> {
        mapping::cluster(&self.name_any(), &self.spec).map(Desired::Cluster)
    }
    fn next_status(
        &self,
        o: &Outcome,
        view: Option<&ClusterView>,
        now: &str,
    ) -> Option<serde_json::Value> {
        let old = self.status.as_ref();
        let new = status::cluster_status(old, self.metadata.generation, o, view, now);
        (old != Some(&new)).then(|| serde_json::to_value(new).unwrap_or_default())
    }
}

/// One kind's reflector and controller, until the process stops.
async fn control<K: Configured, S: ConfigSink>(ctx: Arc<Ctx<S>>) {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // `Controller::new` keeps a reflector store of the kind and restarts its watch with
    // client-go's backoff when the API server fails.
    Controller::new(api, watcher::Config::default())
        .run(reconcile::<K, S>, error_policy::<K, S>, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(e) => tracing::warn!(kind = K::NAME, "{e}"),
            }
        })
        .await;
}

async fn reconcile<K: Configured, S: ConfigSink>(
    obj: Arc<K>,
    ctx: Arc<Ctx<S>>,
) -> Result<Action, Failed> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let name = obj.name_any();
    let result = finalizer::finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalized::Apply(o) => apply(&api, &o, &ctx).await,
            Finalized::Cleanup(o) => cleanup::<K, S>(&o.name_any(), &ctx).await,
        }
    })
    .await;
    let key = (K::KIND, name.clone());
    match result {
        Ok(action) => {
            lock(&ctx.failures).remove(&key);
            Ok(action)
        }
        Err(e) => Err(Failed {
            kind: K::NAME,
            namespace: ctx.namespace.clone(),
            name,
            source: Box::new(e),
        }),
    }
}

/// Retries a failed object after 0.5 s, 1 s, 2 s ... up to 5 minutes.
fn error_policy<K: Configured, S: ConfigSink>(
    obj: Arc<K>,
    err: &Failed,
    ctx: Arc<Ctx<S>>,
) -> Action {
    let mut failures = lock(&ctx.failures);
    let n = failures.entry((K::KIND, obj.name_any())).or_insert(0);
    *n = n.saturating_add(1);
    let delay = backoff(*n);
    tracing::warn!(retry_in = ?delay, "{err}");
    Action::requeue(delay)
}

/// The delay before retry number `failures` (1 after the first failure).
fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

async fn apply<K: Configured, S: ConfigSink>(
    api: &Api<K>,
    obj: &K,
    ctx: &Ctx<S>,
) -> Result<Action, ReconcileError> {
    let name = obj.name_any();
    let mut view = None;
    let (outcome, next) = match obj.desired() {
        // Nothing outside the object can fix it: wait for it to change.
        Err(e) => (Outcome::stalled(e.to_string()), None),
        Ok(Desired::Source(draft)) => {
            let unsupported = draft.unsupported.clone();
            let secrets = read_secrets(ctx, &draft.secret_names()).await?;
            match mapping::resolve(*draft, |n| secrets.get(n).cloned()) {
                Err(e) => (Outcome::stalled(e.to_string()), Some(WAITING_RECHECK)),
                Ok(config) => match apply_once(
                    ctx,
                    &name,
                    Applied::Source(Box::new(config.clone())),
                    || ctx.sink.apply_source(config),
                )
                .await?
                {
                    Some(refused) => (refused, None),
                    None => {
                        if let Some(owner) = owner_of(obj) {
                            ctx.owners.set(&name, owner);
                        }
                        let o = Outcome::of_source(ctx.sink.source_state(&name));
                        let next = if o.is_ready() {
                            RESYNC
                        } else {
                            PENDING_RECHECK
                        };
                        (o.with_unsupported(unsupported), Some(next))
                    }
                },
            }
        }
        Ok(Desired::Group(group)) => {
            match apply_once(ctx, &name, Applied::Group(group.clone()), || {
                ctx.sink.apply_group(group)
            })
            .await?
            {
                Some(refused) => (refused, None),
                None => (Outcome::applied(), Some(RESYNC)),
            }
        }
        Ok(Desired::Cluster(labels)) => {
            match apply_once(ctx, &name, Applied::Cluster(labels.clone()), || {
                ctx.sink.set_cluster_labels(&name, labels)
            })
            .await?
            {
                Some(refused) => (refused, None),
                None => {
                    view = ctx.sink.cluster_view(&name);
                    let o = Outcome::of_cluster(view.as_ref());
                    // Connection state changes without the object changing.
                    (o, Some(WAITING_RECHECK))
                }
            }
        }
    };
    if let Some(status) = obj.next_status(&outcome, view.as_ref(), &rfc3339(now_unix())) {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map_err(|source| ReconcileError::Status {
            kind: K::NAME,
            namespace: ctx.namespace.clone(),
            name: name.clone(),
            source,
        })?;
    }
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

/// Calls the sink unless `what` is what this object last applied. `Some(outcome)`
/// when the hub refused it.
async fn apply_once<S: ConfigSink, F>(
    ctx: &Ctx<S>,
    name: &str,
    what: Applied,
    call: impl FnOnce() -> F,
) -> Result<Option<Outcome>, ReconcileError>
where
    F: Future<Output = Result<(), SinkError>>,
{
    let key = (kind_of(&what), name.to_string());
    if lock(&ctx.applied).get(&key) == Some(&what) {
        return Ok(None);
    }
    match call().await {
        Ok(()) => {
            lock(&ctx.applied).insert(key, what);
            Ok(None)
        }
        Err(SinkError::Refused(why)) => {
            Ok(Some(Outcome::stalled(format!("the hub refused it: {why}"))))
        }
        Err(e) => Err(ReconcileError::Sink(e)),
    }
}

fn kind_of(a: &Applied) -> Kind {
    match a {
        Applied::Source(_) => Kind::Source,
        Applied::Group(_) => Kind::Group,
        Applied::Cluster(_) => Kind::Cluster,
    }
}

async fn cleanup<K: Configured, S: ConfigSink>(
    name: &str,
    ctx: &Ctx<S>,
) -> Result<Action, ReconcileError> {
    let sink = &ctx.sink;
    match K::KIND {
        Kind::Source => {
            ctx.owners.remove(name);
            sink.remove_source(name).await
        }
        Kind::Group => sink.remove_group(name).await,
        Kind::Cluster => {
            sink.set_cluster_labels(name, ClusterLabels::default())
                .await
        }
    }
    .map_err(ReconcileError::Sink)?;
    lock(&ctx.applied).remove(&(K::KIND, name.to_string()));
    Ok(Action::await_change())
}

/// The `data` of each named Secret that exists in the namespace.
async fn read_secrets<S>(
    ctx: &Ctx<S>,
    names: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, Vec<u8>>>, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut out = BTreeMap::new();
    for name in names {
        let secret = api
            .get_opt(name)
            .await
            .map_err(|source| ReconcileError::Secret {
                namespace: ctx.namespace.clone(),
                name: name.clone(),
                source,
            })?;
        if let Some(secret) = secret {
            let data = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            out.insert(name.clone(), data);
        }
    }
    Ok(out)
}

/// The maps above hold plain data, so a panic elsewhere cannot leave them half-written.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let delays: Vec<u64> = [1, 2, 3, 4, 10, 11, 100, u32::MAX]
            .into_iter()
            .map(|n| backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 256_000, 300_000, 300_000, 300_000]
        );
    }
}
