//! Fleet-scale targeting and status, end to end: cluster groups, source targets, the
//! `targets` dry run, dependsOn ordering and cycles, and Offline detection.

use std::process::Command;

use flotilla_e2e::{GitServer, Hub, Spoke, configmap, wait_until, write_file};

fn ok(out: std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn groups_and_source_targets_decide_who_gets_what_and_targets_explains_why() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write_file(&src, "apps/fleet.yaml", "defaultNamespace: apps\n");
    write_file(&src, "apps/cm.yaml", &configmap("apps", "1"));
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &src);
    let hub = Hub::start(tmp.path());
    ok(hub.cli(&[
        "group",
        "add",
        "eu",
        "--selector",
        "region=eu",
        "--label",
        "tier=gold",
    ]));
    ok(hub.cli(&[
        "source",
        "add",
        "bygroup",
        "--repo",
        &repo.url,
        "--path",
        ".",
        "--interval",
        "1s",
        "--group",
        "eu",
    ]));
    ok(hub.cli(&[
        "source",
        "add",
        "bygrouplabels",
        "--repo",
        &repo.url,
        "--path",
        ".",
        "--interval",
        "1s",
        "--group-selector",
        "tier=gold",
    ]));
    ok(hub.cli(&[
        "source",
        "add",
        "byname",
        "--repo",
        &repo.url,
        "--path",
        ".",
        "--interval",
        "1s",
        "--cluster",
        "us1",
    ]));
    let join = hub.token("1h", 2);
    let eu = Spoke::start(tmp.path(), &join, "eu1", "region=eu");
    let us = Spoke::start(tmp.path(), &join, "us1", "region=us");
    hub.wait_ready_bundles("eu1", &["bygroup-apps", "bygrouplabels-apps"]);
    hub.wait_ready_bundles("us1", &["byname-apps"]);
    assert!(us.file("bygroup-apps").is_none());
    assert!(eu.file("byname-apps").is_none());

    let groups = hub.json(&["groups"]);
    let eu_group = groups
        .as_array()
        .expect("array")
        .iter()
        .find(|g| g["name"] == "eu")
        .cloned()
        .expect("eu group");
    assert_eq!(eu_group["clusters"], 1);
    assert_eq!(eu_group["state"], "Ready");
    let default = groups
        .as_array()
        .expect("array")
        .iter()
        .find(|g| g["name"] == "default")
        .cloned()
        .expect("init creates the default group");
    assert_eq!(default["clusters"], 2);

    let rows = hub.json(&["targets", "bygroup/bygroup-apps"]);
    let rows = rows.as_array().expect("array");
    let row = |c: &str| {
        rows.iter()
            .find(|r| r["cluster"] == c)
            .cloned()
            .expect("row")
    };
    assert_eq!(row("eu1")["deployed"], true);
    assert!(
        row("eu1")["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("clusterGroup eu"),
        "{rows:?}"
    );
    assert_eq!(row("us1")["deployed"], false);
    assert!(
        row("us1")["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("none of 1 target"),
        "{rows:?}"
    );

    // Moving a cluster into the group retargets it.
    ok(hub.cli(&["cluster", "label", "us1", "region=eu"]));
    hub.wait_ready_bundles(
        "us1",
        &["bygroup-apps", "bygrouplabels-apps", "byname-apps"],
    );
}

#[test]
fn depends_on_holds_a_bundle_until_its_dependency_is_ready_and_cycles_are_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write_file(&src, "db/fleet.yaml", "labels:\n  role: db\n");
    write_file(&src, "db/cm.yaml", &configmap("db", "1"));
    write_file(
        &src,
        "app/fleet.yaml",
        "dependsOn:\n  - selector:\n      matchLabels:\n        role: db\n",
    );
    write_file(&src, "app/cm.yaml", &configmap("app", "1"));
    write_file(
        &src,
        "loop-a/fleet.yaml",
        "dependsOn:\n  - name: deps-loop-b\n",
    );
    write_file(&src, "loop-a/cm.yaml", &configmap("a", "1"));
    write_file(
        &src,
        "loop-b/fleet.yaml",
        "dependsOn:\n  - name: deps-loop-a\n",
    );
    write_file(&src, "loop-b/cm.yaml", &configmap("b", "1"));
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &src);
    let hub = Hub::start(tmp.path());
    let join = hub.token("1h", 1);
    // Make the db bundle fail to apply: a folder squats on its file name.
    let target = tmp.path().join("targets/dev");
    std::fs::create_dir_all(target.join("deps-db.yaml/blocker")).expect("squat");
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.add_source("deps", &repo.url, "");
    // `status BUNDLE` is an error until the bundle exists.
    wait_until("the source's first revision", || {
        let out = hub.cli(&["bundles", "deps-db"]);
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).to_string())
    });

    let status = |bundle: &str| {
        let v = hub.json(&["status", bundle]);
        (
            v[0]["state"].as_str().unwrap_or_default().to_string(),
            v[0]["message"].as_str().unwrap_or_default().to_string(),
        )
    };
    wait_until("db to fail and app to wait for it", || {
        let (db, _) = status("deps-db");
        let (app, why) = status("deps-app");
        (db == "ErrApplied"
            && app == "Pending"
            && why.contains("waiting for dependencies: deps-db"))
        .then_some(())
        .ok_or(format!("db {db}, app {app}: {why}"))
    });
    assert!(
        dev.file("deps-app").is_none(),
        "app must not be applied before db is Ready"
    );
    let (a, why) = status("deps-loop-a");
    assert_eq!(a, "ErrApplied");
    assert!(why.contains("dependsOn cycle"), "{why}");
    assert_eq!(status("deps-loop-b").0, "ErrApplied");

    // Unblock db with a new commit; app follows once db is Ready.
    std::fs::remove_dir_all(target.join("deps-db.yaml")).expect("unsquat");
    repo.commit_file("db/cm.yaml", &configmap("db", "2"), "db v2");
    wait_until("app to be applied after db is Ready", || {
        let (db, _) = status("deps-db");
        let (app, why) = status("deps-app");
        (db == "Ready" && app == "Ready")
            .then_some(())
            .ok_or(format!("db {db}, app {app}: {why}"))
    });
    assert!(dev.file("deps-app").is_some());
}

