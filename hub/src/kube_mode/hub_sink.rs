//! The hub as Kubernetes mode's [`ConfigSink`]: each call is one of the state's
//! commands (`commands.rs`), so objects read from Kubernetes meet the same checks as
//! the Admin API's requests.

use std::collections::HashMap;
use std::sync::Arc;

use flotilla_model::ClusterName;

use super::{
    BundleView, ClusterLabels, ClusterView, ConfigSink, GroupSpec, PairState, SinkError,
    SourceBundles, SourceConfig, SourceState,
};
use crate::charts::auth::Secret;
use crate::commands::{CommandError, SourceSecrets};
use crate::credentials::Kind;
use crate::fleet::Fleet;

/// The running hub, driven by the controllers.
pub struct HubSink {
    fleet: Arc<Fleet>,
}

impl HubSink {
    pub fn new(fleet: Arc<Fleet>) -> Self {
        HubSink { fleet }
    }
}

/// A refusal stalls the object until it changes; a failure to act is retried.
fn sink_error(e: CommandError) -> SinkError {
    match e {
        CommandError::NotFound(m)
        | CommandError::Invalid(m)
        | CommandError::Precondition(m)
        | CommandError::Refused(_, m)
        | CommandError::Exists(m) => SinkError::Refused(m),
        CommandError::Internal(m) => SinkError::Unavailable(m),
        CommandError::Store(e) => SinkError::Unavailable(e.to_string()),
    }
}

fn cluster_name(name: &str) -> Result<ClusterName, SinkError> {
    ClusterName::new(name).map_err(|e| SinkError::Refused(e.to_string()))
}

impl ConfigSink for HubSink {
    async fn apply_source(&self, source: SourceConfig) -> Result<(), SinkError> {
        let SourceConfig {
            spec,
            credentials,
            helm,
        } = source;
        // Kinds the object no longer names are cleared (the trait's contract).
        let clear: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| !credentials.iter().any(|(c, _)| c == k))
            .collect();
        let secrets = SourceSecrets {
            credentials,
            helm: vec![
                (Secret::Password, helm.password),
                (Secret::Ca, helm.ca_pem),
                (Secret::Token, helm.token),
            ],
        };
        if self.fleet.sources.contains_key(&spec.name) {
            let name = spec.name.clone();
            self.fleet
                .set_source(&name, |s| *s = spec, secrets, clear)
                .await
        } else {
            self.fleet.add_source(spec, secrets).await
        }
        .map(drop)
        .map_err(sink_error)
    }

    async fn remove_source(&self, name: &str) -> Result<(), SinkError> {
        match self.fleet.remove_source(name, false).await {
            Ok(()) | Err(CommandError::NotFound(_)) => Ok(()),
            Err(e) => Err(sink_error(e)),
        }
    }

    async fn apply_group(&self, group: GroupSpec) -> Result<(), SinkError> {
        self.fleet.add_group(group).await.map_err(sink_error)
    }

    async fn remove_group(&self, name: &str) -> Result<(), SinkError> {
        match self.fleet.remove_group(name).await {
            Ok(()) | Err(CommandError::NotFound(_)) => Ok(()),
            Err(e) => Err(sink_error(e)),
        }
    }

    async fn set_cluster_labels(
        &self,
        cluster: &str,
        labels: ClusterLabels,
    ) -> Result<(), SinkError> {
        let name = cluster_name(cluster)?;
        match self
            .fleet
            .set_cluster_labels(&name, &labels.labels, &labels.accept)
            .await
        {
            Ok(_) => Ok(()),
            // A deleted object of a cluster that never registered: nothing to undo.
            Err(CommandError::NotFound(_)) if labels == ClusterLabels::default() => Ok(()),
            // Retried with backoff, so the labels land once the spoke registers.
            Err(CommandError::NotFound(m)) => Err(SinkError::Unavailable(m)),
            Err(e) => Err(sink_error(e)),
        }
    }

    fn source_state(&self, name: &str) -> Option<SourceState> {
        let state = self.fleet.sources.get(name)?.value().clone();
        let Ok(rt) = state.runtime.read() else {
            return Some(SourceState::Failed {
                message: "the source's state is unreadable (lock poisoned)".into(),
            });
        };
        Some(match (&rt.error, &rt.commit) {
            (Some(e), _) => SourceState::Failed { message: e.clone() },
            (None, Some(c)) if rt.bundles.is_some() => SourceState::Ready {
                commit: c.clone(),
                message: format!(
                    "revision {c} published ({} bundles)",
                    rt.bundles.as_ref().map_or(0, Vec::len)
                ),
            },
            _ => SourceState::Pending {
                message: "not fetched yet".into(),
            },
        })
    }

    fn bundles(&self) -> Vec<SourceBundles> {
        // One pass over the clusters' assignments (copied out, so no map stays locked
        // while states are looked up), grouped by bundle.
        let assignments: Vec<_> = self
            .fleet
            .assignments
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let mut by_bundle: HashMap<Arc<str>, BundleView> = HashMap::new();
        for (cluster, pairs) in &assignments {
            for (bundle, a) in pairs.iter() {
                let (state, message) = self.fleet.row_state(cluster, bundle, a);
                let view = by_bundle.entry(bundle.clone()).or_default();
                if let Some(d) = &a.desired {
                    view.deployment_ids.insert(d.deployment_id.to_string());
                }
                view.clusters.push(PairState {
                    cluster: cluster.to_string(),
                    state,
                    message,
                });
            }
        }
        let mut out = Vec::new();
        for src in self.fleet.sorted_sources() {
            let Ok(rt) = src.runtime.read() else { continue };
            let bundles = rt
                .bundles
                .iter()
                .flatten()
                .map(|e| BundleView {
                    name: e.name.to_string(),
                    path: e.path.clone(),
                    errors: e.errors.clone(),
                    ..by_bundle.remove(&e.name).unwrap_or_default()
                })
                .collect();
            out.push(SourceBundles {
                source: src.spec.name.clone(),
                published: rt.bundles.is_some(),
                commit: rt.commit.clone().unwrap_or_default(),
                bundles,
            });
        }
        out
    }

    fn changes(&self) -> tokio::sync::broadcast::Receiver<crate::fleet::FleetEvent> {
        self.fleet.events.subscribe()
    }

    fn cluster_view(&self, name: &str) -> Option<ClusterView> {
        let name = ClusterName::new(name).ok()?;
        let rec = self.fleet.clusters.get(&name)?.clone();
        Some(ClusterView {
            connected: self.fleet.is_connected(&name),
            labels: rec.labels(),
            reported_labels: rec.reported_labels,
            agent_version: rec.agent_version,
            last_seen: rec.last_seen,
        })
    }
}
