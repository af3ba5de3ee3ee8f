//! The Kubernetes target: server-side apply (field manager `flotilla`) through kube-rs's
//! dynamic API, with an inventory per bundle in the cluster for pruning, health from
//! object status, drift as field-level diffs, watches that wake the agent, a spoke
//! policy checked before anything is applied, and Kubernetes Events that tell what was
//! done.
//!
//! The pure parts have their own modules: `manifest` (parsing, stamping), `order`
//! (phases), `policy`, `health`, `drift`, `report` (folding verdicts into an
//! [`Outcome`]). `discovery`, `inventory`, `watch`, `live` and `events` own the API
//! calls of their concern; this module sequences them. Checks read live objects from the
//! watches' caches (`live`), so an idle spoke makes no request but its watches.
//!
//! **Invariant:** a bundle is checked whole (parse, kinds, policy) before its first
//! object is applied, and the inventory is written before objects are created, so a
//! crash half-way never leaves an object that no inventory tracks.

mod discovery;
mod drift;
mod events;
mod health;
mod hooks;
mod inventory;
mod live;
mod manifest;
mod order;
mod policy;
mod report;
mod watch;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::Value;
use tokio::sync::Notify;

use self::discovery::{Resolved, Resolver};
use self::events::{BundleEvent, Events};
use self::health::Health;
use self::hooks::{Hook, HookPhase, Role};
use self::inventory::Inventory;
use self::manifest::{BUNDLE_ANNOTATION, Manifest, ObjectRef};
use self::order::Phase;
use self::report::Verdict;
use super::{Applier, ClusterCapabilities, Desired, Outcome};

pub use self::events::REPORTING_CONTROLLER;
pub use self::inventory::NAMESPACE as INVENTORY_NAMESPACE;
pub use self::policy::{GroupKind, KindName, Policy, PolicyError, PolicySpec};

/// The server-side apply field manager.
pub const FIELD_MANAGER: &str = "flotilla";
/// How long a CRD may take to become Established.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);
/// Server-side applies in flight at once within one phase of a bundle. Sixteen keeps a
/// 2-core API server busy without queueing behind its max-in-flight limits (400 by
/// default), and a bundle's first apply several times faster than one at a time.
const APPLY_CONCURRENCY: usize = 16;

/// How to reach the cluster and what to refuse.
#[derive(Debug, Clone, Default)]
pub struct KubeOptions {
    /// A kubeconfig file; None infers (`KUBECONFIG`, `~/.kube/config`, in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// Resolved against the cluster's discovery at start.
    pub policy: PolicySpec,
    /// This cluster's name, which the Events the spoke records carry as their
    /// reporting instance.
    pub cluster: String,
}

/// Where a kubeconfig would be found without `--kubeconfig`, if anywhere: the first
/// `KUBECONFIG` entry that exists, `~/.kube/config`, or the in-cluster service account.
pub fn config_available(explicit: Option<&std::path::Path>) -> bool {
    if explicit.is_some() {
        return true;
    }
    if let Some(paths) = std::env::var_os("KUBECONFIG")
        && std::env::split_paths(&paths).any(|p| p.is_file())
    {
        return true;
    }
    if let Some(home) = std::env::var_os("HOME")
        && PathBuf::from(home).join(".kube/config").is_file()
    {
        return true;
    }
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file()
}

/// The client configuration from a kubeconfig file, or inferred without one
/// (`KUBECONFIG`, `~/.kube/config`, in-cluster).
pub async fn client_config(kubeconfig: Option<&std::path::Path>) -> Result<Config> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))
        }
        None => Config::infer()
            .await
            .context("no kubeconfig (KUBECONFIG, ~/.kube/config) or in-cluster config"),
    }
}

/// A bundle the spoke policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// What an apply did, for the caller's Events.
struct Applied {
    outcome: Outcome,
    objects: usize,
    /// The objects deleted because the bundle no longer holds them.
    pruned: Vec<ObjectRef>,
    inventory_uid: Option<String>,
}

/// What the last `check` of a bundle found drifted, so that the next apply of the same
/// deployment is recorded as a correction of that drift.
struct DriftSeen {
    deployment_id: String,
    summary: String,
}

