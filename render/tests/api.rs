//! The public API as the hub and the CLI use it, on small repos built in temp folders.

use std::path::Path;

use flotilla_render::{ClusterInfo, GroupInfo, Limits, Selection, discover, load_bundle_dir};

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

fn cluster(name: &str, labels: &[(&str, &str)]) -> ClusterInfo {
    ClusterInfo {
        name: name.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        groups: vec![],
        capabilities: None,
    }
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: \"1\"\n";

#[test]
fn a_raw_folder_renders_its_yaml_with_the_default_namespace() {
    let repo = tempfile::tempdir().expect("tmp");
    write(repo.path(), "app/cm.yaml", CM);
    write(
        repo.path(),
        "app/ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n",
    );
    write(repo.path(), "app/fleet.yaml", "defaultNamespace: web\n");
    let bundles = discover(repo.path(), "src", &["app".to_string()], &Limits::default());
    assert_eq!(bundles.len(), 1);
    assert_eq!(bundles[0].name, "src-app");
    let bundle = bundles[0].result.as_ref().expect("loads");
    let r = bundle.render(&cluster("c1", &[])).expect("renders");
    assert_eq!(
        r.manifest,
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n\
         ---\napiVersion: v1\ndata:\n  a: \"1\"\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: web\n"
    );
    assert_eq!(r.objects[1].source, "app/cm.yaml");
}

#[test]
fn target_customizations_pick_the_first_match_or_do_not_deploy() {
    let repo = tempfile::tempdir().expect("tmp");
    write(repo.path(), "cm.yaml", CM);
    write(
        repo.path(),
        "fleet.yaml",
        "namespace: base\ntargetCustomizations:\n\
         - name: off\n  clusterName: lab\n  doNotDeploy: true\n\
         - name: prod\n  clusterSelector:\n    matchLabels: {env: prod}\n  namespace: prod\n\
         - name: grp\n  clusterGroup: edge\n  namespace: edge\n",
    );
    let b = load_bundle_dir(repo.path(), "b", &Limits::default()).expect("loads");
    assert_eq!(
        b.select(&cluster("lab", &[("env", "prod")])),
        Selection::DoNotDeploy
    );
    let prod = cluster("p1", &[("env", "prod")]);
    match b.select(&prod) {
        Selection::Deploy(k) => assert_eq!(k.customization(), Some("prod")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        b.render(&prod).expect("r").objects[0].namespace.as_deref(),
        Some("prod")
    );
    let mut edge = cluster("e1", &[]);
    edge.groups.push(GroupInfo {
        name: "edge".into(),
        labels: Default::default(),
    });
    assert_eq!(
        b.render(&edge).expect("r").objects[0].namespace.as_deref(),
        Some("edge")
    );
    let other = cluster("o1", &[]);
    assert_eq!(
        b.render(&other).expect("r").objects[0].namespace.as_deref(),
        Some("base")
    );
    // Same key, same bytes; different customization, different key.
    assert_eq!(
        b.select(&prod),
        b.select(&cluster("p2", &[("env", "prod")]))
    );
    assert_ne!(b.select(&prod), b.select(&other));
}

#[test]
fn a_yaml_error_fails_only_its_bundle_with_file_line_and_column() {
    let repo = tempfile::tempdir().expect("tmp");
    write(repo.path(), "good/cm.yaml", CM);
    write(repo.path(), "good/fleet.yaml", "{}\n");
    write(repo.path(), "bad/fleet.yaml", "{}\n");
    write(
        repo.path(),
        "bad/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n",
    );
    let bundles = discover(repo.path(), "s", &[], &Limits::default());
    let paths: Vec<&str> = bundles.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(paths, vec!["bad", "good"]);
    let errs = bundles[0].result.as_ref().expect_err("bad fails");
    assert_eq!(errs[0].file, "bad/cm.yaml");
    assert_eq!(errs[0].line, Some(3));
    assert!(errs[0].column.is_some());
    assert!(bundles[1].result.is_ok());
}

#[test]
fn rendering_is_byte_identical_across_loads() {
    let repo = tempfile::tempdir().expect("tmp");
    write(repo.path(), "a.yaml", CM);
    write(
        repo.path(),
        "b.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2}\n",
    );
    let c = cluster("c", &[]);
    let one = load_bundle_dir(repo.path(), "b", &Limits::default())
        .expect("l")
        .render(&c)
        .expect("r");
    let two = load_bundle_dir(repo.path(), "b", &Limits::default())
        .expect("l")
        .render(&c)
        .expect("r");
    assert_eq!(one.manifest, two.manifest);
    assert_eq!(one.digest, two.digest);
}

#[test]
fn namespace_labels_land_on_the_target_namespace_which_removal_keeps_unless_delete_namespace() {
    let repo = tempfile::tempdir().expect("tmp");
    write(repo.path(), "app/cm.yaml", CM);
    write(
        repo.path(),
        "app/fleet.yaml",
        "defaultNamespace: web\nnamespaceLabels: {team: a}\nnamespaceAnnotations: {owner: b}\n\
         targetCustomizations:\n- name: prod\n  clusterName: p\n  deleteNamespace: true\n",
    );
    let load = || {
        let mut b = discover(repo.path(), "s", &["app".to_string()], &Limits::default());
        b.remove(0).result.expect("loads")
    };
    let manifest = |name: &str| {
        load()
            .render(&cluster(name, &[]))
            .expect("renders")
            .manifest
            .clone()
    };
    assert_eq!(
        manifest("dev"),
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  annotations:\n    \
         helm.sh/resource-policy: keep\n    owner: b\n  labels:\n    team: a\n  name: web\n\
         ---\napiVersion: v1\ndata:\n  a: \"1\"\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: web\n"
    );
    assert!(
        !manifest("p").contains("resource-policy"),
        "deleteNamespace: the namespace goes with the bundle"
    );

    // The bundle's own Namespace object takes the labels; it is the bundle's to prune.
    write(
        repo.path(),
        "app/ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n  labels: {own: x}\n",
    );
    let m = manifest("dev");
    assert!(m.contains("    own: x\n    team: a\n"), "{m}");
    assert!(!m.contains("resource-policy"), "{m}");

    // Without a namespace to name, the fields are an error.
    write(
        repo.path(),
        "app/fleet.yaml",
        "namespaceLabels: {team: a}\n",
    );
    let b = discover(repo.path(), "s", &["app".to_string()], &Limits::default());
    let err = b[0].result.as_ref().expect_err("no namespace").clone();
    assert!(
        err[0].to_string().starts_with(
            "app/fleet.yaml: namespaceLabels, namespaceAnnotations, deleteNamespace and createNamespace need"
        ),
        "{err:?}"
    );
}

#[test]
fn create_namespace_adds_the_target_namespace_that_removal_keeps_and_a_target_can_turn_it_off() {
    let repo = tempfile::tempdir().expect("tmp");
    write(repo.path(), "app/cm.yaml", CM);
    write(
        repo.path(),
        "app/fleet.yaml",
        "defaultNamespace: web\ncreateNamespace: true\n\
         targetCustomizations:\n- name: prod\n  clusterName: p\n  createNamespace: false\n",
    );
    let bundle = discover(repo.path(), "s", &["app".to_string()], &Limits::default())
        .remove(0)
        .result
        .expect("loads");
    let dev = bundle
        .render(&cluster("dev", &[]))
        .expect("renders")
        .manifest
        .clone();
    assert_eq!(
        dev,
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  annotations:\n    \
         helm.sh/resource-policy: keep\n  name: web\n\
         ---\napiVersion: v1\ndata:\n  a: \"1\"\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: web\n"
    );
    let prod = bundle
        .render(&cluster("p", &[]))
        .expect("renders")
        .manifest
        .clone();
    assert!(!prod.contains("kind: Namespace"), "{prod}");
    assert!(bundle.warnings().is_empty(), "{:?}", bundle.warnings());

    // Without a namespace to create, it is an error that says so.
    write(repo.path(), "app/fleet.yaml", "createNamespace: true\n");
    let b = discover(repo.path(), "s", &["app".to_string()], &Limits::default());
    let err = b[0].result.as_ref().expect_err("no namespace").clone();
    assert!(
        err[0]
            .to_string()
            .contains("createNamespace need namespace or defaultNamespace"),
        "{err:?}"
    );
}
