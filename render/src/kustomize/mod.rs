//! `kustomize.dir`: the kustomization.yaml subset real fleet repos use, built the way
//! kustomize v5 builds it: resources (files, folders, in-repo bases, recursively), then
//! generators, then the transformers in kustomize's order (strategic-merge patches,
//! patches, namespace, prefix/suffix, labels, annotations, JSON 6902 patches, replicas,
//! images), and at the very end hash suffixes and name references. Remote bases, cycles
//! and fields we do not implement are errors, never silently ignored.

mod generators;
mod select;
mod transformers;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::diagnostic::{Diagnostic, Diags};
use crate::discovery::KUSTOMIZATION_FILES;
use crate::fleet_yaml::line_of_key;
use crate::output::Object;
use crate::repo_fs::{Kind, join};
use crate::scope::{self, Scope};
use crate::sources::Sources;
use crate::strategic_merge::{self, Outcome, Schema};
use crate::{json_patch, yaml};

use generators::{Behavior, GenKind, Generator, GeneratorOptions};
use select::Target;
use transformers::{ImageSpec, LabelSpec, ReplicaSpec};

/// A resource being built, with the identities it had before.
#[derive(Debug, Clone)]
pub(crate) struct Res {
    pub obj: Object,
    /// Earlier (name, namespace) pairs, oldest first.
    pub prev: Vec<(String, Option<String>)>,
    pub needs_hash: bool,
}

impl Res {
    fn new(obj: Object) -> Self {
        Res {
            obj,
            prev: Vec::new(),
            needs_hash: false,
        }
    }

    /// The current identity, then the earlier ones.
    pub(crate) fn ids(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        std::iter::once((self.obj.name(), self.obj.namespace()))
            .chain(self.prev.iter().map(|(n, ns)| (n.as_str(), ns.as_deref())))
    }

    fn remember(&mut self) {
        let id = (
            self.obj.name().to_string(),
            self.obj.namespace().map(str::to_string),
        );
        if !self.prev.contains(&id) {
            self.prev.push(id);
        }
    }

    pub(crate) fn set_name(&mut self, name: &str) {
        self.remember();
        if let Some(m) = self
            .obj
            .value
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
        {
            m.insert("name".into(), Value::String(name.to_string()));
        }
    }

