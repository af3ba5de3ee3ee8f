//! The bridge to the template engine (`flotilla-gotmpl`): builds what a chart's templates
//! see (`.Values`, `.Chart`, `.Release`, `.Capabilities`, `.Files`, `.Template`,
//! `.Subcharts`, scoped per chart as Helm's `recAllTpls` does), parses every template of the
//! chart and its subcharts into one set in Helm's order, executes the non-partials, and maps
//! engine errors to diagnostics on the template's file. Also Fleet's `${ }` values
//! templating and semver ranges (`kubeVersion`, dependency versions) on the same engine.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use flotilla_gotmpl::{self as gotmpl, MissingKey, Options, ParseCache, TemplateSet, Value as V};
use serde_json::Value;

use super::chart::Chart;
use super::values::Table;
use super::{DEFAULT_API_VERSIONS, DEFAULT_KUBE_VERSION, parse_generic_version};
use crate::diagnostic::Diagnostic;
use crate::{Capabilities, ClusterInfo, Limits};

/// Helm's version as `.Capabilities.HelmVersion` reports it: the release flotilla matches.
const HELM_VERSION: &str = "v3.22.0";

/// What `.Capabilities` holds for one render.
#[derive(Debug, Clone)]
pub(crate) struct Caps {
    pub kube_version: String,
    pub api_versions: Vec<String>,
}

/// The cluster's capabilities, or `helm template`'s defaults.
pub(crate) fn capabilities(c: Option<&Capabilities>) -> Caps {
    match c {
        Some(c) => Caps {
            kube_version: c.kube_version.clone(),
            api_versions: c.api_versions.clone(),
        },
        None => Caps {
            kube_version: DEFAULT_KUBE_VERSION.to_string(),
            api_versions: DEFAULT_API_VERSIONS.iter().map(|s| s.to_string()).collect(),
        },
    }
}

/// Helm's `IsCompatibleRange`: `version` satisfies the Masterminds constraint; an
/// unparsable constraint or version does not. Asked of the engine's own `semverCompare`
/// (the one Masterminds implementation in the workspace).
pub(crate) fn version_in_range(constraint: &str, version: &str) -> bool {
    let mut set = TemplateSet::new(Options::default());
    if set.parse("semver", "{{ semverCompare .c .v }}").is_err() {
        return false;
    }
    let data = V::map(BTreeMap::from([
        ("c".to_string(), V::string(constraint)),
        ("v".to_string(), V::string(version)),
    ]));
    set.execute("semver", &data).is_ok_and(|out| out == "true")
}

/// A chart's template named `chart/templates/x.yaml` as a repo path under `origin`.
pub(crate) fn repo_path(origin: &str, template: &str) -> String {
    let rest = template.split_once('/').map(|(_, r)| r).unwrap_or(template);
    super::chart::origin_path(origin, rest)
}

fn options(limits: &Limits) -> Options {
    Options {
        max_steps: limits.max_render_work.saturating_mul(STEPS_PER_WORK),
        max_output_bytes: usize::try_from(limits.max_render_bytes).unwrap_or(usize::MAX),
        ..Options::default()
    }
}

/// Template steps are much cheaper than the renderer's work steps (one object through
/// one transformer): a chart gets this many engine steps per unit of `max_render_work`.
const STEPS_PER_WORK: u64 = 25;

/// One template to parse: full name, text, and the chart it belongs to.
struct Tpl<'a> {
    name: String,
    text: &'a str,
    chart: &'a Chart,
    /// Index into the per-chart data built for execution.
    scope: usize,
}

/// Every template of `chart` and its subcharts with Helm's full names.
fn collect<'a>(chart: &'a Chart, parent: &str, out: &mut Vec<Tpl<'a>>, scopes: &mut usize) {
    let full = if parent.is_empty() {
        chart.name().to_string()
    } else {
        format!("{parent}/charts/{}", chart.name())
    };
    let scope = *scopes;
    *scopes += 1;
    let library = chart.metadata.chart_type.eq_ignore_ascii_case("library");
    for (name, text) in &chart.templates {
        if library && !crate::repo_fs::file_name(name).starts_with('_') {
            continue;
        }
        out.push(Tpl {
            name: format!("{full}/{name}"),
            text,
            chart,
            scope,
        });
    }
    for d in &chart.dependencies {
        collect(d, &full, out, scopes);
    }
}

