//! Differential tests against the real `helm template` (the Go-built helm): each case is a
//! template file; all passing cases go into one chart rendered by one helm run, and this
//! engine must produce the same bytes for every file. Cases that must fail run one chart
//! each, and both engines must fail (with the same message where the case says so).
//!
//! helm is `$HELM`, else `~/.cache/flotilla-tools/bin/helm`. Under `CI=true` it is required;
//! elsewhere the test skips with a message when helm is missing.

#[path = "helm_oracle/cases.rs"]
mod cases;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla_gotmpl::{ApiVersions, Files, KubeVersion, Options, TemplateSet, Value};

fn helm() -> Option<PathBuf> {
    let path = match std::env::var_os("HELM") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/flotilla-tools/bin/helm"),
    };
    path.is_file().then_some(path)
}

fn helm_or_skip() -> Option<PathBuf> {
    match helm() {
        Some(h) => Some(h),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "CI=true: the helm oracle is required (set HELM or build ~/.cache/flotilla-tools/bin/helm)"
            )
        }
        None => {
            eprintln!(
                "skipping: helm not found (set HELM or build ~/.cache/flotilla-tools/bin/helm)"
            );
            None
        }
    }
}

/// Non-template files of the test chart, as `.Files` sees them.
const FILES: &[(&str, &[u8])] = &[
    ("files/a.txt", b"alpha\nbeta\n"),
    ("files/b.txt", b"bravo"),
    ("config/app.yaml", b"port: 8080\nname: demo\n"),
    // Not UTF-8: `.Files.Get` must keep the bytes for `b64enc`.
    ("bin/blob.dat", b"\xff\xfe\x00binary\x80"),
];

fn write_chart(dir: &Path, templates: &[(String, String)]) {
    let t = dir.join("templates");
    std::fs::create_dir_all(&t).unwrap_or_else(|e| panic!("mkdir {}: {e}", t.display()));
    let write = |p: PathBuf, s: &[u8]| {
        std::fs::write(&p, s).unwrap_or_else(|e| panic!("write {}: {e}", p.display()))
    };
    write(
        dir.join("Chart.yaml"),
        b"apiVersion: v2\nname: x\nversion: 0.1.0\nappVersion: \"1.2.3\"\n",
    );
    write(dir.join("values.yaml"), cases::VALUES.as_bytes());
    for (path, body) in FILES {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(dir)).unwrap_or_else(|e| panic!("mkdir: {e}"));
        write(p, body);
    }
    for (name, body) in templates {
        write(t.join(name), body.as_bytes());
    }
}

/// The data Helm hands a template of chart `x` (only what the cases read).
fn data(template: &str) -> Value {
    let values = Value::from_yaml_values(cases::VALUES).unwrap_or_else(|e| panic!("values: {e}"));
    let map = |pairs: Vec<(&str, Value)>| {
        Value::map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    };
    let files: BTreeMap<String, Vec<u8>> = FILES
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    map(vec![
        ("Values", values),
        (
            "Release",
            map(vec![
                ("Name", "x".into()),
                ("Namespace", "default".into()),
                ("IsInstall", true.into()),
                ("IsUpgrade", false.into()),
                ("Revision", Value::Int(1)),
                ("Service", "Helm".into()),
            ]),
        ),
        (
            "Chart",
            map(vec![
                ("Name", "x".into()),
                ("Version", "0.1.0".into()),
                ("AppVersion", "1.2.3".into()),
                ("IsRoot", true.into()),
            ]),
        ),
        (
            "Capabilities",
            map(vec![
                (
                    "APIVersions",
                    ApiVersions(vec!["v1".into(), "apps/v1".into(), "batch/v1".into()])
                        .into_value(),
                ),
                (
                    "KubeVersion",
                    KubeVersion {
                        version: "v1.20.0".into(),
                        major: "1".into(),
                        minor: "20".into(),
                    }
                    .into_value(),
                ),
            ]),
        ),
        ("Files", Files::new(files).into_value()),
        (
            "Template",
            map(vec![
                ("Name", format!("x/templates/{template}").into()),
                ("BasePath", "x/templates".into()),
            ]),
        ),
    ])
}

