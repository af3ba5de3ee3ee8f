//! A loaded bundle: loading (parse `fleet.yaml`, snapshot the files, validate every
//! variant), choosing the customization for a cluster (`select`), and rendering. A variant
//! is the default or one `targetCustomizations[]` entry; without cluster values each
//! variant renders once at load and `render` hands out that result.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use crate::budget::Budget;
use crate::diagnostic::{Diagnostic, Diags};
use crate::discovery::{self, KUSTOMIZATION_FILES};
use crate::fleet_yaml::{
    self, BundleOptions, Customization, NamespaceMeta, OverrideTarget, RenderSpec,
};
use crate::helm::release::{self, HelmBundle};
use crate::output::{self, Object};
use crate::repo_fs::{Backend, Fs, Kind, Recorder, Snapshot, join};
use crate::scope::Scope;
use crate::sources::Sources;
use crate::values::{self, ValueKey, Values};
use crate::{
    ChartArchive, ClusterInfo, Limits, RemoteChart, RenderKey, Rendered, Selection, kustomize,
    overlay,
};

/// A bundle read from a repo, ready to render for any cluster.
#[derive(Debug, Clone)]
pub struct Bundle {
    name: String,
    dir: String,
    fleet_file: String,
    spec: RenderSpec,
    options: BundleOptions,
    /// fleet.yaml's `name:`, if it set one.
    fleet_name: Option<String>,
    override_targets: Option<Vec<OverrideTarget>>,
    warnings: Vec<Diagnostic>,
    /// Unknown keys (`unknown field PATH`; `warnings` has them too, as ignored).
    unknown_keys: Vec<Diagnostic>,
    snapshot: Snapshot,
    limits: Limits,
    /// Cluster values the bundle's YAML uses (empty unless it opted in).
    value_keys: BTreeSet<ValueKey>,
    /// Renders made at load, by variant, when they cannot depend on the cluster.
    cache: BTreeMap<Option<usize>, Arc<Rendered>>,
    /// Helm bundles: the charts and each variant's Helm settings.
    helm: Option<Arc<HelmBundle>>,
}

/// What a variant renders: after applying the customization over the defaults.
struct VariantSpec<'a> {
    namespace: Option<&'a str>,
    default_namespace: Option<&'a str>,
    overlays: &'a [String],
    kustomize_dir: Option<&'a str>,
    namespace_meta: NamespaceMeta,
}

