//! `kustomize.dir`: the kustomization.yaml subset real fleet repos use, built the way
//! kustomize v5 builds it: resources (files, folders, in-repo bases, recursively), then
//! generators, then the transformers in kustomize's order (strategic-merge patches,
//! patches, namespace, prefix/suffix, labels, annotations, JSON 6902 patches, replicas,
//! images), and at the very end hash suffixes and name references. Remote bases, cycles
//! and fields we do not implement are errors, never silently ignored. Every stage charges
//! the render's `Budget` before it builds, so a hostile graph stops at its first step
//! over a limit, with the kustomization and the limit named.

mod generators;
#[cfg(test)]
mod hostile_graphs;
mod select;
mod target_regex;
mod transformers;

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::Deserialize;
use serde_json::Value;

use crate::budget::{Exceeded, json_size};
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
    let mut resources = build_dir(sources, dir, &mut Walk::default(), &scope)?;
    // The hash suffixes and the reference pass each touch every object once.
    sources
        .budget
        .work(2 * resources.len() as u64)
        .map_err(|e| vec![Diagnostic::new(dir, e.to_string())])?;
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

/// A kustomization file, read and parsed once per render however many times the graph
/// reaches it (a diamond reaches its lower levels exponentially often).
struct Parsed {
    kfile: String,
    text: std::sync::Arc<str>,
    k: Kustomization,
}

/// The state of one walk down the kustomization graph.
#[derive(Default)]
struct Walk {
    /// The folders being built, outermost first: for cycles and the depth limit.
    stack: Vec<String>,
    parsed: BTreeMap<String, Rc<Parsed>>,
}

fn parse(sources: &Sources<'_>, dir: &str) -> Diags<Parsed> {
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
    sources
        .budget
        .parse(text.len())
        .map_err(|e| vec![Diagnostic::at(&kfile, 1, e.to_string())])?;
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
    Ok(Parsed { kfile, text, k })
}

fn build_dir(sources: &Sources<'_>, dir: &str, walk: &mut Walk, scope: &Scope) -> Diags<Vec<Res>> {
    let parsed = match walk.parsed.get(dir) {
        Some(p) => p.clone(),
        None => {
            let p = Rc::new(parse(sources, dir)?);
            walk.parsed.insert(dir.to_string(), p.clone());
            p
        }
    };
    let Parsed { kfile, text, k } = &*parsed;
    let (kfile, text) = (kfile.as_str(), &**text);
    // Every visit costs, even of a folder that builds nothing: about four object steps.
    sources
        .budget
        .work(4)
        .map_err(|e| vec![Diagnostic::at(kfile, 1, e.to_string())])?;
    let mut errors = Vec::new();
    let at = |needle: &str, msg: String| Diagnostic::at(kfile, line_of(text, needle), msg);
    // A refused charge, located at the field of this kustomization that made it.
    let over =
        |key: &str, e: Exceeded| vec![Diagnostic::at(kfile, line_of_key(text, key), e.to_string())];
    // One transformer pass: a step per object, and `grow` bytes added to each.
    let pass = |key: &str, n: usize, grow: u64| -> Diags<()> {
        let b = sources.budget;
        b.work(n as u64)
            .and_then(|()| b.bytes(grow.saturating_mul(n as u64)))
            .map_err(|e| over(key, e))
    };

    // Resources, recursively.
    walk.stack.push(dir.to_string());
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
                if let Some(pos) = walk.stack.iter().position(|d| *d == path) {
                    let mut chain: Vec<&str> =
                        walk.stack[pos..].iter().map(String::as_str).collect();
                    chain.push(&path);
                    errors.push(at(
                        entry,
                        format!("kustomization cycle: {}", chain.join(" -> ")),
                    ));
                    continue;
                }
                if let Err(e) = sources.budget.depth(walk.stack.len()) {
                    return Err(vec![at(entry, e.to_string())]);
                }
                match build_dir(sources, &path, walk, scope) {
                    Ok(r) => resources.extend(r),
                    // The deeper kustomization already named the budget it blew.
                    Err(e) if sources.budget.refused().is_some() => return Err(e),
                    // A folder reached twice fails twice: report it once.
                    Err(e) => {
                        for d in e {
                            if !errors.contains(&d) {
                                errors.push(d);
                            }
                        }
                    }
                }
            }
            _ if sources.exists(&path) => match sources.objects(&path) {
                Ok(objs) => resources.extend(objs.into_iter().map(Res::new)),
                Err(e) => match sources.budget.refused() {
                    // Named at the entry of this kustomization that went over.
                    Some(over) => return Err(vec![at(entry, over.to_string())]),
                    None => errors.extend(e),
                },
            },
            _ => errors.push(at(entry, format!("resource {entry:?} not found ({path})"))),
        }
    }
    walk.stack.pop();
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
            generators::generate(sources, dir, kfile, g, kind, k.generator_options.as_ref())
                .map_err(|d| over_budget_at(sources, kfile, line_of(text, &g.name), vec![d]))?;
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
                sources
                    .budget
                    .object(&generated.value)
                    .map_err(|e| vec![at(&g.name, e.to_string())])?;
                let mut r = Res::new(Object {
                    file: kfile.to_string(),
                    line: line_of(text, &g.name),
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
            sources
                .budget
                .parse(p.len())
                .map_err(|e| over("patchesStrategicMerge", e))?;
            yaml::parse_documents(kfile, p).map_err(|d| vec![d])?
        } else {
            let path = join(dir, p).map_err(|m| vec![at(p, m)])?;
            sources
                .docs(&path)
                .map_err(|d| over_budget_at(sources, kfile, line_of(text, p), d))?
                .1
        };
        for patch in patches {
            apply_smp(
                sources,
                &mut resources,
                &patch.value,
                None,
                kfile,
                line_of(text, p),
            )?;
        }
    }
    for p in &k.patches {
        apply_patch_spec(sources, dir, kfile, text, &mut resources, p, false)?;
    }
    if let Some(ns) = k.namespace.as_deref().filter(|n| !n.is_empty()) {
        pass("namespace", resources.len(), ns.len() as u64)?;
        let mut scope = scope.clone();
        scope.learn_crds(resources.iter().map(|r| &r.obj.value));
        transformers::set_namespace(&mut resources, ns, &scope);
    }
    let prefix = k.name_prefix.as_deref().unwrap_or("");
    let suffix = k.name_suffix.as_deref().unwrap_or("");
    if !prefix.is_empty() || !suffix.is_empty() {
        // A rename keeps the old name too (for references), so it grows by a name.
        let longest = resources.iter().map(|r| r.obj.name().len()).max();
        let grow = prefix.len() + suffix.len() + longest.unwrap_or(0);
        let key = if prefix.is_empty() {
            "nameSuffix"
        } else {
            "namePrefix"
        };
        pass(key, resources.len(), grow as u64)?;
    }
    transformers::add_prefix_suffix(&mut resources, prefix, suffix);
    let common_labels = LabelSpec {
        pairs: k.common_labels.clone(),
        include_selectors: true,
        include_templates: true,
    };
    for (key, l) in std::iter::once(("commonLabels", &common_labels))
        .chain(k.labels.iter().map(|l| ("labels", l)))
    {
        if !l.pairs.is_empty() {
            let places = transformers::label_places(l) as u64;
            pass(key, resources.len(), places * pairs_size(&l.pairs))?;
            transformers::add_labels(&mut resources, l);
        }
    }
    if !k.common_annotations.is_empty() {
        let places = transformers::annotation_places() as u64;
        let grow = places * pairs_size(&k.common_annotations);
        pass("commonAnnotations", resources.len(), grow)?;
        transformers::add_annotations(&mut resources, &k.common_annotations);
    }
    for p in &k.patches_json6902 {
        apply_patch_spec(sources, dir, kfile, text, &mut resources, p, true)?;
    }
    if !k.replicas.is_empty() {
        pass("replicas", resources.len() * k.replicas.len(), 0)?;
        transformers::set_replicas(&mut resources, &k.replicas);
    }
    if !k.images.is_empty() {
        let grow: usize = k
            .images
            .iter()
            .flat_map(|i| [&i.new_name, &i.new_tag, &i.digest, &i.tag_suffix])
            .map(|o| o.as_deref().map_or(0, str::len))
            .sum();
        pass("images", resources.len() * k.images.len(), grow as u64)?;
        transformers::set_images(&mut resources, &k.images);
    }
    Ok(resources)
}

