//! The walking skeleton end to end: git daemon → hub → mTLS Sync → spoke → files, with
//! status read back through the CLI as a user would.

use flotilla_e2e::{GitServer, Hub, Spoke, example_repo, wait_until};

#[test]
fn a_spoke_registers_receives_its_bundles_and_reports_ready() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");

    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);

    let hello = dev.file("examples-hello").expect("hello bundle written");
    assert!(hello.contains("hello from flotilla"), "{hello}");
    assert!(
        hello.contains("namespace: hello"),
        "defaultNamespace applied: {hello}"
    );
    let web = dev.file("examples-web").expect("web bundle written");
    assert!(web.contains("replicas: 1"), "dev gets the base: {web}");

    let clusters = hub.json(&["clusters"]);
    let dev_row = &clusters[0];
    assert_eq!(dev_row["name"], "dev");
    assert_eq!(dev_row["connected"], true);
    assert_eq!(dev_row["state"], "Ready");
    assert_eq!(dev_row["labels"]["env"], "dev");

    let key_mode = flotilla_e2e::file_mode(&dev.state.join("key.pem"));
    assert_eq!(key_mode, 0o600, "the spoke's private key is 0600");
    let sources = hub.json(&["sources"]);
    assert_eq!(sources[0]["bundles"], 2);
    assert_eq!(sources[0]["error"], "");
}

#[test]
fn a_restarted_spoke_keeps_its_identity_and_gets_nothing_it_already_has() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    // One use only: a restart must not need the token again.
    let join = hub.token("1h", 1);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    dev.proc.kill();
    let before = dev.file("examples-web").expect("written");

    let dev2 = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_connected("dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    assert_eq!(dev2.file("examples-web").expect("still there"), before);
    assert!(
        !dev2.proc.log_text().contains("applied bundle="),
        "an unchanged spoke re-applies nothing on reconnect:\n{}",
        dev2.proc.log_text()
    );
    assert_eq!(hub.json(&["clusters"]).as_array().map(Vec::len), Some(1));
}

#[test]
fn a_new_commit_reaches_only_the_spokes_it_targets() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    hub.add_source("devonly", &repo.url, "env=dev");
    let join = hub.token("1h", 2);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let test = Spoke::start(tmp.path(), &join, "test", "env=test");
    hub.wait_ready_bundles(
        "dev",
        &[
            "devonly-hello",
            "devonly-web",
            "examples-hello",
            "examples-web",
        ],
    );
    hub.wait_ready_bundles("test", &["examples-hello"]);
    let test_hello_before = test.file("examples-hello").expect("written");

    let deployment =
        std::fs::read_to_string(repo.dir.join("web/deployment.yaml")).expect("example deployment");
    repo.commit_file(
        "web/deployment.yaml",
        &deployment.replace("nginx:1.27", "nginx:1.28"),
        "bump nginx",
    );

    wait_until("dev to receive the new image", || {
        dev.file("examples-web")
            .filter(|w| w.contains("nginx:1.28"))
            .ok_or_else(|| "old content".to_string())
    });
    hub.wait_ready_bundles(
        "dev",
        &[
            "devonly-hello",
            "devonly-web",
            "examples-hello",
            "examples-web",
        ],
    );
    assert!(
        test.file("examples-web").is_none(),
        "test is doNotDeploy for web"
    );
    assert!(
        test.file("devonly-hello").is_none(),
        "devonly targets env=dev only"
    );
    assert_eq!(
        test.file("examples-hello").expect("kept"),
        test_hello_before
    );
}

