//! The real hub on etcd (`--store etcd://...`, issue 20): init writes its default group
//! there, the hub serves a spoke from it, and after a SIGKILL and a restart everything it
//! acknowledged is read back from etcd, with no `state.redb` in the data dir.

use flotilla_e2e::etcd::EtcdServer;
use flotilla_e2e::{GitServer, Hub, Spoke, example_repo, wait_until};

#[test]
fn a_hub_on_etcd_keeps_its_fleet_across_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(etcd) = EtcdServer::start(&tmp.path().join("etcd")) else {
        return;
    };
    let store = format!("etcd://{}", etcd.endpoint);
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let mut hub = Hub::start_with_init(tmp.path(), &["--store", &store], &["--store", &store]);
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let _dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    assert!(
        !hub.dir.join("state.redb").exists(),
        "the hub's state is in etcd, not in a file"
    );

    hub.restart();
    // Restored from etcd: the cluster, the source, the default group that init wrote,
    // and the spoke, which reconnects to the same identity.
    wait_until("dev to be known and connected again", || {
        let c = hub.json(&["clusters"]);
        let ok = c
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["name"] == "dev" && a[0]["connected"] == true);
        ok.then_some(()).ok_or(c.to_string())
    });
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    assert_eq!(hub.json(&["sources", "examples"])["name"], "examples");
    assert_eq!(hub.json(&["groups", "default"])["name"], "default");
}
