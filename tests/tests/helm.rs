//! A Helm bundle end to end: the example chart (`examples/helm-repo`) in a git repo, served
//! by git daemon, rendered natively by the hub, and written by two spokes (dir targets)
//! whose labels pick different target customizations. Each spoke's objects are what the
//! real `helm template` gives for the same values (`$HELM`, required under `CI=true`).

use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla_e2e::charts::helm;
use flotilla_e2e::{GitServer, Hub, Spoke};
use serde_json::Value;

fn helm_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/helm-repo")
}

/// Objects of a multi-document YAML text, each as sorted JSON, without the release
/// namespace (the spoke's copy has it written in; `helm template`'s leaves it to install).
fn objects(text: &str) -> Vec<String> {
    let mut opts = serde_saphyr::Options::default();
    opts.legacy_octal_numbers = true;
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, opts).expect("YAML");
    let mut out: Vec<String> = docs
        .into_iter()
        .filter(|d| !d.is_null())
        .map(|mut d| {
            if let Some(m) = d.get_mut("metadata").and_then(Value::as_object_mut)
                && m.get("namespace").and_then(Value::as_str) == Some("podinfo")
            {
                m.remove("namespace");
            }
            // serde_json's map is sorted: to_string is canonical.
            d.to_string()
        })
        .collect();
    out.sort();
    out
}

fn helm_template(helm: &Path, dir: &Path, values: &[&str]) -> Vec<String> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "podinfo"])
        .arg(helm_repo().join("podinfo/chart"))
        .args(["--namespace", "podinfo", "--include-crds", "--skip-tests"]);
    for (i, v) in values.iter().enumerate() {
        let p = dir.join(format!("v{i}.yaml"));
        std::fs::write(&p, v).expect("values");
        cmd.arg("-f").arg(p);
    }
    let out = cmd.output().expect("helm runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    objects(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn a_helm_bundle_deploys_through_hub_and_spoke_as_helm_template_renders_it() {
    let Some(helm) = helm() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("charts", &helm_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("helm", &repo.url, "");
    let join = hub.token("1h", 2);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let prod = Spoke::start(tmp.path(), &join, "prod", "env=prod");
    hub.wait_ready_bundles("dev", &["helm-podinfo"]);
    hub.wait_ready_bundles("prod", &["helm-podinfo"]);

    let common = "replicaCount: 1\nui:\n  message: Deployed by flotilla\n";
    let prod_values = std::fs::read_to_string(helm_repo().join("podinfo/values-prod.yaml"))
        .expect("values-prod.yaml");
    let dev_got = objects(&dev.file("helm-podinfo").expect("dev manifest"));
    assert_eq!(dev_got, helm_template(&helm, tmp.path(), &[common]));
    let prod_got = objects(&prod.file("helm-podinfo").expect("prod manifest"));
    assert_eq!(
        prod_got,
        helm_template(
            &helm,
            tmp.path(),
            &[&prod_values, common, "replicaCount: 3\n"]
        )
    );
    assert!(
        prod_got.iter().any(|o| o.contains(r#""replicas":3"#)),
        "{prod_got:?}"
    );
}
