//! Red-team cases for the renderer (#13, renderer budgets), end to end: a real hub polls
//! a repo served by `git daemon` whose bundles are built to exhaust it, beside a good
//! bundle that a real spoke must still receive.

use std::path::Path;

use flotilla_e2e::{GitServer, Hub, Spoke, configmap, wait_until, write_file};

/// The kustomize diamond from the issue: each level lists `resources: [x, y]`, and `x`
/// and `y` each add a name prefix over the level below, so the bottom ConfigMap is built
/// `2^depth` times. Depth 18 took the hub to 1.46 GB before the budgets.
fn write_diamond(bundle: &Path, depth: usize) {
    let level = |k: usize| {
        if k == 0 {
            String::new()
        } else {
            format!("l{k}/")
        }
    };
    for k in 0..depth {
        write_file(
            bundle,
            &format!("{}kustomization.yaml", level(k)),
            "resources:\n  - x\n  - y\n",
        );
        for side in ["x", "y"] {
            let below = if k == 0 { "../" } else { "../../" };
            write_file(
                bundle,
                &format!("{}{side}/kustomization.yaml", level(k)),
                &format!("namePrefix: {side}-\nresources:\n  - {below}l{}\n", k + 1),
            );
        }
    }
    write_file(
        bundle,
        &format!("{}kustomization.yaml", level(depth)),
        "resources:\n  - cm.yaml\n",
    );
    write_file(
        bundle,
        &format!("{}cm.yaml", level(depth)),
        &configmap("leaf", "x"),
    );
}

#[test]
fn a_diamond_bundle_fails_alone_on_its_budget_while_the_good_bundle_deploys_and_the_hub_answers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write_file(&src, "good/fleet.yaml", "defaultNamespace: good\n");
    write_file(&src, "good/cm.yaml", &configmap("good", "one"));
    write_file(&src, "diamond/fleet.yaml", "defaultNamespace: diamond\n");
    write_diamond(&src.join("diamond"), 18);
    // A patch target that backtracking engines take exponential time on.
    write_file(&src, "redos/fleet.yaml", "defaultNamespace: redos\n");
    write_file(&src, "redos/cm.yaml", &configmap(&"a".repeat(64), "x"));
    write_file(
        &src,
        "redos/kustomization.yaml",
        "resources:\n  - cm.yaml\npatches:\n  - target:\n      name: \"(a+)+b\"\n    patch: |\n      - op: add\n        path: /data/hit\n        value: \"yes\"\n",
    );

    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &src);
    let hub = Hub::start(tmp.path());
    hub.add_source("hostile", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");

    let bundles = wait_until("every bundle of the revision to be listed", || {
        let v = hub.json(&["bundles"]);
        (v.as_array().map(Vec::len) == Some(3))
            .then(|| v.clone())
            .ok_or(v.to_string())
    });
    let row = |name: &str| {
        bundles
            .as_array()
            .and_then(|a| a.iter().find(|b| b["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} listed: {bundles}"))
    };
    let diamond = row("hostile-diamond");
    let error = diamond["error"].as_str().unwrap_or_default();
    assert_eq!(diamond["state"], "ErrApplied", "{diamond}");
    assert!(error.contains("render budget exceeded"), "{diamond}");
    assert!(
        error.starts_with("diamond/") && error.contains("kustomization.yaml:"),
        "the error names the kustomization and its line: {diamond}"
    );
    let redos = row("hostile-redos");
    assert!(
        redos["error"]
            .as_str()
            .unwrap_or_default()
            .contains("patch target does not exist"),
        "(a+)+b is matched like RE2 and matches nothing: {redos}"
    );
    assert_eq!(row("hostile-good")["error"], "", "{bundles}");

    wait_until("the good bundle to be Ready on dev", || {
        let ready = hub
            .status()
            .iter()
            .any(|(c, b, s)| c == "dev" && b == "hostile-good" && s == "Ready");
        (ready && dev.file("hostile-good").is_some())
            .then_some(())
            .ok_or(format!("{:?}", hub.status()))
    });

    // The hub still polls, renders and answers: a new commit reaches the spoke.
    repo.commit_file("good/cm.yaml", &configmap("good", "two"), "change good");
    wait_until("the change to reach dev", || {
        dev.file("hostile-good")
            .filter(|f| f.contains("two"))
            .ok_or_else(|| "old content".to_string())
    });
    assert_eq!(hub.json(&["clusters"])[0]["name"], "dev");
}
