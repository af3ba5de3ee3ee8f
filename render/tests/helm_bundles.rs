//! Helm bundles as the hub sees them: Fleet's `${ }` values templating per cluster, render
//! keys that include capabilities only for charts that read them, per-target `helm`
//! overrides, a chart folder without `fleet.yaml`, and the remote-chart seam
//! (`remote_charts` / `with_charts`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use flotilla_render::{
    Capabilities, ChartArchive, ClusterInfo, Limits, Selection, discover, load_bundle_dir,
};

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, data) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }
}

fn cluster(name: &str, labels: &[(&str, &str)], kube: Option<&str>) -> ClusterInfo {
    ClusterInfo {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        groups: Vec::new(),
        capabilities: kube.map(|k| Capabilities {
            kube_version: k.into(),
            api_versions: vec!["v1".into(), "apps/v1".into()],
        }),
    }
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  env: {{ .Values.env | quote }}\n  host: {{ .Values.host | quote }}\n";

fn key(b: &flotilla_render::Bundle, c: &ClusterInfo) -> flotilla_render::RenderKey {
    match b.select(c) {
        Selection::Deploy(k) => k,
        Selection::DoNotDeploy => panic!("deploys"),
    }
}

#[test]
fn fleet_values_templating_renders_per_cluster_and_only_for_bundles_that_use_it() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[
            (
                "fleet.yaml",
                "helm:\n  releaseName: web\n  values:\n    env: ${ .ClusterLabels.env }\n    host: ${ printf \"%s.example.com\" .ClusterName | upper }\n",
            ),
            ("Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\n"),
            ("templates/cm.yaml", CM),
        ],
    );
    let b = load_bundle_dir(repo.path(), "b", &Limits::default()).expect("loads");
    let a = cluster("a", &[("env", "prod")], None);
    let r = b.render(&a).expect("renders");
    assert!(r.manifest.contains("env: prod"), "{}", r.manifest);
    assert!(r.manifest.contains("host: A.EXAMPLE.COM"), "{}", r.manifest);
    assert_ne!(
        key(&b, &a),
        key(&b, &cluster("b", &[("env", "prod")], None))
    );

    // A missing label is an error for that cluster, as Fleet's missingkey=error makes it.
    let e = b
        .render(&cluster("x", &[], None))
        .expect_err("no env label");
    assert!(e[0].message.contains("helm values templating"), "{e:?}");

    // disablePreProcess: the text reaches the chart as written, and clusters share a render.
    write(
        repo.path(),
        &[(
            "fleet.yaml",
            "helm:\n  disablePreProcess: true\n  values:\n    env: ${ .ClusterLabels.env }\n",
        )],
    );
    let b = load_bundle_dir(repo.path(), "b", &Limits::default()).expect("loads");
    let r = b.render(&a).expect("renders");
    assert!(
        r.manifest.contains("${ .ClusterLabels.env }"),
        "{}",
        r.manifest
    );
    assert_eq!(key(&b, &a), key(&b, &cluster("b", &[("env", "dev")], None)));
}

#[test]
fn capabilities_are_in_the_render_key_only_for_charts_that_read_them() {
    let plain = tempfile::tempdir().expect("tmp");
    write(
        plain.path(),
        &[
            ("Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\n"),
            ("templates/cm.yaml", CM),
        ],
    );
    let b = load_bundle_dir(plain.path(), "b", &Limits::default()).expect("loads");
    let (old, new) = (
        cluster("a", &[], Some("v1.27.0")),
        cluster("b", &[], Some("v1.31.0")),
    );
    assert_eq!(
        key(&b, &old),
        key(&b, &new),
        "10,000 clusters share one render"
    );

    let reads = tempfile::tempdir().expect("tmp");
    write(
        reads.path(),
        &[
            ("Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\n"),
            (
                "templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: caps\ndata:\n  v: {{ .Capabilities.KubeVersion.Minor | quote }}\n",
            ),
        ],
    );
    let b = load_bundle_dir(reads.path(), "b", &Limits::default()).expect("loads");
    assert_ne!(key(&b, &old), key(&b, &new));
    assert_eq!(key(&b, &new), key(&b, &cluster("c", &[], Some("v1.31.0"))));
    assert!(
        b.render(&old)
            .expect("renders")
            .manifest
            .contains("v: \"27\"")
    );
    assert!(
        b.render(&new)
            .expect("renders")
            .manifest
            .contains("v: \"31\"")
    );
    let default = b.render(&cluster("d", &[], None)).expect("renders");
    assert!(
        default.manifest.contains("v: \"20\""),
        "helm template's default v1.20.0"
    );
}

