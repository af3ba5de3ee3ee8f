//! The reconcile: a pure function from a [`Snapshot`] of the fleet to each cluster's
//! [`Assignments`] and each bundle's rollout [`Plan`].
//!
//! **Architecture Invariant:** no I/O, no locks, no clocks. Everything the reconcile
//! decides on is in the snapshot, which `Fleet::snapshot` copies out of the live state
//! once per batch; so every cluster in a batch is decided against the same fleet, and
//! the answer does not depend on the order in which clusters are reconciled or in which
//! the inputs arrived (see the property tests below).
//!
//! Two inputs are read through a trait instead of being copied:
//! - [`Renders`] turns a bundle and a customization into the deployment to run. Rendering
//!   is deterministic, so the answer is the same whether it was computed now or cached.
//!   The hub's implementation (`Fleet`) renders once per `RenderKey`, keeps the result on
//!   the revision's [`BundleEntry`] and stores the content by its digest: those are
//!   content-addressed caches, not decisions, and they stay outside so that this module
//!   stays pure. Tests render directly.
//! - [`StatusView`] is the spokes' reports, one per (cluster, bundle): too many to copy
//!   for each batch. The reconcile only reads it; a report that lands during a batch
//!   starts another batch (`Fleet::record_status`).
//!
//! What comes back is data: the caller persists the assignments that changed, wakes the
//! sessions, and remembers which rollouts are in progress.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use flotilla_model::{ClusterName, ContentDigest, DeploymentId, Labels, State};
use flotilla_render as render;
use serde::{Deserialize, Serialize};

use crate::depends;
use crate::records::{CapabilitiesRecord, ClusterRecord, Desired};
use crate::rollout::{self, Plan, RolloutPhase};
use crate::targeting::{self, GroupSpec, TargetSpec};
use flotilla_model::DeployOptions;

/// What one cluster should run for one bundle, or why it cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Shared with every other cluster's assignment from the same source.
    pub source: Arc<str>,
    /// The deployment to enforce: the current render, or the last good one. One `Arc`
    /// per render, shared by every cluster that runs it.
    pub desired: Option<Arc<Desired>>,
    /// Load or render error of the current revision for this cluster.
    pub error: Option<String>,
    /// Why the current revision is held back (dependsOn, rollout); `desired` is then the
    /// last deployed one, if any.
    #[serde(default)]
    pub waiting: Option<String>,
    /// The deployment the current revision wants, when it is held back.
    #[serde(default)]
    pub staged: Option<DeploymentId>,
}

/// Keyed by bundle name, shared with the source's `BundleEntry::name`: a fleet holds one
/// of these per cluster, so per-pair copies of the same strings add up.
pub type Assignments = BTreeMap<Arc<str>, Assignment>;

/// The render of one customization of a bundle, or why it failed.
pub type RenderResult = Result<Arc<Desired>, String>;

/// One bundle of a source's published revision.
pub struct BundleEntry {
    pub name: Arc<str>,
    pub path: String,
    /// The bundle to deploy: this revision's, or the last good one if this one is broken.
    pub bundle: Option<Arc<render::Bundle>>,
    /// Errors of this revision (file:line: message), empty when it loaded.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// The deployment of each distinct customization, filled by the hub's [`Renders`]
    /// (render, digest, options, deployment id); the bytes live in `Fleet::contents`.
    /// The reconcile never reads it.
    pub renders: Mutex<HashMap<render::RenderKey, RenderResult>>,
}

impl BundleEntry {
    pub fn new(
        name: String,
        path: String,
        bundle: Option<Arc<render::Bundle>>,
        errors: Vec<String>,
        warnings: Vec<String>,
    ) -> Self {
        BundleEntry {
            name: name.into(),
            path,
            bundle,
            errors,
            warnings,
            renders: Mutex::new(HashMap::new()),
        }
    }
}

/// What a cluster runs for a render of `bundle`: the digest plus the options the spoke
/// needs (the bundle's, with the render's customization over them), and the deployment
/// id over both.
pub fn desired_for(
    bundle: &render::Bundle,
    key: &render::RenderKey,
    digest: ContentDigest,
) -> Desired {
    let opts = bundle.options_for(key);
    Desired {
        deployment_id: DeploymentId::compute(&digest, &opts.canonical_json()),
        digest,
        options: DeployOptions {
            correct_drift: opts.correct_drift.enabled,
            keep_resources: opts.keep_resources,
            force: opts.correct_drift.force,
            compare_patches: opts.diff.compare_patches.clone(),
            ignore_conditions: opts.ignore.conditions.clone(),
        },
    }
}