#[test]
fn a_spoke_that_stops_heartbeating_goes_offline_and_comes_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write_file(&src, "apps/cm.yaml", &configmap("apps", "1"));
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &src);
    let hub = Hub::start_with(tmp.path(), &["--heartbeat-window", "12s"]);
    hub.add_source("s", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["s"]);

    // Freeze the spoke: its TCP connection stays open, but it goes silent.
    let pid = dev.proc.child.id().to_string();
    ok(Command::new("kill")
        .args(["-STOP", &pid])
        .output()
        .expect("kill"));
    wait_until("dev to be marked Offline", || {
        let c = hub.json(&["clusters"]);
        let s = hub.json(&["status"]);
        (c[0]["state"] == "Offline" && s[0]["state"] == "Offline")
            .then_some(())
            .ok_or(format!("{c} {s}"))
    });
    ok(Command::new("kill")
        .args(["-CONT", &pid])
        .output()
        .expect("kill"));
    hub.wait_connected("dev");
    hub.wait_ready_bundles("dev", &["s"]);
}

#[test]
fn status_pages_through_every_row_and_filters_not_ready_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &flotilla_e2e::example_repo());
    let hub = Hub::start(tmp.path());
    let join = hub.token("1h", 3);
    // dev's web bundle cannot be written: a folder squats on its file.
    let squat = tmp.path().join("targets/dev/examples-web.yaml/blocker");
    std::fs::create_dir_all(&squat).expect("squat");
    let _spokes: Vec<Spoke> = [
        ("dev", "env=dev"),
        ("prod", "env=prod"),
        ("edge", "env=prod"),
    ]
    .iter()
    .map(|(n, l)| Spoke::start(tmp.path(), &join, n, l))
    .collect();
    hub.add_source("examples", &repo.url, "");
    hub.wait_ready_bundles("prod", &["examples-hello", "examples-web"]);
    hub.wait_ready_bundles("edge", &["examples-hello", "examples-web"]);

    let not_ready = wait_until("dev's web bundle to fail", || {
        let v = hub.json(&["status", "--not-ready"]);
        (v.as_array().map(Vec::len) == Some(1) && v[0]["state"] == "ErrApplied")
            .then_some(v.clone())
            .ok_or(v.to_string())
    });
    assert_eq!(not_ready[0]["cluster"], "dev");
    assert_eq!(not_ready[0]["bundle"], "examples-web");

    let mut all = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let mut args = vec!["status", "--limit", "4", "-o", "json"];
        if let Some(t) = &token {
            args.extend(["--continue", t.as_str()]);
        }
        let out = hub.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let page: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let page = page.as_array().expect("array").clone();
        assert!(page.len() <= 4);
        all.extend(page);
        token = String::from_utf8_lossy(&out.stderr)
            .split("--continue ")
            .nth(1)
            .map(|t| t.trim().to_string());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(
        all.len(),
        6,
        "3 clusters x 2 bundles, each row once: {all:?}"
    );
    let mut keys: Vec<String> = all
        .iter()
        .map(|r| format!("{}/{}", r["cluster"], r["bundle"]))
        .collect();
    keys.dedup();
    assert_eq!(keys.len(), 6);
}
