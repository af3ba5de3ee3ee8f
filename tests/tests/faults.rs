//! Faults and bad input: the hub keeps serving the last good revision, shows the error
//! and since when, and everything else keeps updating; a spoke keeps enforcing while the
//! hub is down.

use std::path::Path;

use flotilla_e2e::{GitServer, Hub, Spoke, configmap, git, wait_until, write_file};

fn two_bundle_repo(tmp: &Path) -> std::path::PathBuf {
    let src = tmp.join("src");
    write_file(&src, "a/fleet.yaml", "defaultNamespace: a\n");
    write_file(&src, "a/cm.yaml", &configmap("a", "1"));
    write_file(&src, "b/fleet.yaml", "defaultNamespace: b\n");
    write_file(&src, "b/cm.yaml", &configmap("b", "1"));
    src
}

fn source_error(hub: &Hub) -> (String, String) {
    let s = hub.json(&["sources"]);
    (
        s[0]["error"].as_str().unwrap_or_default().to_string(),
        s[0]["error_since"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn an_unreachable_git_server_shows_the_error_and_keeps_the_last_good_revision() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = two_bundle_repo(tmp.path());
    let git_server = GitServer::start(&tmp.path().join("git"));
    let repo = git_server.repo_from("fleet", &src);
    let hub = Hub::start(tmp.path());
    hub.add_source("s", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["s-a", "s-b"]);
    drop(git_server);
    let (err, since) = wait_until("the source to show the fetch error", || {
        let e = source_error(&hub);
        (!e.0.is_empty())
            .then_some(e.clone())
            .ok_or(format!("{e:?}"))
    });
    assert!(err.contains("git"), "{err}");
    assert!(!since.is_empty(), "the error says since when");
    hub.wait_ready_bundles("dev", &["s-a", "s-b"]);
    assert!(
        dev.file("s-a").is_some(),
        "the last good revision stays deployed"
    );
}

#[test]
fn a_force_push_is_followed_and_a_deleted_branch_keeps_the_last_good_revision() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = two_bundle_repo(tmp.path());
    let git_server = GitServer::start(&tmp.path().join("git"));
    let repo = git_server.repo_from("fleet", &src);
    let hub = Hub::start(tmp.path());
    hub.add_source("s", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["s-a", "s-b"]);

    // Rewrite history: amend the only commit with different content.
    write_file(&repo.dir, "a/cm.yaml", &configmap("a", "rewritten"));
    git(
        &repo.dir,
        &["commit", "-q", "-a", "--amend", "-m", "rewritten"],
    );
    wait_until("the rewritten history to deploy", || {
        dev.file("s-a")
            .filter(|f| f.contains("rewritten"))
            .ok_or_else(|| "old".to_string())
    });

    // Delete the branch the source follows.
    git(&repo.dir, &["checkout", "-q", "-b", "other"]);
    git(&repo.dir, &["branch", "-q", "-D", "main"]);
    let (err, _) = wait_until("the source to report the missing branch", || {
        let e = source_error(&hub);
        e.0.contains("not found")
            .then_some(e.clone())
            .ok_or(format!("{e:?}"))
    });
    assert!(err.contains("main"), "{err}");
    hub.wait_ready_bundles("dev", &["s-a", "s-b"]);
    assert!(dev.file("s-a").expect("kept").contains("rewritten"));
}

#[test]
fn a_huge_file_fails_only_its_bundle_while_the_others_update() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = two_bundle_repo(tmp.path());
    let git_server = GitServer::start(&tmp.path().join("git"));
    let repo = git_server.repo_from("fleet", &src);
    let hub = Hub::start(tmp.path());
    hub.add_source("s", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["s-a", "s-b"]);

    // 5 MiB in one file: over the 4 MiB per-file limit.
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  blob: \"{}\"\n",
        "x".repeat(5 * 1024 * 1024)
    );
    write_file(&repo.dir, "a/big.yaml", &big);
    write_file(&repo.dir, "b/cm.yaml", &configmap("b", "2"));
    git(&repo.dir, &["add", "-A"]);
    git(
        &repo.dir,
        &["commit", "-q", "-m", "huge file in a, change in b"],
    );
    wait_until("b to update", || {
        dev.file("s-b")
            .filter(|f| f.contains("\"2\""))
            .ok_or_else(|| "old".to_string())
    });
    let a = wait_until("a to show its error", || {
        let v = hub.json(&["status", "s-a"]);
        (v[0]["state"] == "ErrApplied")
            .then_some(v.clone())
            .ok_or(v.to_string())
    });
    assert!(
        a[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("big.yaml"),
        "{a}"
    );
    assert!(
        !dev.file("s-a").expect("kept").contains("big"),
        "a keeps its last good revision"
    );
}

#[test]
fn a_spoke_corrects_drift_while_the_hub_is_down_and_reports_it_when_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write_file(&src, "a/fleet.yaml", "correctDrift:\n  enabled: true\n");
    write_file(&src, "a/cm.yaml", &configmap("a", "1"));
    let git_server = GitServer::start(&tmp.path().join("git"));
    let repo = git_server.repo_from("fleet", &src);
    let mut hub = Hub::start(tmp.path());
    hub.add_source("s", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["s-a"]);
    let good = dev.file("s-a").expect("written");

    hub.proc.kill();
    std::fs::write(
        dev.target.join("s-a.yaml"),
        "tampered while the hub is down\n",
    )
    .expect("tamper");
    wait_until("the spoke to restore the file on its own", || {
        (dev.file("s-a").as_deref() == Some(good.as_str()))
            .then_some(())
            .ok_or_else(|| "still tampered".to_string())
    });
    assert!(
        dev.proc.log_text().contains("correcting drift"),
        "{}",
        dev.proc.log_text()
    );
    hub.restart();
    hub.wait_ready_bundles("dev", &["s-a"]);
}
