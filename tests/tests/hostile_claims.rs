//! Red team, spoke claims (issue 13): what a spoke says about itself never moves it into
//! another environment's bundles. Labels count only when the hub set them, the join token
//! carried them, an admin accepted them, or the hub lets spokes set that key
//! (`--self-label-keys`). Real hub, spokes and `git daemon`; see `docs/security.md`.

use std::path::Path;

use flotilla_e2e::{GitServer, Hub, Repo, Spoke, configmap, wait_until, write_file};
use serde_json::Value;

/// One bundle, `apps`, served once per environment: sources `devonly` (env=dev),
/// `prodonly` (env=prod) and `euonly` (region=eu) each publish it as `<source>-apps`.
fn fleet(tmp: &Path, hub_args: &[&str]) -> (GitServer, Repo, Hub) {
    let src = tmp.join("src");
    write_file(&src, "apps/fleet.yaml", "defaultNamespace: apps\n");
    write_file(&src, "apps/cm.yaml", &configmap("apps", "1"));
    let git = GitServer::start(&tmp.join("git"));
    let repo = git.repo_from("fleet", &src);
    let hub = Hub::start_with(tmp, hub_args);
    hub.add_source("devonly", &repo.url, "env=dev");
    hub.add_source("prodonly", &repo.url, "env=prod");
    hub.add_source("euonly", &repo.url, "region=eu");
    (git, repo, hub)
}

fn cluster(hub: &Hub, name: &str) -> Value {
    hub.json(&["clusters"])
        .as_array()
        .expect("clusters is an array")
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until the hub has taken the spoke's Hello: its report is shown, and pending.
fn wait_reported(hub: &Hub, name: &str, key: &str, value: &str) -> Value {
    wait_until(&format!("{name} to report {key}={value}"), || {
        let c = cluster(hub, name);
        if c["connected"] == true && c["reported_labels"][key] == value {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    })
}

fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_spoke_restarted_with_prod_labels_gets_nothing_new_until_an_admin_accepts_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_git, repo, hub) = fleet(tmp.path(), &[]);
    // The token lets the spoke choose env at join, so env=dev is trusted from then on.
    let join = hub.token("1h", 1);
    let mut edge = Spoke::start(tmp.path(), &join, "edge", "env=dev");
    hub.wait_ready_bundles("edge", &["devonly-apps"]);

    // Compromised: the same identity and state dir, now claiming prod.
    edge.proc.kill();
    let edge = Spoke::start(tmp.path(), &join, "edge", "env=prod");
    let c = wait_reported(&hub, "edge", "env", "prod");
    assert_eq!(c["labels"]["env"], "dev", "the claim is not obeyed: {c}");
    assert_eq!(c["pending_labels"]["env"], "prod", "{c}");
    let wide = hub.cli(&["clusters", "-o", "wide"]);
    assert_ok(&wide);
    let wide = String::from_utf8_lossy(&wide.stdout);
    let header = wide.lines().next().unwrap_or_default();
    let row = wide
        .lines()
        .find(|l| l.starts_with("edge"))
        .unwrap_or_default();
    assert!(header.contains("PENDING-LABELS"), "{wide}");
    assert!(
        row.contains("env=dev") && row.contains("env=prod"),
        "{wide}"
    );

    // A new revision reconciles the cluster after its Hello: dev's bundle moves on,
    // prod's never arrives.
    repo.commit_file("apps/cm.yaml", &configmap("apps", "second-revision"), "v2");
    wait_until("edge to get dev's new revision", || {
        match edge.file("devonly-apps") {
            Some(f) if f.contains("second-revision") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    hub.wait_ready_bundles("edge", &["devonly-apps"]);
    assert!(
        edge.file("prodonly-apps").is_none(),
        "prod's bundle reached a dev spoke"
    );

    // An admin accepts the claim: now, and only now, it moves.
    assert_ok(&hub.cli(&["cluster", "accept-labels", "edge", "env"]));
    hub.wait_ready_bundles("edge", &["prodonly-apps"]);
    wait_until("dev's bundle to be pruned", || {
        edge.file("devonly-apps")
            .map_or(Ok(()), |f| Err(f.to_string()))
    });
    let c = cluster(&hub, "edge");
    assert_eq!(c["labels"]["env"], "prod", "{c}");
    assert_eq!(c["accepted_labels"]["env"], "prod", "{c}");
    assert_eq!(c["pending_labels"], serde_json::json!({}), "{c}");
}

#[test]
fn a_token_with_labels_gives_the_cluster_those_labels_whatever_the_spoke_asks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_git, _repo, hub) = fleet(tmp.path(), &[]);
    // The token also lets the spoke choose env: the token's own label still wins.
    let join = hub.token_with(
        "1h",
        1,
        &["--labels", "env=prod", "--allow-spoke-labels", "env"],
    );
    let edge = Spoke::start(tmp.path(), &join, "edge", "env=dev");
    hub.wait_ready_bundles("edge", &["prodonly-apps"]);
    assert!(edge.file("devonly-apps").is_none());

    let c = wait_reported(&hub, "edge", "env", "dev");
    assert_eq!(c["labels"]["env"], "prod", "{c}");
    assert_eq!(c["token_labels"]["env"], "prod", "{c}");
    assert_eq!(
        c["pending_labels"],
        serde_json::json!({}),
        "nothing to accept: {c}"
    );
    let refused = hub.cli(&["cluster", "accept-labels", "edge", "env"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("flotilla cluster label edge"), "{err}");
    assert_eq!(cluster(&hub, "edge")["labels"]["env"], "prod");

    let tokens = hub.json(&["token", "list"]);
    assert_eq!(tokens[0]["labels"]["env"], "prod", "{tokens}");
    assert_eq!(tokens[0]["uses"], 1, "{tokens}");
}

#[test]
fn with_self_label_keys_a_named_key_moves_the_cluster_and_another_does_not() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_git, _repo, hub) = fleet(tmp.path(), &["--self-label-keys", "region,zone"]);
    let join = hub.token("1h", 1);
    let mut edge = Spoke::start(tmp.path(), &join, "edge", "env=dev,region=us");
    hub.wait_ready_bundles("edge", &["devonly-apps"]);

    edge.proc.kill();
    let edge = Spoke::start(tmp.path(), &join, "edge", "env=prod,region=eu");
    // One Hello carries both claims, so the reconcile that delivered euonly also
    // decided against prodonly.
    hub.wait_ready_bundles("edge", &["devonly-apps", "euonly-apps"]);
    assert!(
        edge.file("prodonly-apps").is_none(),
        "env is not a self-label key"
    );
    let c = cluster(&hub, "edge");
    assert_eq!(c["labels"]["region"], "eu", "{c}");
    assert_eq!(c["labels"]["env"], "dev", "{c}");
    assert_eq!(
        c["pending_labels"],
        serde_json::json!({"env": "prod"}),
        "{c}"
    );
}

