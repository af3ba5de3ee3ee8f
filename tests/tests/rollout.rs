//! Staged rollouts end to end: partitions go in order, a failing canary halts the
//! rollout with the reason, a fix resumes it, and pause/resume hold and release it.

use flotilla_e2e::{GitServer, Hub, Spoke, configmap, wait_until, write_file};

const FLEET_YAML: &str = "rolloutStrategy:
  partitions:
    - name: canary
      clusterSelector:
        matchLabels:
          env: canary
    - name: prod
      clusterSelector:
        matchLabels:
          env: prod
";

#[test]
fn a_partitioned_rollout_halts_at_a_failing_canary_and_resumes_after_a_fix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write_file(&src, "app/fleet.yaml", FLEET_YAML);
    write_file(&src, "app/cm.yaml", &configmap("app", "v1"));
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &src);
    let hub = Hub::start(tmp.path());
    hub.add_source("s", &repo.url, "");
    let join = hub.token("1h", 3);
    let canary = Spoke::start(tmp.path(), &join, "c1", "env=canary");
    let p1 = Spoke::start(tmp.path(), &join, "p1", "env=prod");
    let p2 = Spoke::start(tmp.path(), &join, "p2", "env=prod");
    for c in ["c1", "p1", "p2"] {
        hub.wait_ready_bundles(c, &["s-app"]);
    }
    let version = |s: &Spoke| s.file("s-app").unwrap_or_default();
    let rollout = || hub.json(&["rollout", "status", "s-app"])[0].clone();
    assert_eq!(rollout()["phase"], "Done");

    // Break the canary: a folder squats on its manifest file, so the next apply fails.
    let squat = canary.target.join("s-app.yaml");
    std::fs::remove_file(&squat).expect("remove");
    std::fs::create_dir_all(squat.join("blocker")).expect("squat");
    repo.commit_file("app/cm.yaml", &configmap("app", "v2"), "v2");
    let halted = wait_until("the rollout to halt at the canary", || {
        let r = rollout();
        (r["phase"] == "Halted")
            .then_some(r.clone())
            .ok_or(r.to_string())
    });
    assert!(
        halted["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cluster c1 failed in partition canary"),
        "{halted}"
    );
    let watch = hub.cli(&["rollout", "status", "s-app", "--watch", "--timeout", "30s"]);
    assert!(
        !watch.status.success(),
        "watch exits non-zero on a halted rollout"
    );
    assert!(String::from_utf8_lossy(&watch.stderr).contains("halted"));
    let rows = hub.json(&["status", "s-app"]);
    let p1_row = rows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["cluster"] == "p1")
        .cloned()
        .expect("p1");
    assert_eq!(p1_row["state"], "Pending", "{rows}");
    assert!(
        version(&p1).contains("v1") && version(&p2).contains("v1"),
        "prod keeps v1"
    );

    // The fix: unblock the canary and ship v3; the rollout goes on to prod.
    std::fs::remove_dir_all(&squat).expect("unsquat");
    repo.commit_file("app/cm.yaml", &configmap("app", "v3"), "v3");
    wait_until("the hub to pick up the fix", || {
        let r = rollout();
        (r["phase"] != "Halted").then_some(()).ok_or(r.to_string())
    });
    let watch = hub.cli(&["rollout", "status", "s-app", "--watch", "--timeout", "60s"]);
    assert!(
        watch.status.success(),
        "{}",
        String::from_utf8_lossy(&watch.stderr)
    );
    assert!(String::from_utf8_lossy(&watch.stdout).contains("prod"));
    // Once unblocked, the canary's retry of v2 (after its backoff, about 1 s) may beat the
    // hub's fetch of v3: the rollout then finishes v2 first, and v3 follows.
    wait_until("v3 everywhere", || {
        [&canary, &p1, &p2]
            .iter()
            .all(|s| version(s).contains("v3"))
            .then_some(())
            .ok_or_else(|| format!("{} {} {}", version(&canary), version(&p1), version(&p2)))
    });

    // Pause holds everyone on v3 while v4 waits; resume releases it.
    let out = hub.cli(&["rollout", "pause", "s-app"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    repo.commit_file("app/cm.yaml", &configmap("app", "v4"), "v4");
    wait_until("the paused rollout to report Paused", || {
        let r = rollout();
        (r["phase"] == "Paused").then_some(()).ok_or(r.to_string())
    });
    assert!(version(&canary).contains("v3"), "paused: nothing moves");
    let out = hub.cli(&["rollout", "resume", "s-app"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("v4 everywhere after resume", || {
        [&canary, &p1, &p2]
            .iter()
            .all(|s| version(s).contains("v4"))
            .then_some(())
            .ok_or_else(|| rollout().to_string())
    });
    let watch = hub.cli(&["watch", "--until-ready", "--timeout", "60s"]);
    assert!(
        watch.status.success(),
        "{}",
        String::from_utf8_lossy(&watch.stderr)
    );
    assert!(String::from_utf8_lossy(&watch.stdout).contains("s-app"));
}