/// One object of a planned apply.
struct Planned {
    r: ObjectRef,
    resolved: Resolved,
    phase: Phase,
    /// The manifest as applied: stamped with flotilla's label, annotation and namespace.
    value: Value,
    /// Set for a Helm hook (`hooks`), which runs in its own phase and is not checked
    /// for drift.
    hook: Option<Hook>,
}

pub struct KubeApplier {
    client: Client,
    resolver: Resolver,
    watches: watch::Watches,
    policy: Policy,
    notify: Arc<Notify>,
    dirty: watch::Dirty,
    /// What the spoke last knew of each applied object, so checks can trust the caches.
    live: live::LiveObjects,
    events: Events,
    /// Bundle → the drift its last `check` found. Written by `check` and `apply`.
    drift_seen: Mutex<HashMap<String, DriftSeen>>,
}

impl KubeApplier {
    /// Builds a client from the kubeconfig (or infers one) and checks that the server
    /// answers discovery.
    pub async fn connect(opts: KubeOptions) -> Result<Self> {
        let config = client_config(opts.kubeconfig.as_deref()).await?;
        let client = Client::try_from(config).context("building the Kubernetes client")?;
        KubeApplier::with_policy(client, &opts.policy, &opts.cluster).await
    }

    /// An applier enforcing `spec`, resolved against the API server's discovery. A
    /// policy that denies kinds cannot be resolved without discovery, so then an API
    /// server that does not answer is an error (the policy fails closed); otherwise the
    /// spoke starts anyway and each bundle reports its own error until the server
    /// answers.
    pub async fn with_policy(client: Client, spec: &PolicySpec, cluster: &str) -> Result<Self> {
        let mut target = KubeApplier::new(client, Policy::default(), cluster);
        let discovered = target.resolver.refresh().await;
        if !spec.deny_kinds.is_empty() {
            discovered.context("resolving the spoke policy's kinds")?;
        } else if let Err(e) = discovered {
            tracing::warn!(error = %format!("{e:#}"), "the Kubernetes API server does not answer yet");
        }
        target.policy = spec.resolve(&target.resolver.served_kinds())?;
        Ok(target)
    }

    /// An applier for `cluster` (the name its Events carry). Starts the Events
    /// publisher, so it must be called on a tokio runtime.
    pub fn new(client: Client, policy: Policy, cluster: &str) -> Self {
        let notify = Arc::new(Notify::new());
        let dirty = watch::Dirty::default();
        KubeApplier {
            resolver: Resolver::new(client.clone()),
            watches: watch::Watches::new(client.clone(), notify.clone(), dirty.clone()),
            events: Events::start(client.clone(), events::reporter(cluster)),
            client,
            policy,
            notify,
            dirty,
            live: live::LiveObjects::default(),
            drift_seen: Mutex::new(HashMap::new()),
        }
    }

