//! Kubernetes mode: the hub takes its configuration (sources, groups, hub-side cluster
//! labels) from objects in one namespace of a Kubernetes API, and writes their status
//! back. Fleet's `GitRepo` and `ClusterGroup` are read as-is, beside flotilla's own
//! `Source`, `ClusterGroup` and `Cluster` (`flotilla_kube_types`).
//!
//! - [`mapping`]: pure; an object becomes the hub's `SourceSpec`/`GroupSpec`, with every
//!   field it cannot honour listed with a reason.
//! - [`status`]: pure; the conditions written back, and whether anything changed.
//! - [`controller`]: the kube-runtime controllers that drive a [`ConfigSink`].
//! - [`bundle_status`]: the task that writes one read-only `BundleStatus` per bundle and
//!   the sources' cluster counts, coalesced, from [`ConfigSink::bundles`].
//!
//! **Architecture Invariant:** this module never touches the hub's state directly. It
//! speaks to it only through [`ConfigSink`], which the hub's state implements; the
//! embedded mode (the Admin API) stays the default and knows nothing of Kubernetes.

pub mod bundle_status;
pub mod controller;
pub mod hub_sink;
pub mod mapping;
pub mod status;

use std::future::Future;
use std::path::PathBuf;

use std::collections::BTreeSet;

use flotilla_model::{Labels, State};

pub use crate::credentials::Kind as CredentialKind;
pub use crate::fleet::FleetEvent;
pub use crate::records::{HelmAuthSpec, SourceSpec};
pub use crate::targeting::{GroupSpec, TargetSpec};
pub use controller::{KubeModeError, run};

/// Where the configuration lives: `flotilla-hub run --kubeconfig K --namespace NS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeModeConfig {
    /// None: the in-cluster ServiceAccount, or `$KUBECONFIG`, or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The one namespace whose objects are read.
    pub namespace: String,
}

/// A source as the hub needs it: the spec, and the secrets its Secret references
/// resolved to. Equal values mean nothing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub spec: SourceSpec,
    /// The source's credential files, by kind; kinds not listed are cleared.
    pub credentials: Vec<(CredentialKind, Vec<u8>)>,
    /// The Helm repositories' secrets (the non-secret part is `spec.helm_auth`).
    pub helm: HelmSecrets,
}

/// The secret part of `flotilla source set --helm-*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelmSecrets {
    pub password: Vec<u8>,
    pub ca_pem: Vec<u8>,
    pub token: Vec<u8>,
}

/// What an admin decides on the hub about one cluster (a `Cluster` object's spec).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterLabels {
    /// Hub-side labels; they win over the token's and the spoke's.
    pub labels: Labels,
    /// Keys of the spoke's reported labels the hub trusts.
    pub accept: Vec<String>,
}

/// How far a source has come, for its `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    /// Not fetched or not published yet.
    Pending { message: String },
    /// The revision `commit` is published.
    Ready { commit: String, message: String },
    /// Fetching, verifying or rendering fails; the last good revision stays deployed.
    Failed { message: String },
}

/// One registered cluster as the hub knows it, for a `Cluster` object's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub connected: bool,
    pub labels: Labels,
    pub reported_labels: Labels,
    pub agent_version: String,
    /// Unix seconds; 0 for never.
    pub last_seen: i64,
}

/// One source's bundles as the hub deploys them now, for the `BundleStatus` objects and
/// the source's summary fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceBundles {
    pub source: String,
    /// False until the hub has published a revision of the source since it started: its
    /// bundle list is not known yet, so no `BundleStatus` of it is deleted.
    pub published: bool,
    /// The published commit; empty before the first.
    pub commit: String,
    pub bundles: Vec<BundleView>,
}

/// One bundle and its state on each cluster it targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleView {
    pub name: String,
    /// Its folder in the repository.
    pub path: String,
    /// The published revision's load errors (`file:line: message`); the last good
    /// revision stays deployed meanwhile.
    pub errors: Vec<String>,
    /// One entry per targeted cluster, as `flotilla status` shows it.
    pub clusters: Vec<PairState>,
    /// The deployments the targeted clusters should run.
    pub deployment_ids: BTreeSet<String>,
}

/// A bundle's state on one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairState {
    pub cluster: String,
    pub state: State,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The hub will not take this configuration as it is (a bad name, a bad regex...):
    /// the object is `Stalled` until it changes.
    #[error("refused: {0}")]
    Refused(String),
    /// The hub could not act now (its store is busy...): retried with backoff.
    #[error("{0}")]
    Unavailable(String),
}

/// The hub as Kubernetes mode drives it. Every call is idempotent: the controllers call
/// `apply_*` whenever what they read differs from what they last applied, and after a
/// restart once for every object.
pub trait ConfigSink: Send + Sync + 'static {
    fn apply_source(
        &self,
        source: SourceConfig,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Removes the source and unassigns its bundles; no-op when there is none.
    fn remove_source(&self, name: &str) -> impl Future<Output = Result<(), SinkError>> + Send;
    fn apply_group(&self, group: GroupSpec) -> impl Future<Output = Result<(), SinkError>> + Send;
    fn remove_group(&self, name: &str) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Replaces the cluster's hub-side labels and accepted keys; `ClusterLabels::default()`
    /// when its object is deleted.
    fn set_cluster_labels(
        &self,
        cluster: &str,
        labels: ClusterLabels,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// None when the hub has no such source.
    fn source_state(&self, name: &str) -> Option<SourceState>;
    /// None when no cluster of that name has registered.
    fn cluster_view(&self, name: &str) -> Option<ClusterView>;
    /// Every source's bundles and their per-cluster states, sorted by source name.
    fn bundles(&self) -> Vec<SourceBundles>;
    /// Fires when something a bundle's state depends on may have changed (a revision,
    /// a status, a connection); lagging is fine, the receiver only needs to know that.
    fn changes(&self) -> tokio::sync::broadcast::Receiver<FleetEvent>;
}
