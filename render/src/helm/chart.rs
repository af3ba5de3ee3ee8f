//! One chart in memory, as Helm's `loader.LoadFiles` builds it from a flat map of
//! chart-relative files: `Chart.yaml` (apiVersion v1/v2; `requirements.yaml` for v1
//! dependencies), `values.yaml`, `values.schema.json`, `templates/`, `crds/`, subcharts in
//! `charts/` (folders or `.tgz`), and every other file for `.Files`. Loading from a folder
//! of the repo applies `.helmignore`; an archive is already what `helm package` kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::archive::{self, ArchiveLimits};
use super::ignore::HelmIgnore;
use crate::diagnostic::Diagnostic;
use crate::repo_fs::{Fs, Kind, join};

/// Chart-relative path to bytes.
pub(crate) type FileMap = BTreeMap<String, Arc<[u8]>>;

/// A loaded chart and its subcharts.
#[derive(Debug, Clone)]
pub(crate) struct Chart {
    /// Where the chart was read from, for diagnostics (`repo/path` or `name-1.0.0.tgz`).
    pub origin: String,
    pub metadata: Metadata,
    /// `values.yaml`, as a map (empty when there is none).
    pub values: Map<String, Value>,
    pub schema: Option<Value>,
    /// `templates/...` files, chart-relative names, in name order.
    pub templates: Vec<(String, Arc<str>)>,
    /// Every file that is not Chart.yaml, values.yaml, a template or a subchart: `.Files`.
    pub files: FileMap,
    pub dependencies: Vec<Chart>,
}

/// `Chart.yaml` (Helm's `chart.Metadata`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Metadata {
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    pub home: String,
    pub sources: Vec<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub version: String,
    pub description: String,
    pub keywords: Vec<String>,
    pub maintainers: Vec<Maintainer>,
    pub icon: String,
    pub api_version: String,
    pub condition: String,
    pub tags: String,
    #[serde(deserialize_with = "lenient_string")]
    pub app_version: String,
    pub deprecated: bool,
    pub annotations: BTreeMap<String, String>,
    #[serde(deserialize_with = "lenient_string")]
    pub kube_version: String,
    pub dependencies: Vec<Dependency>,
    #[serde(rename = "type")]
    pub chart_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct Maintainer {
    pub name: String,
    pub email: String,
    pub url: String,
}

/// One `dependencies[]` entry (Helm's `chart.Dependency`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Dependency {
    pub name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub version: String,
    pub repository: String,
    pub condition: String,
    pub tags: Vec<String>,
    pub enabled: bool,
    #[serde(rename = "import-values")]
    pub import_values: Vec<Value>,
    pub alias: String,
}

/// A string field that YAML may have read as a number (`appVersion: 0.9`, `version: 1`):
/// Helm keeps such a value as the text it prints.
fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected a string, found {other}"
            )));
        }
    })
}

/// Only `dependencies:` of a v1 chart's `requirements.yaml`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Requirements {
    dependencies: Vec<Dependency>,
}

impl Chart {
    /// The chart's name as its parent knows it (an alias once dependencies are processed).
    pub(crate) fn name(&self) -> &str {
        &self.metadata.name
    }

    /// `crds/` files of this chart and its subcharts, in Helm's order (`CRDObjects`).
    pub(crate) fn crds(&self, prefix: &str) -> Vec<(String, Arc<[u8]>)> {
        let full = if prefix.is_empty() {
            self.name().to_string()
        } else {
            format!("{prefix}/charts/{}", self.name())
        };
        let mut out: Vec<(String, Arc<[u8]>)> = self
            .files
            .iter()
            .filter(|(n, _)| n.starts_with("crds/"))
            .map(|(n, d)| (format!("{full}/{n}"), d.clone()))
            .collect();
        for d in &self.dependencies {
            out.extend(d.crds(&full));
        }
        out
    }
}

