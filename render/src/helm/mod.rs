//! Helm charts rendered in process, as `helm template` renders them: loading a chart from
//! the bundle's files or from a `.tgz` ([`chart`], [`archive`], [`ignore`]), values as Helm
//! coalesces them with dependencies, conditions, tags, aliases, import-values and globals
//! ([`values`]), the render itself on the `flotilla-gotmpl` engine, and the output split,
//! parsed and put in Helm's install order with hooks kept ([`order`]). `fleet.yaml`'s
//! `helm:` block is [`spec`].
//!
//! **Architecture Invariant:** pure, like the rest of the crate: no network, no child
//! process, no clock. A remote chart (a Helm repository or `oci://`) arrives as bytes in a
//! [`ChartArchive`] that the hub fetched; this module never fetches.

pub(crate) mod archive;
pub(crate) mod chart;
pub(crate) mod ignore;
pub(crate) mod order;
pub(crate) mod spec;
pub(crate) mod values;

use std::sync::Arc;

/// What a cluster reports about its Kubernetes API (the spoke's `Hello`), for charts that
/// read `.Capabilities`. A cluster that reported nothing renders with `helm template`'s
/// defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Capabilities {
    /// The server's `gitVersion`, e.g. `v1.31.2`.
    pub kube_version: String,
    /// Every `group/version` the server serves (`v1` for the core group).
    pub api_versions: Vec<String>,
}

/// A chart a Helm bundle needs from outside the repo: `helm.chart` with `helm.repo` (a Helm
/// repository), or `oci://...`. The hub fetches it and hands it back as a [`ChartArchive`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteChart {
    /// `helm.chart`: a chart name in `repo`, or an `oci://` reference.
    pub chart: String,
    /// `helm.repo`, the repository URL.
    pub repo: Option<String>,
    /// `helm.version`: a version or a semver range (`None`: the latest stable).
    pub version: Option<String>,
}

/// A fetched chart: the `.tgz` that `helm package` makes, as the hub received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartArchive {
    /// The request this archive answers.
    pub request: RemoteChart,
    /// The chart's name and resolved version (from the repository index or OCI tag).
    pub name: String,
    pub version: String,
    /// The archive's digest as the hub verified it (e.g. `sha256:...`), kept for status.
    pub digest: String,
    pub bytes: Arc<[u8]>,
}
