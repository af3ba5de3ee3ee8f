//! Issue 6's smoke test: the fleet benchmark at small scale (200 simulated spokes, 5
//! bundles, one single-bundle commit) against the real hub binary. It asserts that
//! everything converges and that the hub's own view agrees, never how long it took.

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
