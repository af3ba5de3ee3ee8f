//! The writer of Kubernetes mode's read-only views: one `BundleStatus` per bundle of every
//! source that came from a `Source` or `GitRepo` object, owner-referenced to that object
//! (so the API server's garbage collector removes them with it), and the source object's
//! `readyClusters`, `desiredReadyClusters` and `summary`.
//!
//! Writes are coalesced: a pass runs when the hub reports a change ([`ConfigSink::changes`])
//! or a source's object comes or goes, at most once every [`COALESCE`], or every [`RESYNC`] without one, and writes only the
//! objects whose content differs from what this process last wrote (or found at start).
//! A spoke report is therefore never one API write; a fleet that changes constantly costs
//! at most one write per changed bundle every few seconds.
//!
//! The views are the hub's: an edit of a `BundleStatus` is not read back, and is
//! overwritten the next time the bundle changes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_kube_types::flotilla::{BundleStatus, BundleStatusSpec, BundleStatusStatus};
use flotilla_kube_types::{fleet, flotilla};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::ConfigSink;
use super::status::{self, SourceSummary};
use crate::records::{now_unix, rfc3339};

/// The shortest time between two passes: changes within it are written together.
pub const COALESCE: Duration = Duration::from_secs(2);
/// A pass runs at least this often, for changes no event announced.
pub const RESYNC: Duration = Duration::from_secs(30);
/// After a failed write, the next pass comes this soon.
const RETRY: Duration = Duration::from_secs(5);

/// The field manager of every write, and the `app.kubernetes.io/managed-by` value that
/// marks the objects this writer owns.
pub const MANAGER: &str = "flotilla-hub";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The label naming a `BundleStatus`'s source.
pub const SOURCE_LABEL: &str = "flotilla.dev/source";

/// The object each source of the hub came from, recorded by the controllers when they
/// apply it and forgotten when it is deleted.
#[derive(Default)]
pub struct Owners {
    by_source: Mutex<HashMap<String, OwnerReference>>,
    /// Wakes the writer: a source's object appeared, changed or went.
    changed: tokio::sync::Notify,
}

impl Owners {
    pub fn set(&self, source: &str, owner: OwnerReference) {
        let before = self.lock().insert(source.to_string(), owner.clone());
        if before.as_ref() != Some(&owner) {
            self.changed.notify_one();
        }
    }

    pub fn remove(&self, source: &str) {
        if self.lock().remove(source).is_some() {
            self.changed.notify_one();
        }
    }

    fn snapshot(&self) -> HashMap<String, OwnerReference> {
        self.lock().clone()
    }

    /// A map of plain values: a panic elsewhere cannot leave it half-written.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OwnerReference>> {
        self.by_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The reference a `BundleStatus` holds to its source's object.
pub fn owner_of<K: Resource<DynamicType = ()>>(obj: &K) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: obj.meta().name.clone()?,
        uid: obj.meta().uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

/// What this process knows is in the API server for one bundle.
#[derive(Debug, Clone, PartialEq)]
struct Written {
    spec: BundleStatusSpec,
    owner_uid: String,
    generation: Option<i64>,
    status: Option<BundleStatusStatus>,
}

struct Writer<S> {
    sink: Arc<S>,
    owners: Arc<Owners>,
    api: Api<BundleStatus>,
    client: Client,
    namespace: String,
    /// By bundle name.
    written: HashMap<String, Written>,
    /// The summary last written on each source's object.
    summaries: HashMap<String, SourceSummary>,
    /// Sources whose object this process has seen applied.
    seen_sources: BTreeSet<String>,
}

/// Writes the views until the process stops.
pub async fn run<S: ConfigSink>(
    client: Client,
    namespace: String,
    sink: Arc<S>,
    owners: Arc<Owners>,
) {
    let mut changes = sink.changes();
    let mut w = Writer {
        api: Api::namespaced(client.clone(), &namespace),
        sink,
        owners,
        client,
        namespace,
        written: HashMap::new(),
        summaries: HashMap::new(),
        seen_sources: BTreeSet::new(),
    };
    let mut loaded = false;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            r = changes.recv() => if matches!(r, Err(RecvError::Closed)) { return },
            () = w.owners.changed.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        // Gather a burst of changes into one pass.
        tokio::time::sleep(COALESCE).await;
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = changes.try_recv() {}
        if !loaded {
            match w.load().await {
                Ok(()) => loaded = true,
                Err(e) => {
                    tracing::warn!(namespace = %w.namespace, "listing BundleStatuses: {e}");
                    wait = RETRY;
                    continue;
                }
            }
        }
        let failures = w.pass().await;
        wait = if failures == 0 { RESYNC } else { RETRY };
    }
}

