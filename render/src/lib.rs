//! Bundle discovery and rendering: turns the folders of a fleet repo (Rancher Fleet's
//! `fleet.yaml`, raw YAML, overlays, a kustomize subset) into the exact objects one
//! cluster receives.
//!
//! **Architecture Invariant:** a pure library. No network, no child processes, no clock,
//! no git library; it reads files only under the repo root or tree it is given, and only
//! while loading: a loaded [`Bundle`] holds a snapshot of what it read, so
//! [`Bundle::render`] is a pure function of the bundle and the cluster. Rendering is deterministic: the same input gives
//! byte-identical manifests and digests.
//!
//! Entry points: [`discover_tree`] (the hub, for a source's paths in a git tree indexed as
//! a [`RepoTree`]), [`discover`] (the same over a folder), [`load_bundle_dir`]
//! (`flotilla render DIR`), then [`Bundle::select`] and [`Bundle::render`] per cluster.
//! The format is described in `docs/bundles.md`.
#![forbid(unsafe_code)]

mod budget;
mod bundle;
mod diagnostic;
mod discovery;
mod fleet_yaml;
mod helm;
mod json_patch;
mod kustomize;
#[cfg(test)]
mod laws;
mod output;
mod overlay;
mod repo_fs;
mod repo_tree;
mod scope;
mod sources;
mod strategic_merge;
mod values;
mod yaml;

use std::path::Path;

pub use bundle::Bundle;
pub use diagnostic::Diagnostic;
pub use fleet_yaml::{
    BundleOptions, ComparePatch, CorrectDrift, DependsOn, Diff, Ignore, IntOrString,
    OverrideTarget, Partition, PatchOperation, RolloutStrategy,
};
pub use helm::spec::HelmDeployOptions;
pub use helm::{Capabilities, ChartArchive, RemoteChart};
pub use repo_tree::{MAX_LINK_TARGET_BYTES, ReadBlob, RepoTree, TreeError};

/// What a bundle may read, build and spend, and how large a source's git tree may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Largest total of all files one bundle reads.
    pub max_bundle_bytes: u64,
    /// Most objects one render may produce, counted as they are built.
    pub max_objects: usize,
    /// Most bytes of objects one bundle's renders may build or copy (see `budget.rs`).
    pub max_render_bytes: u64,
    /// Most work steps one bundle's renders may take: one object through one
    /// transformer, one patch tried on one object, one visit of a kustomization, and a
    /// step per 16 bytes of YAML parsed (see `budget.rs`).
    pub max_render_work: u64,
    /// Deepest chain of kustomizations (resources and bases) below the bundle's own.
    pub max_kustomize_depth: usize,
    /// Git trees ([`RepoTree`]), checked from object headers before any blob is read:
    /// most entries in the whole tree,
    pub max_tree_entries: usize,
    /// deepest folder nesting,
    pub max_tree_depth: usize,
    /// largest blob under the source's paths,
    pub max_tree_blob_bytes: u64,
    /// and most blob bytes under the source's paths.
    pub max_tree_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 4 << 20,
            // A bundle may render up to the 64 MiB a spoke accepts
            // (`flotilla_proto::limits::MAX_CONTENT_BYTES`): it may read that much, build
            // twice that (stamping and transformers copy), and parse it.
            max_bundle_bytes: 64 << 20,
            max_objects: 5000,
            max_render_bytes: 128 << 20,
            max_render_work: 8_000_000,
            max_kustomize_depth: 20,
            max_tree_entries: 100_000,
            max_tree_depth: 64,
            max_tree_blob_bytes: 64 << 20,
            max_tree_total_bytes: 512 << 20,
        }
    }
}

/// What the renderer knows about a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    pub name: String,
    pub labels: flotilla_model::Labels,
    pub groups: Vec<GroupInfo>,
    /// What the cluster reported about its API (`None`: nothing, Helm charts then see
    /// `helm template`'s defaults).
    pub capabilities: Option<Capabilities>,
}

/// A cluster group the cluster belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub labels: flotilla_model::Labels,
}

/// One bundle found by [`discover`]; a broken bundle carries its diagnostics.
#[derive(Debug, Clone)]
pub struct LoadedBundle {
    pub name: String,
    /// Bundle folder relative to the repo root ("" for the root).
    pub path: String,
    pub result: Result<Bundle, Vec<Diagnostic>>,
}

/// The outcome of [`Bundle::select`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selection {
    /// A matching `targetCustomizations[]` entry says `doNotDeploy: true`.
    DoNotDeploy,
    Deploy(RenderKey),
}

/// Names one distinct render of a bundle: equal keys give byte-identical output. It holds
/// the customization and, only for bundles with `clusterValues: true` (or Helm values with
/// Fleet's `${ }` templating), the values used; for Helm charts that read `.Capabilities`,
/// the cluster's capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RenderKey {
    variant: Option<(usize, String)>,
    values: Vec<(String, Option<String>)>,
    /// Only for Helm charts that read `.Capabilities`: what the cluster reported.
    capabilities: Option<Capabilities>,
}

impl RenderKey {
    /// The chosen `targetCustomizations[]` name (`#N` when unnamed), `None` for the default.
    pub fn customization(&self) -> Option<&str> {
        self.variant.as_ref().map(|(_, n)| n.as_str())
    }
}

/// The result of rendering a bundle for a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Objects in manifest order.
    pub objects: Vec<RenderedObject>,
    /// Multi-document YAML, each document opened by `---`.
    pub manifest: String,
    /// `ContentDigest::of(manifest)`.
    pub digest: flotilla_model::ContentDigest,
}

/// One object of a render.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedObject {
    /// The repo-relative file it came from.
    pub source: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub value: serde_json::Value,
}

/// Finds and loads every bundle under `paths` (relative to `repo_root`; empty means the
/// root). Never panics; a broken bundle is an `Err` in its own [`LoadedBundle`] and the
/// others are unaffected. Bundles come back sorted by path.
pub fn discover(
    repo_root: &Path,
    source_name: &str,
    paths: &[String],
    limits: &Limits,
) -> Vec<LoadedBundle> {
    discovery::discover(repo_fs::DiskFs::new(repo_root), source_name, paths, limits)
}

/// Like [`discover`], for a repo given as a git tree: nothing is checked out, and a blob is
/// read through `blobs` only when a bundle reads that file, after its size was checked.
/// Symlinks resolve inside the tree only. `paths` should be those the tree was built for.
pub fn discover_tree<K>(
    tree: &RepoTree<K>,
    blobs: &dyn ReadBlob<K>,
    source_name: &str,
    paths: &[String],
    limits: &Limits,
) -> Vec<LoadedBundle> {
    discovery::discover(
        repo_tree::TreeFs::new(tree, blobs),
        source_name,
        paths,
        limits,
    )
}

/// Applies an RFC 6902 JSON patch to `doc`, all or nothing, within the default render
/// limits. The spoke uses it for `diff.comparePatches`, so a patch means the same on both
/// sides of the wire.
pub fn apply_json_patch(
    doc: &mut serde_json::Value,
    ops: &[serde_json::Value],
) -> Result<(), String> {
    json_patch::apply(doc, ops, &budget::Budget::new(&Limits::default()))
}

/// Loads `dir` as one bundle whose repo root is `dir` itself (for `flotilla render DIR`).
/// Nested bundle folders below it are left out, with a warning.
pub fn load_bundle_dir(dir: &Path, name: &str, limits: &Limits) -> Result<Bundle, Vec<Diagnostic>> {
    bundle::load(repo_fs::DiskFs::new(dir), "", name, limits, true)
}
