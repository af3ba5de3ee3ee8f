//! Read-only questions about the fleet that the Admin API (and anything else showing the
//! fleet) asks: a cluster's overview, group membership, bundle summaries, and the
//! targeting dry-run. They read memory and change nothing; `server/admin.rs` turns the
//! answers into protobuf.

use std::sync::Arc;

use flotilla_model::{ClusterName, State, Summary};

use crate::commands::CommandError;
use crate::fleet::Fleet;
use crate::records::ClusterRecord;
use crate::targeting::{self, GroupSpec};

/// A cluster as `flotilla clusters` shows it.
pub struct ClusterOverview {
    pub record: ClusterRecord,
    pub connected: bool,
    /// Offline when the spoke is not connected, else the worst state of its bundles
    /// (Ready when it has none).
    pub state: State,
    pub summary: Summary,
}

/// A group with how many clusters it holds and the states of their bundles.
pub struct GroupOverview {
    pub spec: GroupSpec,
    pub clusters: usize,
    pub summary: Summary,
}

/// One bundle of a source's current revision, over the clusters it is assigned to.
pub struct BundleOverview {
    pub name: String,
    pub source: String,
    pub path: String,
    pub commit: String,
    pub summary: Summary,
    /// ErrApplied for a bundle that failed to load or render; otherwise the worst state
    /// of its clusters, `None` when it targets none.
    pub state: Option<State>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Whether one bundle goes to one cluster, and why (`flotilla targets`).
pub struct TargetRow {
    pub cluster: ClusterName,
    pub bundle: String,
    pub deployed: bool,
    pub reason: String,
    pub customization: String,
    /// The deployment the cluster is assigned now, if any.
    pub deployment_id: String,
}

impl Fleet {
    /// Every cluster's name, sorted.
    pub fn sorted_clusters(&self) -> Vec<ClusterName> {
        let mut names: Vec<ClusterName> = self.clusters.iter().map(|c| c.key().clone()).collect();
        names.sort();
        names
    }

    pub fn cluster_overview(&self, name: &ClusterName) -> Option<ClusterOverview> {
        let mut record = self.clusters.get(name)?.clone();
        let connected = self.is_connected(name);
        // A spoke connected to another replica (HA) is heard from there; its stored
        // `last_seen` is minutes coarse (`Fleet::flush_last_seen`), but its presence
        // says that replica heard it within its heartbeat window.
        if connected && !self.sessions.contains_key(name) {
            record.last_seen = record.last_seen.max(crate::records::now_unix());
        }
        let summary = self.cluster_summary(name);
        let state = if connected {
            summary.worst().unwrap_or(State::Ready)
        } else {
            State::Offline
        };
        Some(ClusterOverview {
            record,
            connected,
            state,
            summary,
        })
    }

    /// Every group, by name, with its member clusters counted and their states summed.
    pub fn group_overviews(&self) -> Vec<GroupOverview> {
        let clusters: Vec<ClusterRecord> =
            self.clusters.iter().map(|c| c.value().clone()).collect();
        self.group_list()
            .into_iter()
            .map(|spec| {
                let members: Vec<&ClusterName> = clusters
                    .iter()
                    .filter(|c| spec.contains(&c.labels()))
                    .map(|c| &c.name)
                    .collect();
                let mut summary = Summary::default();
                for c in &members {
                    for (state, n) in self.cluster_summary(c).counts {
                        *summary.counts.entry(state).or_default() += n;
                    }
                }
                GroupOverview {
                    clusters: members.len(),
                    spec,
                    summary,
                }
            })
            .collect()
    }

    /// Every bundle of every source's current revision, by name.
    pub fn bundle_overviews(&self) -> Vec<BundleOverview> {
        let clusters = self.sorted_clusters();
        let sources: Vec<_> = self.sources.iter().map(|s| s.value().clone()).collect();
        let mut bundles = Vec::new();
        for src in sources {
            let Ok(rt) = src.runtime.read() else { continue };
            for entry in rt.bundles.iter().flatten() {
                let summary: Summary = clusters
                    .iter()
                    .filter_map(|c| {
                        let a = self.assignments_of(c);
                        a.get(&entry.name)
                            .map(|a| self.row_state(c, &entry.name, a).0)
                    })
                    .collect();
                let state = if entry.errors.is_empty() {
                    summary.worst()
                } else {
                    Some(State::ErrApplied)
                };
                bundles.push(BundleOverview {
                    name: entry.name.to_string(),
                    source: src.spec.name.clone(),
                    path: entry.path.clone(),
                    commit: rt.commit.clone().unwrap_or_default(),
                    summary,
                    state,
                    errors: entry.errors.clone(),
                    warnings: entry.warnings.clone(),
                });
            }
        }
        bundles.sort_by(|a, b| a.name.cmp(&b.name));
        bundles
    }

    /// The targeting dry-run of `source` (one `bundle` of it, or all when empty): for
    /// every cluster and bundle, whether it is deployed there and why.
    pub fn targets(&self, source: &str, bundle: &str) -> Result<Vec<TargetRow>, CommandError> {
        let src = self
            .sources
            .get(source)
            .map(|s| s.value().clone())
            .ok_or_else(|| CommandError::NotFound(format!("source {source} not found")))?;
        let all_groups = self.group_list();
        let entries: Vec<_> = src
            .runtime
            .read()
            .map_err(|_| CommandError::Internal(format!("source {source}: lock poisoned")))?
            .bundles
            .iter()
            .flatten()
            .filter(|e| bundle.is_empty() || *e.name == *bundle)
            .map(Arc::clone)
            .collect();
        if !bundle.is_empty() && entries.is_empty() {
            return Err(CommandError::NotFound(format!(
                "bundle {bundle} not found in source {source}"
            )));
        }
        let mut rows = Vec::new();
        for name in self.sorted_clusters() {
            let Some(rec) = self.clusters.get(&name).map(|r| r.clone()) else {
                continue;
            };
            let labels = rec.labels();
            let groups = targeting::groups_of(&labels, &all_groups);
            let facts = targeting::ClusterFacts {
                name: name.as_str(),
                labels: &labels,
                groups: &groups,
            };
            let info = self.cluster_info(&rec, &groups);
            let assigned = self.assignments_of(&name);
            for e in &entries {
                let matched =
                    targeting::match_bundle(&src.spec.targets, e.bundle.as_deref(), &facts);
                let (deployed, reason, customization) = match (&matched, &e.bundle) {
                    (targeting::Match::No(why), _) => (false, why.clone(), String::new()),
                    (targeting::Match::Yes(why), None) => (
                        false,
                        format!("{why}; bundle has no good revision"),
                        String::new(),
                    ),
                    (targeting::Match::Yes(why), Some(b)) => match b.select(&info) {
                        flotilla_render::Selection::DoNotDeploy => {
                            (false, format!("{why}; doNotDeploy"), String::new())
                        }
                        flotilla_render::Selection::Deploy(key) => (
                            true,
                            why.clone(),
                            key.customization().unwrap_or("").to_string(),
                        ),
                    },
                };
                rows.push(TargetRow {
                    cluster: name.clone(),
                    bundle: e.name.to_string(),
                    deployed,
                    reason,
                    customization,
                    deployment_id: assigned
                        .get(&e.name)
                        .and_then(|a| a.desired.as_ref())
                        .map(|d| d.deployment_id.to_string())
                        .unwrap_or_default(),
                });
            }
        }
        Ok(rows)
    }
}