impl<S: ConfigSink> Writer<S> {
    /// Learns what a previous hub wrote, so that a restart rewrites only what changed
    /// and deletes what is gone.
    async fn load(&mut self) -> Result<(), kube::Error> {
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}")))
            .await?;
        for obj in list {
            let owner_uid = obj
                .owner_references()
                .first()
                .map(|o| o.uid.clone())
                .unwrap_or_default();
            self.written.insert(
                obj.name_any(),
                Written {
                    generation: obj.metadata.generation,
                    spec: obj.spec,
                    owner_uid,
                    status: obj.status,
                },
            );
        }
        Ok(())
    }

    /// One pass over every source; returns how many writes failed (each is logged and
    /// retried by a later pass, since only successful writes are remembered).
    async fn pass(&mut self) -> usize {
        let owners = self.owners.snapshot();
        let now = rfc3339(now_unix());
        let mut failures = 0;
        let mut current: BTreeSet<String> = BTreeSet::new();
        for source in self.sink.bundles() {
            let Some(owner) = owners.get(&source.source) else {
                continue;
            };
            let summary = status::source_summary(&source);
            // Before its first revision since the start, the source's bundles are not
            // known: its counts would read 0/0 for a moment.
            if source.published && self.summaries.get(&source.source) != Some(&summary) {
                match self.write_summary(owner, &summary).await {
                    Ok(()) => {
                        self.summaries.insert(source.source.clone(), summary);
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(source = %source.source, "writing the source's summary: {e}");
                    }
                }
            }
            for bundle in &source.bundles {
                current.insert(bundle.name.clone());
                let spec = BundleStatusSpec {
                    source: source.source.clone(),
                    path: bundle.path.clone(),
                };
                if let Err(e) = self
                    .write_bundle(&bundle.name, spec, owner, |old, generation| {
                        status::bundle_status(bundle, &source.commit, old, generation, &now)
                    })
                    .await
                {
                    failures += 1;
                    tracing::warn!(bundle = %bundle.name, namespace = %self.namespace, "writing the BundleStatus: {e}");
                }
            }
            if !source.published {
                // Its bundles are not known yet: keep what a previous hub wrote.
                current.extend(
                    self.written
                        .iter()
                        .filter(|(_, w)| w.spec.source == source.source)
                        .map(|(n, _)| n.clone()),
                );
            }
        }
        // Bundles gone from their source's revision, and bundles of sources whose object
        // this process saw deleted. Objects of a source deleted while no hub ran are left
        // to the garbage collector (their owner reference): right after a start, a source
        // the controllers have not applied yet looks the same.
        self.seen_sources.extend(owners.keys().cloned());
        let stale: Vec<String> = self
            .written
            .iter()
            .filter(|(name, w)| {
                !current.contains(*name)
                    && (owners.contains_key(&w.spec.source)
                        || self.seen_sources.contains(&w.spec.source))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            match self.api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    self.written.remove(&name);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    self.written.remove(&name);
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(bundle = %name, "deleting the BundleStatus: {e}");
                }
            }
        }
        self.summaries.retain(|s, _| owners.contains_key(s));
        self.seen_sources.retain(|s| {
            owners.contains_key(s) || self.written.values().any(|w| w.spec.source == *s)
        });
        failures
    }

    /// Applies the object when its spec or owner changed, then its status when that
    /// changed. `status_of(old, generation)` computes the status.
    async fn write_bundle(
        &mut self,
        name: &str,
        spec: BundleStatusSpec,
        owner: &OwnerReference,
        status_of: impl FnOnce(Option<&BundleStatusStatus>, Option<i64>) -> BundleStatusStatus,
    ) -> Result<(), kube::Error> {
        let params = PatchParams::apply(MANAGER).force();
        let known = self
            .written
            .get(name)
            .filter(|w| w.spec == spec && w.owner_uid == owner.uid)
            .cloned();
        let mut written = match known {
            Some(w) => w,
            None => {
                let object = serde_json::json!({
                    "apiVersion": BundleStatus::api_version(&()),
                    "kind": BundleStatus::kind(&()),
                    "metadata": {
                        "name": name,
                        "labels": { MANAGED_BY: MANAGER, SOURCE_LABEL: spec.source },
                        "ownerReferences": [owner],
                    },
                    "spec": spec,
                });
                let applied = self.api.patch(name, &params, &Patch::Apply(object)).await?;
                let w = Written {
                    spec,
                    owner_uid: owner.uid.clone(),
                    generation: applied.metadata.generation,
                    status: applied.status,
                };
                // Remembered now: a failed status write must not re-apply the object.
                self.written.insert(name.to_string(), w.clone());
                w
            }
        };
        let next = status_of(written.status.as_ref(), written.generation);
        if written.status.as_ref() == Some(&next) {
            return Ok(());
        }
        let patch = serde_json::json!({
            "apiVersion": BundleStatus::api_version(&()),
            "kind": BundleStatus::kind(&()),
            "status": next,
        });
        if let Err(e) = self
            .api
            .patch_status(name, &params, &Patch::Apply(patch))
            .await
        {
            // Deleted by someone else: the next pass creates it again.
            if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                self.written.remove(name);
            }
            return Err(e);
        }
        written.status = Some(next);
        self.written.insert(name.to_string(), written);
        Ok(())
    }

    /// Merges the counts into the source object's status, beside the controller's
    /// conditions (which carry them over, see `status::config_status`).
    async fn write_summary(
        &self,
        owner: &OwnerReference,
        summary: &SourceSummary,
    ) -> Result<(), kube::Error> {
        let patch = serde_json::json!({ "status": {
            "readyClusters": summary.ready_clusters,
            "desiredReadyClusters": summary.desired_ready_clusters,
            "summary": summary.summary,
            "display": { "readyBundleDeployments":
                format!("{}/{}", summary.summary.ready, summary.summary.desired_ready) },
        }});
        if owner.api_version == fleet::GitRepo::api_version(&()) {
            self.merge_status::<fleet::GitRepo>(&owner.name, patch)
                .await
        } else {
            self.merge_status::<flotilla::Source>(&owner.name, patch)
                .await
        }
    }

    async fn merge_status<K>(&self, name: &str, patch: serde_json::Value) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(drop)
    }
}