impl Bundle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bundle folder, relative to the repo root ("" for the root).
    pub fn path(&self) -> &str {
        &self.dir
    }

    /// The bundle-wide options (what every cluster gets unless its customization sets
    /// its own; see [`Bundle::options_for`]).
    pub fn options(&self) -> &BundleOptions {
        &self.options
    }

    /// The options of one render: the bundle's, with the chosen customization's over them
    /// (for a Helm bundle, also its `helm:` deploy options over the top block's).
    pub fn options_for(&self, key: &RenderKey) -> BundleOptions {
        let index = key.variant.as_ref().map(|(i, _)| *i);
        let mut options = match index.and_then(|i| self.spec.customizations.get(i)) {
            Some(c) => c.options.over(&self.options),
            None => self.options.clone(),
        };
        if let Some(v) = self.helm.as_ref().and_then(|h| h.variants.get(&index)) {
            options.helm = Some(v.deploy.clone());
        }
        options
    }

    /// `overrideTargets:`: when set, these clusters replace the source's targets.
    pub fn override_targets(&self) -> Option<&[OverrideTarget]> {
        self.override_targets.as_deref()
    }

    /// Every warning, unknown keys included, in file order.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The keys no field declares (`unknown field PATH`): what a strict hub refuses.
    pub fn unknown_keys(&self) -> &[Diagnostic] {
        &self.unknown_keys
    }

    /// fleet.yaml's `name:`, which names the bundle instead of its path.
    pub(crate) fn fleet_name(&self) -> Option<&str> {
        self.fleet_name.as_deref()
    }

    pub(crate) fn rename(&mut self, name: String) {
        self.name = name;
    }

    /// Which customization a cluster gets (first match wins), or `DoNotDeploy`.
    pub fn select(&self, cluster: &ClusterInfo) -> Selection {
        let variant = self
            .spec
            .customizations
            .iter()
            .position(|c| matches(c, cluster));
        if let Some(i) = variant
            && self.spec.customizations[i].do_not_deploy
        {
            return Selection::DoNotDeploy;
        }
        let mut values: Vec<(String, Option<String>)> = if self.spec.cluster_values {
            values::resolve(&self.value_keys, cluster)
                .into_iter()
                .map(|(k, v)| (k.placeholder(), v))
                .collect()
        } else {
            Vec::new()
        };
        let mut capabilities = None;
        if let Some(h) = &self.helm {
            if h.is_templated(variant) {
                // Fleet's `${ }` values templating reads the cluster's name and labels.
                values.push(("${ .ClusterName }".into(), Some(cluster.name.clone())));
                values.extend(
                    cluster
                        .labels
                        .iter()
                        .map(|(k, v)| (format!("${{ .ClusterLabels.{k} }}"), Some(v.clone()))),
                );
            }
            if h.reads_capabilities(variant) {
                capabilities = cluster.capabilities.clone();
            }
        }
        Selection::Deploy(RenderKey {
            variant: variant.map(|i| (i, self.spec.customizations[i].name.clone())),
            values,
            capabilities,
        })
    }

    /// The objects a cluster receives. A `DoNotDeploy` cluster gets an empty render.
    /// Shared: a render that does not depend on the cluster is the one cached at load, and
    /// every cluster gets that same `Arc` rather than a copy of its objects and manifest.
    pub fn render(&self, cluster: &ClusterInfo) -> Result<Arc<Rendered>, Vec<Diagnostic>> {
        let variant = match self.select(cluster) {
            Selection::DoNotDeploy => return output::finish(Vec::new()).map(Arc::new),
            Selection::Deploy(key) => key.variant.map(|(i, _)| i),
        };
        let cluster_free = self.helm.as_ref().is_none_or(|h| {
            !h.is_templated(variant)
                && (!h.reads_capabilities(variant) || cluster.capabilities.is_none())
        });
        if cluster_free && let Some(hit) = self.cache.get(&variant) {
            return Ok(hit.clone());
        }
        if let Some(h) = &self.helm {
            let budget = Budget::new(&self.limits);
            return self
                .render_helm(h, variant, Some(cluster), &budget)
                .map(Arc::new);
        }
        let values = self
            .spec
            .cluster_values
            .then(|| values::resolve(&self.value_keys, cluster));
        let budget = Budget::new(&self.limits);
        self.render_variant(&self.snapshot, variant, values.as_ref(), &budget)
            .map(Arc::new)
    }

    fn variant_spec(&self, variant: Option<usize>) -> VariantSpec<'_> {
        let c = variant.and_then(|i| self.spec.customizations.get(i));
        VariantSpec {
            namespace: c
                .and_then(|c| c.namespace.as_deref())
                .or(self.spec.namespace.as_deref()),
            default_namespace: c
                .and_then(|c| c.default_namespace.as_deref())
                .or(self.spec.default_namespace.as_deref()),
            overlays: c
                .and_then(|c| c.overlays.as_deref())
                .unwrap_or(&self.spec.overlays),
            kustomize_dir: c
                .and_then(|c| c.kustomize_dir.as_deref())
                .or(self.spec.kustomize_dir.as_deref()),
            namespace_meta: {
                let base = &self.spec.namespace_meta;
                NamespaceMeta {
                    labels: c
                        .and_then(|c| c.namespace_labels.clone())
                        .unwrap_or_else(|| base.labels.clone()),
                    annotations: c
                        .and_then(|c| c.namespace_annotations.clone())
                        .unwrap_or_else(|| base.annotations.clone()),
                    delete: c.and_then(|c| c.delete_namespace).unwrap_or(base.delete),
                    create: c.and_then(|c| c.create_namespace).unwrap_or(base.create),
                }
            },
        }
    }

    /// Charts this bundle needs from outside the repo (a Helm repository or `oci://`),
    /// for the hub to fetch and hand back to [`Bundle::with_charts`].
    pub fn remote_charts(&self) -> Vec<RemoteChart> {
        self.helm
            .as_ref()
            .map(|h| h.remote_charts())
            .unwrap_or_default()
    }

    /// This bundle with the hub's fetched charts in place, each variant that uses one
    /// rendered once to validate it. A bundle renders a remote variant only after this.
    pub fn with_charts(&self, archives: &[ChartArchive]) -> Result<Bundle, Vec<Diagnostic>> {
        let Some(h) = &self.helm else {
            return Ok(self.clone());
        };
        let mut next = self.clone();
        let helm = Arc::new(h.with_charts(archives, &self.limits)?);
        next.helm = Some(helm.clone());
        let budget = Budget::new(&self.limits);
        let mut errors = Vec::new();
        for (v, spec) in &helm.variants {
            if !archives
                .iter()
                .any(|a| crate::helm::spec::ChartSource::Remote(a.request.clone()) == spec.source)
            {
                continue;
            }
            budget.next_render();
            match next.render_helm(&helm, *v, None, &budget) {
                Ok(r) => {
                    if !helm.is_templated(*v) {
                        next.cache.insert(*v, Arc::new(r));
                    }
                }
                Err(_) if helm.reads_capabilities(*v) || helm.is_templated(*v) => {}
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(next)
        } else {
            Err(errors)
        }
    }

    fn render_helm(
        &self,
        helm: &HelmBundle,
        variant: Option<usize>,
        cluster: Option<&ClusterInfo>,
        budget: &Budget,
    ) -> Diags<Rendered> {
        let vs = self.variant_spec(variant);
        let mut objects = helm.render(variant, cluster, &self.fleet_file, budget, &self.limits)?;
        let mut scope = Scope::new(&self.spec.cluster_scoped_kinds);
        scope.learn_crds(objects.iter().map(|o| &o.value));
        let release_ns = helm.variants.get(&variant).map(|v| v.namespace.as_str());
        set_namespaces(&mut objects, &scope, vs.namespace, release_ns);
        output::finish_in_order(objects)
    }

    fn render_variant(
        &self,
        fs: &dyn Fs,
        variant: Option<usize>,
        values: Option<&Values>,
        budget: &Budget,
    ) -> Diags<Rendered> {
        let vs = self.variant_spec(variant);
        let mut sources = Sources::new(fs, values, budget);
        overlay::apply_overlays(&mut sources, &self.dir, &self.fleet_file, vs.overlays)?;
        let kustomize_dir = match vs.kustomize_dir {
            Some(d) => {
                Some(join(&self.dir, d).map_err(|m| vec![Diagnostic::new(&self.fleet_file, m)])?)
            }
            None => KUSTOMIZATION_FILES
                .iter()
                .any(|f| join(&self.dir, f).is_ok_and(|p| fs.kind(&p) == Kind::File))
                .then(|| self.dir.clone()),
        };
        let mut objects = match kustomize_dir {
            Some(dir) => kustomize::build(&sources, &dir)?,
            None => raw_objects(&sources, &self.dir)?,
        };
        let mut scope = Scope::new(&self.spec.cluster_scoped_kinds);
        scope.learn_crds(objects.iter().map(|o| &o.value));
        set_namespaces(&mut objects, &scope, vs.namespace, vs.default_namespace);
        if !vs.namespace_meta.is_empty() {
            let Some(ns) = vs.namespace.or(vs.default_namespace) else {
                return Err(vec![Diagnostic::new(
                    &self.fleet_file,
                    "namespaceLabels, namespaceAnnotations, deleteNamespace and createNamespace \
                     need namespace or defaultNamespace: it names the namespace they are about",
                )]);
            };
            namespace_object(&mut objects, ns, &vs.namespace_meta, &self.fleet_file);
        }
        output::finish(objects)
    }
}

