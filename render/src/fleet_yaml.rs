//! `fleet.yaml` / `flotilla.yaml`: the typed bundle spec, read as Rancher Fleet writes it.
//! Owns the field list, the options carried to later stages (`BundleOptions`), and the
//! diagnostics about keys: unknown at any depth (with their path and `file:line`), or
//! known Fleet fields that flotilla does not support. It does not render.
//!
//! The serde types below *are* the schema: a key is known exactly when a type declares
//! it, so a new field needs only its type. Keys no type declares are collected with
//! `serde_ignored` (which reports the path of every ignored key at any depth) and located
//! with the YAML parser's positions (`key_lines`). A field typed as a free-form value
//! (`labels`, `helm.values`...) holds user data, and its keys are never checked.

use std::collections::BTreeMap;

use flotilla_model::{LabelSelector, Labels, State};
use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;
use crate::helm::spec::HelmSpec;
use crate::output::canonical_json;

/// Options carried from `fleet.yaml` to the hub and spoke. Parsed and validated here; the
/// renderer gives them no behaviour. Fields added after the first release are left out of
/// the JSON while they hold their default, so existing deployment ids do not change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BundleOptions {
    pub depends_on: Vec<DependsOn>,
    pub rollout_strategy: Option<RolloutStrategy>,
    pub correct_drift: CorrectDrift,
    pub keep_resources: bool,
    pub paused: bool,
    pub diff: Diff,
    pub labels: Labels,
    #[serde(skip_serializing_if = "Ignore::is_empty")]
    pub ignore: Ignore,
    /// Helm bundles only: the release name and Fleet's Helm deploy options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm: Option<crate::helm::spec::HelmDeployOptions>,
}

impl BundleOptions {
    /// Deterministic JSON (sorted keys, no whitespace); the hub hashes it with the content
    /// digest into the deployment id.
    pub fn canonical_json(&self) -> String {
        serde_json::to_value(self)
            .map(|v| canonical_json(&v))
            .unwrap_or_default()
    }
}

/// `dependsOn[]`: a bundle by name, or the bundles matching a label selector, and the
/// states of theirs that count as done (`acceptedStates`, default Ready).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DependsOn {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accepted_states: Vec<State>,
}

impl DependsOn {
    /// Whether a dependency in `state` lets the dependent go ahead.
    pub fn accepts(&self, state: State) -> bool {
        if self.accepted_states.is_empty() {
            state == State::Ready
        } else {
            self.accepted_states.contains(&state)
        }
    }
}

/// A count or a percentage, as in Kubernetes' `IntOrString`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutStrategy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable_partitions: Option<IntOrString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_partition_size: Option<IntOrString>,
    pub partitions: Vec<Partition>,
    /// Most clusters moved onto a new deployment at one time, across all partitions:
    /// clusters on the new deployment and not Ready yet count against it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new: Option<u32>,
    /// Automatic partitions are made only when more clusters than this are targeted;
    /// up to it, all clusters form one partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_partition_threshold: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Partition {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_group_selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CorrectDrift {
    pub enabled: bool,
    pub force: bool,
    /// Fleet keeps failed Helm releases with it; flotilla keeps no release history, so
    /// it has no effect (a warning says so).
    pub keep_fail_history: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Diff {
    pub compare_patches: Vec<ComparePatch>,
}

/// `diff.comparePatches[]` and its operations are the shared domain types (the spoke
/// enforces them); they are parsed and checked here.
pub use flotilla_model::{ComparePatch, PatchOperation};

const PATCH_OPS: &[&str] = &["add", "remove", "replace", "move", "copy", "test"];

/// `ignore`: status conditions that do not count against readiness. A condition is
/// ignored when it has every key/value of one entry (`{type: Progressing, status:
/// "False"}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Ignore {
    pub conditions: Vec<flotilla_model::IgnoreCondition>,
}

impl Ignore {
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }
}

/// `overrideTargets[]`: when present, these replace the source's targets for this bundle
/// (Fleet's `GitTarget`: fields ANDed, entries ORed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OverrideTarget {
    pub name: Option<String>,
    pub cluster_selector: Option<LabelSelector>,
    pub cluster_group: Option<String>,
    pub cluster_group_selector: Option<LabelSelector>,
    pub cluster_name: Option<String>,
}

/// The parts of `fleet.yaml` that decide what is rendered.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RenderSpec {
    pub namespace: Option<String>,
    pub default_namespace: Option<String>,
    pub overlays: Vec<String>,
    pub kustomize_dir: Option<String>,
    pub customizations: Vec<Customization>,
    /// flotilla extension: substitute `${cluster.*}` in this bundle's YAML.
    pub cluster_values: bool,
    /// flotilla extension: extra cluster-scoped kinds, as `Kind` or `group/Kind`.
    pub cluster_scoped_kinds: Vec<String>,
    pub namespace_meta: NamespaceMeta,
    /// `helm:`; a bundle with it (or with `Chart.yaml` in its folder) is a Helm bundle.
    pub helm: Option<HelmSpec>,
}

/// `namespaceLabels`, `namespaceAnnotations` and `deleteNamespace`: what the bundle says
/// about its target namespace (`namespace`, else `defaultNamespace`). The renderer puts
/// them on that Namespace object (see `bundle.rs`), so they are part of what is applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct NamespaceMeta {
    pub labels: Labels,
    pub annotations: Labels,
    pub delete: bool,
    /// `createNamespace`: add the Namespace object even when nothing else is said about it.
    pub create: bool,
}