    pub(crate) fn set_namespace(&mut self, ns: &str) {
        self.remember();
        if let Some(m) = self
            .obj
            .value
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
        {
            m.insert("namespace".into(), Value::String(ns.to_string()));
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Kustomization {
    resources: Vec<String>,
    bases: Vec<String>,
    namespace: Option<String>,
    name_prefix: Option<String>,
    name_suffix: Option<String>,
    common_labels: BTreeMap<String, String>,
    labels: Vec<LabelSpec>,
    common_annotations: BTreeMap<String, String>,
    images: Vec<ImageSpec>,
    replicas: Vec<ReplicaSpec>,
    patches_strategic_merge: Vec<String>,
    patches: Vec<PatchSpec>,
    patches_json6902: Vec<PatchSpec>,
    config_map_generator: Vec<Generator>,
    secret_generator: Vec<Generator>,
    generator_options: Option<GeneratorOptions>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct PatchSpec {
    path: Option<String>,
    patch: Option<String>,
    target: Option<Target>,
    options: Option<BTreeMap<String, bool>>,
}

const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "resources",
    "bases",
    "namespace",
    "namePrefix",
    "nameSuffix",
    "commonLabels",
    "labels",
    "commonAnnotations",
    "images",
    "replicas",
    "patchesStrategicMerge",
    "patches",
    "patchesJson6902",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "sortOptions",
    "buildMetadata",
];

/// Builds the kustomization in `dir` (repo-relative).
pub(crate) fn build(sources: &Sources<'_>, dir: &str) -> Diags<Vec<Object>> {
    let scope = Scope::default();
    let mut stack = Vec::new();
    let mut resources = build_dir(sources, dir, &mut stack, &scope)?;
    for r in &mut resources {
        if r.needs_hash {
            let hash = generators::content_hash(&r.obj.value);
            let name = format!("{}-{hash}", r.obj.name());
            r.set_name(&name);
        }
    }
    transformers::fix_references(&mut resources);
    Ok(resources.into_iter().map(|r| r.obj).collect())
}

fn is_remote(entry: &str) -> bool {
    entry.contains("://")
        || entry.starts_with("git@")
        || entry.starts_with("github.com/")
        || entry.starts_with("gitlab.com/")
        || entry.starts_with("bitbucket.org/")
        || entry.contains("?ref=")
        || entry.contains(".git//")
}

/// The first line that mentions `needle` (1 when none does).
fn line_of(text: &str, needle: &str) -> u32 {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as u32 + 1)
        .unwrap_or(1)
}

fn build_dir(
    sources: &Sources<'_>,
    dir: &str,
    stack: &mut Vec<String>,
    scope: &Scope,
) -> Diags<Vec<Res>> {
    let Some(kfile) = KUSTOMIZATION_FILES
        .iter()
        .filter_map(|f| join(dir, f).ok())
        .find(|p| sources.fs.kind(p) == Kind::File)
    else {
        return Err(vec![Diagnostic::new(
            dir,
            "no kustomization.yaml in this folder",
        )]);
    };
    let text = sources.fs.read(&kfile).map_err(|d| vec![d])?;
    let value = yaml::parse_single(&kfile, &text).map_err(|d| vec![d])?;
    let mut errors = Vec::new();
    if let Some(m) = value.as_object() {
        for key in m.keys() {
            if !FIELDS.contains(&key.as_str()) {
                errors.push(Diagnostic::at(
                    &kfile,
                    line_of_key(&text, key),
                    format!("kustomization field {key} is not supported by flotilla (see docs/bundles.md)"),
                ));
            }
        }
    } else if !value.is_null() {
        errors.push(Diagnostic::at(&kfile, 1, "kustomization must be a mapping"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let k: Kustomization = if value.is_null() {
        Kustomization::default()
    } else {
        let mut o = serde_saphyr::Options::default();
        o.legacy_octal_numbers = true;
        o.strict_booleans = true;
        serde_saphyr::from_str_with_options(&text, o).map_err(|e| {
            let loc = e.location();
            let msg = e.without_snippet().to_string();
            let msg = msg.rsplit_once(" at line ").map(|(m, _)| m).unwrap_or(&msg);
            vec![
                Diagnostic::at(
                    &kfile,
                    loc.map(|l| l.line() as u32).unwrap_or(1),
                    format!("invalid kustomization: {msg}"),
                )
                .with_column(loc.map(|l| l.column() as u32)),
            ]
        })?
    };
    let at = |needle: &str, msg: String| Diagnostic::at(&kfile, line_of(&text, needle), msg);

    // Resources, recursively.
    stack.push(dir.to_string());
    let mut resources: Vec<Res> = Vec::new();
    for entry in k.resources.iter().chain(&k.bases) {
        if is_remote(entry) {
            errors.push(at(
                entry,
                format!("remote kustomize base {entry:?} is not supported: flotilla renders only what is in the repo"),
            ));
            continue;
        }
        let path = match join(dir, entry) {
            Ok(p) => p,
            Err(m) => {
                errors.push(at(entry, m));
                continue;
            }
        };
        match sources.fs.kind(&path) {
            Kind::Dir => {
                if let Some(pos) = stack.iter().position(|d| *d == path) {
                    let mut chain: Vec<&str> = stack[pos..].iter().map(String::as_str).collect();
                    chain.push(&path);
                    errors.push(at(
                        entry,
                        format!("kustomization cycle: {}", chain.join(" -> ")),
                    ));
                    continue;
                }
                match build_dir(sources, &path, stack, scope) {
                    Ok(r) => resources.extend(r),
                    Err(e) => errors.extend(e),
                }
            }
            _ if sources.exists(&path) => match sources.objects(&path) {
                Ok(objs) => resources.extend(objs.into_iter().map(Res::new)),
                Err(e) => errors.extend(e),
            },
            _ => errors.push(at(entry, format!("resource {entry:?} not found ({path})"))),
        }
    }
    stack.pop();
    if !errors.is_empty() {
        return Err(errors);
    }

    // Generators.
    let gens = k
        .config_map_generator
        .iter()
        .map(|g| (g, GenKind::ConfigMap))
        .chain(k.secret_generator.iter().map(|g| (g, GenKind::Secret)));
    for (g, kind) in gens {
        let generated =
            generators::generate(sources, dir, &kfile, g, kind, k.generator_options.as_ref())
                .map_err(|d| vec![d])?;
        let kind_name = if kind == GenKind::ConfigMap {
            "ConfigMap"
        } else {
            "Secret"
        };
        let existing = resources.iter().position(|r| {
            r.obj.kind() == kind_name
                && r.ids()
                    .any(|(n, ns)| n == g.name && ns == g.namespace.as_deref())
        });
        match (generated.behavior, existing) {
            (Behavior::Create, None) => {
                let mut r = Res::new(Object {
                    file: kfile.clone(),
                    line: line_of(&text, &g.name),
                    value: generated.value,
                });
                r.needs_hash = generated.needs_hash;
                resources.push(r);
            }
            (Behavior::Create, Some(_)) => {
                return Err(vec![at(
                    &g.name,
                    format!(
                        "generator {:?} creates a {kind_name} that already exists; use behavior: merge or replace",
                        g.name
                    ),
                )]);
            }
            (_, None) => {
                return Err(vec![at(
                    &g.name,
                    format!(
                        "generator {:?} has behavior merge/replace but no {kind_name} of that name exists",
                        g.name
                    ),
                )]);
            }
            (behavior, Some(i)) => {
                let r = &mut resources[i];
                if behavior == Behavior::Replace {
                    for field in ["data", "binaryData", "stringData"] {
                        if let Some(m) = r.obj.value.as_object_mut() {
                            m.remove(field);
                        }
                    }
                }
                let mut patch = generated.value;
                if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("name");
                    meta.remove("namespace");
                }
                json_patch::merge_patch(&mut r.obj.value, &patch);
                r.needs_hash = r.needs_hash && generated.needs_hash;
            }
        }
    }

    // Transformers, in kustomize's order.
    for p in &k.patches_strategic_merge {
        let patches = if p.trim_start().contains('\n') || p.contains(": ") {
            yaml::parse_documents(&kfile, p).map_err(|d| vec![d])?
        } else {
            let path = join(dir, p).map_err(|m| vec![at(p, m)])?;
            sources.docs(&path)?.1
        };
        for patch in patches {
            apply_smp(
                &mut resources,
                &patch.value,
                None,
                &kfile,
                line_of(&text, p),
            )?;
        }
    }
    for p in &k.patches {
        apply_patch_spec(sources, dir, &kfile, &text, &mut resources, p, false)?;
    }
    if let Some(ns) = k.namespace.as_deref().filter(|n| !n.is_empty()) {
        let mut scope = scope.clone();
        scope.learn_crds(resources.iter().map(|r| &r.obj.value));
        transformers::set_namespace(&mut resources, ns, &scope);
    }
    transformers::add_prefix_suffix(
        &mut resources,
        k.name_prefix.as_deref().unwrap_or(""),
        k.name_suffix.as_deref().unwrap_or(""),
    );
    transformers::add_labels(
        &mut resources,
        &LabelSpec {
            pairs: k.common_labels.clone(),
            include_selectors: true,
            include_templates: true,
        },
    );
    for l in &k.labels {
        transformers::add_labels(&mut resources, l);
    }
    transformers::add_annotations(&mut resources, &k.common_annotations);
    for p in &k.patches_json6902 {
        apply_patch_spec(sources, dir, &kfile, &text, &mut resources, p, true)?;
    }
    transformers::set_replicas(&mut resources, &k.replicas);
    transformers::set_images(&mut resources, &k.images);
    Ok(resources)
}

/// Applies a strategic-merge patch to its target(s): the `target` selector when given,
/// otherwise the object the patch names. No target at all is an error.
fn apply_smp(
    resources: &mut Vec<Res>,
    patch: &Value,
    target: Option<&Target>,
    file: &str,
    line: u32,
) -> Diags<()> {
    let err = |m: String| vec![Diagnostic::at(file, line, m)];
    if !patch.is_object() {
        return Err(err("a strategic-merge patch must be a mapping".into()));
    }
    let mut body = patch.clone();
    if target.is_some()
        && let Some(m) = body.as_object_mut()
    {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("name");
            meta.remove("namespace");
        }
    }
    let mut matched = 0;
    let mut keep = Vec::with_capacity(resources.len());
    for mut r in std::mem::take(resources) {
        let hit = match target {
            Some(t) => t.matches(&r).map_err(&err)?,
            None => select::patch_names(patch, &r),
        };
        if !hit {
            keep.push(r);
            continue;
        }
        matched += 1;
        let schema = if scope::is_builtin(r.obj.api_version()) {
            Schema::Kustomize
        } else {
            Schema::KustomizeUnknownKind
        };
        let kind = r.obj.kind().to_string();
        match strategic_merge::apply_with(&mut r.obj.value, &body, &kind, schema) {
            Ok(Outcome::Kept) => keep.push(r),
            Ok(Outcome::Deleted) => {}
            Err(e) => return Err(err(format!("strategic merge failed: {e}"))),
        }
    }
    *resources = keep;
    if matched == 0 {
        return Err(err(describe_missing(patch, target)));
    }
    Ok(())
}

fn describe_missing(patch: &Value, target: Option<&Target>) -> String {
    match target {
        Some(t) => format!(
            "patch target does not exist: nothing matches kind={} name={} namespace={}",
            t.kind.as_deref().unwrap_or("*"),
            t.name.as_deref().unwrap_or("*"),
            t.namespace.as_deref().unwrap_or("*")
        ),
        None => format!(
            "patch target does not exist: no {} named {:?}",
            patch
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("object"),
            patch
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("")
        ),
    }
}

fn apply_patch_spec(
    sources: &Sources<'_>,
    dir: &str,
    kfile: &str,
    text: &str,
    resources: &mut Vec<Res>,
    p: &PatchSpec,
    json6902_only: bool,
) -> Diags<()> {
    let (file, docs, line) = match (&p.path, &p.patch) {
        (Some(path), None) => {
            let rel =
                join(dir, path).map_err(|m| vec![Diagnostic::at(kfile, line_of(text, path), m)])?;
            if !sources.exists(&rel) {
                return Err(vec![Diagnostic::at(
                    kfile,
                    line_of(text, path),
                    format!("patch file {path:?} not found"),
                )]);
            }
            let (file, docs) = sources.docs(&rel)?;
            (file, docs, None)
        }
        (None, Some(inline)) => {
            let line = line_of(text, inline.lines().next().unwrap_or(""));
            let docs = yaml::parse_documents(kfile, inline).map_err(|mut d| {
                d.line = Some(line + d.line.unwrap_or(1));
                vec![d]
            })?;
            (kfile.to_string(), docs, Some(line))
        }
        _ => {
            return Err(vec![Diagnostic::at(
                kfile,
                line_of_key(
                    text,
                    if json6902_only {
                        "patchesJson6902"
                    } else {
                        "patches"
                    },
                ),
                "a patch needs exactly one of path or patch",
            )]);
        }
    };
    for doc in docs {
        let line = line.unwrap_or(doc.line);
        match &doc.value {
            Value::Array(ops) => {
                let Some(target) = &p.target else {
                    return Err(vec![Diagnostic::at(
                        &file,
                        line,
                        "a JSON 6902 patch needs a target",
                    )]);
                };
                let mut matched = 0;
                for r in resources.iter_mut() {
                    if target
                        .matches(r)
                        .map_err(|m| vec![Diagnostic::at(&file, line, m)])?
                    {
                        matched += 1;
                        json_patch::apply(&mut r.obj.value, ops).map_err(|e| {
                            vec![Diagnostic::at(
                                &file,
                                line,
                                format!(
                                    "JSON patch failed on {}/{}: {e}",
                                    r.obj.kind(),
                                    r.obj.name()
                                ),
                            )]
                        })?;
                    }
                }
                if matched == 0 {
                    return Err(vec![Diagnostic::at(
                        &file,
                        line,
                        describe_missing(&doc.value, Some(target)),
                    )]);
                }
            }
            Value::Object(_) if !json6902_only => {
                apply_smp(resources, &doc.value, p.target.as_ref(), &file, line)?;
            }
            _ => {
                return Err(vec![Diagnostic::at(
                    &file,
                    line,
                    "patch must be a JSON 6902 list or a strategic-merge mapping",
                )]);
            }
        }
    }
    Ok(())
}