/// Parses YAML as Helm does (sigs.k8s.io/yaml over YAML 1.1: `yes`/`on` are booleans).
/// One document of a chart's rendered output. Read on the template engine's YAML reader
/// (go-yaml v2's rules, as Kubernetes reads manifests; duplicate keys refused), which goes
/// from parser events straight to JSON; a document it refuses is parsed again with
/// [`parse_yaml`], whose error carries the line and column.
pub(crate) fn parse_manifest(file: &str, text: &str) -> Result<Value, Diagnostic> {
    match flotilla_gotmpl::manifest_to_json(text) {
        Ok(v) => Ok(v),
        Err(e) => match parse_yaml(file, text) {
            Err(d) => Err(d),
            Ok(_) => Err(Diagnostic::new(file, format!("YAML error: {e}"))),
        },
    }
}

pub(crate) fn parse_yaml(file: &str, text: &str) -> Result<Value, Diagnostic> {
    let mut o = serde_saphyr::Options::default();
    o.legacy_octal_numbers = true;
    o.strict_booleans = false;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_saphyr::from_str_with_options::<Value>(text, o) {
        Ok(v) => Ok(v),
        Err(e) => {
            let loc = e.location();
            let msg = e.without_snippet().to_string();
            let msg = msg.rsplit_once(" at line ").map(|(m, _)| m).unwrap_or(&msg);
            Err(Diagnostic::at(
                file,
                loc.map(|l| l.line() as u32).unwrap_or(1).max(1),
                format!("YAML syntax error: {msg}"),
            )
            .with_column(loc.map(|l| l.column() as u32)))
        }
    }
}

/// `rest` (chart-relative) as a path under the chart's origin, for diagnostics.
pub(crate) fn origin_path(origin: &str, rest: &str) -> String {
    if origin.is_empty() {
        rest.to_string()
    } else {
        format!("{origin}/{rest}")
    }
}

fn text<'a>(origin: &str, name: &str, data: &'a [u8]) -> Result<&'a str, Diagnostic> {
    std::str::from_utf8(data)
        .map_err(|_| Diagnostic::new(origin_path(origin, name), "file is not valid UTF-8 text"))
}

