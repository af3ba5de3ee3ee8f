//! fleet.yaml that never lies, end to end: a misspelled key is a warning a user sees in
//! `flotilla bundles` and `flotilla status` tables and in the hub's metrics; strictness
//! (the hub's `--strict-fleet-yaml` or a fleet.yaml's `strict: true`) fails the bundle
//! with `file:line` while the last good revision stays; Fleet's `name`, `overrideTargets`
//! and `dependsOn` on a bundle that does not exist behave as a Fleet user expects.

use flotilla_e2e::{
    GitServer, Hub, Spoke, bin, configmap, free_port, metric, wait_until, write_file,
};
use serde_json::Value;

const TYPOS: &str = "defaultNamepsace: apps\ncorrectDrift:\n  enable: true\n";

/// The cell under `column` in the row whose first cell is `first`, from a CLI table.
fn cell(table: &str, first: &str, column: &str) -> Option<String> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let at = header.iter().position(|h| *h == column)?;
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first) || cells.get(1) == Some(&first))
        .and_then(|cells| cells.get(at).map(ToString::to_string))
}

fn table(hub: &Hub, args: &[&str]) -> String {
    let out = hub.cli(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn bundle(hub: &Hub, name: &str) -> Value {
    hub.json(&["bundles"])
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

fn row(hub: &Hub, cluster: &str, bundle: &str) -> Value {
    hub.json(&["status"])
        .as_array()
        .and_then(|r| {
            r.iter()
                .find(|r| r["cluster"] == cluster && r["bundle"] == bundle)
                .cloned()
        })
        .unwrap_or(Value::Null)
}

#[test]
fn misspelled_keys_show_in_tables_and_metrics_and_fleet_fields_do_what_fleet_does() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write_file(&src, "app/fleet.yaml", TYPOS);
    write_file(&src, "app/cm.yaml", &configmap("app", "v1"));
    write_file(&src, "strict/fleet.yaml", &format!("strict: true\n{TYPOS}"));
    write_file(&src, "strict/cm.yaml", &configmap("strict", "v1"));
    write_file(&src, "waiter/fleet.yaml", "dependsOn:\n- name: nope\n");
    write_file(&src, "waiter/cm.yaml", &configmap("waiter", "v1"));
    write_file(&src, "db/fleet.yaml", "name: database\n");
    write_file(&src, "db/cm.yaml", &configmap("db", "v1"));
    write_file(&src, "web/fleet.yaml", "dependsOn:\n- name: s-database\n");
    write_file(&src, "web/cm.yaml", &configmap("web", "v1"));
    write_file(
        &src,
        "prodonly/fleet.yaml",
        "overrideTargets:\n- clusterSelector:\n    matchLabels: {env: prod}\n",
    );
    write_file(&src, "prodonly/cm.yaml", &configmap("prodonly", "v1"));
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &src);
    let http = format!("127.0.0.1:{}", free_port());
    let hub = Hub::start_with(tmp.path(), &["--http-listen", &http]);
    hub.add_source("s", &repo.url, "env=dev");
    let join = hub.token("1h", 2);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let prod = Spoke::start(tmp.path(), &join, "prod", "env=prod");

    // overrideTargets replace the source's targets: prod gets only that bundle.
    hub.wait_ready_bundles("prod", &["s-prodonly"]);
    // `name:` names the bundle, and dependsOn finds it by that name.
    wait_until("dev to run s-app, s-database and s-web", || {
        let ready = |b: &str| row(&hub, "dev", b)["state"] == "Ready";
        (ready("s-app") && ready("s-database") && ready("s-web"))
            .then_some(())
            .ok_or_else(|| format!("{:?}", hub.status()))
    });
    assert!(dev.file("s-database").is_some() && dev.file("s-prodonly").is_none());
    assert!(prod.file("s-prodonly").is_some());

    // Misspelled keys: warnings with their path and file:line, everywhere.
    let app = bundle(&hub, "s-app");
    assert_eq!(
        app["warnings"],
        serde_json::json!([
            "app/fleet.yaml:1: unknown field defaultNamepsace is ignored",
            "app/fleet.yaml:3: unknown field correctDrift.enable is ignored",
        ])
    );
    let bundles = table(&hub, &["bundles"]);
    assert_eq!(
        cell(&bundles, "s-app", "WARNINGS").as_deref(),
        Some("2"),
        "{bundles}"
    );
    assert_eq!(
        cell(&bundles, "s-app", "STATE").as_deref(),
        Some("Ready"),
        "{bundles}"
    );
    let status = table(&hub, &["status"]);
    assert_eq!(
        cell(&status, "s-app", "WARNINGS").as_deref(),
        Some("2"),
        "{status}"
    );
    assert_eq!(
        cell(&status, "s-web", "WARNINGS").as_deref(),
        Some("0"),
        "{status}"
    );
    assert_eq!(
        row(&hub, "dev", "s-app")["warnings"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        metric(
            &http,
            "flotilla_hub_bundle_warnings{source=\"s\",bundle=\"s-app\"}"
        ),
        2.0
    );

    // strict: true makes them errors of that bundle alone.
    let strict = bundle(&hub, "s-strict");
    let error = strict["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("strict/fleet.yaml:2: unknown field defaultNamepsace (strict: true"),
        "{strict}"
    );
    assert_eq!(strict["state"], "ErrApplied");

    // `flotilla render` reads the same folder as the source does, and says the same.
    let out = std::process::Command::new(bin("flotilla"))
        .arg("render")
        .arg(&src)
        .output()
        .expect("run flotilla render");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "the strict bundle fails the render");
    assert!(
        stderr.contains("warning: app/fleet.yaml:3: unknown field correctDrift.enable is ignored"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: bundle src-strict: strict/fleet.yaml:2: unknown field defaultNamepsace (strict: true"),
        "{stderr}"
    );
    assert!(stdout.contains("# bundle src-database (db)\n"), "{stdout}");

    // A dependency that no bundle has is named as missing, not waited for in silence.
    let waiter = row(&hub, "dev", "s-waiter");
    assert_eq!(waiter["state"], "Pending", "{waiter}");
    assert!(
        waiter["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nope (no bundle named nope exists)"),
        "{waiter}"
    );
}

#[test]
fn a_strict_hub_fails_a_misspelled_revision_and_keeps_the_last_good_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write_file(&src, "app/fleet.yaml", "defaultNamespace: apps\n");
    write_file(&src, "app/cm.yaml", &configmap("app", "v1"));
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &src);
    let hub = Hub::start_with(tmp.path(), &["--strict-fleet-yaml"]);
    hub.add_source("s", &repo.url, "");
    let join = hub.token("1h", 1);
    let spoke = Spoke::start(tmp.path(), &join, "c1", "env=dev");
    hub.wait_ready_bundles("c1", &["s-app"]);
    assert!(spoke.file("s-app").unwrap_or_default().contains("v1"));

    // The typo lands first, so no poll can see v2 without it.
    repo.commit_file("app/fleet.yaml", "defaultNamepsace: apps\n", "typo");
    repo.commit_file("app/cm.yaml", &configmap("app", "v2"), "v2");
    let failed = wait_until("the typo to fail the bundle", || {
        let b = bundle(&hub, "s-app");
        let e = b["error"].as_str().unwrap_or_default().to_string();
        e.contains("unknown field")
            .then_some(e)
            .ok_or(b.to_string())
    });
    assert_eq!(
        failed,
        "app/fleet.yaml:1: unknown field defaultNamepsace (the hub runs with --strict-fleet-yaml)"
    );
    let r = row(&hub, "c1", "s-app");
    assert_eq!(r["state"], "ErrApplied", "{r}");
    assert!(
        spoke.file("s-app").unwrap_or_default().contains("v1"),
        "the last good revision stays deployed"
    );
}