/// Renders a bundle for one customization. Must be deterministic: equal keys give equal
/// deployments (the hub caches by key).
pub trait Renders: Sync {
    fn render(
        &self,
        entry: &BundleEntry,
        bundle: &render::Bundle,
        key: render::RenderKey,
        cluster: &render::ClusterInfo,
    ) -> RenderResult;
}

/// The spokes' reports, read only.
pub trait StatusView: Sync {
    /// The state and message `cluster` last reported for `bundle`, if that report is
    /// about `deployment` (a report about another deployment says nothing about it).
    fn reported(
        &self,
        cluster: &ClusterName,
        bundle: &str,
        deployment: &DeploymentId,
    ) -> Option<(State, String)>;
}

/// One source as the reconcile sees it.
pub struct SourceView {
    pub name: Arc<str>,
    /// ORed; empty means the group `default`.
    pub targets: Vec<TargetSpec>,
    /// `None` until the source's first revision since the hub started: its clusters keep
    /// what they were assigned from it (its bundles' `overrideTargets` are not known yet,
    /// so neither is where they go).
    pub bundles: Option<Vec<Arc<BundleEntry>>>,
}

/// One cluster as the reconcile sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub name: ClusterName,
    /// The trusted labels (`ClusterRecord::labels`); reported ones never count.
    pub labels: Labels,
    pub capabilities: Option<CapabilitiesRecord>,
}

impl ClusterView {
    pub fn of(rec: &ClusterRecord) -> Self {
        ClusterView {
            name: rec.name.clone(),
            labels: rec.labels(),
            capabilities: rec.capabilities.clone(),
        }
    }

    /// What the renderer knows of the cluster: name, labels, groups, capabilities.
    pub fn info(&self, groups: &[&GroupSpec]) -> render::ClusterInfo {
        render::ClusterInfo {
            name: self.name.to_string(),
            labels: self.labels.clone(),
            groups: groups
                .iter()
                .map(|g| render::GroupInfo {
                    name: g.name.clone(),
                    labels: g.labels.clone(),
                })
                .collect(),
            capabilities: self.capabilities.as_ref().map(|c| render::Capabilities {
                kube_version: c.kube_version.clone(),
                api_versions: c.api_versions.clone(),
            }),
        }
    }
}

/// The fleet as one batch of the reconcile sees it.
pub struct Snapshot<'a> {
    pub sources: Vec<SourceView>,
    pub clusters: Vec<ClusterView>,
    pub groups: Vec<GroupSpec>,
    /// Each cluster's assignments before this batch: what its spoke was last sent.
    pub previous: HashMap<ClusterName, Arc<Assignments>>,
    /// Bundles whose rollout an admin paused.
    pub paused: BTreeSet<String>,
    pub status: &'a dyn StatusView,
    pub renders: &'a dyn Renders,
}

/// One reconcile batch over a snapshot. Rollout plans are computed once per bundle, on
/// first use, and shared by every cluster of the batch; they go away with the batch.
pub struct Batch<'a> {
    sources: Vec<SourceView>,
    clusters: BTreeMap<ClusterName, ClusterView>,
    groups: Vec<GroupSpec>,
    previous: HashMap<ClusterName, Arc<Assignments>>,
    paused: BTreeSet<String>,
    status: &'a dyn StatusView,
    renders: &'a dyn Renders,
    /// Every bundle name some source publishes: dependsOn on a name no source has says so.
    bundle_names: HashSet<Arc<str>>,
    /// A memo of `plan_rollout` (a pure function of the snapshot) per bundle name.
    plans: BTreeMap<Arc<str>, OnceLock<Option<Arc<Plan>>>>,
}

impl<'a> Batch<'a> {
    pub fn new(snapshot: Snapshot<'a>) -> Self {
        let Snapshot {
            mut sources,
            clusters,
            mut groups,
            previous,
            paused,
            status,
            renders,
        } = snapshot;
        // Input order must not matter: the first source (by name) wins a bundle name.
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        let bundle_names: HashSet<Arc<str>> = sources
            .iter()
            .flat_map(|s| s.bundles.iter().flatten())
            .map(|e| e.name.clone())
            .collect();
        let plans = bundle_names
            .iter()
            .map(|n| (n.clone(), OnceLock::new()))
            .collect();
        Batch {
            sources,
            clusters: clusters.into_iter().map(|c| (c.name.clone(), c)).collect(),
            groups,
            previous,
            paused,
            status,
            renders,
            bundle_names,
            plans,
        }
    }

