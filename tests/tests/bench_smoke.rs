//! Issue 6's smoke test: the fleet benchmark at small scale (200 simulated spokes, 5
//! bundles, one single-bundle commit) against the real hub binary. It asserts that
//! everything converges and that the hub's own view agrees, never how long it took.
//! Issue 20's HA benchmark likewise, at 30 spokes over 3 replicas on a real etcd.

use std::time::Duration;

use flotilla_bench::fleet::{self, FleetConfig};

#[test]
fn two_hundred_simulated_spokes_converge_on_five_bundles_and_a_one_bundle_commit() {
    let hub = flotilla_e2e::bin("flotilla-hub");
    let mut cfg = FleetConfig::new(200, 5);
    cfg.runs = 1;
    cfg.fanouts = 1;
    cfg.bundle_bytes = 1024;
    cfg.bin_dir = hub.parent().map(|p| p.to_path_buf());
    cfg.phase_timeout = Duration::from_secs(180);
    cfg.idle_settle = Duration::ZERO;
    cfg.verbose = false;
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let runs = rt
        .block_on(fleet::run(&cfg))
        .expect("the fleet scenario converges");
    let run = &runs[0];

    assert_eq!(
        run.failed_spokes, 0,
        "first failure: {:?}",
        run.first_failure
    );
    assert_eq!(
        run.register.connected, 200,
        "the hub sees every spoke connected"
    );
    let initial = run.initial.as_ref().expect("the bundles were rolled out");
    assert_eq!(
        initial.pairs,
        200 * 5,
        "every spoke reported every bundle Ready"
    );
    assert!(
        initial.hub_confirmed.is_some(),
        "the hub agrees they are Ready"
    );
    let fan = run.fanouts.first().expect("the commit fanned out");
    assert_eq!(
        fan.spokes, 200,
        "every spoke reported the new deployment Ready"
    );
    assert!(fan.hub_confirmed.is_some(), "the hub agrees");
    assert!(
        fan.assign_bytes >= fan.min_bytes && fan.min_bytes > 0,
        "every spoke received the changed bundle's content: {} of at least {}",
        fan.assign_bytes,
        fan.min_bytes
    );
}

/// Issue 20's HA benchmark at small scale: 30 simulated spokes over 3 replicas on a
/// 3-member etcd, one single-bundle commit, then the leader killed with a commit made at
/// once. Asserts that everything converges (every spoke, the dead replica's included,
/// is Ready on the commit from a new leader) and that etcd counted the commit's writes.
#[test]
fn thirty_spokes_over_three_replicas_converge_and_survive_the_leaders_death() {
    let Some(etcd) = flotilla_e2e::etcd::etcd() else {
        return;
    };
    let hub = flotilla_e2e::bin("flotilla-hub");
    let mut fleet = FleetConfig::new(30, 1);
    fleet.runs = 1;
    fleet.fanouts = 1;
    fleet.bundle_bytes = 1024;
    fleet.bin_dir = hub.parent().map(|p| p.to_path_buf());
    fleet.phase_timeout = Duration::from_secs(180);
    fleet.idle_settle = Duration::ZERO;
    fleet.verbose = false;
    let cfg = flotilla_bench::ha::HaConfig {
        fleet,
        replicas: 3,
        leader_lease: Duration::from_secs(2),
        etcd: Some(etcd),
        redb: false,
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let r = rt
        .block_on(flotilla_bench::ha::run(&cfg))
        .expect("the HA scenario converges");

    assert_eq!(r.failed_spokes, 0);
    assert_eq!(r.connected, 30, "the leader sees every spoke connected");
    let fan = r.fanouts.first().expect("the commit fanned out");
    assert_eq!(
        fan.fan.spokes, 30,
        "every spoke Ready on the new deployment"
    );
    assert!(
        fan.fan.published.is_some(),
        "the leader published the commit"
    );
    assert!(
        fan.writes.puts >= 30.0,
        "etcd counted at least one write per spoke: {:?}",
        fan.writes
    );
    assert_eq!(
        r.failover.victims, 10,
        "a third of the spokes were on the leader"
    );
    assert!(r.failover.elected.is_some(), "another replica was elected");
    assert!(
        r.failover.published.is_some(),
        "the new leader published the commit made at the kill"
    );
}