/// Builds a chart from its files (Helm's `LoadFiles`). `origin` names it in errors.
pub(crate) fn load_files(
    origin: &str,
    files: FileMap,
    limits: ArchiveLimits,
    depth: usize,
) -> Result<Chart, Diagnostic> {
    if depth > MAX_SUBCHART_DEPTH {
        return Err(Diagnostic::new(
            origin,
            format!("subcharts nested more than {MAX_SUBCHART_DEPTH} deep"),
        ));
    }
    let at = |name: &str| origin_path(origin, name);
    let mut metadata = match files.get("Chart.yaml") {
        Some(d) => {
            let v = parse_yaml(&at("Chart.yaml"), text(origin, "Chart.yaml", d)?)?;
            let v = if v.is_null() {
                Value::Object(Map::new())
            } else {
                v
            };
            serde_json::from_value::<Metadata>(v).map_err(|e| {
                Diagnostic::new(at("Chart.yaml"), format!("cannot load Chart.yaml: {e}"))
            })?
        }
        None => {
            return Err(Diagnostic::new(origin, "Chart.yaml file is missing"));
        }
    };
    if metadata.api_version.is_empty() {
        metadata.api_version = "v1".to_string();
    }
    let mut chart = Chart {
        origin: origin.to_string(),
        metadata,
        values: Map::new(),
        schema: None,
        templates: Vec::new(),
        files: FileMap::new(),
        dependencies: Vec::new(),
    };
    let mut subcharts: BTreeMap<String, FileMap> = BTreeMap::new();
    for (name, data) in files {
        match name.as_str() {
            "Chart.yaml" | "Chart.lock" => {}
            "values.yaml" => {
                let v = parse_yaml(&at(&name), text(origin, &name, &data)?)?;
                chart.values = match v {
                    Value::Object(m) => m,
                    Value::Null => Map::new(),
                    _ => {
                        return Err(Diagnostic::new(
                            at(&name),
                            "cannot load values.yaml: not a mapping",
                        ));
                    }
                };
            }
            "values.schema.json" => {
                let v: Value = serde_json::from_slice(&data).map_err(|e| {
                    Diagnostic::at(at(&name), e.line() as u32, format!("invalid JSON: {e}"))
                })?;
                chart.schema = Some(v);
            }
            "requirements.yaml" => {
                let v = parse_yaml(&at(&name), text(origin, &name, &data)?)?;
                let r: Requirements = serde_json::from_value(if v.is_null() {
                    Value::Object(Map::new())
                } else {
                    v
                })
                .map_err(|e| {
                    Diagnostic::new(at(&name), format!("cannot load requirements.yaml: {e}"))
                })?;
                chart.metadata.dependencies = r.dependencies;
                if chart.metadata.api_version == "v1" {
                    chart.files.insert(name, data);
                }
            }
            "requirements.lock" => {
                if chart.metadata.api_version == "v1" {
                    chart.files.insert(name, data);
                }
            }
            n if n.starts_with("templates/") => {
                let t = text(origin, n, &data)?;
                chart.templates.push((name.clone(), Arc::from(t)));
            }
            n if n.starts_with("charts/") => {
                if n.ends_with(".prov") {
                    chart.files.insert(name, data);
                    continue;
                }
                let rest = &n["charts/".len()..];
                let (sub, inner) = rest.split_once('/').unwrap_or((rest, rest));
                subcharts
                    .entry(sub.to_string())
                    .or_default()
                    .insert(inner.to_string(), data);
            }
            _ => {
                chart.files.insert(name, data);
            }
        }
    }
    validate(&chart.metadata).map_err(|m| Diagnostic::new(at("Chart.yaml"), m))?;
    for (sub, sub_files) in subcharts {
        if sub.starts_with(['_', '.']) {
            continue;
        }
        let sub_origin = origin_path(origin, &format!("charts/{sub}"));
        let loaded = if sub.ends_with(".tgz") {
            let Some(bytes) = sub_files.get(&sub) else {
                continue;
            };
            let unpacked =
                archive::unpack(bytes, limits).map_err(|e| Diagnostic::new(&sub_origin, e))?;
            load_files(&sub_origin, unpacked, limits, depth + 1)?
        } else {
            let inner: FileMap = sub_files.into_iter().filter(|(n, _)| *n != sub).collect();
            load_files(&sub_origin, inner, limits, depth + 1)?
        };
        chart.dependencies.push(loaded);
    }
    Ok(chart)
}

/// Subcharts of subcharts, at most this deep (Helm has no limit; a hostile archive could
/// nest archives without end).
const MAX_SUBCHART_DEPTH: usize = 16;

/// Helm's `Metadata.Validate`, the parts that decide whether a chart loads.
fn validate(m: &Metadata) -> Result<(), String> {
    if m.api_version != "v1" && m.api_version != "v2" {
        return Err(format!(
            "validation: chart.metadata.apiVersion {:?} is not valid (v1 or v2)",
            m.api_version
        ));
    }
    if m.name.is_empty() {
        return Err("validation: chart.metadata.name is required".to_string());
    }
    if m.name.contains(['/', '\\']) || m.name == "." || m.name == ".." {
        return Err(format!(
            "validation: chart.metadata.name {:?} cannot be a path",
            m.name
        ));
    }
    if m.version.is_empty() {
        return Err("validation: chart.metadata.version is required".to_string());
    }
    if !m.chart_type.is_empty() && m.chart_type != "application" && m.chart_type != "library" {
        return Err("validation: chart.metadata.type must be application or library".to_string());
    }
    for d in &m.dependencies {
        if d.name.is_empty() {
            return Err("validation: dependencies must have a name".to_string());
        }
    }
    Ok(())
}