#[test]
fn target_customizations_override_helm_values_and_release_names() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[
            (
                "fleet.yaml",
                "defaultNamespace: apps\nhelm:\n  chart: chart\n  values: {env: dev, host: h}\ntargetCustomizations:\n- name: prod\n  clusterSelector: {matchLabels: {env: prod}}\n  helm:\n    releaseName: web-prod\n    valuesFiles: [prod.yaml]\n",
            ),
            ("prod.yaml", "env: prod\nhost: from-file\n"),
            (
                "chart/Chart.yaml",
                "apiVersion: v2\nname: c\nversion: 0.1.0\n",
            ),
            ("chart/templates/cm.yaml", CM),
        ],
    );
    let b = load_bundle_dir(repo.path(), "my-bundle", &Limits::default()).expect("loads");
    let dev = b.render(&cluster("a", &[], None)).expect("renders");
    assert_eq!(dev.objects[0].name, "my-bundle");
    assert_eq!(dev.objects[0].namespace.as_deref(), Some("apps"));
    assert_eq!(dev.objects[0].source, "chart/templates/cm.yaml");
    assert!(dev.manifest.contains("env: dev"));
    let prod = b
        .render(&cluster("p", &[("env", "prod")], None))
        .expect("renders");
    assert_eq!(prod.objects[0].name, "web-prod");
    // The target block's values (here from its valuesFiles) win over the top block's.
    assert!(prod.manifest.contains("env: prod"), "{}", prod.manifest);
    assert!(
        prod.manifest.contains("host: from-file"),
        "{}",
        prod.manifest
    );
    assert_eq!(
        b.options().helm.as_ref().map(|h| h.release_name.as_str()),
        Some("my-bundle")
    );
}

#[test]
fn target_customizations_carry_their_own_helm_deploy_and_render_options() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[
            (
                "fleet.yaml",
                "helm:\n  chart: chart\n  atomic: true\n  timeoutSeconds: 60\n  values:\n    env: ${ .ClusterLabels.env }\n    host: \"-1\"\n\
                 targetCustomizations:\n\
                 - name: strict\n  clusterSelector: {matchLabels: {tier: strict}}\n  helm:\n    takeOwnership: true\n    force: true\n    waitForJobs: true\n    atomic: false\n    timeoutSeconds: 300\n\
                 - name: loose\n  clusterSelector: {matchLabels: {tier: loose}}\n  helm:\n    skipSchemaValidation: true\n    disablePreProcess: true\n    disableDependencyUpdate: true\n",
            ),
            (
                "chart/Chart.yaml",
                "apiVersion: v2\nname: c\nversion: 0.1.0\n",
            ),
            // host must look like a host name: "-1" passes only where the schema is skipped.
            (
                "chart/values.schema.json",
                r#"{"type": "object", "properties": {"host": {"type": "string", "pattern": "^[a-z]"}}}"#,
            ),
            ("chart/templates/cm.yaml", CM),
        ],
    );
    let b = load_bundle_dir(repo.path(), "b", &Limits::default()).expect("loads");
    let top = cluster("a", &[("env", "dev")], None);
    let strict = cluster("s", &[("env", "dev"), ("tier", "strict")], None);
    let loose = cluster("l", &[("env", "dev"), ("tier", "loose")], None);

    let helm = |c: &ClusterInfo| {
        b.options_for(&key(&b, c))
            .helm
            .expect("a Helm bundle has Helm options")
    };
    let (t, s, l) = (helm(&top), helm(&strict), helm(&loose));
    assert!(t.atomic && !t.force && !t.take_ownership && !t.wait_for_jobs);
    assert_eq!(t.timeout_seconds, Some(60));
    // The target's fields win one by one; the ones it leaves out come from the top block.
    assert!(s.take_ownership && s.force && s.wait_for_jobs && !s.atomic);
    assert_eq!(s.timeout_seconds, Some(300));
    assert_eq!(
        l, t,
        "a target that sets no deploy option inherits the top block's"
    );
    assert_ne!(
        b.options_for(&key(&b, &strict)).canonical_json(),
        b.options_for(&key(&b, &top)).canonical_json(),
        "the options go into the deployment id, so a target's change deploys again"
    );

    // Render options per target: the top block validates the schema and templates values,
    // the loose target skips the schema and passes `${ }` through as written.
    let e = b.render(&top).expect_err("schema refuses host -1");
    assert!(e[0].message.contains("schema"), "{e:?}");
    let r = b.render(&loose).expect("the loose target skips the schema");
    assert!(
        r.manifest.contains("${ .ClusterLabels.env }"),
        "{}",
        r.manifest
    );
    let other = cluster("m", &[("env", "prod"), ("tier", "loose")], None);
    assert_eq!(
        key(&b, &loose),
        key(&b, &other),
        "untemplated: one render for all"
    );
}

