//! A bundle whose fleet.yaml names a chart in a Helm repository, end to end: charts made
//! by the real `helm package` and indexed by `helm repo index`, served behind basic auth
//! by the project's HTTP test helper; the source carries the credentials
//! (`--helm-username`, `--helm-password-file`); the hub fetches the chart once for two
//! spokes; when the repository goes away the bundle shows the fetch error and its last
//! good revision stays deployed; when it comes back the bundle recovers without a new
//! commit.
//!
//! `helm` comes from `HELM` or `~/.cache/flotilla-tools/bin/helm` (required under
//! `CI=true`).

use std::path::Path;
use std::sync::atomic::Ordering;

use flotilla_e2e::charts::{CHART_PASSWORD, CHART_USER, ChartRepo, helm, package};
use flotilla_e2e::{GitServer, Hub, Spoke, wait_until, write_file};

/// Publishes chart `web` at `version` (a ConfigMap saying which version it is) into the
/// repository and indexes it again, as a chart publisher would.
fn publish(helm: &Path, work: &Path, repo: &ChartRepo, version: &str) {
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  chart: {{ .Chart.Version }}\n";
    package(helm, work, "web", version, cm, &repo.dir);
    repo.index(helm);
}

fn bundle_row(hub: &Hub, name: &str) -> serde_json::Value {
    hub.json(&["bundles"])
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == name).cloned())
        .unwrap_or_default()
}

#[test]
fn a_chart_from_a_helm_repository_deploys_and_its_last_good_revision_outlives_the_repository() {
    let Some(helm) = helm() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = ChartRepo::start(&tmp.path().join("charts"));
    repo.needs_auth.store(true, Ordering::SeqCst);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    publish(&helm, &work, &repo, "1.0.0");

    let fleet_yaml = |version: &str| {
        format!(
            "defaultNamespace: web\nhelm:\n  chart: web\n  repo: {}\n  version: \"{version}\"\n  releaseName: web\n",
            repo.url
        )
    };
    let src = tmp.path().join("src");
    write_file(&src, "web/fleet.yaml", &fleet_yaml("~1.0"));
    let git = GitServer::start(&tmp.path().join("git"));
    let gitrepo = git.repo_from("remote", &src);

    let hub = Hub::start(tmp.path());
    let password_file = tmp.path().join("helm-password");
    std::fs::write(&password_file, format!("{CHART_PASSWORD}\n")).expect("write");
    let out = hub.cli(&[
        "source",
        "add",
        "remote",
        "--repo",
        &gitrepo.url,
        "--interval",
        "1s",
        "--helm-username",
        CHART_USER,
        "--helm-password-file",
        &password_file.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let join = hub.token("1h", 2);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let prod = Spoke::start(tmp.path(), &join, "prod", "env=prod");
    hub.wait_ready_bundles("dev", &["remote-web"]);
    hub.wait_ready_bundles("prod", &["remote-web"]);
    for spoke in [&dev, &prod] {
        let text = spoke.file("remote-web").expect("manifest");
        assert!(text.contains("chart: \"1.0.0\""), "{text}");
    }
    assert_eq!(
        repo.count("/web-1.0.0.tgz"),
        1,
        "one fetch for every cluster"
    );

    // The password went to the hub, and nothing of it comes back.
    let sources = hub.cli(&["sources", "-o", "json"]);
    let shown = String::from_utf8_lossy(&sources.stdout);
    assert!(!shown.contains(CHART_PASSWORD), "{shown}");
    let v: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(v[0]["helm_auth"]["stored"], serde_json::json!(["password"]));

    // The repository goes away while a new version is asked for: the bundle shows why,
    // and the clusters keep running the last good revision.
    repo.down.store(true, Ordering::SeqCst);
    gitrepo.commit_file("web/fleet.yaml", &fleet_yaml("~1.1"), "web 1.1");
    let error = wait_until("the fetch error on the bundle", || {
        let row = bundle_row(&hub, "remote-web");
        let error = row["error"].as_str().unwrap_or_default().to_string();
        if error.contains("HTTP 503") {
            Ok(error)
        } else {
            Err(format!("{row}"))
        }
    });
    assert!(error.contains("web/fleet.yaml"), "{error}");
    assert!(!error.contains(CHART_PASSWORD), "{error}");
    assert!(
        dev.file("remote-web")
            .expect("manifest")
            .contains("chart: \"1.0.0\""),
        "the last good revision stays deployed"
    );

    // It comes back with 1.1.0: the next poll fetches again, with no new commit.
    publish(&helm, &work, &repo, "1.1.0");
    repo.down.store(false, Ordering::SeqCst);
    wait_until("1.1.0 on dev", || {
        let text = dev.file("remote-web").unwrap_or_default();
        if text.contains("chart: \"1.1.0\"") {
            Ok(())
        } else {
            Err(text)
        }
    });
    hub.wait_ready_bundles("prod", &["remote-web"]);
    let row = bundle_row(&hub, "remote-web");
    assert_eq!(row["error"], "", "{row}");
}