/// Helm's `sortTemplates`: deepest paths first, then names in reverse; parsed in this
/// order, so a parent's `define` overrides a subchart's of the same name.
fn parse_order(tpls: &mut [Tpl<'_>]) {
    tpls.sort_by(|a, b| {
        let (ca, cb) = (a.name.matches('/').count(), b.name.matches('/').count());
        cb.cmp(&ca).then_with(|| b.name.cmp(&a.name))
    });
}

fn templates(chart: &Chart) -> Vec<Tpl<'_>> {
    let mut tpls = Vec::new();
    let mut scopes = 0;
    collect(chart, "", &mut tpls, &mut scopes);
    parse_order(&mut tpls);
    tpls
}

/// Parses shared by every chart this process loads: the hub loads a bundle again for each
/// new revision (and each replica loads it), mostly with the same template texts. Bounded
/// by the template text it holds; the parsed trees are a few times that.
static PARSE_CACHE: LazyLock<Arc<ParseCache>> =
    LazyLock::new(|| Arc::new(ParseCache::new(PARSE_CACHE_BYTES)));

/// Template text whose parses [`PARSE_CACHE`] keeps.
const PARSE_CACHE_BYTES: usize = 16 << 20;

fn parse_all<'a>(
    chart: &'a Chart,
    limits: &Limits,
) -> Result<(TemplateSet, Vec<Tpl<'a>>), Diagnostic> {
    let tpls = templates(chart);
    let mut set = TemplateSet::with_cache(options(limits), PARSE_CACHE.clone());
    for t in &tpls {
        set.parse(&t.name, t.text)
            .map_err(|e| diagnostic(&t.chart.origin, &e, &tpls))?;
    }
    Ok((set, tpls))
}

/// Every template of a chart and its subcharts, parsed once at load: a render whose
/// dependencies leave the same templates (no subchart disabled or aliased) reuses it.
#[derive(Clone)]
pub(crate) struct Parsed {
    set: TemplateSet,
    /// The full names of the templates parsed into `set`, in parse order.
    names: Vec<String>,
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("names", &self.names)
            .finish()
    }
}

impl Parsed {
    /// Whether any template may read `.Capabilities`.
    pub(crate) fn reads_capabilities(&self) -> bool {
        self.set.reads_field("Capabilities")
    }
}

/// Parses every template of the chart; a template that does not parse fails the chart.
pub(crate) fn parse_chart(chart: &Chart, limits: &Limits) -> Result<Parsed, Diagnostic> {
    let (set, tpls) = parse_all(chart, limits)?;
    Ok(Parsed {
        set,
        names: tpls.into_iter().map(|t| t.name).collect(),
    })
}