impl NamespaceMeta {
    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty() && !self.delete && !self.create
    }
}

/// One `targetCustomizations[]` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Customization {
    /// `name`, or `#<index>` when unnamed.
    pub name: String,
    pub cluster_selector: Option<LabelSelector>,
    pub cluster_group: Option<String>,
    pub cluster_group_selector: Option<LabelSelector>,
    pub cluster_name: Option<String>,
    pub do_not_deploy: bool,
    pub namespace: Option<String>,
    pub default_namespace: Option<String>,
    pub overlays: Option<Vec<String>>,
    pub kustomize_dir: Option<String>,
    pub options: TargetOptions,
    pub namespace_labels: Option<Labels>,
    pub namespace_annotations: Option<Labels>,
    pub delete_namespace: Option<bool>,
    pub create_namespace: Option<bool>,
    pub helm: Option<HelmSpec>,
}

/// Deployment options a `targetCustomizations[]` entry may set for its clusters; each
/// one set replaces the bundle's.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TargetOptions {
    correct_drift: Option<CorrectDrift>,
    keep_resources: Option<bool>,
    diff: Option<Diff>,
    ignore: Option<Ignore>,
}

impl TargetOptions {
    /// `base` with this customization's options over it.
    pub(crate) fn over(&self, base: &BundleOptions) -> BundleOptions {
        fn set<T: Clone>(slot: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *slot = v.clone();
            }
        }
        let mut o = base.clone();
        set(&mut o.correct_drift, &self.correct_drift);
        set(&mut o.keep_resources, &self.keep_resources);
        set(&mut o.diff, &self.diff);
        set(&mut o.ignore, &self.ignore);
        o
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawFile {
    name: Option<String>,
    /// flotilla extension: unknown keys are errors, not warnings.
    strict: bool,
    namespace: Option<String>,
    default_namespace: Option<String>,
    labels: Labels,
    kustomize: Option<RawKustomize>,
    yaml: Option<RawYaml>,
    helm: Option<HelmSpec>,
    target_customizations: Vec<RawCustomization>,
    override_targets: Vec<OverrideTarget>,
    depends_on: Vec<DependsOn>,
    rollout_strategy: Option<RolloutStrategy>,
    correct_drift: Option<CorrectDrift>,
    keep_resources: bool,
    paused: bool,
    diff: Diff,
    ignore: Ignore,
    namespace_labels: Labels,
    namespace_annotations: Labels,
    delete_namespace: bool,
    create_namespace: bool,
    /// flotilla always deletes a removed bundle's CRDs (Fleet's `true`); `false` warns.
    #[serde(rename = "deleteCRDResources")]
    delete_crd_resources: Option<bool>,
    cluster_values: bool,
    cluster_scoped_kinds: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawKustomize {
    dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawYaml {
    overlays: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawCustomization {
    name: Option<String>,
    cluster_selector: Option<LabelSelector>,
    cluster_group: Option<String>,
    cluster_group_selector: Option<LabelSelector>,
    cluster_name: Option<String>,
    do_not_deploy: bool,
    namespace: Option<String>,
    default_namespace: Option<String>,
    kustomize: Option<RawKustomize>,
    yaml: Option<RawYaml>,
    helm: Option<HelmSpec>,
    correct_drift: Option<CorrectDrift>,
    keep_resources: Option<bool>,
    diff: Option<Diff>,
    ignore: Option<Ignore>,
    namespace_labels: Option<Labels>,
    namespace_annotations: Option<Labels>,
    delete_namespace: Option<bool>,
    create_namespace: Option<bool>,
    #[serde(rename = "deleteCRDResources")]
    delete_crd_resources: Option<bool>,
}

impl RawCustomization {
    fn options(&self) -> TargetOptions {
        TargetOptions {
            correct_drift: self.correct_drift.clone(),
            keep_resources: self.keep_resources,
            diff: self.diff.clone(),
            ignore: self.ignore.clone(),
        }
    }
}

/// Fleet fields flotilla does not implement, with the reason; using one is an error.
/// Top level (`fleet.yaml`'s own keys).
const TOP_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "serviceAccount",
        "the spoke applies with its own credentials; impersonation is not implemented",
    ),
    (
        "forceSyncGeneration",
        "use `flotilla source sync` to force a new poll",
    ),
    (
        "imageScans",
        "image scanning and commits back to git are not implemented",
    ),
    (
        "helmSecretName",
        "chart repository credentials belong to the source: flotilla source add --helm-username/--helm-password-file",
    ),
    (
        "downstreamResources",
        "the hub holds no cluster credentials to copy objects from",
    ),
    (
        "targets",
        "targets belong to the source (`flotilla source add --target`); use overrideTargets",
    ),
    (
        "targetRestrictions",
        "targets belong to the source (`flotilla source add --target`)",
    ),
    (
        "resources",
        "a field of Fleet's Bundle object, not of fleet.yaml",
    ),
    (
        "contentsId",
        "a field of Fleet's Bundle object, not of fleet.yaml",
    ),
    (
        "helmOpOptions",
        "a field of Fleet's Bundle object, not of fleet.yaml",
    ),
];
/// Inside a `targetCustomizations[]` entry.
const TARGET_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "serviceAccount",
        "the spoke applies with its own credentials; impersonation is not implemented",
    ),
    (
        "forceSyncGeneration",
        "use `flotilla source sync` to force a new poll",
    ),
    (
        "downstreamResources",
        "the hub holds no cluster credentials to copy objects from",
    ),
];

