//! Spoke start-up checks everything local before it registers, and stops with a
//! distinct exit code (docs/operations.md) when the hub refuses it for good.

use std::path::Path;
use std::process::Command;

use flotilla_e2e::{Hub, Proc, Spoke, bin, free_port, wait_until};

/// Runs `flotilla-spoke` with `args` until it exits; returns (exit code, its stderr).
fn spoke_exit(base: &Path, name: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut proc = Proc::spawn(
        Command::new(bin("flotilla-spoke"))
            .args(["--name", name])
            .args(args),
        base.join(format!("spoke-{name}-{}.log", free_port())),
    );
    let code = wait_until("the spoke to exit", || match proc.child.try_wait() {
        Ok(Some(status)) => Ok(status.code()),
        _ => Err(proc.log_text()),
    });
    (code, proc.log_text())
}

/// Waits for `spoke` to exit on its own; returns its exit code.
fn exit_code(spoke: &mut Spoke) -> Option<i32> {
    wait_until("the spoke to exit", || match spoke.proc.child.try_wait() {
        Ok(Some(status)) => Ok(status.code()),
        _ => Err(spoke.proc.log_text()),
    })
}

fn clusters(hub: &Hub) -> usize {
    hub.json(&["clusters"]).as_array().map_or(0, Vec::len)
}

fn token_uses(hub: &Hub) -> u64 {
    hub.json(&["token", "list"])[0]["uses"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

#[test]
fn a_spoke_whose_kubeconfig_is_unusable_registers_no_cluster_and_keeps_its_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let join = hub.token("1h", 1);
    let state = tmp.path().join("state");
    let state = state.to_str().expect("utf-8 path");

    // A kubeconfig naming an API server that is not there.
    let silent = tmp.path().join("silent.kubeconfig");
    std::fs::write(
        &silent,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n",
            free_port()
        ),
    )
    .expect("write kubeconfig");
    let (code, log) = spoke_exit(
        tmp.path(),
        "edge",
        &[
            "--join",
            &join,
            "--target",
            "kubernetes",
            "--kubeconfig",
            silent.to_str().expect("utf-8"),
            "--state-dir",
            state,
        ],
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("does not answer; not registering"), "{log}");

    // A kubeconfig that is not one.
    let garbage = tmp.path().join("garbage.kubeconfig");
    std::fs::write(&garbage, "{{ not yaml").expect("write");
    let (code, log) = spoke_exit(
        tmp.path(),
        "edge",
        &[
            "--join",
            &join,
            "--target",
            "kubernetes",
            "--kubeconfig",
            garbage.to_str().expect("utf-8"),
            "--state-dir",
            state,
        ],
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("garbage.kubeconfig"), "{log}");

    // A directory target that cannot be written.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let (code, log) = spoke_exit(
        tmp.path(),
        "edge",
        &[
            "--join",
            &join,
            "--target",
            &format!("dir:{}/below", file.display()),
            "--state-dir",
            state,
        ],
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("target dir"), "{log}");

    assert_eq!(clusters(&hub), 0, "no phantom cluster");
    assert_eq!(token_uses(&hub), 0, "the join token was not used");
    // The same token still registers a spoke whose target works.
    let _edge = Spoke::start(tmp.path(), &join, "edge", "env=dev");
    wait_until("edge to register", || {
        (clusters(&hub) == 1)
            .then_some(())
            .ok_or("not yet".to_string())
    });
}

#[test]
fn a_revoked_spoke_exits_3_and_a_spoke_whose_token_is_used_up_exits_6() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let join = hub.token("1h", 1);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_connected("dev");
    let out = hub.cli(&["cluster", "revoke", "dev"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = exit_code(&mut dev);
    let log = dev.proc.log_text();
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("error: hub refused the stream"), "{log}");
    assert!(log.contains("has been revoked"), "{log}");

    let mut late = Spoke::start(tmp.path(), &join, "late", "env=dev");
    let code = exit_code(&mut late);
    let log = late.proc.log_text();
    assert_eq!(code, Some(6), "{log}");
    assert!(log.contains("registration refused"), "{log}");
}

#[test]
fn a_refused_spoke_with_on_refusal_retry_stays_up_and_logs_the_refusal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let join = hub.token("1h", 1);
    let mut dev = Spoke::start_with(
        tmp.path(),
        &join,
        "dev",
        "env=dev",
        &["--on-refusal", "retry"],
    );
    hub.wait_connected("dev");
    let out = hub.cli(&["cluster", "revoke", "dev"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the refusal to be logged", || {
        let log = dev.proc.log_text();
        (log.contains("refused by the hub; still enforcing the cached state")
            && log.contains("retry_in_s=600"))
        .then_some(())
        .ok_or(log)
    });
    assert!(
        matches!(dev.proc.child.try_wait(), Ok(None)),
        "still running:\n{}",
        dev.proc.log_text()
    );
}

#[test]
fn a_new_join_string_on_an_enrolled_state_dir_needs_rejoin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let join = hub.token("1h", 1);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_connected("dev");
    dev.proc.kill();

    // The same join string again (FLOTILLA_JOIN left in place) is a plain restart.
    let mut same = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    wait_until("dev to reconnect with its identity", || {
        let log = same.proc.log_text();
        log.contains("sync stream open").then_some(()).ok_or(log)
    });
    assert!(!same.proc.log_text().contains("enrolled with the hub"));
    same.proc.kill();

    // A new one is refused, saying what to do, and uses nothing up.
    let out = hub.cli(&["cluster", "delete", "dev"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_join = hub.token("1h", 1);
    let mut refused = Spoke::start(tmp.path(), &new_join, "dev", "env=dev");
    let code = exit_code(&mut refused);
    let log = refused.proc.log_text();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("another join string") && log.contains("--rejoin"),
        "{log}"
    );
    assert_eq!(clusters(&hub), 0);

    // With --rejoin it registers again, in the same state dir.
    let rejoined = Spoke::start_with(tmp.path(), &new_join, "dev", "env=dev", &["--rejoin"]);
    hub.wait_connected("dev");
    assert!(rejoined.proc.log_text().contains("enrolled with the hub"));
}
