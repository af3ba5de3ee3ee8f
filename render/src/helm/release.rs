//! The Helm side of a bundle: per variant (the default and each `targetCustomizations[]`
//! entry) which chart, which user values, which release name and namespace; the charts
//! loaded once (folders at load, remote archives when the hub hands them in); and one
//! render, `helm template` step by step: user values (Fleet's `${ }` templating first),
//! dependencies, `kubeVersion`, coalescing, `values.schema.json`, the templates, then CRDs,
//! manifests and hooks in Helm's order.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::archive::ArchiveLimits;
use super::chart::{self, Chart};
use super::engine;
use super::order;
use super::spec::{ChartSource, HelmDeployOptions, HelmSpec, default_release_name, merge_values};
use super::values::{Table, coalesce_values, process_dependencies};
use crate::budget::Budget;
use crate::diagnostic::Diagnostic;
use crate::fleet_yaml::RenderSpec;
use crate::output::Object;
use crate::repo_fs::{Fs, Kind, join};
use crate::{Capabilities, ChartArchive, ClusterInfo, Limits, RemoteChart};

/// One variant's Helm settings.
#[derive(Debug, Clone)]
pub(crate) struct Variant {
    pub source: ChartSource,
    /// `valuesFiles` then `values`, before Fleet's templating.
    pub values: Table,
    /// The values use Fleet's `${ }` templating (and `disablePreProcess` is off): the
    /// render depends on the cluster.
    pub templated: bool,
    pub release_name: String,
    pub namespace: String,
    pub skip_schema_validation: bool,
    /// What the spoke receives: this variant's `helm:` block over the top one, so a
    /// target's `takeOwnership`, `force`, `atomic`, `waitForJobs` or `timeoutSeconds` win.
    pub deploy: HelmDeployOptions,
}

/// A chart ready to render: its templates parsed, and whether its render depends on the
/// cluster's capabilities.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub chart: Chart,
    pub parsed: engine::Parsed,
    pub reads_capabilities: bool,
}

/// The Helm part of a bundle.
#[derive(Debug, Clone)]
pub(crate) struct HelmBundle {
    pub variants: BTreeMap<Option<usize>, Variant>,
    pub charts: BTreeMap<ChartSource, Arc<Loaded>>,
}

/// Whether the bundle at `dir` is a Helm bundle: `helm.chart` anywhere, or `Chart.yaml`
/// in the bundle folder (as in Fleet, a chart folder needs no `fleet.yaml`).
pub(crate) fn is_helm_bundle(fs: &dyn Fs, dir: &str, spec: &RenderSpec) -> bool {
    let names_chart = |h: &Option<HelmSpec>| {
        h.as_ref().is_some_and(|h| {
            h.chart.as_deref().is_some_and(|c| !c.trim().is_empty()) || h.repo.is_some()
        })
    };
    names_chart(&spec.helm)
        || spec.customizations.iter().any(|c| names_chart(&c.helm))
        || join(dir, "Chart.yaml").is_ok_and(|p| fs.kind(&p) == Kind::File)
}

pub(crate) fn archive_limits(limits: &Limits) -> ArchiveLimits {
    ArchiveLimits {
        max_total_bytes: limits.max_bundle_bytes,
        max_file_bytes: limits.max_file_bytes,
        max_entries: MAX_CHART_FILES,
    }
}

/// Most files one chart (with its subcharts) may hold.
const MAX_CHART_FILES: usize = 5_000;