/// A parsed `fleet.yaml`: what to render, the options, and diagnostics.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub spec: RenderSpec,
    pub options: BundleOptions,
    /// `name:`: the bundle's name instead of the one computed from its path.
    pub name: Option<String>,
    /// `overrideTargets:` when it has entries.
    pub override_targets: Option<Vec<OverrideTarget>>,
    /// Every warning, unknown keys included.
    pub warnings: Vec<Diagnostic>,
    /// The unknown keys (`unknown field PATH`), for a strict caller to make errors of.
    pub unknown_keys: Vec<Diagnostic>,
}

/// One step of a path into the YAML document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    Key(String),
    Index(usize),
}

/// `a.b[0].c`, as users read a path.
fn path_text(path: &[Segment]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Segment::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            segments(parent, out);
            out.push(Segment::Index(*index));
        }
        Path::Map { parent, key } => {
            segments(parent, out);
            out.push(Segment::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent, out),
    }
}

/// Paths deeper than this are not recorded (fleet.yaml's own fields are at most about 8
/// deep; below that is user data), nor more than `MAX_KEY_LINES` of them: a hostile file
/// cannot make the map big. Lookups fall back to the nearest recorded ancestor.
const MAX_KEY_DEPTH: usize = 16;
const MAX_KEY_LINES: usize = 10_000;
/// Unknown keys reported one by one; the rest are counted in one more diagnostic.
const MAX_UNKNOWN_REPORTED: usize = 100;