fn raw_objects(sources: &Sources<'_>, dir: &str) -> Diags<Vec<Object>> {
    let (mut files, _nested) = discovery::resource_files(sources.fs, dir)?;
    // Files an overlay adds to the bundle.
    for path in sources.layer.keys() {
        let inside = dir.is_empty() || path.starts_with(&format!("{dir}/"));
        if inside && !files.contains(path) {
            files.push(path.clone());
        }
    }
    files.sort();
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match sources.objects(&f) {
            Ok(o) => objects.extend(o),
            Err(e) => {
                errors.extend(e);
                if sources.budget.refused().is_some() {
                    break;
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

/// `namespace` forces, `defaultNamespace` fills in; both on namespaced objects only.
fn set_namespaces(
    objects: &mut [Object],
    scope: &Scope,
    forced: Option<&str>,
    default: Option<&str>,
) {
    for o in objects {
        if scope.is_cluster_scoped(o.api_version(), o.kind()) {
            continue;
        }
        let ns = match (forced, o.namespace()) {
            (Some(f), _) => f.to_string(),
            (None, Some(_)) => continue,
            (None, None) => match default {
                Some(d) => d.to_string(),
                None => continue,
            },
        };
        if let Some(meta) = o.value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".to_string(), Value::String(ns));
        }
    }
}

/// The annotation (Helm's, which Fleet honours too) that tells the spoke never to prune
/// an object.
const KEEP_ANNOTATION: (&str, &str) = ("helm.sh/resource-policy", "keep");

/// Puts `namespaceLabels` and `namespaceAnnotations` on the bundle's target Namespace: on
/// the bundle's own Namespace object of that name, or on one added for them. An added one
/// carries [`KEEP_ANNOTATION`] unless `deleteNamespace`, so removing the bundle keeps the
/// namespace, as in Fleet; with `deleteNamespace` it is pruned with the bundle.
fn namespace_object(objects: &mut Vec<Object>, ns: &str, meta: &NamespaceMeta, fleet_file: &str) {
    let own = objects
        .iter_mut()
        .find(|o| o.kind() == "Namespace" && o.api_version() == "v1" && o.name() == ns);
    let (target, added) = match own {
        Some(o) => (o, false),
        None => {
            objects.insert(
                0,
                Object {
                    file: fleet_file.to_string(),
                    line: 1,
                    value: serde_json::json!({
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {"name": ns},
                    }),
                },
            );
            (&mut objects[0], true)
        }
    };
    let Some(metadata) = target
        .value
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let mut put = |field: &str, entries: &mut dyn Iterator<Item = (String, String)>| {
        let map = metadata
            .entry(field)
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(map) = map.as_object_mut() {
            for (k, v) in entries {
                map.insert(k, Value::String(v));
            }
        }
    };
    if !meta.labels.is_empty() {
        put("labels", &mut meta.labels.clone().into_iter());
    }
    let mut annotations = meta.annotations.clone();
    if added && !meta.delete {
        annotations.insert(KEEP_ANNOTATION.0.into(), KEEP_ANNOTATION.1.into());
    }
    if !annotations.is_empty() {
        put("annotations", &mut annotations.into_iter());
    }
}

fn matches(c: &Customization, cluster: &ClusterInfo) -> bool {
    if c.cluster_name.is_none()
        && c.cluster_selector.is_none()
        && c.cluster_group.is_none()
        && c.cluster_group_selector.is_none()
    {
        return false;
    }
    c.cluster_name.as_ref().is_none_or(|n| *n == cluster.name)
        && c.cluster_selector
            .as_ref()
            .is_none_or(|s| s.matches(&cluster.labels))
        && c.cluster_group
            .as_ref()
            .is_none_or(|g| cluster.groups.iter().any(|cg| cg.name == *g))
        && c.cluster_group_selector
            .as_ref()
            .is_none_or(|s| cluster.groups.iter().any(|cg| s.matches(&cg.labels)))
}

/// Loads the bundle at `dir` (repo-relative) of the repo served by `repo`.
pub(crate) fn load(
    repo: impl Backend,
    dir: &str,
    name: &str,
    limits: &Limits,
    warn_nested: bool,
) -> Result<Bundle, Vec<Diagnostic>> {
    let fs = Recorder::new(repo, limits);
    if fs.kind(dir) != Kind::Dir {
        return Err(vec![Diagnostic::new(dir, "bundle folder not found")]);
    }
    let mut warnings = Vec::new();
    let present: Vec<String> = discovery::BUNDLE_FILES
        .iter()
        .filter_map(|f| join(dir, f).ok())
        .filter(|p| fs.kind(p) == Kind::File)
        .collect();
    if present.len() > 1 {
        warnings.push(Diagnostic::new(
            &present[1],
            format!("ignored: {} takes precedence", present[0]),
        ));
    }
    let (fleet_file, parsed) = match present.first() {
        Some(f) => {
            let text = fs.read(f).map_err(|d| vec![d])?;
            (f.clone(), fleet_yaml::parse(f, &text)?)
        }
        None => (
            join(dir, "fleet.yaml").unwrap_or_default(),
            fleet_yaml::parse("", "")?,
        ),
    };
    warnings.extend(parsed.warnings);
    let mut bundle = Bundle {
        name: name.to_string(),
        dir: dir.to_string(),
        fleet_file,
        spec: parsed.spec,
        options: parsed.options,
        fleet_name: parsed.name,
        override_targets: parsed.override_targets,
        warnings,
        unknown_keys: parsed.unknown_keys,
        snapshot: Snapshot::default(),
        limits: limits.clone(),
        value_keys: BTreeSet::new(),
        cache: BTreeMap::new(),
        helm: None,
    };
    if release::is_helm_bundle(&fs, dir, &bundle.spec) {
        return load_helm(bundle, fs, limits);
    }
    if bundle.spec.helm.is_some() || bundle.spec.customizations.iter().any(|c| c.helm.is_some()) {
        bundle.warnings.push(Diagnostic::new(
            &bundle.fleet_file,
            "helm options are ignored: this bundle has no chart (no helm.chart, no Chart.yaml)",
        ));
    }
    if warn_nested && let Ok((_, nested)) = discovery::resource_files(&fs, dir) {
        for n in nested {
            bundle.warnings.push(Diagnostic::new(
                &n,
                "nested bundle is not part of this bundle; it is rendered on its own",
            ));
        }
    }

    // Render every variant once: this validates the bundle whole, and records every
    // file a later render can read.
    let mut variants: Vec<Option<usize>> = vec![None];
    variants.extend(
        bundle
            .spec
            .customizations
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.do_not_deploy)
            .map(|(i, _)| Some(i)),
    );
    let mut errors = Vec::new();
    let mut cache = BTreeMap::new();
    // One budget of bytes and work for all variants, since the cache keeps them all.
    let budget = Budget::new(limits);
    for v in variants {
        if budget.refused().is_some() {
            break;
        }
        budget.next_render();
        match bundle.render_variant(&fs, v, None, &budget) {
            Ok(r) => {
                cache.insert(v, Arc::new(r));
            }
            Err(e) => {
                for d in e {
                    if !errors.contains(&d) {
                        errors.push(d);
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    bundle.snapshot = fs.into_snapshot();
    if bundle.spec.cluster_values {
        bundle.value_keys = placeholders(&bundle.snapshot).map_err(|d| vec![d])?;
    } else {
        bundle.cache = cache;
    }
    Ok(bundle)
}

/// Every cluster value named in the bundle's YAML files.
fn placeholders(snapshot: &Snapshot) -> Result<BTreeSet<ValueKey>, Diagnostic> {
    let mut keys = BTreeSet::new();
    for (path, text) in snapshot.texts() {
        if path.ends_with(".yaml") || path.ends_with(".yml") {
            keys.extend(values::scan(path, text)?.into_iter().map(|f| f.key));
        }
    }
    Ok(keys)
}

/// Loads a Helm bundle's charts and renders every variant that needs no cluster (nor a
/// remote chart) once, to validate it.
fn load_helm<B: Backend>(
    mut bundle: Bundle,
    fs: Recorder<B>,
    limits: &Limits,
) -> Result<Bundle, Vec<Diagnostic>> {
    let helm = HelmBundle::load(
        &fs,
        &bundle.dir,
        &bundle.fleet_file,
        &bundle.spec,
        &bundle.name,
        limits,
    )?;
    let helm = Arc::new(helm);
    bundle.options.helm = helm.variants.get(&None).map(|v| v.deploy.clone());
    bundle.helm = Some(helm.clone());
    let budget = Budget::new(limits);
    let mut errors = Vec::new();
    for v in helm.variants.keys() {
        if helm.is_templated(*v) || !helm.charts.contains_key(&helm.variants[v].source) {
            continue;
        }
        budget.next_render();
        match bundle.render_helm(&helm, *v, None, &budget) {
            Ok(r) => {
                bundle.cache.insert(*v, Arc::new(r));
            }
            // A chart that reads the cluster's capabilities may fail on helm template's
            // defaults (an old Kubernetes version) and render on real clusters: its errors
            // are reported per cluster, at render.
            Err(_) if helm.reads_capabilities(*v) => {}
            Err(e) => {
                for d in e {
                    if !errors.contains(&d) {
                        errors.push(d);
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    bundle.snapshot = fs.into_snapshot();
    Ok(bundle)
}