impl HelmBundle {
    /// Reads every variant's settings and every chart in a folder of the repo.
    pub(crate) fn load(
        fs: &dyn Fs,
        dir: &str,
        fleet_file: &str,
        spec: &RenderSpec,
        bundle_name: &str,
        limits: &Limits,
    ) -> Result<HelmBundle, Vec<Diagnostic>> {
        let mut variants = BTreeMap::new();
        let mut errors = Vec::new();
        let top = spec.helm.clone().unwrap_or_default();
        let mut ids: Vec<Option<usize>> = vec![None];
        ids.extend(
            spec.customizations
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.do_not_deploy)
                .map(|(i, _)| Some(i)),
        );
        for id in ids {
            let c = id.and_then(|i| spec.customizations.get(i));
            let over = c.and_then(|c| c.helm.as_ref());
            let hs = match over {
                Some(over) => top.merged(over),
                None => top.clone(),
            };
            let namespace = c
                .and_then(|c| c.namespace.clone())
                .or_else(|| spec.namespace.clone())
                .or_else(|| c.and_then(|c| c.default_namespace.clone()))
                .or_else(|| spec.default_namespace.clone())
                .unwrap_or_else(|| "default".to_string());
            let values = block_values(fs, dir, fleet_file, &top).and_then(|base| match over {
                Some(o) => block_values(fs, dir, fleet_file, o).map(|v| merge_values(base, &v)),
                None => Ok(base),
            });
            let built =
                values.and_then(|v| variant(fs, dir, fleet_file, &hs, v, bundle_name, namespace));
            match built {
                Ok(v) => {
                    variants.insert(id, v);
                }
                Err(e) => errors.extend(e),
            }
        }
        let mut charts = BTreeMap::new();
        for v in variants.values() {
            let ChartSource::Folder(path) = &v.source else {
                continue;
            };
            if charts.contains_key(&v.source) {
                continue;
            }
            match load_folder(fs, path, limits) {
                Ok(l) => {
                    charts.insert(v.source.clone(), Arc::new(l));
                }
                Err(e) => errors.extend(e),
            }
        }
        if !errors.is_empty() {
            errors.dedup();
            return Err(errors);
        }
        Ok(HelmBundle { variants, charts })
    }

    /// Charts this bundle needs from outside the repo, each once.
    pub(crate) fn remote_charts(&self) -> Vec<RemoteChart> {
        let mut out: Vec<RemoteChart> = Vec::new();
        for v in self.variants.values() {
            if let ChartSource::Remote(r) = &v.source
                && !out.contains(r)
            {
                out.push(r.clone());
            }
        }
        out
    }

    /// This bundle with the hub's fetched charts in place.
    pub(crate) fn with_charts(
        &self,
        archives: &[ChartArchive],
        limits: &Limits,
    ) -> Result<HelmBundle, Vec<Diagnostic>> {
        let mut next = self.clone();
        for a in archives {
            let source = ChartSource::Remote(a.request.clone());
            let origin = format!("{}-{}.tgz", a.name, a.version);
            let files = super::archive::unpack(&a.bytes, archive_limits(limits))
                .map_err(|e| vec![Diagnostic::new(&origin, e)])?;
            let chart = chart::load_files(&origin, files, archive_limits(limits), 0)
                .map_err(|d| vec![d])?;
            next.charts.insert(source, Arc::new(loaded(chart, limits)?));
        }
        Ok(next)
    }

    /// Whether a variant's render depends on the cluster's capabilities.
    pub(crate) fn reads_capabilities(&self, variant: Option<usize>) -> bool {
        self.variants
            .get(&variant)
            .and_then(|v| self.charts.get(&v.source))
            .is_some_and(|l| l.reads_capabilities)
    }

    pub(crate) fn is_templated(&self, variant: Option<usize>) -> bool {
        self.variants.get(&variant).is_some_and(|v| v.templated)
    }

    /// Renders one variant; `cluster` is `None` for validation at load (no cluster values).
    pub(crate) fn render(
        &self,
        variant: Option<usize>,
        cluster: Option<&ClusterInfo>,
        fleet_file: &str,
        budget: &Budget,
        limits: &Limits,
    ) -> Result<Vec<Object>, Vec<Diagnostic>> {
        let Some(v) = self.variants.get(&variant) else {
            return Err(vec![Diagnostic::new(
                fleet_file,
                "internal: unknown variant",
            )]);
        };
        let Some(loaded) = self.charts.get(&v.source) else {
            let ChartSource::Remote(r) = &v.source else {
                return Err(vec![Diagnostic::new(
                    fleet_file,
                    "internal: chart not loaded",
                )]);
            };
            return Err(vec![Diagnostic::new(
                fleet_file,
                format!(
                    "helm.chart {:?}{} is a remote chart: the hub fetches it before rendering \
                     (flotilla render reads only local folders)",
                    r.chart,
                    r.repo
                        .as_deref()
                        .map(|r| format!(" in {r}"))
                        .unwrap_or_default()
                ),
            )]);
        };
        let mut user = v.values.clone();
        if v.templated
            && let Some(c) = cluster
        {
            user = engine::fleet_template_values(&user, c, fleet_file, limits)?;
        }
        let caps = cluster.and_then(|c| c.capabilities.clone());
        render_chart(loaded, &user, v, caps.as_ref(), budget, limits)
    }
}

