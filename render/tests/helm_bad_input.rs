//! Helm bundles given bad input fail alone, with where and why: a template that does not
//! parse or does not execute (`file:line`), output that is not YAML, hostile `.tgz`
//! subcharts (a path out of the chart, a zip bomb, ten thousand entries), values that fail
//! `values.schema.json`, a `kubeVersion` the cluster does not meet, and `valuesFrom`.

use std::io::Write;
use std::path::Path;

use flotilla_render::{Capabilities, ClusterInfo, Limits, discover, load_bundle_dir};

fn write(root: &Path, files: &[(&str, &[u8])]) {
    for (path, data) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }
}

const CHART: &[u8] = b"apiVersion: v2\nname: c\nversion: 0.1.0\n";

fn errors_of(root: &Path) -> Vec<String> {
    match load_bundle_dir(root, "b", &Limits::default()) {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

/// A gzipped tar with entries named exactly as given (no path checks).
fn tgz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        tar.append(&h, *data).expect("append");
    }
    let raw = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).expect("gz");
    gz.finish().expect("gz")
}

#[test]
fn a_template_that_does_not_parse_fails_the_bundle_alone_with_file_and_line() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[
            (
                "good/cm.yaml",
                b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n",
            ),
            ("bad/Chart.yaml", CHART),
            (
                "bad/templates/cm.yaml",
                b"kind: ConfigMap\nmetadata:\n  name: {{ .Values.x | nosuchfunc }}\n",
            ),
        ],
    );
    let loaded = discover(
        repo.path(),
        "src",
        &["good".into(), "bad".into()],
        &Limits::default(),
    );
    let good = loaded.iter().find(|b| b.path == "good").expect("good");
    assert!(good.result.is_ok(), "{:?}", good.result);
    let bad = loaded.iter().find(|b| b.path == "bad").expect("bad");
    let errs: Vec<String> = bad
        .result
        .as_ref()
        .expect_err("bad fails")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(errs[0].starts_with("bad/templates/cm.yaml:3"), "{errs:?}");
    assert!(errs[0].contains("nosuchfunc"), "{errs:?}");
}

#[test]
fn a_template_that_fails_at_run_time_names_its_file_and_line() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[
            ("Chart.yaml", CHART),
            (
                "templates/a.yaml",
                b"kind: ConfigMap\n{{ required \"image.tag is required\" .Values.image }}\n",
            ),
        ],
    );
    let errs = errors_of(repo.path());
    assert!(errs[0].starts_with("templates/a.yaml:2"), "{errs:?}");
    assert!(errs[0].contains("image.tag is required"), "{errs:?}");
}

#[test]
fn output_that_is_not_yaml_names_the_template_and_the_line_of_its_output() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[
            ("Chart.yaml", CHART),
            ("templates/a.yaml", b"a: 1\n---\nkind: ConfigMap\nbad: [\n"),
        ],
    );
    let errs = errors_of(repo.path());
    assert!(errs[0].starts_with("templates/a.yaml:4"), "{errs:?}");
    assert!(errs[0].contains("YAML parse error"), "{errs:?}");
}

#[test]
fn hostile_subchart_archives_are_refused() {
    let zeros = vec![0u8; 8 << 20];
    let many: Vec<String> = (0..10_000).map(|i| format!("x/f{i}")).collect();
    let mut many_entries: Vec<(&str, &[u8])> = vec![("x/Chart.yaml", b"name: x\nversion: 1.0.0\n")];
    many_entries.extend(many.iter().map(|n| (n.as_str(), &b""[..])));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "escape",
            tgz(&[
                ("x/Chart.yaml", b"name: x\nversion: 1.0.0\n"),
                ("x/../../../etc/evil", b"x"),
            ]),
            "leaves the chart",
        ),
        (
            "bomb",
            tgz(&[
                ("x/Chart.yaml", b"name: x\nversion: 1.0.0\n"),
                ("x/big", &zeros),
            ]),
            "over the limit",
        ),
        ("many", tgz(&many_entries), "entries"),
        ("garbage", b"\x1f\x8b\x08garbage".to_vec(), "chart archive"),
    ];
    for (name, bytes, want) in cases {
        let repo = tempfile::tempdir().expect("tmp");
        write(
            repo.path(),
            &[("Chart.yaml", CHART), ("charts/x-1.0.0.tgz", &bytes)],
        );
        let errs = errors_of(repo.path());
        assert!(
            errs.len() == 1 && errs[0].contains("charts/x-1.0.0.tgz") && errs[0].contains(want),
            "{name}: {errs:?}"
        );
    }
}

#[test]
fn values_that_fail_the_schema_say_which_chart_and_field() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[
            ("fleet.yaml", b"helm:\n  values:\n    replicas: 0\n"),
            ("Chart.yaml", CHART),
            ("values.schema.json", br#"{"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 1}}}"#),
            ("templates/a.yaml", b"kind: ConfigMap\napiVersion: v1\nmetadata: {name: a}\n"),
        ],
    );
    let errs = errors_of(repo.path());
    assert!(
        errs[0].contains("values don't meet the specifications of the schema(s)")
            && errs[0].contains("c:\n- at '/replicas'"),
        "{errs:?}"
    );
    // skipSchemaValidation turns it off, as in Fleet.
    write(
        repo.path(),
        &[(
            "fleet.yaml",
            b"helm:\n  skipSchemaValidation: true\n  values:\n    replicas: 0\n",
        )],
    );
    assert!(errors_of(repo.path()).is_empty());
}

#[test]
fn a_kube_version_the_cluster_does_not_meet_fails_that_cluster() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[
            (
                "Chart.yaml",
                b"apiVersion: v2\nname: c\nversion: 0.1.0\nkubeVersion: '>=1.28.0-0'\n",
            ),
            (
                "templates/a.yaml",
                b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            ),
        ],
    );
    let bundle = load_bundle_dir(repo.path(), "b", &Limits::default()).expect("loads");
    let cluster = |v: &str| ClusterInfo {
        capabilities: Some(Capabilities {
            kube_version: v.into(),
            api_versions: vec!["v1".into()],
        }),
        ..ClusterInfo::default()
    };
    let errs = bundle.render(&cluster("v1.27.3")).expect_err("too old");
    assert_eq!(
        errs[0].to_string(),
        "Chart.yaml: chart requires kubeVersion: >=1.28.0-0 which is incompatible with Kubernetes v1.27.3"
    );
    assert!(bundle.render(&cluster("v1.31.0")).is_ok());
}

#[test]
fn values_from_is_an_error_that_says_why() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[
            (
                "fleet.yaml",
                b"helm:\n  valuesFrom:\n    - secretKeyRef: {name: s, key: values.yaml}\n",
            ),
            ("Chart.yaml", CHART),
        ],
    );
    let errs = errors_of(repo.path());
    assert!(
        errs[0].contains("helm.valuesFrom is not supported"),
        "{errs:?}"
    );
}
