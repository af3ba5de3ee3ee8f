//! The CRDs committed under `crds/` are exactly what the types generate, so a change to
//! a type without `crdgen` fails here (and in CI).

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let files = flotilla_kube_types::crd_files().expect("every CRD serializes");
    let mut stale = Vec::new();
    for f in &files {
        let path = dir.join(&f.file_name);
        match std::fs::read_to_string(&path) {
            Ok(text) if text == f.yaml => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    for entry in std::fs::read_dir(&dir).expect("crds/ is readable") {
        let path = entry.expect("crds/ is readable").path();
        let generated = std::fs::read_to_string(&path)
            .is_ok_and(|t| t.starts_with(flotilla_kube_types::GENERATED_HEADER));
        if generated
            && !files
                .iter()
                .any(|f| path.file_name() == Some(f.file_name.as_ref()))
        {
            stale.push(format!(
                "{} is generated but no type makes it",
                path.display()
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "crds/ is out of date; run `cargo run -p flotilla-kube-types --bin crdgen -- crds/ docs/crds.md`:\n{}",
        stale.join("\n")
    );
}

#[test]
fn the_committed_field_reference_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/crds.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == flotilla_kube_types::reference::reference(),
        "{} is out of date; run `cargo run -p flotilla-kube-types --bin crdgen -- crds/ docs/crds.md`",
        path.display()
    );
}

#[test]
fn every_crd_is_namespaced_with_a_status_subresource() {
    use kube::CustomResourceExt;
    let crds = [
        flotilla_kube_types::flotilla::Source::crd(),
        flotilla_kube_types::fleet::GitRepo::crd(),
        flotilla_kube_types::fleet::ClusterGroup::crd(),
    ];
    for crd in crds {
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{:?} has a status subresource, so the hub can write status alone",
            crd.metadata.name
        );
    }
}
