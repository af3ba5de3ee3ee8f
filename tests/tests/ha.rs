//! Hub replicas on etcd under faults (issue 20), with real processes on loopback: a
//! 3-member etcd cluster, hub replicas that share one data dir's PKI (`flotilla-hub init
//! --advertise A1,A2,A3 --store etcd://…`, copied), and directory-target spokes spread
//! over the replicas by their names (`spoke/src/dial.rs`).
//!
//! Which replica leads is read from its log ("elected leader"; `flotilla_hub_leader` on
//! `/metrics` says the same, but these hubs serve no HTTP).

use std::time::{Duration, Instant};

use flotilla_e2e::etcd::EtcdCluster;
use flotilla_e2e::{GitServer, Hub, Spoke, configmap, example_repo, wait_until, wait_until_within};
use sha2::{Digest, Sha256};

/// The replicas' `--leader-lease`: short, so a test waits little for a dead leader's
/// lease to expire.
const LEASE: Duration = Duration::from_secs(4);
/// What a busy CI machine adds to a bound the issue sets (a process start, a dial).
const SLACK: Duration = Duration::from_secs(10);
const BUNDLES: [&str; 2] = ["examples-hello", "examples-web"];

/// A cluster name whose spoke dials replica `i` of `n` first.
fn name_for(i: usize, n: usize) -> String {
    (0..)
        .map(|k| format!("edge-{i}-{k}"))
        .find(|name| usize::from(Sha256::digest(name.as_bytes())[0]) % n == i)
        .expect("some name hashes to each replica")
}

/// The replica among `alive` that leads now, by its log.
fn leader_among(hubs: &[Hub], alive: &[usize]) -> Result<usize, String> {
    let leading: Vec<usize> = alive
        .iter()
        .copied()
        .filter(|&i| {
            let log = hubs[i].proc.log_text();
            let elected = log.rfind("elected leader");
            elected.is_some() && elected > log.rfind("lost the etcd lease")
        })
        .collect();
    match leading[..] {
        [one] => Ok(one),
        _ => Err(format!("replicas leading: {leading:?}")),
    }
}

/// Waits until `hub` shows `cluster` connected (to whichever replica) with `BUNDLES`
/// Ready, within `bound` of `since`.
fn wait_ready_within(hub: &Hub, cluster: &str, since: Instant, bound: Duration) {
    let left = bound.saturating_sub(since.elapsed());
    wait_until_within(
        left,
        &format!("{cluster} Ready through {}", hub.addr),
        || {
            let rows: Vec<_> = hub
                .status()
                .into_iter()
                .filter(|(c, _, _)| c == cluster)
                .collect();
            let ready = rows.len() == BUNDLES.len() && rows.iter().all(|(_, _, s)| s == "Ready");
            ready.then_some(()).ok_or(format!("{rows:?}"))
        },
    );
}

/// Waits until every spoke's `examples-hello` holds `value`.
fn wait_content(spokes: &[Spoke], value: &str) {
    for s in spokes {
        wait_until(&format!("{} to have hello={value}", s.name), || {
            let text = s.file("examples-hello").unwrap_or_default();
            text.contains(value).then_some(()).ok_or(text)
        });
    }
}

/// Ok when `hub`'s history has a Ready deployment of each of `BUNDLES` on 3 clusters,
/// and its audit trail the source, the token and 3 registrations.
fn fleet_records(hub: &Hub) -> Result<(), String> {
    let history = hub.json(&["history"]);
    let mut ready: Vec<(String, String)> = history
        .as_array()
        .ok_or("history is not an array")?
        .iter()
        .filter(|r| r["kind"] == "Deployment" && !r["ready"].as_str().unwrap_or("").is_empty())
        .map(|r| (r["cluster"].to_string(), r["bundle"].to_string()))
        .collect();
    ready.sort();
    ready.dedup();
    let audit = hub.json(&["audit"]);
    let methods: Vec<&str> = audit
        .as_array()
        .ok_or("audit is not an array")?
        .iter()
        .filter(|r| r["result"] == "Ok")
        .filter_map(|r| r["method"].as_str())
        .collect();
    let count = |m: &str| methods.iter().filter(|x| **x == m).count();
    let got = (
        ready.len(),
        count("Admin/AddSource"),
        count("Admin/CreateToken"),
        count("Registration/Register"),
    );
    (got == (3 * BUNDLES.len(), 1, 1, 3))
        .then_some(())
        .ok_or(format!(
            "(ready pairs, sources, tokens, registrations) = {got:?}"
        ))
}

