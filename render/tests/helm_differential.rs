//! Differential tests against the real `helm template`: every chart under
//! `tests/fixtures/helm/` and every chart in `examples/`, for several values and capability
//! sets, must render to the same objects in the same order as Helm's
//! `helm template --include-crds --skip-tests`. The oracle is `$HELM`, else the pinned build
//! in `~/.cache/flotilla-tools/bin/helm` (`tests/k8s/tools/build helm`). Under `CI=true` the
//! oracle is required; elsewhere the test says it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla_render::{Capabilities, ClusterInfo, Limits, load_bundle_dir};
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The oracle, or `None` (outside CI) when there is none.
fn helm() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("HELM").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/flotilla-tools/bin/helm")),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(found);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs the helm oracle: set HELM or run tests/k8s/tools/build helm"
    );
    eprintln!("skipped: no helm oracle (set HELM, or run tests/k8s/tools/build helm)");
    None
}

/// One render to compare.
struct Case {
    chart: PathBuf,
    label: String,
    values: Vec<&'static str>,
    kube_version: Option<&'static str>,
    api_versions: Vec<&'static str>,
    namespace: &'static str,
}

impl Case {
    fn new(chart: PathBuf, label: &str) -> Case {
        Case {
            chart,
            label: label.to_string(),
            values: Vec::new(),
            kube_version: None,
            api_versions: Vec::new(),
            namespace: "apps",
        }
    }
    fn values(mut self, v: &'static str) -> Case {
        self.values.push(v);
        self
    }
    fn kube(mut self, k: &'static str, apis: &[&'static str]) -> Case {
        self.kube_version = Some(k);
        self.api_versions = apis.to_vec();
        self
    }
    fn namespace(mut self, ns: &'static str) -> Case {
        self.namespace = ns;
        self
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Each object as canonical JSON, in order, with the release namespace left out of
/// `metadata` (flotilla writes it on namespaced objects; `helm template` leaves it to the
/// client at install).
fn canonical(values: impl IntoIterator<Item = Value>, namespace: &str) -> Vec<String> {
    fn sort(v: Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: std::collections::BTreeMap<String, Value> =
                    m.into_iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().collect())
            }
            Value::Array(a) => Value::Array(a.into_iter().map(sort).collect()),
            other => other,
        }
    }
    values
        .into_iter()
        .map(|mut v| {
            if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut)
                && meta.get("namespace").and_then(Value::as_str) == Some(namespace)
            {
                meta.remove("namespace");
            }
            serde_json::to_string_pretty(&sort(v)).unwrap_or_default()
        })
        .collect()
}