/// As many racers as the brief's red team used; the component test in
/// `hub/src/server/registration.rs` forces the overlap with a barrier, this one shows
/// what real spokes see.
const RACERS: usize = 20;

fn exited(s: &mut Spoke) -> Option<&mut Spoke> {
    matches!(s.proc.child.try_wait(), Ok(Some(_))).then_some(s)
}

#[test]
fn twenty_spokes_racing_for_one_name_with_their_own_tokens_register_it_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let joins: Vec<String> = (0..RACERS).map(|_| hub.token("1h", 1)).collect();
    let mut racers: Vec<Spoke> = joins
        .iter()
        .enumerate()
        .map(|(i, join)| {
            let base = tmp.path().join(format!("racer-{i}"));
            Spoke::start(&base, join, "contested", "env=dev")
        })
        .collect();

    // Every loser gives up on its own; the winner stays connected.
    wait_until("all racers but one to give up", || {
        let gave_up = racers.iter_mut().filter_map(exited).count();
        (gave_up == RACERS - 1)
            .then_some(())
            .ok_or(format!("{gave_up} gave up"))
    });
    for loser in racers.iter_mut().filter_map(exited) {
        let log = loser.proc.log_text();
        assert!(log.contains("already registered"), "{log}");
    }
    wait_until("the winner to be connected", || {
        let c = cluster(&hub, "contested");
        (c["connected"] == true).then_some(()).ok_or(c.to_string())
    });
    let clusters = hub.json(&["clusters"]);
    assert_eq!(clusters.as_array().map(Vec::len), Some(1), "{clusters}");
    let tokens = hub.json(&["token", "list"]);
    let uses: u64 = tokens
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["uses"].as_u64())
        .sum();
    assert_eq!(uses, 1, "one name, one token use: {tokens}");
}
