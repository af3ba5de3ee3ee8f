//! A CA rotation finishes in minutes, on the running hub: `flotilla-hub ca rotate` makes
//! the hub load the new CA at once (Admin.RotateCa) and ask every connected spoke still
//! on the previous CA to renew within its `--rotation-window`; spokes that connect
//! during the rotation, with a certificate from either CA, work; `ca status` shows the
//! progress. With the hub stopped, `ca rotate` changes only the files and the hub asks
//! at its next start. Certificates here live an hour, so no natural renewal (at two
//! thirds of the lifetime) can finish a rotation instead.

use std::process::{Command, Output};

use flotilla_e2e::{GitServer, Hub, Spoke, bin, example_repo, wait_until};
use flotilla_identity::files;

fn hub_tool(hub: &Hub, args: &[&str]) -> Output {
    Command::new(bin("flotilla-hub"))
        .args(args)
        .arg("--data-dir")
        .arg(&hub.dir)
        .output()
        .expect("run flotilla-hub")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// SHA-256 of the CA that issued `spoke`'s certificate (the chain's second entry).
fn issuer(spoke: &Spoke) -> Option<String> {
    let pem = files::read_public(&spoke.state.join("cert.pem")).unwrap_or_default();
    let ders = flotilla_identity::pem_to_ders(&pem).unwrap_or_default();
    ders.get(1).map(|d| flotilla_identity::fingerprint(d))
}

/// SHA-256 of the hub's signing CA, from its data dir.
fn signing_ca(hub: &Hub) -> String {
    let pem = files::read_public(&hub.dir.join("ca.pem")).expect("ca.pem");
    flotilla_identity::fingerprint(&flotilla_identity::pem_to_ders(&pem).expect("pem")[0])
}

/// Waits until every spoke holds a certificate from `ca`. `wait_until` gives up after a
/// minute: the rotation completes within it.
fn wait_all_on(spokes: &[&Spoke], ca: &str) {
    wait_until("every spoke to hold a certificate from the new CA", || {
        let issuers: Vec<_> = spokes.iter().map(|s| (&s.name, issuer(s))).collect();
        issuers
            .iter()
            .all(|(_, i)| i.as_deref() == Some(ca))
            .then_some(())
            .ok_or(format!("{issuers:?}"))
    });
}

/// Waits until every named cluster is connected and each of its bundles is Ready.
fn wait_connected_and_ready(hub: &Hub, names: &[&str]) {
    wait_until("every cluster connected and Ready", || {
        let clusters = hub.json(&["clusters"]);
        let status = hub.status();
        let pending: Vec<String> = names
            .iter()
            .filter(|n| {
                let connected = clusters
                    .as_array()
                    .is_some_and(|a| a.iter().any(|c| c["name"] == **n && c["connected"] == true));
                let rows: Vec<_> = status.iter().filter(|(c, _, _)| c == *n).collect();
                !connected || rows.is_empty() || rows.iter().any(|(_, _, s)| s != "Ready")
            })
            .map(ToString::to_string)
            .collect();
        pending
            .is_empty()
            .then_some(())
            .ok_or(format!("not yet: {pending:?}; {status:?}"))
    });
}

#[test]
fn a_ca_rotation_on_the_running_hub_completes_within_a_minute_without_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let mut hub = Hub::start_with(
        tmp.path(),
        &["--cert-lifetime", "1h", "--rotation-window", "10s"],
    );
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 10);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let test = Spoke::start(tmp.path(), &join, "test", "env=test");
    let mut prod = Spoke::start(tmp.path(), &join, "prod", "env=prod");
    wait_connected_and_ready(&hub, &["dev", "test", "prod"]);
    let status = ok(hub_tool(&hub, &["ca", "status"]));
    assert!(
        status.contains("no CA rotation in progress: 3/3 clusters on the signing CA"),
        "{status}"
    );
    let old_ca = signing_ca(&hub);

    // prod is away when the rotation starts: it still holds a certificate from the old CA.
    prod.proc.kill();
    wait_until("prod to be seen offline", || {
        let c = hub.json(&["clusters", "prod"]);
        (c.to_string().contains("\"connected\":false"))
            .then_some(())
            .ok_or(c.to_string())
    });

    // Rotating is for admins: a viewer's config (as the admin.conf of another folder)
    // is refused by the running hub, which keeps its CA.
    let viewer = tmp.path().join("viewer");
    hub.issue_viewer("auditor", &viewer.join("admin.conf"));
    let refused = Command::new(bin("flotilla-hub"))
        .args(["ca", "rotate", "--data-dir"])
        .arg(&viewer)
        .output()
        .expect("run flotilla-hub");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("Admin.RotateCa")
            && stderr.contains("needs the admin role"),
        "{stderr}"
    );
    assert_eq!(signing_ca(&hub), old_ca);

    let rotated = ok(hub_tool(&hub, &["ca", "rotate"]));
    assert!(
        rotated.contains("new signing CA sha256")
            && rotated.contains(
                "the running hub uses it now: 2 connected spoke(s) asked to renew within 10s"
            ),
        "{rotated}"
    );
    let new_ca = signing_ca(&hub);
    assert_ne!(new_ca, old_ca);
    // `ca status` authenticates with the new admin.conf, whose certificate comes from
    // the new CA: the running hub trusts it without a restart.
    let during = ok(hub_tool(&hub, &["ca", "status"]));
    assert!(
        during.contains("CA rotation in progress") && during.contains("prod"),
        "{during}"
    );

    // Mid-rotation: prod comes back with its old-CA certificate, and a new cluster joins.
    let prod = Spoke::start(tmp.path(), &join, "prod", "env=prod");
    let mut edge = Spoke::start(tmp.path(), &join, "edge", "env=dev");
    wait_all_on(&[&dev, &test, &prod, &edge], &new_ca);
    let status = wait_until("ca status to show the rotation done", || {
        let s = ok(hub_tool(&hub, &["ca", "status"]));
        s.contains("4/4 clusters on the signing CA")
            .then_some(s.clone())
            .ok_or(s)
    });
    assert!(
        status.contains("CA rotation in progress")
            && status.contains("ready: flotilla-hub ca retire"),
        "{status}"
    );
    for s in [&dev, &test, &prod] {
        let log = s.proc.log_text();
        assert!(
            log.contains("the hub asked for a renewal now"),
            "{}: {log}",
            s.name
        );
    }
    wait_connected_and_ready(&hub, &["dev", "test", "prod", "edge"]);

    // Retiring on the running hub: it serves from the new CA at once. edge, which
    // joined mid-rotation, reconnects: it trusts the new CA from the bundle it got.
    let retired = ok(hub_tool(&hub, &["ca", "retire"]));
    assert!(
        retired.contains(&format!(
            "the running hub now serves with the CA sha256 {new_ca}"
        )),
        "{retired}"
    );
    edge.proc.kill();
    let edge = Spoke::start(tmp.path(), &join, "edge", "env=dev");
    wait_until("edge to reconnect to the new serving certificate", || {
        let log = edge.proc.log_text();
        log.contains("sync stream open").then_some(()).ok_or(log)
    });
    let done = ok(hub_tool(&hub, &["ca", "status"]));
    assert!(
        done.contains("no CA rotation in progress: 4/4 clusters on the signing CA"),
        "{done}"
    );
    let join_after = hub.token("1h", 1);
    assert!(
        join_after.ends_with(&format!("ca-sha256={new_ca}")),
        "new join strings pin the new CA: {join_after}"
    );

    // With the hub stopped, a rotation changes the files only, and the hub asks every
    // spoke to renew once it is back.
    hub.proc.kill();
    let offline = ok(hub_tool(&hub, &["ca", "rotate"]));
    assert!(offline.contains("hub stopped: when it starts"), "{offline}");
    let stopped = ok(hub_tool(&hub, &["ca", "status"]));
    assert!(
        stopped.contains("CA rotation in progress: 0/4 clusters on the signing CA (hub stopped)"),
        "{stopped}"
    );
    let newest = signing_ca(&hub);
    hub.restart();
    wait_all_on(&[&dev, &test, &prod, &edge], &newest);
    wait_connected_and_ready(&hub, &["dev", "test", "prod", "edge"]);
}

#[test]
fn ca_renew_asks_every_connected_spoke_to_renew_now() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(tmp.path(), &["--cert-lifetime", "1h"]);
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_connected("dev");
    let before = files::read_public(&dev.state.join("cert.pem")).expect("cert");
    let out = ok(hub_tool(&hub, &["ca", "renew", "--all", "--window", "2s"]));
    assert!(out.contains("asked 1 connected spoke(s)"), "{out}");
    wait_until("dev to renew", || {
        let now = files::read_public(&dev.state.join("cert.pem")).unwrap_or_default();
        (now != before && !now.is_empty())
            .then_some(())
            .ok_or("not yet".to_string())
    });
}