#[test]
fn a_chart_folder_without_fleet_yaml_is_a_helm_bundle() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[
            (
                "charts/web/Chart.yaml",
                "apiVersion: v2\nname: web\nversion: 0.1.0\n",
            ),
            ("charts/web/values.yaml", "env: dev\nhost: h\n"),
            ("charts/web/templates/cm.yaml", CM),
        ],
    );
    let loaded = discover(
        repo.path(),
        "src",
        &["charts/web".into()],
        &Limits::default(),
    );
    let b = loaded[0].result.as_ref().expect("loads");
    let r = b.render(&ClusterInfo::default()).expect("renders");
    assert_eq!(r.objects[0].name, "src-charts-web");
}

fn tgz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_path(name).expect("path");
        h.set_cksum();
        tar.append(&h, data.as_bytes()).expect("append");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().expect("tar")).expect("gz");
    gz.finish().expect("gz")
}

#[test]
fn a_remote_chart_renders_once_the_hub_hands_in_its_archive() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[(
            "fleet.yaml",
            "helm:\n  chart: web\n  repo: https://charts.example.com\n  version: ^1.0.0\n  values: {env: prod, host: h}\n",
        )],
    );
    let b = load_bundle_dir(repo.path(), "b", &Limits::default()).expect("loads");
    let wanted = b.remote_charts();
    assert_eq!(wanted.len(), 1);
    assert_eq!(
        wanted[0].repo.as_deref(),
        Some("https://charts.example.com")
    );
    let e = b
        .render(&ClusterInfo::default())
        .expect_err("not fetched yet");
    assert!(e[0].message.contains("is a remote chart"), "{e:?}");

    let archive = ChartArchive {
        request: wanted[0].clone(),
        name: "web".into(),
        version: "1.2.0".into(),
        digest: "sha256:test".into(),
        bytes: Arc::from(tgz(&[
            (
                "web/Chart.yaml",
                "apiVersion: v2\nname: web\nversion: 1.2.0\n",
            ),
            ("web/templates/cm.yaml", CM),
        ])),
    };
    let b = b.with_charts(&[archive]).expect("loads the archive");
    let r = b.render(&ClusterInfo::default()).expect("renders");
    assert!(r.manifest.contains("env: prod"), "{}", r.manifest);
    assert_eq!(r.objects[0].source, "web-1.2.0.tgz/templates/cm.yaml");
}

#[test]
fn helm_options_on_a_bundle_without_a_chart_are_a_warning() {
    let repo = tempfile::tempdir().expect("tmp");
    write(
        repo.path(),
        &[
            ("fleet.yaml", "helm:\n  releaseName: web\n"),
            (
                "cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            ),
        ],
    );
    let b = load_bundle_dir(repo.path(), "b", &Limits::default()).expect("loads");
    assert!(
        b.warnings().iter().any(|w| w.message.contains("no chart")),
        "{:?}",
        b.warnings()
    );
}