fn ours(case: &Case, bundle_dir: &Path) -> Result<Vec<String>, String> {
    let limits = Limits::default();
    let bundle = load_bundle_dir(bundle_dir, "diff", &limits).map_err(|e| format!("{e:?}"))?;
    let capabilities = match case.kube_version {
        Some(k) => Some(
            Capabilities::helm_template(
                Some(k),
                &case
                    .api_versions
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let info = ClusterInfo {
        name: "diff".into(),
        capabilities,
        ..ClusterInfo::default()
    };
    let rendered = bundle.render(&info).map_err(|e| format!("{e:?}"))?;
    Ok(canonical(
        rendered.objects.iter().map(|o| o.value.clone()),
        case.namespace,
    ))
}

fn theirs(
    helm: &Path,
    case: &Case,
    chart: &Path,
    values: &[PathBuf],
) -> Result<Vec<String>, String> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "rel"]).arg(chart).args([
        "--namespace",
        case.namespace,
        "--include-crds",
        "--skip-tests",
    ]);
    for v in values {
        cmd.arg("-f").arg(v);
    }
    if let Some(k) = case.kube_version {
        cmd.args(["--kube-version", k]);
    }
    if !case.api_versions.is_empty() {
        cmd.args(["--api-versions", &case.api_versions.join(",")]);
    }
    let out = cmd.output().expect("helm runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut opts = serde_saphyr::Options::default();
    opts.legacy_octal_numbers = true;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(&text, opts).expect("helm output parses");
    Ok(canonical(
        docs.into_iter().filter(|d| !d.is_null()),
        case.namespace,
    ))
}

/// Renders `case` both ways; returns a description of the difference, if any.
fn compare(helm: &Path, case: &Case) -> Option<String> {
    let tmp = tempfile::tempdir().expect("tmp");
    let chart = tmp.path().join("chart");
    copy_dir(&case.chart, &chart);
    let mut files = Vec::new();
    for (i, v) in case.values.iter().enumerate() {
        let p = tmp.path().join(format!("values-{i}.yaml"));
        std::fs::write(&p, v).expect("write values");
        files.push(p);
    }
    let names: Vec<String> = (0..files.len())
        .map(|i| format!("values-{i}.yaml"))
        .collect();
    std::fs::write(
        tmp.path().join("fleet.yaml"),
        format!(
            "defaultNamespace: {}\nhelm:\n  chart: chart\n  releaseName: rel\n  valuesFiles: {:?}\n",
            case.namespace, names
        ),
    )
    .expect("fleet.yaml");
    let a = ours(case, tmp.path());
    let b = theirs(helm, case, &chart, &files);
    match (a, b) {
        (Ok(a), Ok(b)) if a == b => None,
        (Ok(a), Ok(b)) => {
            let first = a
                .iter()
                .zip(&b)
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            Some(format!(
                "{}: objects differ ({} ours, {} helm's); first difference at #{first}:\n--- ours\n{}\n--- helm\n{}",
                case.label,
                a.len(),
                b.len(),
                a.get(first).map_or("(none)", String::as_str),
                b.get(first).map_or("(none)", String::as_str),
            ))
        }
        (Err(_), Err(_)) => None,
        (Ok(_), Err(e)) => Some(format!("{}: helm fails but we render: {e}", case.label)),
        (Err(e), Ok(_)) => Some(format!("{}: helm renders but we fail: {e}", case.label)),
    }
}

fn fixture(name: &str) -> PathBuf {
    workspace().join("tests/fixtures/helm").join(name)
}

/// Every folder holding `Chart.yaml` under `dir`, not descending into charts.
fn charts_under(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.join("Chart.yaml").is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subs: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    for s in subs {
        charts_under(&s, out);
    }
}

const NEW_CLUSTER: &[&str] = &["monitoring.coreos.com/v1", "example.com/v1"];

fn cases() -> Vec<Case> {
    let mut c = vec![
        Case::new(fixture("basic"), "basic: defaults"),
        Case::new(fixture("basic"), "basic: ingress on, overrides, null deletes")
            .values("replicaCount: 4\ningress:\n  enabled: true\nimage:\n  tag: 1.25.3\nresources: null\nenv:\n  EXTRA: \"1\"\n")
            .values("podAnnotations:\n  a: b\ntolerations:\n  - key: k\n    operator: Exists\nfullnameOverride: web\n")
            .namespace("web-prod"),
        Case::new(fixture("basic"), "basic: old cluster fails kubeVersion").kube("v1.18.0", &[]),
        Case::new(fixture("umbrella"), "umbrella: defaults"),
        Case::new(fixture("umbrella"), "umbrella: tags and conditions flipped")
            .values("tags:\n  caching: false\n  monitoring: true\npagecache:\n  enabled: true\nbackend:\n  enabled: false\n"),
        Case::new(fixture("umbrella"), "umbrella: global condition and subchart overrides")
            .values("global:\n  pagecache: true\n  env: staging\npagecache:\n  enabled: null\n  size: 7\nbackend:\n  replicas: 2\n  debug: false\n"),
        Case::new(fixture("caps"), "caps: helm template defaults"),
        Case::new(fixture("caps"), "caps: old cluster").kube("v1.18.5", &[]),
        Case::new(fixture("caps"), "caps: new cluster with extra APIs").kube("v1.31.2", NEW_CLUSTER),
        Case::new(fixture("caps"), "caps: autoscaling off").values("autoscaling:\n  enabled: false\n"),
        Case::new(fixture("legacy"), "legacy: v1 chart, requirements.yaml, library subchart"),
        Case::new(fixture("legacy"), "legacy: values").values("name: other\nports: [8080]\n"),
        Case::new(fixture("ordering"), "ordering: kinds, documents, hooks, subchart CRDs"),
        Case::new(fixture("schema"), "schema: passes"),
        Case::new(fixture("schema"), "schema: fails").values("replicas: 0\nimage: {tag: x, foo: 1}\nmode: red\n"),
    ];
    let mut examples = Vec::new();
    charts_under(&workspace().join("examples"), &mut examples);
    assert!(!examples.is_empty(), "examples/ has a Helm chart");
    for e in examples {
        let label = format!("examples: {}", e.display());
        c.push(Case::new(e, &label));
    }
    c
}

#[test]
fn every_fixture_and_example_chart_renders_as_helm_template_does() {
    let Some(helm) = helm() else {
        return;
    };
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        if let Some(f) = compare(&helm, case) {
            failures.push(f);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from helm template:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}