    fn drift_seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, DriftSeen>> {
        // The map holds no invariant a panic could break half-way.
        self.drift_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies, then records what happened as Events (best-effort: recording never
    /// changes the result).
    async fn apply_recorded(&self, d: &Desired) -> Result<Outcome> {
        let (bundle, id) = (d.bundle.as_str(), d.deployment_id.as_str());
        let drift = self
            .drift_seen()
            .remove(bundle)
            .filter(|seen| seen.deployment_id == id);
        match self.apply_bundle(d).await {
            Ok(done) => {
                let event = match drift {
                    Some(seen) => BundleEvent::drift_corrected(bundle, id, &seen.summary),
                    None => BundleEvent::applied(bundle, id, done.objects),
                };
                self.events.record(event.on(done.inventory_uid.clone()));
                if !done.pruned.is_empty() {
                    self.events.record(
                        BundleEvent::pruned(bundle, Some(id), &done.pruned).on(done.inventory_uid),
                    );
                }
                Ok(done.outcome)
            }
            Err(e) => {
                self.events
                    .record(if e.downcast_ref::<Refused>().is_some() {
                        BundleEvent::policy_refused(bundle, id, &e)
                    } else {
                        BundleEvent::apply_failed(bundle, id, &e)
                    });
                Err(e)
            }
        }
    }

    /// Checks, and remembers any drift for the next apply's Event. Drift that will not be
    /// corrected (no `correctDrift`) is recorded now, once while it stays the same.
    async fn check_recorded(&self, d: &Desired) -> Result<Outcome> {
        let out = self.check_bundle(d).await?;
        let mut seen = self.drift_seen();
        if out.state == flotilla_model::State::Modified {
            let summary = events::drift_summary(&out.resources);
            if !d.options.correct_drift {
                self.events.record(BundleEvent::drift_detected(
                    &d.bundle,
                    &d.deployment_id,
                    &summary,
                ));
            }
            seen.insert(
                d.bundle.clone(),
                DriftSeen {
                    deployment_id: d.deployment_id.clone(),
                    summary,
                },
            );
        } else if seen.remove(&d.bundle).is_some() && !d.options.correct_drift {
            // The drift went away by hand: the same drift coming back is news again.
            self.events.forget(&d.bundle);
        }
        Ok(out)
    }

    fn api(&self, p: &Planned) -> Api<DynamicObject> {
        if p.resolved.namespaced {
            Api::namespaced_with(self.client.clone(), &p.r.namespace, &p.resolved.ar)
        } else {
            Api::all_with(self.client.clone(), &p.resolved.ar)
        }
    }

    /// Parses, resolves, stamps, checks against the policy and orders a bundle. Nothing
    /// is written.
    async fn plan(&self, d: &Desired) -> Result<Vec<Planned>> {
        let bundle = &d.bundle;
        let manifests: Vec<(Manifest, Option<Hook>)> = manifest::parse(bundle, &d.content)
            .map_err(|e| anyhow!(e))?
            .into_iter()
            .filter_map(|m| match hooks::role(&m.value) {
                Role::Resource => Some((m, None)),
                Role::Hook(h) => Some((m, Some(h))),
                Role::Skipped(events) => {
                    tracing::debug!(bundle = %bundle, object = %m.r, hook = %events, "not applying a Helm hook of an event flotilla does not run");
                    None
                }
            })
            .collect();
        let crds: Vec<&Value> = manifests
            .iter()
            .map(|(m, _)| m)
            .filter(|m| {
                m.r.group() == "apiextensions.k8s.io" && m.r.kind == "CustomResourceDefinition"
            })
            .map(|m| &m.value)
            .collect();
        let lookup = |m: &Manifest| {
            let (g, v, k) = (m.r.group(), m.r.version(), m.r.kind.as_str());
            self.resolver
                .cached(g, v, k)
                .or_else(|| crds.iter().find_map(|c| discovery::from_crd(c, g, v, k)))
        };
        if manifests.iter().any(|(m, _)| lookup(m).is_none()) {
            self.resolver
                .refresh()
                .await
                .with_context(|| format!("bundle {bundle}: refreshing API discovery"))?;
        }
        let mut planned = Vec::with_capacity(manifests.len());
        let mut refusals = Vec::new();
        for (m, hook) in &manifests {
            let Some(resolved) = lookup(m) else {
                return Err(anyhow!(
                    "bundle {bundle}: {}: the API server does not serve kind {} in {}",
                    m.r,
                    m.r.kind,
                    m.r.api_version
                ));
            };
            let mut r = m.r.clone();
            if resolved.namespaced {
                if r.namespace.is_empty() {
                    r.namespace = "default".into();
                }
            } else {
                r.namespace.clear();
            }
            if let Some(why) = self.policy.refusal(&r, resolved.namespaced, &m.value) {
                refusals.push(why);
            }
            let mut value = m.value.clone();
            manifest::stamp(
                &mut value,
                bundle,
                resolved.namespaced.then_some(r.namespace.as_str()),
            );
            planned.push(Planned {
                phase: order::phase(r.group(), &r.kind, resolved.namespaced),
                r,
                resolved,
                value,
                hook: hook.clone(),
            });
        }
        if !refusals.is_empty() {
            return Err(Refused(format!(
                "bundle {bundle} refused by spoke policy, nothing applied: {}",
                refusals.join("; ")
            ))
            .into());
        }
        planned.sort_by_key(|p| p.phase);
        Ok(planned)
    }

    async fn apply_bundle(&self, d: &Desired) -> Result<Applied> {
        let bundle = &d.bundle;
        let id = &d.deployment_id;
        let plan = self.plan(d).await?;
        inventory::ensure_namespace(&self.client)
            .await
            .with_context(|| format!("bundle {bundle}"))?;
        let (old, hooks_ran) = inventory::load(&self.client, bundle)
            .await?
            .map(|i| (i.objects, i.hooks_ran))
            .unwrap_or_default();
        let new: Vec<ObjectRef> = plan.iter().map(|p| p.r.clone()).collect();
        let mut inv = Inventory {
            bundle: bundle.clone(),
            deployment_id: id.clone(),
            objects: inventory::union(&old, &new),
            hooks_ran,
            uid: None,
        };
        inventory::store(&self.client, &inv).await?;

        let declared: BTreeSet<&str> = plan
            .iter()
            .filter(|p| p.phase == Phase::Namespace)
            .map(|p| p.r.name.as_str())
            .collect();
        let used: BTreeSet<&str> = plan
            .iter()
            .filter(|p| p.resolved.namespaced)
            .map(|p| p.r.namespace.as_str())
            .collect();
        let mut params = PatchParams::apply(FIELD_MANAGER);
        // correctDrift means flotilla's values win, also over a field someone took over
        // by hand before this revision arrived.
        params.force = d.options.force || d.options.correct_drift;
        // Hooks run once per deployment: not again when the same deployment is applied
        // again (a retry, a drift correction, a restarted spoke).
        let (resources, pre, post) = split_hooks(&plan);
        let run_pre = !pre.is_empty() && inv.hooks_ran.pre != *id;
        let run_post = !post.is_empty() && inv.hooks_ran.post != *id;
        let mut verdicts = Vec::with_capacity(resources.len());
        let mut rest_prepared = false;
        // The resources are sorted by phase. Phases go one after the other; the objects
        // of one phase do not depend on each other, so they are applied
        // APPLY_CONCURRENCY at a time (an SSA round trip each), and their answers are
        // taken in plan order. Before the first phase after the CRDs: the CRDs are
        // Established, the namespaces exist, and the pre-install hooks have succeeded.
        for phase_objects in resources.chunk_by(|a, b| a.phase == b.phase) {
            if phase_objects[0].phase > Phase::Crd && !rest_prepared {
                rest_prepared = true;
                self.wait_established(bundle, &plan, &mut verdicts).await?;
                self.ensure_namespaces(bundle, used.difference(&declared).copied().collect())
                    .await?;
                if run_pre {
                    self.run_hooks(bundle, &pre, &params).await?;
                    inv.hooks_ran.pre = id.clone();
                    inventory::store(&self.client, &inv).await?;
                }
            }
            let calls: Vec<_> = phase_objects
                .iter()
                .map(|p| self.apply_one(bundle, p, &params))
                .collect();
            let applied: Vec<DynamicObject> = futures::stream::iter(calls)
                .buffered(APPLY_CONCURRENCY)
                .try_collect()
                .await?;
            for (p, live) in phase_objects.iter().zip(applied) {
                self.watches.ensure(&p.resolved.ar);
                self.live.applied(&p.r, &live);
                verdicts.push((
                    p.r.clone(),
                    verdict_of_health(p, &live.data_value(), &d.options.ignore_conditions),
                ));
            }
        }
        if !rest_prepared {
            self.wait_established(bundle, &plan, &mut verdicts).await?;
            self.ensure_namespaces(bundle, used.difference(&declared).copied().collect())
                .await?;
            if run_pre {
                self.run_hooks(bundle, &pre, &params).await?;
                inv.hooks_ran.pre = id.clone();
            }
        }
        let stale = inventory::stale(&old, &new);
        self.live.forget(&stale);
        let pruned = if d.options.keep_resources {
            Vec::new()
        } else {
            self.prune(bundle, stale).await?
        };
        let objects = new.len();
        inv.objects = new;
        let mut inventory_uid = inventory::store(&self.client, &inv).await?;
        if run_post {
            self.wait_healthy(d, &resources, &mut verdicts).await?;
            self.run_hooks(bundle, &post, &params).await?;
            inv.hooks_ran.post = id.clone();
            inventory_uid = inventory::store(&self.client, &inv).await?;
        }
        Ok(Applied {
            outcome: report::summarize(verdicts),
            objects,
            pruned,
            inventory_uid,
        })
    }

    /// Creates the namespaces the bundle uses but does not declare (never pruned).
    async fn ensure_namespaces(&self, bundle: &str, names: Vec<&str>) -> Result<()> {
        for ns in names {
            inventory::ensure_namespace_named(&self.client, ns)
                .await
                .with_context(|| format!("bundle {bundle}"))?;
        }
        Ok(())
    }

    /// Runs Helm hooks one at a time, in order; the first that fails fails the apply,
    /// naming the hook.
    async fn run_hooks(
        &self,
        bundle: &str,
        hooks: &[&Planned],
        params: &PatchParams,
    ) -> Result<()> {
        for p in hooks {
            let Some(hook) = &p.hook else { continue };
            tracing::info!(bundle, hook = %p.r, events = %hook.events, weight = hook.weight, "running Helm hook");
            hooks::run(
                &self.api(p),
                (p.r.group(), &p.r.kind, &p.r.name),
                &p.value,
                hook,
                params,
            )
            .await
            .map_err(|why| {
                anyhow!(
                    "bundle {bundle}: Helm hook {} ({}) failed: {why}",
                    p.r,
                    hook.events
                )
            })?;
        }
        Ok(())
    }

    /// Waits until every resource is healthy (before the post-install hooks), and
    /// records the health it ends with.
    async fn wait_healthy(
        &self,
        d: &Desired,
        resources: &[&Planned],
        verdicts: &mut [(ObjectRef, Verdict)],
    ) -> Result<()> {
        let bundle = &d.bundle;
        let ignored = &d.options.ignore_conditions;
        for (p, slot) in resources.iter().zip(verdicts.iter_mut()) {
            if slot.1 == Verdict::Ready {
                continue;
            }
            let (group, kind) = (p.r.group(), p.r.kind.as_str());
            let mut last = String::new();
            let live = hooks::wait_for(&self.api(p), &p.r.name, |live| {
                let live = live?.data_value();
                let judged = health::without_ignored_conditions(&live, ignored);
                match health::health(group, kind, &judged) {
                    Health::Ready => Some(live),
                    Health::NotReady(why) => {
                        last = why;
                        None
                    }
                }
            })
            .await
            .map_err(|e| {
                anyhow!(
                    "bundle {bundle}: post-install/post-upgrade hooks not run: {} is not healthy: {e} (last seen: {last})",
                    p.r
                )
            })?;
            slot.1 = verdict_of_health(p, &live, ignored);
        }
        Ok(())
    }

    /// One server-side apply.
    async fn apply_one(
        &self,
        bundle: &str,
        p: &Planned,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        self.api(p)
            .patch(&p.r.name, params, &Patch::Apply(&p.value))
            .await
            .map_err(|e| anyhow!("bundle {bundle}: applying {}: {}", p.r, api_error(e)))
    }

    /// Waits until every CRD of the plan is Established, so its kinds can be applied,
    /// and judges each CRD's health again from the object that showed it Established
    /// (the apply's answer came before the API server had established it).
    async fn wait_established(
        &self,
        bundle: &str,
        plan: &[Planned],
        verdicts: &mut [(ObjectRef, Verdict)],
    ) -> Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for p in plan
            .iter()
            .filter(|p| p.phase == Phase::Crd && p.hook.is_none())
        {
            let name = &p.r.name;
            let established = tokio::time::timeout(
                ESTABLISHED_TIMEOUT,
                await_condition(api.clone(), name, conditions::is_crd_established()),
            )
            .await
            .map_err(|_| {
                anyhow!(
                    "bundle {bundle}: {}: not Established after {}s",
                    p.r,
                    ESTABLISHED_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| anyhow!("bundle {bundle}: waiting for {}: {e}", p.r))?;
            let live = established.and_then(|crd| serde_json::to_value(crd).ok());
            if let (Some(live), Some(slot)) = (live, verdicts.iter_mut().find(|(r, _)| *r == p.r)) {
                slot.1 = verdict_of_health(p, &live, &[]);
            }
        }
        Ok(())
    }

    /// Deletes objects in reverse apply order and returns the ones it deleted. An object
    /// whose bundle annotation names another bundle (it moved) is left alone; one that
    /// is already gone is fine.
    async fn prune(&self, bundle: &str, mut objects: Vec<ObjectRef>) -> Result<Vec<ObjectRef>> {
        let phase_of = |r: &ObjectRef| order::phase(r.group(), &r.kind, !r.namespace.is_empty());
        objects.sort_by_key(|r| std::cmp::Reverse(phase_of(r)));
        let mut refreshed = false;
        let mut deleted = Vec::new();
        for r in objects {
            let (g, v, k) = (r.group(), r.version(), r.kind.as_str());
            let resolved = match self.resolver.cached(g, v, k) {
                Some(x) => Some(x),
                None if !refreshed => {
                    refreshed = true;
                    self.resolver
                        .refresh()
                        .await
                        .with_context(|| format!("bundle {bundle}: refreshing API discovery"))?;
                    self.resolver.cached(g, v, k)
                }
                None => None,
            };
            let Some(resolved) = resolved else {
                // The kind is gone (its CRD was removed), and its objects with it.
                tracing::info!(bundle, object = %r, "not pruning: the kind is no longer served");
                continue;
            };
            let api: Api<DynamicObject> = if resolved.namespaced {
                Api::namespaced_with(self.client.clone(), &r.namespace, &resolved.ar)
            } else {
                Api::all_with(self.client.clone(), &resolved.ar)
            };
            let live = api.get_opt(&r.name).await.map_err(|e| {
                anyhow!(
                    "bundle {bundle}: reading {r} before pruning: {}",
                    api_error(e)
                )
            })?;
            let Some(live) = live else { continue };
            let annotations = live.metadata.annotations.as_ref();
            if annotations.and_then(|a| a.get(manifest::KEEP_ANNOTATION.0))
                == Some(&manifest::KEEP_ANNOTATION.1.to_string())
            {
                tracing::info!(bundle, object = %r, "not pruning: helm.sh/resource-policy: keep");
                continue;
            }
            let owner = annotations.and_then(|a| a.get(BUNDLE_ANNOTATION));
            // Only what this bundle applied is deleted. The inventory can also list an
            // object whose apply failed (it is written before the apply, so a crash never
            // strands an object), e.g. one another field manager owns: that one was never
            // ours, and has no annotation naming this bundle.
            match owner {
                Some(o) if o == bundle => {}
                Some(o) => {
                    tracing::info!(bundle, object = %r, owner = %o, "not pruning: another bundle owns it now");
                    continue;
                }
                None => {
                    tracing::info!(bundle, object = %r, "not pruning: flotilla never applied it");
                    continue;
                }
            }
            match api.delete(&r.name, &DeleteParams::background()).await {
                Ok(_) => {
                    tracing::info!(bundle, object = %r, "pruned");
                    deleted.push(r);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(anyhow!("bundle {bundle}: pruning {r}: {}", api_error(e))),
            }
        }
        Ok(deleted)
    }

    async fn remove_bundle(&self, bundle: &str, keep_resources: bool) -> Result<()> {
        self.drift_seen().remove(bundle);
        if let Some(inv) = inventory::load(&self.client, bundle).await? {
            self.live.forget(&inv.objects);
            if !keep_resources {
                let pruned = self.prune(bundle, inv.objects).await?;
                if !pruned.is_empty() {
                    self.events
                        .record(BundleEvent::pruned(bundle, None, &pruned).on(inv.uid));
                }
            }
            inventory::delete(&self.client, bundle).await?;
        }
        self.events.forget(bundle);
        Ok(())
    }

    async fn check_bundle(&self, d: &Desired) -> Result<Outcome> {
        let bundle = &d.bundle;
        let plan = match self.plan(d).await {
            Ok(plan) => plan,
            // A policy tightened since the last apply: the bundle is refused now.
            Err(e) if e.downcast_ref::<Refused>().is_some() => {
                return Ok(Outcome {
                    state: flotilla_model::State::ErrApplied,
                    message: format!("{e:#}"),
                    resources: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        };
        let mut verdicts = Vec::with_capacity(plan.len());
        // Hooks are not checked: they ran for this deployment, and the ones their
        // delete policy removed are meant to be gone.
        for p in plan.iter().filter(|p| p.hook.is_none()) {
            self.watches.ensure(&p.resolved.ar);
            let store = self.watches.ready_store(&p.resolved.ar);
            let live = self
                .live
                .read(&p.r, &p.resolved.ar, store.as_ref(), &self.api(p))
                .await
                .map_err(|e| anyhow!("bundle {bundle}: reading {}: {}", p.r, api_error(e)))?;
            let verdict = match live {
                None => Verdict::Deleted,
                Some(live) => {
                    let live = live.data_value();
                    let (applied, compared) =
                        drift::compared(&d.options.compare_patches, &p.r, &p.value, &live);
                    let ignored = drift::ignored_for(&d.options.compare_patches, &p.r);
                    let changes = drift::diff(&p.r.kind, &applied, &compared, &ignored);
                    if changes.is_empty() {
                        verdict_of_health(p, &live, &d.options.ignore_conditions)
                    } else {
                        Verdict::Modified(changes)
                    }
                }
            };
            verdicts.push((p.r.clone(), verdict));
        }
        Ok(report::summarize(verdicts))
    }
}

/// The plan's ordinary objects (in phase order), its pre-install hooks and its
/// post-install hooks (each in `hooks::order_key` order).
fn split_hooks(plan: &[Planned]) -> (Vec<&Planned>, Vec<&Planned>, Vec<&Planned>) {
    let mut resources = Vec::new();
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    for p in plan {
        match &p.hook {
            None => resources.push(p),
            Some(h) if h.phase == HookPhase::PreSync => pre.push(p),
            Some(_) => post.push(p),
        }
    }
    for hooks in [&mut pre, &mut post] {
        hooks.sort_by(|a, b| key(a).cmp(&key(b)));
    }
    (resources, pre, post)
}

fn key(p: &Planned) -> Option<(i64, Phase, &str, &str)> {
    p.hook
        .as_ref()
        .map(|h| hooks::order_key(h, p.phase, &p.r.kind, &p.r.name))
}

/// A dynamic object as plain JSON, the way the pure modules read objects.
trait DataValue {
    fn data_value(&self) -> Value;
}

impl DataValue for DynamicObject {
    fn data_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

fn verdict_of_health(
    p: &Planned,
    live: &Value,
    ignore_conditions: &[flotilla_model::IgnoreCondition],
) -> Verdict {
    let live = health::without_ignored_conditions(live, ignore_conditions);
    match health::health(p.r.group(), &p.r.kind, &live) {
        Health::Ready => Verdict::Ready,
        Health::NotReady(why) => Verdict::NotReady(why),
    }
}

/// The API server's own words for a failed call.
fn api_error(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

impl Applier for KubeApplier {
    fn apply<'a>(&'a self, d: &'a Desired) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.apply_recorded(d))
    }

    fn remove<'a>(&'a self, bundle: &'a str, keep_resources: bool) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.remove_bundle(bundle, keep_resources))
    }

    fn check<'a>(&'a self, d: &'a Desired) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.check_recorded(d))
    }

    fn changes(&self) -> Option<Arc<Notify>> {
        Some(self.notify.clone())
    }

    fn changed_bundles(&self) -> Option<BTreeSet<String>> {
        self.dirty.lock().ok().map(|mut d| std::mem::take(&mut *d))
    }

    fn capabilities(&self) -> BoxFuture<'_, Option<ClusterCapabilities>> {
        Box::pin(async {
            // Discovery again, so a cluster upgraded while the stream was down reports
            // what it serves now; an API server that does not answer reports nothing and
            // the hub keeps what it last heard.
            if let Err(e) = self.resolver.refresh().await {
                tracing::debug!(error = %format!("{e:#}"), "discovery for Hello failed");
            }
            let version = match self.client.apiserver_version().await {
                Ok(v) => v.git_version,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the API server's /version; Hello reports no capabilities");
                    return None;
                }
            };
            Some(ClusterCapabilities {
                kube_version: version,
                api_versions: self.resolver.api_versions(),
            })
        })
    }
}