/// The line of every mapping key and sequence item of a YAML document, by path. Aliased
/// content has no path of its own; lookups fall back to the nearest ancestor.
fn key_lines(text: &str) -> BTreeMap<Vec<Segment>, u32> {
    use serde_saphyr::granit_parser::{Event, Parser};
    enum Frame {
        Map {
            path: Vec<Segment>,
            key: Option<String>,
        },
        Seq {
            path: Vec<Segment>,
            next: usize,
        },
    }
    // The path of the node that starts now, recording its line.
    fn node_path(
        stack: &mut [Frame],
        line: u32,
        out: &mut BTreeMap<Vec<Segment>, u32>,
    ) -> Option<Vec<Segment>> {
        match stack.last_mut() {
            None => Some(Vec::new()),
            Some(Frame::Map { path, key }) => {
                let k = key.take()?;
                let mut p = path.clone();
                p.push(Segment::Key(k));
                Some(p)
            }
            Some(Frame::Seq { path, next }) => {
                let mut p = path.clone();
                p.push(Segment::Index(*next));
                *next += 1;
                out.entry(p.clone()).or_insert(line);
                Some(p)
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    // Inside a complex (non-scalar) key: its events are skipped, `depth` deep.
    let mut skip = 0usize;
    // Whether the map on top waits for a key (true) or a value (false).
    let mut want_key: Vec<bool> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(Ok((event, span))) = parser.next_event() {
        let line = u32::try_from(span.start.line()).unwrap_or(u32::MAX).max(1);
        let opens = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
        let closes = matches!(event, Event::MappingEnd | Event::SequenceEnd);
        if skip > 0 {
            if opens {
                skip += 1;
            } else if closes {
                skip -= 1;
            }
            continue;
        }
        let is_node = opens || matches!(event, Event::Scalar(..) | Event::Alias(..));
        if !is_node {
            if closes {
                stack.pop();
                want_key.pop();
            }
            continue;
        }
        if want_key.last() == Some(&true) {
            // A mapping key.
            if let (Event::Scalar(k, ..), Some(Frame::Map { path, key })) =
                (&event, stack.last_mut())
            {
                let mut p = path.clone();
                p.push(Segment::Key(k.to_string()));
                out.entry(p).or_insert(line);
                *key = Some(k.to_string());
            } else if opens {
                skip = 1;
            }
            if let Some(w) = want_key.last_mut() {
                *w = false;
            }
            continue;
        }
        if let (Some(Frame::Map { .. }), Some(w)) = (stack.last(), want_key.last_mut()) {
            *w = true;
        }
        let path = node_path(&mut stack, line, &mut out)
            .filter(|p| p.len() < MAX_KEY_DEPTH && out.len() < MAX_KEY_LINES);
        match (event, path) {
            (Event::MappingStart(..), Some(path)) => {
                stack.push(Frame::Map { path, key: None });
                want_key.push(true);
            }
            (Event::SequenceStart(..), Some(path)) => {
                stack.push(Frame::Seq { path, next: 0 });
                want_key.push(false);
            }
            (Event::MappingStart(..) | Event::SequenceStart(..), None) => skip = 1,
            _ => {}
        }
    }
    out
}

/// Where keys are, for diagnostics.
struct Lines(BTreeMap<Vec<Segment>, u32>);

impl Lines {
    /// The line of `path`, else of its nearest ancestor that has one, else 1.
    fn of(&self, path: &[Segment]) -> u32 {
        (0..=path.len())
            .rev()
            .find_map(|n| self.0.get(&path[..n]).copied())
            .unwrap_or(1)
    }

    fn of_keys(&self, keys: &[&str]) -> u32 {
        let p: Vec<Segment> = keys.iter().map(|k| Segment::Key(k.to_string())).collect();
        self.of(&p)
    }
}

/// Parses `fleet.yaml` text. `file` is its repo-relative path, for diagnostics.
pub(crate) fn parse(file: &str, text: &str) -> Result<Parsed, Vec<Diagnostic>> {
    let empty = || Parsed {
        spec: RenderSpec::default(),
        options: BundleOptions::default(),
        name: None,
        override_targets: None,
        warnings: Vec::new(),
        unknown_keys: Vec::new(),
    };
    let value = crate::yaml::parse_single(file, text).map_err(|d| vec![d])?;
    if value.is_null() {
        return Ok(empty());
    }
    if !value.is_object() {
        return Err(vec![Diagnostic::at(
            file,
            1,
            "fleet.yaml must be a mapping",
        )]);
    }
    let mut opts = serde_saphyr::Options::default();
    opts.legacy_octal_numbers = true;
    opts.strict_booleans = true;
    // Read from the text first: a wrong type is reported at its line and column.
    let raw: RawFile = serde_saphyr::from_str_with_options(text, opts).map_err(|e| {
        let loc = e.location();
        let msg = e.without_snippet().to_string();
        let msg = msg.rsplit_once(" at line ").map(|(m, _)| m).unwrap_or(&msg);
        vec![
            Diagnostic::at(
                file,
                loc.map(|l| l.line() as u32).unwrap_or(1),
                format!("invalid fleet.yaml: {msg}"),
            )
            .with_column(loc.map(|l| l.column() as u32)),
        ]
    })?;
    let lines = Lines(key_lines(text));

    // Then again from the value, only to learn which keys no type declares.
    let mut ignored: Vec<Vec<Segment>> = Vec::new();
    let _: Result<RawFile, _> = serde_ignored::deserialize(&value, |path| {
        let mut p = Vec::new();
        segments(&path, &mut p);
        ignored.push(p);
    });
    let mut warnings = Vec::new();
    let mut unknown_keys = Vec::new();
    let mut errors = Vec::new();
    let unreported = ignored.len().saturating_sub(MAX_UNKNOWN_REPORTED);
    ignored.truncate(MAX_UNKNOWN_REPORTED);
    if unreported > 0 {
        let d = Diagnostic::new(file, format!("{unreported} more unknown fields"));
        if raw.strict {
            errors.push(d);
        } else {
            warnings.push(d.clone());
            unknown_keys.push(d);
        }
    }
    for path in ignored {
        let line = lines.of(&path);
        let text_path = path_text(&path);
        let unsupported = match path.as_slice() {
            [Segment::Key(k)] => TOP_UNSUPPORTED.iter().find(|(n, _)| n == k),
            [Segment::Key(t), Segment::Index(_), Segment::Key(k)]
                if t == "targetCustomizations" =>
            {
                TARGET_UNSUPPORTED.iter().find(|(n, _)| n == k)
            }
            _ => None,
        };
        if let Some((_, why)) = unsupported {
            errors.push(Diagnostic::at(
                file,
                line,
                format!("{text_path} is not supported by flotilla: {why} (see docs/bundles.md)"),
            ));
        } else if raw.strict {
            errors.push(Diagnostic::at(
                file,
                line,
                format!("unknown field {text_path} (strict: true makes unknown fields errors)"),
            ));
        } else {
            let d = Diagnostic::at(file, line, format!("unknown field {text_path}"));
            warnings.push(Diagnostic {
                message: format!("{} is ignored", d.message),
                ..d.clone()
            });
            unknown_keys.push(d);
        }
    }

    if let Some(helm) = &raw.helm {
        check_helm(file, lines.of_keys(&["helm"]), helm, &mut errors);
    }
    let selector_error = |path: &[Segment], s: &LabelSelector, errors: &mut Vec<Diagnostic>| {
        if let Err(e) = s.validate() {
            errors.push(Diagnostic::at(
                file,
                lines.of(path),
                format!("{}: {e}", path_text(path)),
            ));
        }
    };
    let key = |parts: &[&str]| -> Vec<Segment> {
        parts.iter().map(|k| Segment::Key(k.to_string())).collect()
    };
    let at = |base: &str, i: usize, k: &str| {
        vec![
            Segment::Key(base.to_string()),
            Segment::Index(i),
            Segment::Key(k.to_string()),
        ]
    };
    let mut customizations = Vec::new();
    for (i, t) in raw.target_customizations.iter().enumerate() {
        if let Some(s) = &t.cluster_selector {
            selector_error(
                &at("targetCustomizations", i, "clusterSelector"),
                s,
                &mut errors,
            );
        }
        if let Some(s) = &t.cluster_group_selector {
            selector_error(
                &at("targetCustomizations", i, "clusterGroupSelector"),
                s,
                &mut errors,
            );
        }
        if let Some(h) = &t.helm {
            let line = lines.of(&at("targetCustomizations", i, "helm"));
            check_helm(file, line, h, &mut errors);
        }
        let name = t.name.clone().unwrap_or_else(|| format!("#{i}"));
        let entry = [
            Segment::Key("targetCustomizations".into()),
            Segment::Index(i),
        ];
        if t.cluster_selector.is_none()
            && t.cluster_group.is_none()
            && t.cluster_group_selector.is_none()
            && t.cluster_name.is_none()
        {
            warnings.push(Diagnostic::at(
                file,
                lines.of(&entry),
                format!(
                    "targetCustomizations[{i}] ({name}) has no clusterSelector, clusterGroup, \
                     clusterGroupSelector or clusterName and matches no cluster"
                ),
            ));
        }
        if let Some(d) = &t.diff {
            check_compare_patches(file, &lines, &entry, d, &mut errors);
        }
        check_keep_fail_history(
            file,
            &lines,
            &entry,
            t.correct_drift.as_ref(),
            &mut warnings,
        );
        customizations.push(Customization {
            name,
            cluster_selector: t.cluster_selector.clone(),
            cluster_group: t.cluster_group.clone(),
            cluster_group_selector: t.cluster_group_selector.clone(),
            cluster_name: t.cluster_name.clone(),
            do_not_deploy: t.do_not_deploy,
            namespace: t.namespace.clone(),
            default_namespace: t.default_namespace.clone(),
            overlays: t.yaml.as_ref().map(|y| y.overlays.clone()),
            kustomize_dir: t.kustomize.as_ref().and_then(|k| k.dir.clone()),
            options: t.options(),
            namespace_labels: t.namespace_labels.clone(),
            namespace_annotations: t.namespace_annotations.clone(),
            delete_namespace: t.delete_namespace,
            create_namespace: t.create_namespace,
            helm: t.helm.clone(),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &customizations {
        if !seen.insert(c.name.clone()) {
            errors.push(Diagnostic::at(
                file,
                lines.of(&key(&["targetCustomizations"])),
                format!("two targetCustomizations are named {:?}", c.name),
            ));
        }
    }
    for (i, d) in raw.depends_on.iter().enumerate() {
        if let Some(s) = &d.selector {
            selector_error(&at("dependsOn", i, "selector"), s, &mut errors);
        }
        if d.name.is_none() && d.selector.is_none() {
            errors.push(Diagnostic::at(
                file,
                lines.of(&[Segment::Key("dependsOn".into()), Segment::Index(i)]),
                format!("dependsOn[{i}] needs a name or a selector"),
            ));
        }
    }
    for (i, t) in raw.override_targets.iter().enumerate() {
        if let Some(s) = &t.cluster_selector {
            selector_error(&at("overrideTargets", i, "clusterSelector"), s, &mut errors);
        }
        if let Some(s) = &t.cluster_group_selector {
            selector_error(
                &at("overrideTargets", i, "clusterGroupSelector"),
                s,
                &mut errors,
            );
        }
    }
    if let Some(name) = &raw.name
        && name.trim().is_empty()
    {
        errors.push(Diagnostic::at(
            file,
            lines.of(&key(&["name"])),
            "name must not be empty",
        ));
    }
    let crd_paths = std::iter::once((Vec::new(), raw.delete_crd_resources)).chain(
        raw.target_customizations.iter().enumerate().map(|(i, t)| {
            (
                vec![
                    Segment::Key("targetCustomizations".into()),
                    Segment::Index(i),
                ],
                t.delete_crd_resources,
            )
        }),
    );
    for (mut path, v) in crd_paths {
        if v == Some(false) {
            path.push(Segment::Key("deleteCRDResources".into()));
            warnings.push(Diagnostic::at(
                file,
                lines.of(&path),
                format!(
                    "{}: false has no effect: flotilla deletes the CRDs of a removed bundle \
                     like its other objects (keepResources: true keeps everything)",
                    path_text(&path)
                ),
            ));
        }
    }
    check_namespace_labels(file, &lines, &[], &raw.namespace_labels, &mut errors);
    for (i, t) in raw.target_customizations.iter().enumerate() {
        if let Some(l) = &t.namespace_labels {
            let base = [
                Segment::Key("targetCustomizations".into()),
                Segment::Index(i),
            ];
            check_namespace_labels(file, &lines, &base, l, &mut errors);
        }
    }
    check_compare_patches(file, &lines, &[], &raw.diff, &mut errors);
    check_keep_fail_history(file, &lines, &[], raw.correct_drift.as_ref(), &mut warnings);
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    warnings.sort_by_key(|w| w.line);
    unknown_keys.sort_by_key(|w| w.line);
    Ok(Parsed {
        spec: RenderSpec {
            namespace: raw.namespace,
            default_namespace: raw.default_namespace,
            overlays: raw.yaml.map(|y| y.overlays).unwrap_or_default(),
            kustomize_dir: raw.kustomize.and_then(|k| k.dir),
            customizations,
            cluster_values: raw.cluster_values,
            cluster_scoped_kinds: raw.cluster_scoped_kinds,
            namespace_meta: NamespaceMeta {
                labels: raw.namespace_labels,
                annotations: raw.namespace_annotations,
                delete: raw.delete_namespace,
                create: raw.create_namespace,
            },
            helm: raw.helm,
        },
        options: BundleOptions {
            depends_on: raw.depends_on,
            rollout_strategy: raw.rollout_strategy,
            correct_drift: raw.correct_drift.unwrap_or_default(),
            keep_resources: raw.keep_resources,
            paused: raw.paused,
            diff: raw.diff,
            labels: raw.labels,
            ignore: raw.ignore,
            helm: None,
        },
        name: raw.name,
        override_targets: (!raw.override_targets.is_empty()).then_some(raw.override_targets),
        warnings,
        unknown_keys,
    })
}

/// `namespaceLabels` become Kubernetes labels: keys and values must be valid ones.
fn check_namespace_labels(
    file: &str,
    lines: &Lines,
    base: &[Segment],
    labels: &Labels,
    errors: &mut Vec<Diagnostic>,
) {
    for (k, v) in labels {
        if let Err(e) = flotilla_model::labels::validate_key(k)
            .and_then(|_| flotilla_model::labels::validate_value(v))
        {
            let mut path = base.to_vec();
            path.extend([
                Segment::Key("namespaceLabels".into()),
                Segment::Key(k.clone()),
            ]);
            errors.push(Diagnostic::at(
                file,
                lines.of(&path),
                format!("{}: {e}", path_text(&path)),
            ));
        }
    }
}

/// Every comparePatches operation must be one RFC 6902 defines, with what it needs.
fn check_compare_patches(
    file: &str,
    lines: &Lines,
    base: &[Segment],
    diff: &Diff,
    errors: &mut Vec<Diagnostic>,
) {
    for (i, p) in diff.compare_patches.iter().enumerate() {
        for (j, op) in p.operations.iter().enumerate() {
            let mut path = base.to_vec();
            path.extend([
                Segment::Key("diff".into()),
                Segment::Key("comparePatches".into()),
                Segment::Index(i),
                Segment::Key("operations".into()),
                Segment::Index(j),
            ]);
            let problem = if !PATCH_OPS.contains(&op.op.as_str()) {
                Some(format!(
                    "unknown op {:?}; expected one of {}",
                    op.op,
                    PATCH_OPS.join(", ")
                ))
            } else if matches!(op.op.as_str(), "move" | "copy") && op.from.is_none() {
                Some(format!("op {} needs from", op.op))
            } else if matches!(op.op.as_str(), "add" | "replace" | "test") && op.value.is_none() {
                Some(format!("op {} needs a value", op.op))
            } else {
                None
            };
            if let Some(problem) = problem {
                errors.push(Diagnostic::at(
                    file,
                    lines.of(&path),
                    format!("{}: {problem}", path_text(&path)),
                ));
            }
        }
    }
}

fn check_keep_fail_history(
    file: &str,
    lines: &Lines,
    base: &[Segment],
    drift: Option<&CorrectDrift>,
    warnings: &mut Vec<Diagnostic>,
) {
    if drift.is_some_and(|d| d.keep_fail_history) {
        let mut path = base.to_vec();
        path.extend([
            Segment::Key("correctDrift".into()),
            Segment::Key("keepFailHistory".into()),
        ]);
        warnings.push(Diagnostic::at(
            file,
            lines.of(&path),
            format!(
                "{} has no effect: flotilla keeps no Helm release history",
                path_text(&path)
            ),
        ));
    }
}

fn check_helm(file: &str, line: u32, helm: &HelmSpec, errors: &mut Vec<Diagnostic>) {
    if let Err(d) = helm.check(file, line) {
        errors.push(d);
    }
}

/// The first line on which `key:` starts a mapping entry (1 when not found).
pub(crate) fn line_of_key(text: &str, key: &str) -> u32 {
    let plain = format!("{key}:");
    let quoted = format!("\"{key}\":");
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start().trim_start_matches("- ").trim_start();
        if t.starts_with(&plain) || t.starts_with(&quoted) {
            return i as u32 + 1;
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fleet_fields_and_options() {
        let text = r#"
defaultNamespace: apps
namespace: forced
labels: {team: a}
dependsOn:
- name: base
- selector: {matchLabels: {tier: db}}
rolloutStrategy:
  maxUnavailable: 10%
  partitions:
  - name: canary
    clusterSelector: {matchLabels: {env: canary}}
correctDrift: {enabled: true}
keepResources: true
paused: true
diff:
  comparePatches:
  - apiVersion: apps/v1
    kind: Deployment
    name: web
    jsonPointers: [/spec/replicas]
targetCustomizations:
- name: prod
  clusterSelector:
    matchLabels: {env: prod}
  yaml: {overlays: [prod]}
- name: off
  clusterName: lab
  doNotDeploy: true
"#;
        let p = parse("fleet.yaml", text).expect("parses");
        assert_eq!(p.spec.namespace.as_deref(), Some("forced"));
        assert_eq!(p.spec.default_namespace.as_deref(), Some("apps"));
        assert_eq!(p.spec.customizations.len(), 2);
        assert_eq!(
            p.spec.customizations[0].overlays,
            Some(vec!["prod".to_string()])
        );
        assert!(p.spec.customizations[1].do_not_deploy);
        assert!(p.options.correct_drift.enabled && p.options.keep_resources && p.options.paused);
        assert_eq!(p.options.depends_on.len(), 2);
        assert_eq!(
            p.options
                .rollout_strategy
                .as_ref()
                .and_then(|r| r.max_unavailable.clone()),
            Some(IntOrString::String("10%".into()))
        );
        assert_eq!(
            p.options.diff.compare_patches[0].json_pointers,
            vec!["/spec/replicas"]
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    fn messages(d: &[Diagnostic]) -> Vec<String> {
        d.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn unknown_fields_warn_with_their_path_and_line_at_every_depth() {
        let text = "\
defaultNamepsace: apps
correctDrift:
  enable: true
yaml:
  overlay: [prod]
diff:
  comparePatches:
  - kind: Deployment
    jsonPointer: [/spec/replicas]
dependsOn:
- name: db
  acceptedState: [Ready]
rolloutStrategy:
  partitions:
  - name: canary
    clusterSelecter: {matchLabels: {env: canary}}
labels: {anything: goes}
targetCustomizations:
- name: prod
  clusterSelecter:
    matchLabels: {env: prod}
  kustomize: {dri: prod}
";
        let p = parse("b/fleet.yaml", text).expect("parses");
        assert_eq!(
            messages(&p.warnings),
            vec![
                "b/fleet.yaml:1: unknown field defaultNamepsace is ignored",
                "b/fleet.yaml:3: unknown field correctDrift.enable is ignored",
                "b/fleet.yaml:5: unknown field yaml.overlay is ignored",
                "b/fleet.yaml:9: unknown field diff.comparePatches[0].jsonPointer is ignored",
                "b/fleet.yaml:12: unknown field dependsOn[0].acceptedState is ignored",
                "b/fleet.yaml:16: unknown field rolloutStrategy.partitions[0].clusterSelecter is ignored",
                "b/fleet.yaml:19: targetCustomizations[0] (prod) has no clusterSelector, \
                 clusterGroup, clusterGroupSelector or clusterName and matches no cluster",
                "b/fleet.yaml:20: unknown field targetCustomizations[0].clusterSelecter is ignored",
                "b/fleet.yaml:22: unknown field targetCustomizations[0].kustomize.dri is ignored",
            ]
        );
        assert_eq!(p.unknown_keys.len(), 8);
    }

    #[test]
    fn a_flood_of_unknown_keys_is_reported_in_bounded_form() {
        let text: String = (0..500).map(|i| format!("k{i:03}: 1\n")).collect();
        let p = parse("f", &text).expect("parses");
        assert_eq!(p.warnings.len(), 101);
        assert_eq!(p.warnings[0].to_string(), "f: 400 more unknown fields");
        // Nesting below the recorded depth costs nothing and still locates the key.
        let mut deep: String = (0..40)
            .map(|i| format!("{}a{i}:\n", "  ".repeat(i)))
            .collect();
        deep.push_str(&format!("{}x: 1\n", "  ".repeat(40)));
        let p = parse("f", &deep).expect("parses");
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].line, Some(1));
    }

    #[test]
    fn strict_makes_unknown_fields_errors() {
        let errs =
            parse("f.yaml", "strict: true\ncorrectDrift:\n  enable: true\n").expect_err("strict");
        assert_eq!(
            messages(&errs),
            vec![
                "f.yaml:3: unknown field correctDrift.enable (strict: true makes unknown fields errors)"
            ]
        );
        let p = parse("f.yaml", "strict: true\ncorrectDrift:\n  enabled: true\n").expect("ok");
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn unsupported_fleet_fields_are_errors_that_say_why() {
        let errs = parse(
            "b/fleet.yaml",
            "namespace: x\nserviceAccount: sa\ntargetCustomizations:\n- name: a\n  clusterName: a\n  forceSyncGeneration: 2\n",
        )
        .expect_err("unsupported");
        let m = messages(&errs);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].starts_with("b/fleet.yaml:2: serviceAccount is not supported by flotilla: "),
            "{m:?}"
        );
        assert!(
            m[1].starts_with(
                "b/fleet.yaml:6: targetCustomizations[0].forceSyncGeneration is not supported"
            ),
            "{m:?}"
        );
    }

    #[test]
    fn fleet_name_override_targets_and_dependency_states_parse() {
        let p = parse(
            "f",
            "name: web\noverrideTargets:\n- clusterSelector: {matchLabels: {env: prod}}\n- clusterName: lab\ndependsOn:\n- name: db\n  acceptedStates: [Ready, Modified]\n- name: cache\n",
        )
        .expect("ok");
        assert_eq!(p.name.as_deref(), Some("web"));
        let t = p.override_targets.expect("override targets");
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].cluster_name.as_deref(), Some("lab"));
        let db = &p.options.depends_on[0];
        assert!(db.accepts(State::Modified) && db.accepts(State::Ready));
        assert!(!db.accepts(State::NotReady));
        let cache = &p.options.depends_on[1];
        assert!(cache.accepts(State::Ready) && !cache.accepts(State::Modified));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // An empty list overrides nothing, as in Fleet.
        let p = parse("f", "overrideTargets: []\n").expect("ok");
        assert!(p.override_targets.is_none());
        assert!(parse("f", "name: ''\n").is_err());
    }

    #[test]
    fn rollout_max_new_and_auto_partition_threshold_parse() {
        let p = parse(
            "f",
            "rolloutStrategy:\n  maxNew: 3\n  autoPartitionThreshold: 10\n  autoPartitionSize: 25%\n",
        )
        .expect("ok");
        let r = p.options.rollout_strategy.expect("strategy");
        assert_eq!((r.max_new, r.auto_partition_threshold), (Some(3), Some(10)));
    }

    #[test]
    fn every_json_patch_op_is_accepted_in_compare_patches_and_others_are_errors() {
        let p = parse(
            "f",
            "diff:\n  comparePatches:\n  - kind: Deployment\n    operations:\n    - {op: remove, path: /a}\n    - {op: replace, path: /b, value: 1}\n    - {op: add, path: /c, value: x}\n    - {op: test, path: /d, value: y}\n    - {op: move, from: /e, path: /f}\n    - {op: copy, from: /g, path: /h}\n",
        )
        .expect("ok");
        let ops: Vec<&str> = p.options.diff.compare_patches[0]
            .operations
            .iter()
            .map(|o| o.op.as_str())
            .collect();
        assert_eq!(ops, ["remove", "replace", "add", "test", "move", "copy"]);
        assert_eq!(
            p.options.diff.compare_patches[0].operations[4]
                .from
                .as_deref(),
            Some("/e")
        );
        let errs = parse(
            "f",
            "diff:\n  comparePatches:\n  - operations:\n    - {op: frobnicate, path: /a}\n    - {op: copy, path: /a}\n",
        )
        .expect_err("bad ops");
        assert_eq!(errs.len(), 2);
        assert!(
            errs[0]
                .to_string()
                .starts_with("f:4: diff.comparePatches[0].operations[0]: unknown op"),
            "{errs:?}"
        );
        assert!(
            errs[1].to_string().contains("op copy needs from"),
            "{errs:?}"
        );
    }

    #[test]
    fn customizations_override_options_and_ignore_conditions_parse() {
        let p = parse(
            "f",
            "keepResources: false\ncorrectDrift: {enabled: true}\ndeleteCRDResources: true\nignore:\n  conditions:\n  - {type: Progressing, status: 'False'}\ntargetCustomizations:\n- name: prod\n  clusterName: p\n  keepResources: true\n  correctDrift: {enabled: false}\n",
        )
        .expect("ok");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let o = &p.options;
        assert!(!o.keep_resources && o.correct_drift.enabled);
        assert_eq!(
            o.ignore.conditions[0].0.get("type").map(String::as_str),
            Some("Progressing")
        );
        let prod = p.spec.customizations[0].options.over(o);
        assert!(prod.keep_resources && !prod.correct_drift.enabled);
        assert_eq!(
            prod.ignore, o.ignore,
            "not set in the customization: the bundle's"
        );
    }

    #[test]
    fn namespace_labels_parse_and_keeping_crds_is_a_warning() {
        let p = parse(
            "f",
            "namespaceLabels: {team: a}\nnamespaceAnnotations: {owner: b}\ndeleteNamespace: true\ntargetCustomizations:\n- name: prod\n  clusterName: p\n  namespaceLabels: {team: prod}\n",
        )
        .expect("ok");
        let m = &p.spec.namespace_meta;
        assert_eq!(m.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(m.annotations.get("owner").map(String::as_str), Some("b"));
        assert!(m.delete);
        let prod = &p.spec.customizations[0];
        assert_eq!(
            prod.namespace_labels
                .as_ref()
                .and_then(|l| l.get("team"))
                .map(String::as_str),
            Some("prod")
        );
        let errs = parse("f", "namespaceLabels: {'bad key!': x}\n").expect_err("invalid label");
        assert!(
            errs[0]
                .to_string()
                .starts_with("f:1: namespaceLabels.bad key!:"),
            "{errs:?}"
        );
        let p = parse("f", "deleteCRDResources: false\n").expect("ok");
        assert!(
            p.warnings[0]
                .to_string()
                .starts_with("f:1: deleteCRDResources: false has no effect"),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn new_options_left_at_their_defaults_keep_the_old_canonical_json() {
        let p = parse("f", "paused: true\n").expect("ok");
        assert_eq!(
            p.options.canonical_json(),
            r#"{"correctDrift":{"enabled":false,"force":false,"keepFailHistory":false},"dependsOn":[],"diff":{"comparePatches":[]},"keepResources":false,"labels":{},"paused":true,"rolloutStrategy":null}"#
        );
    }

    #[test]
    fn keep_fail_history_warns_that_it_has_no_effect() {
        let p = parse(
            "f",
            "correctDrift:\n  enabled: true\n  keepFailHistory: true\n",
        )
        .expect("ok");
        assert_eq!(
            messages(&p.warnings),
            vec![
                "f:3: correctDrift.keepFailHistory has no effect: flotilla keeps no Helm release history"
            ]
        );
    }

    #[test]
    fn wrong_types_are_errors_with_a_line() {
        let errs = parse("fleet.yaml", "namespace: x\npaused: [1]\n").expect_err("fails");
        assert_eq!(errs[0].line, Some(2), "{:?}", errs);
    }

    #[test]
    fn helm_blocks_are_read_per_target_and_value_from_is_refused() {
        let p = parse(
            "fleet.yaml",
            "helm:\n  chart: ./c\n  bogus: 1\ntargetCustomizations:\n- name: a\n  clusterName: x\n  helm:\n    values: {a: 1}\n",
        )
        .expect("parses");
        assert_eq!(p.spec.helm.and_then(|h| h.chart).as_deref(), Some("./c"));
        assert!(p.spec.customizations[0].helm.is_some());
        assert_eq!(p.warnings[0].message, "unknown field helm.bogus is ignored");
        let errs = parse("fleet.yaml", "helm:\n  valuesFrom: [{}]\n").expect_err("fails");
        assert!(errs[0].message.contains("valuesFrom"), "{errs:?}");
    }

    #[test]
    fn canonical_options_json_is_sorted_and_stable() {
        let p = parse("f", "paused: true\nlabels: {b: '1', a: '2'}\n").expect("ok");
        let j = p.options.canonical_json();
        assert_eq!(j, p.options.clone().canonical_json());
        assert!(j.contains(r#""labels":{"a":"2","b":"1"}"#), "{j}");
        let idx_k = j.find("keepResources").unwrap_or(0);
        let idx_p = j.find("paused").unwrap_or(0);
        assert!(idx_k < idx_p);
    }
}
