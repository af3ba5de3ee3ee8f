//! flotilla's Kubernetes API types and the CRDs generated from them.
//!
//! - [`flotilla`]: `flotilla.dev/v1alpha1` `Source`, `ClusterGroup`, `Cluster`,
//!   `BundleStatus`.
//! - [`fleet`]: Rancher Fleet's `fleet.cattle.io/v1alpha1` `GitRepo` and `ClusterGroup`,
//!   read as-is.
//! - [`crd_files`]: the CRD YAML committed under `crds/`, one file per kind, and
//!   [`reference::reference`], the field reference in `docs/crds.md`
//!   (`cargo run -p flotilla-kube-types --bin crdgen -- crds/ docs/crds.md` writes them;
//!   a test fails when they differ).
//!
//! **Architecture Invariant:** types only. No client, no I/O, no mapping to the hub's
//! model: the hub's `kube_mode` owns what the fields mean.

#![forbid(unsafe_code)]

pub mod fleet;
pub mod flotilla;
pub mod meta;
pub mod reference;

use kube::CustomResourceExt;

/// The first line of every generated file.
pub const GENERATED_HEADER: &str = "# Generated from flotilla-kube-types by `cargo run -p flotilla-kube-types --bin crdgen -- crds/`; do not edit.\n";

/// One CRD as committed under `crds/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdFile {
    /// `<plural>.<group>.yaml`, e.g. `gitrepos.fleet.cattle.io.yaml`.
    pub file_name: String,
    pub yaml: String,
}

/// Every CRD, in a fixed order.
pub fn crd_files() -> Result<Vec<CrdFile>, serde_saphyr::ser::Error> {
    [
        flotilla::Source::crd(),
        flotilla::ClusterGroup::crd(),
        flotilla::Cluster::crd(),
        flotilla::BundleStatus::crd(),
        fleet::GitRepo::crd(),
        fleet::ClusterGroup::crd(),
    ]
    .into_iter()
    .map(|crd| {
        let name = crd.metadata.name.clone().unwrap_or_default();
        Ok(CrdFile {
            file_name: format!("{name}.yaml"),
            yaml: format!("{GENERATED_HEADER}{}", serde_saphyr::to_string(&crd)?),
        })
    })
    .collect()
}
