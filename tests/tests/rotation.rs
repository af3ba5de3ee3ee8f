//! A CA rotation finishes in minutes: after `flotilla-hub ca rotate` and a restart, the
//! hub asks every connected spoke still on the previous CA to renew within its
//! `--rotation-window`, and `ca status` shows the progress. Certificates here live an
//! hour, so no natural renewal (at two thirds of the lifetime) can finish it instead.

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

#[test]
fn a_ca_rotation_with_spokes_connected_completes_within_the_rotation_window() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let mut hub = Hub::start_with(
        tmp.path(),
        &["--cert-lifetime", "1h", "--rotation-window", "10s"],
    );
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 3);
    let spokes: Vec<Spoke> = [
        ("dev", "env=dev"),
        ("test", "env=test"),
        ("prod", "env=prod"),
    ]
    .into_iter()
    .map(|(n, l)| Spoke::start(tmp.path(), &join, n, l))
    .collect();
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    wait_until("every spoke connected", || {
        let c = hub.json(&["clusters"]);
        let all = c
            .as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|x| x["connected"] == true));
        all.then_some(()).ok_or(c.to_string())
    });
    let status = ok(hub_tool(&hub, &["ca", "status"]));
    assert!(
        status.contains("no CA rotation in progress: 3/3 clusters on the signing CA"),
        "{status}"
    );

    hub.proc.kill();
    let rotated = ok(hub_tool(&hub, &["ca", "rotate"]));
    assert!(rotated.contains("new signing CA sha256"), "{rotated}");
    let offline = ok(hub_tool(&hub, &["ca", "status"]));
    assert!(
        offline.contains("CA rotation in progress: 0/3 clusters on the signing CA (hub stopped)"),
        "{offline}"
    );
    let new_ca = {
        let pem = files::read_public(&hub.dir.join("ca.pem")).expect("ca.pem");
        flotilla_identity::fingerprint(&flotilla_identity::pem_to_ders(&pem).expect("pem")[0])
    };
    hub.restart();

    // `wait_until` gives up after a minute: the rotation completes within it.
    wait_until("every spoke to hold a certificate from the new CA", || {
        let issuers: Vec<_> = spokes.iter().map(issuer).collect();
        issuers
            .iter()
            .all(|i| i.as_deref() == Some(new_ca.as_str()))
            .then_some(())
            .ok_or(format!("{issuers:?}"))
    });
    let status = wait_until("ca status to show the rotation done", || {
        let s = ok(hub_tool(&hub, &["ca", "status"]));
        s.contains("3/3 clusters on the signing CA")
            .then_some(s.clone())
            .ok_or(s)
    });
    assert!(
        status.contains("CA rotation in progress")
            && status.contains("ready: flotilla-hub ca retire"),
        "{status}"
    );
    for s in &spokes {
        let log = s.proc.log_text();
        assert!(log.contains("the hub asked for a renewal now"), "{log}");
    }
    hub.proc.kill();
    ok(hub_tool(&hub, &["ca", "retire"]));
    hub.restart();
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
}

#[test]
fn ca_renew_asks_every_connected_spoke_to_renew_now() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(tmp.path(), &["--cert-lifetime", "1h"]);
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    wait_until("dev to connect", || {
        let c = hub.json(&["clusters"]);
        (c[0]["connected"] == true)
            .then_some(())
            .ok_or(c.to_string())
    });
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