/// Renders like Helm: every file parsed into one set, each executed, `<no value>` removed.
fn ours(templates: &[(String, String)], name: &str) -> Result<String, String> {
    let mut set = TemplateSet::new(Options::default());
    for (n, body) in templates {
        set.parse(&format!("x/templates/{n}"), body)
            .map_err(|e| e.helm_message())?;
    }
    set.execute(&format!("x/templates/{name}"), &data(name))
        .map(|s| s.replace("<no value>", ""))
        .map_err(|e| e.helm_message())
}

/// `helm template --debug` raw output: file name (below a prefix) to content. Helm trims
/// the raw part as a whole, so the trailing whitespace of whichever file comes last in it
/// is lost; after it come the hooks (again), which are ignored.
struct HelmOutput {
    files: BTreeMap<String, String>,
    last: Option<String>,
}

impl HelmOutput {
    fn parse(out: &str, prefix: &str) -> HelmOutput {
        let mut files = BTreeMap::new();
        let mut last = None;
        for chunk in out.split(&format!("---\n# Source: {prefix}")).skip(1) {
            let (name, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
            if files.contains_key(name) {
                // After the raw files helm prints the hooks again: the raw part is over.
                break;
            }
            // Helm appends "\n" after each file's content.
            let body = body.strip_suffix('\n').unwrap_or(body);
            files.insert(name.to_string(), body.to_string());
            last = Some(name.to_string());
        }
        HelmOutput { files, last }
    }

    /// Whether `got` is what helm rendered for `name` (files that render to whitespace
    /// only are left out by helm).
    fn matches(&self, name: &str, got: &str) -> bool {
        match self.files.get(name) {
            None => got.trim().is_empty(),
            Some(want) if self.last.as_deref() == Some(name) => want.trim_end() == got.trim_end(),
            Some(want) => want == got,
        }
    }

    fn get(&self, name: &str) -> String {
        self.files.get(name).cloned().unwrap_or_default()
    }
}

fn file_name(i: usize) -> String {
    format!("c{i:03}.yaml")
}

#[test]
fn templates_render_byte_for_byte_as_helm_renders_them() {
    let Some(helm) = helm_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut templates: Vec<(String, String)> = cases::OK
        .iter()
        .enumerate()
        .map(|(i, (_, body))| (file_name(i), body.to_string()))
        .collect();
    // A file that is not YAML makes helm print every raw rendered file (with --debug) and
    // then fail, so contents are compared exactly as rendered, before any YAML handling.
    templates.push(("zzz-poison.yaml".to_string(), "a: [".to_string()));
    write_chart(dir.path(), &templates);
    let out = Command::new(&helm)
        .args(["template", "x"])
        .arg(dir.path())
        .arg("--debug")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", helm.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("YAML parse error on x/templates/"),
        "helm failed before it rendered every file:\n{stderr}"
    );
    let theirs = HelmOutput::parse(&stdout, "x/templates/");
    let mut failures = Vec::new();
    for (i, (what, body)) in cases::OK.iter().enumerate() {
        let name = file_name(i);
        let want = theirs.get(&name);
        match ours(&templates, &name) {
            Ok(got) => {
                if !theirs.matches(&name, &got) {
                    failures.push(format!(
                        "{name} ({what}): {body}\n  helm: {want:?}\n  ours: {got:?}"
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "{name} ({what}): {body}\n  helm: {want:?}\n  ours failed: {e}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from helm:\n{}",
        failures.len(),
        cases::OK.len(),
        failures.join("\n")
    );
    eprintln!("{} templates render as helm renders them", cases::OK.len());
}

#[test]
fn templates_that_fail_in_helm_fail_here_with_the_same_message() {
    let Some(helm) = helm_or_skip() else { return };
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    // One chart per case (an error stops helm's whole render), run in parallel.
    let results: Vec<(usize, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = cases::FAIL
            .iter()
            .enumerate()
            .map(|(i, (_, body, _))| {
                let dir = root.path().join(format!("e{i}"));
                let helm = helm.clone();
                s.spawn(move || {
                    write_chart(&dir, &[("e.yaml".to_string(), body.to_string())]);
                    let out = Command::new(&helm)
                        .args(["template", "x"])
                        .arg(&dir)
                        .output()
                        .unwrap_or_else(|e| panic!("running helm: {e}"));
                    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
                    (
                        i,
                        if out.status.success() {
                            String::new()
                        } else {
                            stderr
                        },
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("helm thread panicked")))
            .collect()
    });
    let mut failures = Vec::new();
    for (i, helm_err) in results {
        let (what, body, same_message) = cases::FAIL[i];
        let templates = vec![("e.yaml".to_string(), body.to_string())];
        let ours = ours(&templates, "e.yaml");
        if helm_err.is_empty() {
            failures.push(format!(
                "{what}: {body}\n  helm succeeded, the case is wrong"
            ));
            continue;
        }
        let helm_msg = helm_err
            .lines()
            .find_map(|l| l.strip_prefix("Error: "))
            .unwrap_or(&helm_err)
            .to_string();
        match ours {
            Ok(out) => failures.push(format!(
                "{what}: {body}\n  helm: {helm_msg}\n  ours succeeded: {out:?}"
            )),
            Err(msg) => {
                if same_message && !helm_msg.contains(&msg) {
                    failures.push(format!("{what}: {body}\n  helm: {helm_msg}\n  ours: {msg}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failing cases disagree with helm:\n{}",
        failures.len(),
        cases::FAIL.len(),
        failures.join("\n")
    );
    eprintln!("{} templates fail as they fail in helm", cases::FAIL.len());
}

/// Values that switch on every optional part of the `helm create` scaffold.
const SCAFFOLD_OVERRIDES: &str = r#"
replicaCount: 3
image:
  tag: "1.27"
imagePullSecrets:
  - name: regcred
podAnnotations:
  prometheus.io/scrape: "true"
podLabels:
  team: platform
podSecurityContext:
  fsGroup: 2000
securityContext:
  runAsNonRoot: true
  capabilities:
    drop: [ALL]
serviceAccount:
  annotations:
    eks.amazonaws.com/role-arn: arn:aws:iam::123456789012:role/demo
ingress:
  enabled: true
  className: nginx
  annotations:
    cert-manager.io/cluster-issuer: letsencrypt
  hosts:
    - host: demo.example.com
      paths:
        - path: /
          pathType: Prefix
        - path: /api
          pathType: Prefix
  tls:
    - secretName: demo-tls
      hosts: [demo.example.com]
httpRoute:
  enabled: true
  annotations:
    a: b
resources:
  limits:
    cpu: 100m
    memory: 128Mi
autoscaling:
  enabled: true
  targetMemoryUtilizationPercentage: 70
volumes:
  - name: foo
    secret:
      secretName: mysecret
      optional: false
volumeMounts:
  - name: foo
    mountPath: "/etc/foo"
    readOnly: true
nodeSelector:
  kubernetes.io/os: linux
tolerations:
  - key: dedicated
    operator: Equal
    value: demo
    effect: NoSchedule
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: zone
              operator: In
              values: [a, b]
"#;

/// Helm's value coalescing for plain maps: overrides win, maps merge, null deletes.
fn coalesce(base: &serde_json::Value, over: &serde_json::Value) -> serde_json::Value {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                if v.is_null() {
                    out.remove(k);
                } else if let Some(bv) = b.get(k) {
                    out.insert(k.clone(), coalesce(bv, v));
                } else {
                    out.insert(k.clone(), v.clone());
                }
            }
            serde_json::Value::Object(out)
        }
        (_, o) => o.clone(),
    }
}

#[test]
fn the_helm_create_scaffold_renders_as_helm_renders_it() {
    let Some(helm) = helm_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let status = Command::new(&helm)
        .arg("create")
        .arg(dir.path().join("mychart"))
        .output()
        .unwrap_or_else(|e| panic!("helm create: {e}"));
    assert!(
        status.status.success(),
        "helm create failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let chart = dir.path().join("mychart");
    let read = |p: &Path| {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    };
    std::fs::write(chart.join("templates/zzz-poison.yaml"), "a: [")
        .unwrap_or_else(|e| panic!("write: {e}"));
    let overrides = dir.path().join("overrides.yaml");
    std::fs::write(&overrides, SCAFFOLD_OVERRIDES).unwrap_or_else(|e| panic!("write: {e}"));
    let out = Command::new(&helm)
        .args(["template", "x"])
        .arg(&chart)
        .arg("-f")
        .arg(&overrides)
        .arg("--debug")
        .output()
        .unwrap_or_else(|e| panic!("helm template: {e}"));
    let theirs = HelmOutput::parse(&String::from_utf8_lossy(&out.stdout), "mychart/templates/");
    assert!(
        theirs.files.contains_key("deployment.yaml"),
        "helm rendered nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Our side: every template file parsed into one set, as Helm does.
    let mut names = Vec::new();
    let mut set = TemplateSet::new(Options::default());
    let mut stack = vec![chart.join("templates")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("read_dir: {e}"))
            .flatten()
        {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(chart.join("templates"))
                .map(|r| r.to_string_lossy().to_string())
                .unwrap_or_default();
            set.parse(&format!("mychart/templates/{rel}"), &read(&p))
                .unwrap_or_else(|e| panic!("{e}"));
            names.push(rel);
        }
    }
    let defaults = flotilla_gotmpl::Value::from_yaml_values(&read(&chart.join("values.yaml")))
        .unwrap_or_else(|e| panic!("values.yaml: {e}"))
        .to_json();
    let over = flotilla_gotmpl::Value::from_yaml_values(SCAFFOLD_OVERRIDES)
        .unwrap_or_else(|e| panic!("overrides: {e}"))
        .to_json();
    let values = Value::from_json(&coalesce(&defaults, &over));
    let meta = Value::from_yaml_values(&read(&chart.join("Chart.yaml")))
        .unwrap_or_else(|e| panic!("Chart.yaml: {e}"))
        .to_json();
    // A scaffold read as empty would fail below with a confusing diff; say so here.
    assert!(
        meta.get("name").is_some() && defaults.get("replicaCount").is_some(),
        "helm create wrote an unexpected chart: Chart.yaml {meta}, values.yaml {defaults}"
    );
    let field = |k: &str| Value::string(meta.get(k).and_then(|v| v.as_str()).unwrap_or_default());
    let mut failures = Vec::new();
    for name in names {
        let base = name.rsplit('/').next().unwrap_or(&name);
        if base.starts_with('_') || base == "NOTES.txt" || base == "zzz-poison.yaml" {
            continue;
        }
        let mut d = BTreeMap::new();
        d.insert("Values".to_string(), values.clone());
        let map = |pairs: Vec<(&str, Value)>| {
            Value::map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        };
        d.insert(
            "Release".to_string(),
            map(vec![
                ("Name", "x".into()),
                ("Namespace", "default".into()),
                ("Service", "Helm".into()),
                ("IsInstall", true.into()),
            ]),
        );
        d.insert(
            "Chart".to_string(),
            map(vec![
                ("Name", field("name")),
                ("Version", field("version")),
                ("AppVersion", field("appVersion")),
            ]),
        );
        d.insert(
            "Template".to_string(),
            map(vec![
                ("Name", format!("mychart/templates/{name}").into()),
                ("BasePath", "mychart/templates".into()),
            ]),
        );
        let got = set
            .execute(&format!("mychart/templates/{name}"), &Value::map(d))
            .map(|s| s.replace("<no value>", ""))
            .unwrap_or_else(|e| format!("ERROR {e}"));
        if !theirs.matches(&name, &got) {
            let want = theirs.get(&name);
            failures.push(format!("{name}:\n--- helm\n{want}\n--- ours\n{got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "scaffold files differ:\n{}",
        failures.join("\n")
    );
}
