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
pub(crate) mod engine;
pub(crate) mod ignore;
pub(crate) mod order;
pub(crate) mod release;
pub(crate) mod schema;
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

/// `helm template`'s Kubernetes version when none is given (Helm v3.22 as built from its
/// Go module: `chartutil.DefaultCapabilities`).
pub(crate) const DEFAULT_KUBE_VERSION: &str = "v1.20.0";

/// `helm template`'s API versions when none are given: every group/version of client-go's
/// scheme, in the order Helm v3.22 lists them (`.Capabilities.APIVersions | toJson`).
pub(crate) const DEFAULT_API_VERSIONS: &[&str] = &[
    "v1",
    "admissionregistration.k8s.io/v1",
    "admissionregistration.k8s.io/v1alpha1",
    "admissionregistration.k8s.io/v1beta1",
    "internal.apiserver.k8s.io/v1alpha1",
    "apps/v1",
    "apps/v1beta1",
    "apps/v1beta2",
    "authentication.k8s.io/v1",
    "authentication.k8s.io/v1alpha1",
    "authentication.k8s.io/v1beta1",
    "authorization.k8s.io/v1",
    "authorization.k8s.io/v1beta1",
    "autoscaling/v1",
    "autoscaling/v2",
    "batch/v1",
    "batch/v1beta1",
    "certificates.k8s.io/v1",
    "certificates.k8s.io/v1beta1",
    "certificates.k8s.io/v1alpha1",
    "coordination.k8s.io/v1alpha2",
    "coordination.k8s.io/v1beta1",
    "coordination.k8s.io/v1",
    "discovery.k8s.io/v1",
    "discovery.k8s.io/v1beta1",
    "events.k8s.io/v1",
    "events.k8s.io/v1beta1",
    "extensions/v1beta1",
    "flowcontrol.apiserver.k8s.io/v1",
    "flowcontrol.apiserver.k8s.io/v1beta1",
    "flowcontrol.apiserver.k8s.io/v1beta2",
    "flowcontrol.apiserver.k8s.io/v1beta3",
    "lifecycle.k8s.io/v1alpha1",
    "networking.k8s.io/v1",
    "networking.k8s.io/v1beta1",
    "node.k8s.io/v1",
    "node.k8s.io/v1alpha1",
    "node.k8s.io/v1beta1",
    "policy/v1",
    "policy/v1beta1",
    "rbac.authorization.k8s.io/v1",
    "rbac.authorization.k8s.io/v1beta1",
    "rbac.authorization.k8s.io/v1alpha1",
    "resource.k8s.io/v1",
    "resource.k8s.io/v1beta2",
    "resource.k8s.io/v1beta1",
    "resource.k8s.io/v1alpha3",
    "scheduling.k8s.io/v1alpha3",
    "scheduling.k8s.io/v1beta1",
    "scheduling.k8s.io/v1",
    "storage.k8s.io/v1beta1",
    "storage.k8s.io/v1",
    "storage.k8s.io/v1alpha1",
    "storagemigration.k8s.io/v1",
    "storagemigration.k8s.io/v1beta1",
    "apiextensions.k8s.io/v1beta1",
    "apiextensions.k8s.io/v1",
];

impl Capabilities {
    /// What `helm template --kube-version K --api-versions A,B` gives a chart: `K` read as
    /// Kubernetes reads a generic version (`1.31` -> `v1.31`, `v1.31.2+k3s1` ->
    /// `v1.31.2`; default `v1.20.0`), and Helm's default API versions followed by `extra`.
    pub fn helm_template(
        kube_version: Option<&str>,
        extra: &[String],
    ) -> Result<Capabilities, String> {
        let kube_version = match kube_version {
            Some(k) => parse_generic_version(k)
                .map(|parts| {
                    let parts: Vec<String> = parts.iter().map(u64::to_string).collect();
                    format!("v{}", parts.join("."))
                })
                .ok_or_else(|| format!("invalid kube version {k:?}: want e.g. v1.31.0"))?,
            None => DEFAULT_KUBE_VERSION.to_string(),
        };
        let mut api_versions: Vec<String> =
            DEFAULT_API_VERSIONS.iter().map(|s| s.to_string()).collect();
        api_versions.extend(extra.iter().filter(|s| !s.is_empty()).cloned());
        Ok(Capabilities {
            kube_version,
            api_versions,
        })
    }
}

/// Kubernetes' `version.ParseGeneric`: an optional `v`, then at least two dot-separated
/// numbers; anything after the numbers (`+k3s1`, `-gke.100`) is ignored.
pub(crate) fn parse_generic_version(s: &str) -> Option<Vec<u64>> {
    let s = s.trim();
    let s = s.strip_prefix('v').unwrap_or(s);
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let nums: Vec<u64> = s[..end]
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    if nums.len() < 2 || (end < s.len() && !s[end..].starts_with(['-', '+'])) {
        return None;
    }
    Some(nums)
}