    /// The clusters of the snapshot, by name.
    pub fn cluster_names(&self) -> impl Iterator<Item = &ClusterName> {
        self.clusters.keys()
    }

    fn previous_of(&self, c: &ClusterName) -> Arc<Assignments> {
        self.previous.get(c).cloned().unwrap_or_default()
    }

    /// What `name` should run now; `None` when the cluster is not in the fleet (deleted):
    /// it has no assignments at all.
    pub fn assignments(&self, name: &ClusterName) -> Option<Assignments> {
        let cluster = self.clusters.get(name)?;
        let old = self.previous_of(name);
        let groups = targeting::groups_of(&cluster.labels, &self.groups);
        let info = cluster.info(&groups);
        let facts = targeting::ClusterFacts {
            name: name.as_str(),
            labels: &cluster.labels,
            groups: &groups,
        };
        let mut out = Assignments::new();
        let mut live: BTreeMap<Arc<str>, Arc<render::Bundle>> = BTreeMap::new();
        for src in &self.sources {
            let Some(bundles) = &src.bundles else {
                for (k, a) in old.iter().filter(|(_, a)| a.source == src.name) {
                    out.entry(k.clone()).or_insert_with(|| a.clone());
                }
                continue;
            };
            for entry in bundles {
                if out.contains_key(&entry.name) {
                    continue;
                }
                // overrideTargets replace the source's targets for this bundle.
                let targeted =
                    targeting::match_bundle(&src.targets, entry.bundle.as_deref(), &facts);
                if !targeted.is_yes() {
                    continue;
                }
                let mut assignment = Assignment {
                    source: src.name.clone(),
                    // A broken revision keeps the last good deployment.
                    desired: old.get(&entry.name).and_then(|a| a.desired.clone()),
                    error: (!entry.errors.is_empty()).then(|| entry.errors.join("\n")),
                    waiting: None,
                    staged: None,
                };
                let Some(bundle) = &entry.bundle else {
                    out.insert(entry.name.clone(), assignment);
                    continue;
                };
                let render::Selection::Deploy(key) = bundle.select(&info) else {
                    continue;
                };
                live.insert(entry.name.clone(), bundle.clone());
                match self.renders.render(entry, bundle, key, &info) {
                    Ok(desired) => assignment.desired = Some(desired),
                    Err(e) => {
                        assignment.error = Some(match assignment.error {
                            Some(prev) => format!("{prev}\n{e}"),
                            None => e,
                        });
                    }
                }
                out.insert(entry.name.clone(), assignment);
            }
        }
        self.apply_depends_on(name, &mut out, &live, &old);
        self.apply_rollouts(name, &mut out, &live, &old);
        // Built again in bulk: a map grown one insert at a time leaves its nodes about
        // half full, and the fleet keeps one per cluster.
        Some(out.into_iter().collect())
    }

    fn is_paused(&self, name: &str, bundle: &render::Bundle) -> bool {
        bundle.options().paused || self.paused.contains(name)
    }

    /// Holds back bundles whose dependencies are not Ready on this cluster: they keep
    /// their last deployed revision (or none) and show why.
    fn apply_depends_on(
        &self,
        cluster: &ClusterName,
        out: &mut Assignments,
        live: &BTreeMap<Arc<str>, Arc<render::Bundle>>,
        old: &Assignments,
    ) {
        if live.values().all(|b| b.options().depends_on.is_empty()) {
            return;
        }
        let nodes: Vec<depends::Node<'_>> = live
            .iter()
            .map(|(n, b)| depends::Node {
                name: n,
                labels: &b.options().labels,
                depends_on: &b.options().depends_on,
            })
            .collect();
        let state = |dep: &str| {
            let d = out.get(dep).and_then(|a| a.desired.as_ref())?;
            self.status
                .reported(cluster, dep, &d.deployment_id)
                .map(|(s, _)| s)
        };
        let holds = depends::holds(&nodes, state, |n| self.bundle_names.contains(n));
        for (name, hold) in holds {
            let Some(a) = out.get_mut(name.as_str()) else {
                continue;
            };
            a.staged = a.desired.as_ref().map(|d| d.deployment_id.clone());
            a.desired = old.get(name.as_str()).and_then(|o| o.desired.clone());
            match hold {
                depends::Hold::Waiting(why) => a.waiting = Some(why),
                depends::Hold::Cycle(why) => a.error = Some(why),
            }
        }
    }