/// One `helm:` block's values: its `valuesFiles` merged in order, then its `values` over
/// them (Fleet reads each block so; a target's are then merged over the top block's).
fn block_values(
    fs: &dyn Fs,
    dir: &str,
    fleet_file: &str,
    hs: &HelmSpec,
) -> Result<Value, Vec<Diagnostic>> {
    let mut values = Value::Object(Map::new());
    let mut errors = Vec::new();
    for f in &hs.values_files {
        let path = match join(dir, f) {
            Ok(p) => p,
            Err(m) => {
                errors.push(Diagnostic::new(
                    fleet_file,
                    format!("helm.valuesFiles: {m}"),
                ));
                continue;
            }
        };
        let parsed = fs
            .read(&path)
            .and_then(|text| chart::parse_yaml(&path, &text));
        match parsed {
            Ok(Value::Object(m)) => values = merge_values(values, &Value::Object(m)),
            Ok(Value::Null) => {}
            Ok(_) => errors.push(Diagnostic::new(&path, "a values file must be a mapping")),
            Err(d) => errors.push(d),
        }
    }
    if let Some(v) = &hs.values {
        values = merge_values(values, v);
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

fn variant(
    fs: &dyn Fs,
    dir: &str,
    fleet_file: &str,
    hs: &HelmSpec,
    values: Value,
    bundle_name: &str,
    namespace: String,
) -> Result<Variant, Vec<Diagnostic>> {
    let source = match hs.source() {
        ChartSource::Folder(p) => {
            let path = join(dir, &p).map_err(|m| vec![Diagnostic::new(fleet_file, m)])?;
            let chart_yaml = join(&path, "Chart.yaml").unwrap_or_default();
            if fs.kind(&chart_yaml) != Kind::File {
                return Err(vec![Diagnostic::new(
                    fleet_file,
                    format!(
                        "helm.chart: no Chart.yaml in {:?}",
                        if path.is_empty() { "." } else { &path }
                    ),
                )]);
            }
            ChartSource::Folder(path)
        }
        remote => remote,
    };
    let values = match values {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let templated = !hs.disable_pre_process.unwrap_or(false) && mentions_template(&values);
    let release_name = hs
        .release_name
        .clone()
        .unwrap_or_else(|| default_release_name(bundle_name));
    Ok(Variant {
        source,
        values,
        templated,
        deploy: hs.deploy_options(release_name.clone()),
        release_name,
        namespace,
        skip_schema_validation: hs.skip_schema_validation.unwrap_or(false),
    })
}

/// Whether any string (key or value) holds Fleet's `${` template opener.
fn mentions_template(values: &Table) -> bool {
    fn walk(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains("${"),
            Value::Array(a) => a.iter().any(walk),
            Value::Object(m) => m.iter().any(|(k, v)| k.contains("${") || walk(v)),
            _ => false,
        }
    }
    values.iter().any(|(k, v)| k.contains("${") || walk(v))
}

fn load_folder(fs: &dyn Fs, path: &str, limits: &Limits) -> Result<Loaded, Vec<Diagnostic>> {
    let files = chart::read_dir(fs, path, MAX_CHART_FILES)?;
    let chart = chart::load_files(path, files, archive_limits(limits), 0).map_err(|d| vec![d])?;
    loaded(chart, limits)
}

/// Parses the chart's templates (one that does not parse fails the bundle at load) and
/// finds whether its render depends on the cluster's capabilities: a template reads
/// `.Capabilities`, or `Chart.yaml` has a `kubeVersion` constraint.
fn loaded(chart: Chart, limits: &Limits) -> Result<Loaded, Vec<Diagnostic>> {
    let parsed = engine::parse_chart(&chart, limits).map_err(|d| vec![d])?;
    let reads_capabilities = parsed.reads_capabilities() || !chart.metadata.kube_version.is_empty();
    Ok(Loaded {
        chart,
        parsed,
        reads_capabilities,
    })
}

/// `helm template` of one chart: the steps of `action.Install` for a client-only render.
fn render_chart(
    loaded: &Loaded,
    user: &Table,
    v: &Variant,
    caps: Option<&Capabilities>,
    budget: &Budget,
    limits: &Limits,
) -> Result<Vec<Object>, Vec<Diagnostic>> {
    let origin = loaded.chart.origin.clone();
    let chart_file = chart::origin_path(&origin, "Chart.yaml");
    let mut chart = loaded.chart.clone();
    process_dependencies(&mut chart, user, &engine::version_in_range)
        .map_err(|m| vec![Diagnostic::new(&chart_file, m)])?;
    let caps = engine::capabilities(caps);
    if !chart.metadata.kube_version.is_empty()
        && !engine::version_in_range(&chart.metadata.kube_version, &caps.kube_version)
    {
        return Err(vec![Diagnostic::new(
            &chart_file,
            format!(
                "chart requires kubeVersion: {} which is incompatible with Kubernetes {}",
                chart.metadata.kube_version, caps.kube_version
            ),
        )]);
    }
    let values =
        coalesce_values(&chart, user).map_err(|m| vec![Diagnostic::new(&chart_file, m)])?;
    if !v.skip_schema_validation {
        super::schema::validate_chart(&chart, &values).map_err(|m| {
            vec![Diagnostic::new(
                &chart_file,
                format!("values don't meet the specifications of the schema(s) in the following chart(s):\n{m}"),
            )]
        })?;
    }
    let mut rendered = engine::render(
        &chart,
        &loaded.parsed,
        &values,
        (&v.release_name, &v.namespace),
        &caps,
        limits,
    )
    .map_err(|d| vec![d])?;
    // NOTES.txt is rendered (its errors count, as in Helm) but is not a manifest.
    rendered.retain(|name, _| !name.ends_with("NOTES.txt"));
    budget
        .bytes(rendered.values().map(|t| t.len() as u64).sum())
        .map_err(|e| vec![Diagnostic::new(&chart_file, e.to_string())])?;
    let source_of = |template: &str| engine::repo_path(&origin, template);
    let (generic, hooks) =
        order::sort_manifests(&rendered, &chart::parse_manifest).map_err(|ds| {
            ds.into_iter()
                .map(|mut d| {
                    d.file = source_of(&d.file);
                    d
                })
                .collect::<Vec<_>>()
        })?;
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (name, data) in chart.crds("") {
        let file = source_of(&name);
        let text = match std::str::from_utf8(&data) {
            Ok(t) => t,
            Err(_) => {
                errors.push(Diagnostic::new(&file, "file is not valid UTF-8 text"));
                continue;
            }
        };
        match crate::yaml::parse_documents(&file, text) {
            Ok(docs) => objects.extend(docs.into_iter().map(|d| Object {
                file: file.clone(),
                line: d.line,
                value: d.value,
            })),
            Err(d) => errors.push(d),
        }
    }
    for d in generic.into_iter().chain(hooks) {
        objects.push(Object {
            file: source_of(&d.template),
            line: d.line,
            value: d.value,
        });
    }
    for o in &objects {
        if let Err(e) = budget.object(&o.value) {
            return Err(vec![o.diag(e.to_string())]);
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}