#[test]
fn killing_the_leader_during_a_fan_out_and_then_a_replica_with_spokes_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(etcd) = EtcdCluster::start(&tmp.path().join("etcd"), 3) else {
        return;
    };
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let lease = format!("{}s", LEASE.as_secs());
    let mut hubs = Hub::start_replicas(tmp.path(), 3, &etcd.url(), &["--leader-lease", &lease]);
    let leader = wait_until("a leader", || leader_among(&hubs, &[0, 1, 2]));

    // A source added through a replica that follows (the leader picks it up from the
    // store); one spoke per replica.
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    hubs[follower].add_source("examples", &repo.url, "");
    let join = hubs[follower].token("1h", 3);
    let spokes: Vec<Spoke> = (0..3)
        .map(|i| Spoke::start(tmp.path(), &join, &name_for(i, 3), "env=dev"))
        .collect();
    // Every replica shows every spoke Ready, whichever replica serves it.
    for hub in &hubs {
        for s in &spokes {
            hub.wait_ready_bundles(&s.name, &BUNDLES);
        }
    }
    // Every replica answers for the fleet's history and audit trail, whichever replica
    // recorded them: each pair's deployment Ready (reported to the replica serving its
    // spoke, onto the entry the leader made), and the follower's admin calls and each
    // replica's registrations, none overwritten by another replica's.
    for hub in &hubs {
        wait_until(&format!("history and audit on {}", hub.addr), || {
            fleet_records(hub)
        });
    }

    // A commit, and the leader killed (-9) as it fans it out.
    repo.commit_file("hello/configmap.yaml", &configmap("hello", "v2"), "v2");
    let killed = Instant::now();
    hubs[leader].proc.kill();
    let alive: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = wait_until_within(LEASE + SLACK, "a new leader", || {
        leader_among(&hubs, &alive)
    });
    // The killed leader's spoke is Ready on another replica within 10 s.
    wait_ready_within(
        &hubs[new_leader],
        &spokes[leader].name,
        killed,
        Duration::from_secs(10) + SLACK,
    );
    wait_content(&spokes, "v2");

    // Now a replica that follows, with its spoke attached.
    let follower = alive
        .iter()
        .copied()
        .find(|&i| i != new_leader)
        .expect("two replicas are left");
    let killed = Instant::now();
    hubs[follower].proc.kill();
    for s in &spokes {
        wait_ready_within(
            &hubs[new_leader],
            &s.name,
            killed,
            Duration::from_secs(10) + SLACK,
        );
    }
    repo.commit_file("hello/configmap.yaml", &configmap("hello", "v3"), "v3");
    wait_content(&spokes, "v3");

    // The first leader comes back as a follower and serves its spokes' view again.
    hubs[leader].restart();
    for s in &spokes {
        hubs[leader].wait_ready_bundles(&s.name, &BUNDLES);
    }
    assert_eq!(
        leader_among(&hubs, &[leader, new_leader]),
        Ok(new_leader),
        "the lead stays where it is"
    );
}

#[test]
fn the_hub_rides_out_a_lost_etcd_member_and_a_lost_quorum() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(mut etcd) = EtcdCluster::start(&tmp.path().join("etcd"), 3) else {
        return;
    };
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let lease = format!("{}s", LEASE.as_secs());
    let hubs = Hub::start_replicas(tmp.path(), 2, &etcd.url(), &["--leader-lease", &lease]);
    hubs[0].add_source("examples", &repo.url, "");
    let join = hubs[0].token("1h", 2);
    let spokes: Vec<Spoke> = (0..2)
        .map(|i| Spoke::start(tmp.path(), &join, &name_for(i, 2), "env=dev"))
        .collect();
    for s in &spokes {
        hubs[0].wait_ready_bundles(&s.name, &BUNDLES);
    }

    // One member down: the hub keeps working.
    etcd.stop(0);
    repo.commit_file("hello/configmap.yaml", &configmap("hello", "v2"), "v2");
    wait_content(&spokes, "v2");
    hubs[1].token("1h", 1);

    // Quorum lost: what the hub has is still served, changes are refused, clearly.
    etcd.stop(1);
    let refused = hubs[0].cli(&["token", "create", "--ttl", "1h"]);
    assert!(!refused.status.success(), "a change without quorum fails");
    // Every member unreachable, or the one reached refusing for want of quorum: either
    // way the error names the operation and etcd's reason.
    let error = String::from_utf8_lossy(&refused.stderr);
    let reason = error
        .split_once("state store (etcd) committing a transaction: ")
        .map(|(_, r)| r.trim());
    assert!(reason.is_some_and(|r| !r.is_empty()), "{error}");
    for s in &spokes {
        hubs[0].wait_ready_bundles(&s.name, &BUNDLES);
        assert!(s.file("examples-hello").is_some_and(|t| t.contains("v2")));
    }

    // Quorum back: changes go through again, and commits reach the spokes.
    etcd.restart(0);
    etcd.restart(1);
    etcd.wait_healthy(0);
    etcd.wait_healthy(1);
    wait_until("a change to be accepted again", || {
        let out = hubs[0].cli(&["token", "create", "--ttl", "1h"]);
        out.status
            .success()
            .then_some(())
            .ok_or(String::from_utf8_lossy(&out.stderr).to_string())
    });
    repo.commit_file("hello/configmap.yaml", &configmap("hello", "v3"), "v3");
    wait_content(&spokes, "v3");
}