    /// Holds clusters back from a new deployment until the bundle's rollout lets them
    /// have it; they keep running their live deployment meanwhile.
    fn apply_rollouts(
        &self,
        cluster: &ClusterName,
        out: &mut Assignments,
        live: &BTreeMap<Arc<str>, Arc<render::Bundle>>,
        old: &Assignments,
    ) {
        for (name, bundle) in live {
            if bundle.options().rollout_strategy.is_none() && !self.is_paused(name, bundle) {
                continue;
            }
            let Some(a) = out.get_mut(name) else { continue };
            let (Some(staged), live_id) = (
                a.desired.as_ref(),
                old.get(name).and_then(|o| o.desired.as_ref()),
            ) else {
                continue;
            };
            if live_id.is_some_and(|l| l.deployment_id == staged.deployment_id) {
                continue;
            }
            let Some(plan) = self.plan(name) else {
                continue;
            };
            if let Some(why) = plan.held.get(cluster.as_str()) {
                a.staged = Some(staged.deployment_id.clone());
                a.desired = old.get(name).and_then(|o| o.desired.clone());
                a.waiting.get_or_insert_with(|| why.clone());
            }
        }
    }

    /// The bundle's rollout plan in this batch; `None` when no source has a good
    /// revision of it.
    pub fn plan(&self, bundle: &str) -> Option<Arc<Plan>> {
        let slot = self.plans.get(bundle)?;
        slot.get_or_init(|| self.plan_rollout(bundle).map(Arc::new))
            .clone()
    }

    /// The phase of every rollout this batch planned.
    pub fn rollouts(&self) -> Vec<(Arc<str>, RolloutPhase)> {
        self.plans
            .iter()
            .filter_map(|(n, p)| Some((n.clone(), p.get()?.as_ref()?.report.phase)))
            .collect()
    }

    /// Computes a bundle's rollout: every cluster its source targets, with the
    /// deployment it runs and the one the current revision wants for it.
    fn plan_rollout(&self, bundle_name: &str) -> Option<Plan> {
        let (src, entry) = self.sources.iter().find_map(|s| {
            let e = s
                .bundles
                .as_ref()?
                .iter()
                .find(|e| *e.name == *bundle_name)?;
            Some((s, e))
        })?;
        let bundle = entry.bundle.as_ref()?;
        struct Row<'r> {
            name: &'r str,
            labels: &'r Labels,
            groups: Vec<(String, Labels)>,
            live: Option<&'r DeploymentId>,
            staged: Arc<Desired>,
            state: Option<State>,
            message: String,
        }
        let mut rows = Vec::new();
        for (name, cluster) in &self.clusters {
            let groups = targeting::groups_of(&cluster.labels, &self.groups);
            let facts = targeting::ClusterFacts {
                name: name.as_str(),
                labels: &cluster.labels,
                groups: &groups,
            };
            if !targeting::match_bundle(&src.targets, Some(bundle), &facts).is_yes() {
                continue;
            }
            let info = cluster.info(&groups);
            let render::Selection::Deploy(key) = bundle.select(&info) else {
                continue;
            };
            let Ok(staged) = self.renders.render(entry, bundle, key, &info) else {
                continue;
            };
            let live = self
                .previous
                .get(name)
                .and_then(|a| a.get(bundle_name))
                .and_then(|a| a.desired.as_ref())
                .map(|d| &d.deployment_id);
            let (state, message) = live
                .and_then(|l| self.status.reported(name, bundle_name, l))
                .map_or((None, String::new()), |(s, m)| (Some(s), m));
            rows.push(Row {
                name: name.as_str(),
                groups: groups
                    .iter()
                    .map(|g| (g.name.clone(), g.labels.clone()))
                    .collect(),
                labels: &cluster.labels,
                live,
                staged,
                state,
                message,
            });
        }
        let states: Vec<rollout::ClusterState<'_>> = rows
            .iter()
            .map(|r| rollout::ClusterState {
                name: r.name,
                labels: r.labels,
                groups: &r.groups,
                live: r.live.map(DeploymentId::as_str),
                staged: r.staged.deployment_id.as_str(),
                state: r.state,
                message: &r.message,
            })
            .collect();
        // Without a strategy every cluster is one partition (nothing is gated; this only
        // reports progress).
        let strategy = bundle
            .options()
            .rollout_strategy
            .clone()
            .unwrap_or_else(|| render::RolloutStrategy {
                auto_partition_size: Some(render::IntOrString::String("100%".into())),
                ..Default::default()
            });
        Some(rollout::plan(
            &strategy,
            self.is_paused(bundle_name, bundle),
            &states,
        ))
    }
}

#[cfg(test)]
mod tests;