/// Reads the chart folder `dir` (repo-relative) of the bundle through `fs`, with its
/// `.helmignore`, into a flat file map (Helm's `LoadDir`).
pub(crate) fn read_dir(
    fs: &dyn Fs,
    dir: &str,
    max_entries: usize,
) -> Result<FileMap, Vec<Diagnostic>> {
    let ignore_path = join(dir, ".helmignore").map_err(|m| vec![Diagnostic::new(dir, m)])?;
    let ignore_text = match fs.kind(&ignore_path) {
        Kind::File => Some(fs.read(&ignore_path).map_err(|d| vec![d])?),
        _ => None,
    };
    let rules = HelmIgnore::parse(ignore_text.as_deref())
        .map_err(|m| vec![Diagnostic::new(&ignore_path, m)])?;
    let mut files = FileMap::new();
    let mut errors = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let here = if rel.is_empty() {
            dir.to_string()
        } else {
            match join(dir, &rel) {
                Ok(p) => p,
                Err(m) => {
                    errors.push(Diagnostic::new(dir, m));
                    continue;
                }
            }
        };
        let entries = match fs.list(&here) {
            Ok(e) => e,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        for e in entries.iter() {
            let child = if rel.is_empty() {
                e.name.clone()
            } else {
                format!("{rel}/{}", e.name)
            };
            if rules.ignores(&child, e.is_dir) {
                continue;
            }
            if files.len() >= max_entries {
                errors.push(Diagnostic::new(
                    dir,
                    format!("chart has more than {max_entries} files"),
                ));
                return Err(errors);
            }
            if e.is_dir {
                if !e.is_symlink {
                    stack.push(child);
                }
                continue;
            }
            let path = format!("{here}/{}", e.name);
            let path = path.trim_start_matches('/').to_string();
            match fs.read_bytes(&path) {
                Ok(data) => {
                    let data = match data.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
                        Some(rest) => Arc::from(rest),
                        None => data,
                    };
                    files.insert(child, data);
                }
                Err(d) => errors.push(d),
            }
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fm(files: &[(&str, &str)]) -> FileMap {
        files
            .iter()
            .map(|(n, d)| (n.to_string(), Arc::from(d.as_bytes())))
            .collect()
    }

    #[test]
    fn loads_a_chart_with_folder_and_archive_subcharts() {
        let sub_tgz = archive::tests::tgz(&[
            (
                "db/Chart.yaml",
                b"apiVersion: v2\nname: db\nversion: 1.0.0\n",
            ),
            ("db/values.yaml", b"port: 5432\n"),
        ]);
        let mut files = fm(&[
            (
                "Chart.yaml",
                "apiVersion: v2\nname: web\nversion: 0.1.0\nappVersion: '2'\n",
            ),
            ("values.yaml", "replicas: 2\nenabled: yes\n"),
            ("templates/a.yaml", "kind: X\n"),
            ("crds/c.yaml", "kind: CustomResourceDefinition\n"),
            ("files/x.txt", "hello"),
            ("charts/cache/Chart.yaml", "name: cache\nversion: 2.0.0\n"),
        ]);
        files.insert("charts/db-1.0.0.tgz".into(), Arc::from(sub_tgz));
        let c = load_files("repo/web", files, archive::tests::LIMITS, 0).expect("loads");
        assert_eq!(c.metadata.app_version, "2");
        assert_eq!(c.values["enabled"], Value::Bool(true));
        assert_eq!(c.templates.len(), 1);
        assert!(c.files.contains_key("files/x.txt") && c.files.contains_key("crds/c.yaml"));
        let subs: Vec<&str> = c.dependencies.iter().map(Chart::name).collect();
        assert_eq!(subs, vec!["cache", "db"]);
        assert_eq!(c.dependencies[0].metadata.api_version, "v1");
        assert_eq!(c.crds("").len(), 1);
    }

    #[test]
    fn a_chart_without_chart_yaml_or_version_is_refused() {
        let e = load_files(
            "c",
            fm(&[("values.yaml", "a: 1")]),
            archive::tests::LIMITS,
            0,
        )
        .expect_err("no Chart.yaml");
        assert_eq!(e.to_string(), "c: Chart.yaml file is missing");
        let e = load_files(
            "c",
            fm(&[("Chart.yaml", "name: c\n")]),
            archive::tests::LIMITS,
            0,
        )
        .expect_err("no version");
        assert!(e.to_string().contains("version is required"), "{e}");
    }
}