/// The engine's error as a diagnostic on the template's repo file and line.
fn diagnostic(origin: &str, e: &gotmpl::Error, tpls: &[Tpl<'_>]) -> Diagnostic {
    let location = match e {
        gotmpl::Error::Parse { name, line, .. } => format!("{name}:{line}"),
        gotmpl::Error::Exec { location, .. }
        | gotmpl::Error::Budget { location, .. }
        | gotmpl::Error::Fail { location, .. } => location.clone(),
        gotmpl::Error::Template { template, .. } => template.clone(),
    };
    let mut parts = location.splitn(3, ':');
    let name = parts.next().unwrap_or("");
    let line = parts.next().and_then(|l| l.parse::<u32>().ok());
    let column = parts.next().and_then(|c| c.parse::<u32>().ok());
    let origin = tpls
        .iter()
        .find(|t| t.name == name)
        .map_or(origin, |t| t.chart.origin.as_str());
    let file = if name.is_empty() {
        origin.to_string()
    } else {
        // Subchart templates carry their own chart's origin: strip up to `templates/`.
        match name.find("/templates/") {
            Some(i) => super::chart::origin_path(origin, &name[i + 1..]),
            None => repo_path(origin, name),
        }
    };
    Diagnostic {
        file,
        line,
        column,
        message: e.to_string(),
    }
}

/// `.Chart`: Helm's `chart.Metadata` with Go's field names, plus `IsRoot`.
fn chart_value(c: &Chart, is_root: bool) -> V {
    let m = &c.metadata;
    let s = |x: &str| V::string(x);
    let strings = |xs: &[String]| V::list(xs.iter().map(|x| V::string(x.as_str())).collect());
    let mut map = BTreeMap::new();
    map.insert("Name".into(), s(&m.name));
    map.insert("Home".into(), s(&m.home));
    map.insert("Sources".into(), strings(&m.sources));
    map.insert("Version".into(), s(&m.version));
    map.insert("Description".into(), s(&m.description));
    map.insert("Keywords".into(), strings(&m.keywords));
    map.insert(
        "Maintainers".into(),
        V::list(
            m.maintainers
                .iter()
                .map(|x| {
                    V::map(BTreeMap::from([
                        ("Name".to_string(), s(&x.name)),
                        ("Email".to_string(), s(&x.email)),
                        ("URL".to_string(), s(&x.url)),
                    ]))
                })
                .collect(),
        ),
    );
    map.insert("Icon".into(), s(&m.icon));
    map.insert("APIVersion".into(), s(&m.api_version));
    map.insert("Condition".into(), s(&m.condition));
    map.insert("Tags".into(), s(&m.tags));
    map.insert("AppVersion".into(), s(&m.app_version));
    map.insert("Deprecated".into(), V::Bool(m.deprecated));
    map.insert(
        "Annotations".into(),
        V::map(
            m.annotations
                .iter()
                .map(|(k, v)| (k.clone(), V::string(v.as_str())))
                .collect(),
        ),
    );
    map.insert("KubeVersion".into(), s(&m.kube_version));
    map.insert(
        "Dependencies".into(),
        V::list(
            m.dependencies
                .iter()
                .map(|d| {
                    V::map(BTreeMap::from([
                        ("Name".to_string(), s(&d.name)),
                        ("Version".to_string(), s(&d.version)),
                        ("Repository".to_string(), s(&d.repository)),
                        ("Condition".to_string(), s(&d.condition)),
                        ("Tags".to_string(), strings(&d.tags)),
                        ("Enabled".to_string(), V::Bool(d.enabled)),
                        (
                            "ImportValues".to_string(),
                            V::list(d.import_values.iter().map(V::from_json).collect()),
                        ),
                        ("Alias".to_string(), s(&d.alias)),
                    ]))
                })
                .collect(),
        ),
    );
    map.insert("Type".into(), s(&m.chart_type));
    map.insert("IsRoot".into(), V::Bool(is_root));
    V::map(map)
}

fn capabilities_value(caps: &Caps) -> V {
    let parts = parse_generic_version(&caps.kube_version).unwrap_or_default();
    let kube = gotmpl::KubeVersion {
        version: caps.kube_version.clone(),
        major: parts.first().map(u64::to_string).unwrap_or_default(),
        minor: parts.get(1).map(u64::to_string).unwrap_or_default(),
    };
    V::map(BTreeMap::from([
        ("KubeVersion".to_string(), kube.into_value()),
        (
            "APIVersions".to_string(),
            gotmpl::ApiVersions(caps.api_versions.clone()).into_value(),
        ),
        (
            "HelmVersion".to_string(),
            V::map(BTreeMap::from([
                ("Version".to_string(), V::string(HELM_VERSION)),
                ("GitCommit".to_string(), V::string("")),
                ("GitTreeState".to_string(), V::string("")),
                ("GoVersion".to_string(), V::string("")),
            ])),
        ),
    ]))
}

/// Renders every non-partial template: Helm's `Engine.Render` (`<no value>` removed).
pub(crate) fn render(
    chart: &Chart,
    parsed: &Parsed,
    values: &Table,
    release: (&str, &str),
    caps: &Caps,
    limits: &Limits,
) -> Result<BTreeMap<String, String>, Diagnostic> {
    let (release_name, namespace) = release;
    let tpls = templates(chart);
    let same = tpls.len() == parsed.names.len()
        && tpls.iter().zip(&parsed.names).all(|(t, n)| t.name == *n);
    let set = if same {
        parsed.set.clone()
    } else {
        parse_all(chart, limits)?.0
    };
    let release = V::map(BTreeMap::from([
        ("Name".to_string(), V::string(release_name)),
        ("Namespace".to_string(), V::string(namespace)),
        ("IsUpgrade".to_string(), V::Bool(false)),
        ("IsInstall".to_string(), V::Bool(true)),
        ("Revision".to_string(), V::Int(1)),
        ("Service".to_string(), V::string("Helm")),
    ]));
    let capabilities = capabilities_value(caps);
    let root_values = V::map(
        values
            .iter()
            .map(|(k, v)| (k.clone(), V::from_json(v)))
            .collect(),
    );
    // Per chart (in `collect` order), the map its templates see as dot.
    let mut scopes: Vec<gotmpl::Value> = Vec::new();
    build_scopes(
        chart,
        true,
        root_values,
        &release,
        &capabilities,
        &mut scopes,
    );
    let mut order: Vec<&Tpl<'_>> = tpls.iter().collect();
    order.retain(|t| !crate::repo_fs::file_name(&t.name).starts_with('_'));
    let mut out = BTreeMap::new();
    for t in order {
        let Some(V::Map(dot)) = scopes.get(t.scope) else {
            continue;
        };
        let base = t
            .name
            .rsplit_once("/templates/")
            .map(|(b, _)| format!("{b}/templates"))
            .unwrap_or_default();
        dot.write().insert(
            "Template".to_string(),
            V::map(BTreeMap::from([
                ("Name".to_string(), V::string(t.name.as_str())),
                ("BasePath".to_string(), V::string(base)),
            ])),
        );
        let text = set
            .execute(&t.name, &V::Map(dot.clone()))
            .map_err(|e| diagnostic(&t.chart.origin, &e, &tpls))?;
        let text = if text.contains("<no value>") {
            text.replace("<no value>", "")
        } else {
            text
        };
        out.insert(t.name.clone(), text);
    }
    Ok(out)
}

/// Helm's `recAllTpls` data: one map per chart, subcharts' `.Values` taken from the
/// parent's (the same shared map, as in Go), `.Subcharts` linking to children's maps.
fn build_scopes(
    chart: &Chart,
    is_root: bool,
    values: V,
    release: &V,
    capabilities: &V,
    scopes: &mut Vec<V>,
) -> V {
    let index = scopes.len();
    scopes.push(V::Nil);
    let mut subcharts = BTreeMap::new();
    for d in &chart.dependencies {
        let sub_values = match &values {
            V::Map(m) => match m.get(d.name()) {
                Some(v @ V::Map(_)) => v,
                _ => V::map(BTreeMap::new()),
            },
            _ => V::map(BTreeMap::new()),
        };
        let child = build_scopes(d, false, sub_values, release, capabilities, scopes);
        subcharts.insert(d.name().to_string(), child);
    }
    let files: BTreeMap<String, Vec<u8>> = chart
        .files
        .iter()
        .map(|(k, v)| (k.clone(), v.to_vec()))
        .collect();
    let dot = V::map(BTreeMap::from([
        ("Chart".to_string(), chart_value(chart, is_root)),
        ("Files".to_string(), gotmpl::Files::new(files).into_value()),
        ("Release".to_string(), release.clone()),
        ("Capabilities".to_string(), capabilities.clone()),
        ("Values".to_string(), values),
        ("Subcharts".to_string(), V::map(subcharts)),
    ]));
    scopes[index] = dot.clone();
    dot
}

/// Fleet's templating of Helm values: every string (keys too) is a Go template with `${`
/// `}` delimiters and `missingkey=error`, executed with the cluster's data; the result
/// stays a string (Fleet's `processTemplateValues`).
pub(crate) fn fleet_template_values(
    values: &Table,
    cluster: &ClusterInfo,
    fleet_file: &str,
    limits: &Limits,
) -> Result<Table, Vec<Diagnostic>> {
    let data = V::map(BTreeMap::from([
        ("ClusterName".to_string(), V::string(cluster.name.as_str())),
        // flotilla clusters live in no namespace on the hub; Fleet's would be e.g. fleet-default.
        ("ClusterNamespace".to_string(), V::string("")),
        (
            "ClusterLabels".to_string(),
            V::map(
                cluster
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), V::string(v.as_str())))
                    .collect(),
            ),
        ),
        ("ClusterAnnotations".to_string(), V::map(BTreeMap::new())),
        ("ClusterValues".to_string(), V::map(BTreeMap::new())),
    ]));
    let opts = Options {
        missing_key: MissingKey::Error,
        delimiters: ("${".to_string(), "}".to_string()),
        ..options(limits)
    };
    let mut count = 0usize;
    let mut subst = |s: &str| -> Result<String, String> {
        if !s.contains("${") {
            return Ok(s.to_string());
        }
        count += 1;
        let name = format!("values{count}");
        let mut set = TemplateSet::new(opts.clone());
        set.parse(&name, s).map_err(|e| e.to_string())?;
        set.execute(&name, &data).map_err(|e| e.to_string())
    };
    match walk(&Value::Object(values.clone()), &mut subst, 0) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Ok(Table::new()),
        Err(e) => Err(vec![Diagnostic::new(
            fleet_file,
            format!("helm values templating (${{ }}): {e}"),
        )]),
    }
}

/// Fleet's `maxTemplateRecursionDepth`.
const MAX_VALUES_DEPTH: usize = 50;

fn walk(
    v: &Value,
    subst: &mut dyn FnMut(&str) -> Result<String, String>,
    depth: usize,
) -> Result<Value, String> {
    if depth > MAX_VALUES_DEPTH {
        return Err(format!("values nest more than {MAX_VALUES_DEPTH} deep"));
    }
    Ok(match v {
        Value::String(s) => Value::String(subst(s)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| walk(x, subst, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                out.insert(subst(k)?, walk(x, subst, depth + 1)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}