#[test]
fn a_label_change_on_the_hub_retargets_a_cluster() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let spoke = Spoke::start(tmp.path(), &join, "edge", "env=test");
    hub.wait_ready_bundles("edge", &["examples-hello"]);
    assert!(spoke.file("examples-web").is_none());

    let out = hub.cli(&["cluster", "label", "edge", "env=prod"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hub.wait_ready_bundles("edge", &["examples-hello", "examples-web"]);
    let web = spoke
        .file("examples-web")
        .expect("web arrives with env=prod");
    assert!(web.contains("replicas: 3"), "prod overlay applied: {web}");
    assert_eq!(
        hub.json(&["clusters"])[0]["labels"]["env"],
        "prod",
        "hub labels win"
    );

    // `env-` removes env wherever it came from (here also the spoke's env=test): the
    // cluster matches no customization and gets web's default.
    let out = hub.cli(&["cluster", "label", "edge", "env-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("web's default to reach edge", || {
        let web = spoke.file("examples-web").unwrap_or_default();
        web.contains("replicas: 1").then_some(()).ok_or(web)
    });
    assert!(
        hub.json(&["clusters", "edge"])["labels"]
            .get("env")
            .is_none()
    );

    let out = hub.cli(&["cluster", "label", "edge", "env=test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hub.wait_ready_bundles("edge", &["examples-hello"]);
    wait_until("web to be pruned from edge", || {
        spoke
            .file("examples-web")
            .map_or(Ok(()), |_| Err("still there".to_string()))
    });
}

#[test]
fn a_broken_bundle_fails_alone_and_its_last_good_revision_stays_deployed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    let good_web = dev.file("examples-web").expect("written");

    repo.commit_file(
        "web/service.yaml",
        "kind: Service\nmetadata: [unclosed\n",
        "break web",
    );
    repo.commit_file(
        "hello/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\ndata:\n  greeting: changed\n",
        "change hello",
    );
    wait_until("hello to update while web is broken", || {
        dev.file("examples-hello")
            .filter(|h| h.contains("changed"))
            .ok_or_else(|| "old hello".to_string())
    });
    let rows = wait_until("web to show its error", || {
        let v = hub.json(&["status", "examples-web"]);
        let msg = v[0]["message"].as_str().unwrap_or_default().to_string();
        (v[0]["state"] == "ErrApplied" && msg.contains("service.yaml"))
            .then_some(v.clone())
            .ok_or(v.to_string())
    });
    assert!(
        rows[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("web/service.yaml:"),
        "the error names file:line: {rows}"
    );
    assert_eq!(
        dev.file("examples-web").expect("kept"),
        good_web,
        "last good stays"
    );
}

#[test]
fn a_hub_restart_loses_no_cluster_source_or_status() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let mut hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    let out = hub.cli(&["cluster", "label", "dev", "tier=gold"]);
    assert!(out.status.success());
    let applied = |s: &Spoke| s.proc.log_text().matches("applied bundle=").count();
    assert_eq!(applied(&dev), 2);

    // First a graceful stop (SIGTERM), then a crash (SIGKILL): both lose nothing.
    assert!(hub.proc.terminate(), "the hub exits cleanly on SIGTERM");
    for _ in 0..2 {
        hub.restart();
        let clusters = hub.json(&["clusters"]);
        assert_eq!(clusters[0]["name"], "dev");
        assert_eq!(clusters[0]["labels"]["tier"], "gold", "hub labels survive");
        assert_eq!(hub.json(&["sources"])[0]["name"], "examples");
        hub.wait_connected("dev");
        hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    }
    assert!(dev.file("examples-web").is_some());
    assert_eq!(
        applied(&dev),
        2,
        "resumed by difference: nothing was re-applied"
    );
}

#[test]
fn the_readme_quickstart_brings_three_spokes_to_ready_and_exits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("qs");
    let out = std::process::Command::new(flotilla_e2e::bin("flotilla"))
        .args([
            "quickstart",
            "--exit-when-ready",
            "--timeout",
            "120s",
            "--dir",
        ])
        .arg(&dir)
        .output()
        .expect("run quickstart");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "dev       examples-web     Ready",
        "prod      examples-web     Ready",
        "test      examples-hello   Ready",
    ] {
        assert!(stdout.contains(row), "missing {row:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains("test      examples-web"),
        "test is doNotDeploy for web"
    );
    let prod_web =
        std::fs::read_to_string(dir.join("targets/prod/examples-web.yaml")).expect("prod got web");
    assert!(prod_web.contains("replicas: 3"));
}