/// Bytes of the keys and values of a label or annotation map.
fn pairs_size(pairs: &BTreeMap<String, String>) -> u64 {
    pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}

/// Applies a strategic-merge patch to its target(s): the `target` selector when given,
/// otherwise the object the patch names. No target at all is an error.
fn apply_smp(
    sources: &Sources<'_>,
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
    let matcher = target.map(Target::compile).transpose().map_err(&err)?;
    // Trying the patch on every object is a step each; merging adds at most the patch.
    sources
        .budget
        .work(resources.len() as u64)
        .map_err(|e| err(e.to_string()))?;
    let patch_bytes = json_size(patch);
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
        let hit = match &matcher {
            Some(m) => m.matches(&r),
            None => select::patch_names(patch, &r),
        };
        if !hit {
            keep.push(r);
            continue;
        }
        matched += 1;
        sources
            .budget
            .bytes(patch_bytes)
            .map_err(|e| err(e.to_string()))?;
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

/// A budget refusal while reading a file, moved to the kustomization line that asked for
/// the file; other errors stay at the file.
fn over_budget_at(
    sources: &Sources<'_>,
    kfile: &str,
    line: u32,
    errors: Vec<Diagnostic>,
) -> Vec<Diagnostic> {
    match sources.budget.refused() {
        Some(e) => vec![Diagnostic::at(kfile, line, e.to_string())],
        None => errors,
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
            let (file, docs) = sources
                .docs(&rel)
                .map_err(|d| over_budget_at(sources, kfile, line_of(text, path), d))?;
            (file, docs, None)
        }
        (None, Some(inline)) => {
            let line = line_of(text, inline.lines().next().unwrap_or(""));
            sources
                .budget
                .parse(inline.len())
                .map_err(|e| vec![Diagnostic::at(kfile, line, e.to_string())])?;
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
                let err = |m: String| vec![Diagnostic::at(&file, line, m)];
                let matcher = target.compile().map_err(err)?;
                sources
                    .budget
                    .work(resources.len() as u64)
                    .map_err(|e| err(e.to_string()))?;
                let mut matched = 0;
                for r in resources.iter_mut() {
                    if matcher.matches(r) {
                        matched += 1;
                        json_patch::apply(&mut r.obj.value, ops, sources.budget).map_err(|e| {
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
                apply_smp(
                    sources,
                    resources,
                    &doc.value,
                    p.target.as_ref(),
                    &file,
                    line,
                )?;
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
