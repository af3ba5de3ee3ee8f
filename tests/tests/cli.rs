//! The `flotilla` CLI against a real hub, as an operator meets it: names that do not
//! exist are errors, output shapes follow kubectl, a stopped hub times out, label removal
//! wins over every origin, `watch` rides out a hub restart, `rollout status --watch`
//! waits for the revision pushed before it started, and the quickstart leaves nothing
//! running behind it.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use flotilla_e2e::{
    GitServer, Hub, Spoke, bin, configmap, copy_dir, example_repo, wait_until, write_file,
};
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A hub with one source (`s`, bundle `s-app`, polled every `interval`) and one spoke
/// `c1` that has it Ready.
fn fleet(base: &Path, interval: &str) -> (Hub, GitServer, flotilla_e2e::Repo, Spoke) {
    let src = base.join("src");
    write_file(&src, "app/fleet.yaml", "defaultNamespace: app\n");
    write_file(&src, "app/cm.yaml", &configmap("app", "v1"));
    let git = GitServer::start(&base.join("git"));
    let repo = git.repo_from("fleet", &src);
    let hub = Hub::start(base);
    let out = hub.cli(&[
        "source",
        "add",
        "s",
        "--repo",
        &repo.url,
        "--path",
        ".",
        "--interval",
        interval,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let join = hub.token("1h", 1);
    let spoke = Spoke::start(base, &join, "c1", "env=dev");
    hub.wait_ready_bundles("c1", &["s-app"]);
    (hub, git, repo, spoke)
}

fn head(repo: &flotilla_e2e::Repo) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&repo.dir)
        .output()
        .expect("git rev-parse");
    stdout(&out).trim().to_string()
}

#[test]
fn names_that_do_not_exist_are_errors_and_output_follows_kubectl() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (hub, _git, _repo, _spoke) = fleet(tmp.path(), "1s");

    for (args, message) in [
        (vec!["clusters", "nope"], r#"cluster "nope" not found"#),
        (vec!["sources", "nope"], r#"source "nope" not found"#),
        (vec!["bundles", "nope"], r#"bundle "nope" not found"#),
        (vec!["groups", "nope"], r#"group "nope" not found"#),
        (vec!["tokens", "nope"], r#"token "nope" not found"#),
        (vec!["token", "list", "nope"], r#"token "nope" not found"#),
        (vec!["status", "nope"], r#"bundle "nope" not found"#),
        (
            vec!["status", "--cluster", "nope"],
            r#"cluster "nope" not found"#,
        ),
    ] {
        let out = hub.cli(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).trim(), format!("error: {message}"), "{args:?}");
        assert!(stdout(&out).is_empty(), "{args:?}: no empty table");
    }

    // One object by name is an object, a list is an array.
    let one = hub.json(&["clusters", "c1"]);
    assert_eq!(one["name"], "c1");
    assert!(hub.json(&["clusters"]).is_array());
    assert_eq!(hub.json(&["bundles", "s-app"])["source"], "s");
    assert_eq!(hub.json(&["sources", "s"])["name"], "s");
    assert_eq!(hub.json(&["groups", "default"])["name"], "default");

    let names = hub.cli(&["clusters", "-o", "name"]);
    assert_eq!(stdout(&names), "cluster/c1\n");
    let names = hub.cli(&["status", "-o", "name"]);
    assert_eq!(stdout(&names), "status/c1/s-app\n");
    let plain = hub.cli(&["bundles", "--no-headers"]);
    let text = stdout(&plain);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("s-app "), "{text}");

    // Confirmations go to stdout as kind/name verb; -o json prints the object instead.
    let out = hub.cli(&["cluster", "label", "c1", "tier=gold"]);
    assert_eq!(stdout(&out), "cluster/c1 labeled\n", "{}", stderr(&out));
    let out = hub.cli(&["cluster", "label", "c1", "tier=silver", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["labels"]["tier"], "silver");
    let out = hub.cli(&["group", "add", "g1", "--selector", "env=dev"]);
    assert_eq!(stdout(&out), "group/g1 added\n");
    let out = hub.cli(&["group", "remove", "g1"]);
    assert_eq!(stdout(&out), "group/g1 removed\n");

    // token create -o json carries the id with the join string.
    let out = hub.cli(&["token", "create", "-o", "json"]);
    let created: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let id = created["id"].as_str().expect("id");
    assert!(created["join"].as_str().is_some_and(|j| j.contains(id)));
    assert_eq!(hub.json(&["tokens", id])["id"], id);

    // `flotilla token list | true`: the reader is gone before the table is written.
    let mut child = Command::new(bin("flotilla"))
        .arg("--config")
        .arg(&hub.config)
        .args(["token", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flotilla");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "quiet: {}", stderr(&out));
}

/// Sends SIGCONT to a stopped process when the test ends, however it ends.
struct Stopped(u32);

impl Stopped {
    fn signal(pid: u32, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        Stopped::signal(self.0, "-CONT");
    }
}

#[test]
fn a_stopped_hub_fails_the_cli_with_a_timeout_instead_of_hanging() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    // Only the hub this test started is stopped.
    let pid = hub.proc.child.id();
    Stopped::signal(pid, "-STOP");
    let _cont = Stopped(pid);
    for args in [vec!["clusters"], vec!["token", "list"]] {
        let mut all = vec!["--request-timeout", "1s"];
        all.extend(args.iter());
        let out = hub.cli(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with("error: ") && err.contains("no answer within 1s (--request-timeout)"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn removing_a_label_hides_it_whatever_set_it_and_survives_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut hub = Hub::start(tmp.path());
    // `tier` comes from the token, `env` from the spoke (a key its token lets it set).
    let join = hub.token_with(
        "1h",
        1,
        &["--labels", "tier=gold", "--allow-spoke-labels", "env"],
    );
    let _spoke = Spoke::start(tmp.path(), &join, "c1", "env=dev");
    wait_until("c1 to register", || {
        let v = hub.json(&["clusters"]);
        (v[0]["connected"] == true)
            .then_some(())
            .ok_or(v.to_string())
    });
    let c1 = hub.json(&["clusters", "c1"]);
    assert_eq!(c1["label_origins"]["tier"], "token", "{c1}");
    assert_eq!(c1["label_origins"]["env"], "spoke", "{c1}");

    let out = hub.cli(&["cluster", "label", "c1", "tier-", "env-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let check = |hub: &Hub| {
        let c1 = hub.json(&["clusters", "c1"]);
        assert!(c1["labels"].get("tier").is_none(), "{c1}");
        assert!(c1["labels"].get("env").is_none(), "{c1}");
        assert_eq!(
            c1["removed_labels"],
            serde_json::json!(["env", "tier"]),
            "{c1}"
        );
    };
    check(&hub);
    // The spoke reconnects and reports env=dev again; the tombstone still wins.
    hub.restart();
    wait_until("c1 to reconnect", || {
        let v = hub.json(&["clusters", "c1"]);
        (v["connected"] == true).then_some(()).ok_or(v.to_string())
    });
    check(&hub);
    // Setting the key again brings it back, from the hub.
    let out = hub.cli(&["cluster", "label", "c1", "tier=silver"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c1 = hub.json(&["clusters", "c1"]);
    assert_eq!(c1["labels"]["tier"], "silver");
    assert_eq!(c1["label_origins"]["tier"], "hub");

    let out = hub.cli(&["cluster", "label", "c1", "bad key=v"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid label") && !stderr(&out).contains("selector"),
        "{}",
        stderr(&out)
    );
}

/// `flotilla ARGS` in the background, stdout and stderr into files under `dir`.
fn background(hub: &Hub, dir: &Path, args: &[&str]) -> Child {
    let file = |name: &str| std::fs::File::create(dir.join(name)).expect("output file");
    Command::new(bin("flotilla"))
        .arg("--config")
        .arg(&hub.config)
        .args(args)
        .stdout(file("out"))
        .stderr(file("err"))
        .spawn()
        .expect("run flotilla")
}

#[test]
fn watch_reconnects_across_a_hub_restart_and_shows_the_new_revision() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut hub, _git, repo, _spoke) = fleet(tmp.path(), "1s");
    let logs = tmp.path().join("watch");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let mut watch = background(&hub, &logs, &["watch", "-o", "json"]);
    let frames = || -> Vec<Value> {
        std::fs::read_to_string(logs.join("out"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    wait_until("a first frame", || {
        (!frames().is_empty())
            .then_some(())
            .ok_or_else(|| "no frame yet".to_string())
    });

    hub.restart();
    repo.commit_file("app/cm.yaml", &configmap("app", "v2"), "v2");
    let commit = head(&repo);
    wait_until("a frame with the new revision Ready", || {
        let last = frames().pop().unwrap_or_default();
        let b = &last["bundles"][0];
        (b["commit"] == commit.as_str() && b["state"] == "Ready")
            .then_some(())
            .ok_or(last.to_string())
    });
    let err = std::fs::read_to_string(logs.join("err")).unwrap_or_default();
    assert!(err.contains("reconnecting"), "{err}");
    assert!(
        watch.try_wait().expect("wait").is_none(),
        "watch is still running: {err}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn rollout_status_waits_for_the_revision_pushed_before_it_started() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A slow poll: the hub certainly has not seen the push when the command starts.
    let (hub, _git, repo, spoke) = fleet(tmp.path(), "3s");
    repo.commit_file("app/cm.yaml", &configmap("app", "v2"), "v2");
    let commit = head(&repo);
    let out = hub.cli(&["rollout", "status", "s-app", "--watch", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("s-app @ {}: Done", &commit[..8])),
        "{text}"
    );
    // Done means done: the spoke already has v2.
    let file = spoke.file("s-app").unwrap_or_default();
    assert!(file.contains("v2"), "{file}");

    // --revision names a commit that never comes: the timeout lists nothing pending
    // but says which revision it waited for.
    let out = hub.cli(&[
        "rollout",
        "status",
        "s-app",
        "--watch",
        "--revision",
        "deadbeef",
        "--timeout",
        "2s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("at deadbeef not done"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn watch_until_ready_times_out_naming_what_is_not_ready_and_why() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (hub, _git, repo, spoke) = fleet(tmp.path(), "1s");
    // A folder squats on the manifest file, so the next apply fails.
    let squat = spoke.target.join("s-app.yaml");
    std::fs::remove_file(&squat).expect("remove");
    std::fs::create_dir_all(squat.join("blocker")).expect("squat");
    repo.commit_file("app/cm.yaml", &configmap("app", "v2"), "v2");
    wait_until("c1 to fail the apply", || {
        let rows = hub.status();
        rows.iter()
            .any(|(_, _, s)| s != "Ready")
            .then_some(())
            .ok_or(format!("{rows:?}"))
    });
    let out = hub.cli(&["watch", "--until-ready", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("not Ready:\n  c1/s-app: "), "{err}");
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.starts_with("error: not every bundle is Ready")),
        "{err}"
    );
}

/// Processes whose command line mentions `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .filter(|c| c.contains(&needle))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn quickstart_stops_everything_it_started_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("qs");
    let out_path = tmp.path().join("out");
    let mut qs = Command::new(bin("flotilla"))
        .args(["quickstart", "--timeout", "120s", "--dir"])
        .arg(&dir)
        .stdout(std::fs::File::create(&out_path).expect("out"))
        .stderr(Stdio::null())
        .spawn()
        .expect("run quickstart");
    wait_until("the quickstart to be watching", || {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        text.contains("watching status").then_some(()).ok_or(text)
    });
    assert!(!processes_under(&dir).is_empty(), "hub and spokes run");
    Stopped::signal(qs.id(), "-TERM");
    let status = qs.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    let left = processes_under(&dir);
    assert!(left.is_empty(), "still running: {left:#?}");
}

#[test]
fn quickstart_exit_when_ready_names_only_what_outlives_it_and_a_broken_repo_fails_fast() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("qs");
    let out = Command::new(bin("flotilla"))
        .args(["quickstart", "--exit-when-ready", "--dir"])
        .arg(&dir)
        .output()
        .expect("run quickstart");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains("flotilla --config"),
        "no command for a stopped hub: {text}"
    );
    assert!(text.contains("have stopped"), "{text}");
    assert!(processes_under(&dir).is_empty());

    // A broken bundle fails at once with its error, not after the (long) timeout.
    let broken = tmp.path().join("broken");
    copy_dir(&example_repo(), &broken);
    write_file(
        &broken,
        "web/bad.yaml",
        "kind: ConfigMap\nmetadata: [oops\n",
    );
    let dir = tmp.path().join("qs-broken");
    let out = Command::new(bin("flotilla"))
        .args([
            "quickstart",
            "--exit-when-ready",
            "--timeout",
            "1h",
            "--dir",
        ])
        .arg(&dir)
        .arg("--examples")
        .arg(&broken)
        .output()
        .expect("run quickstart");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is broken") && err.contains("bad.yaml"),
        "{err}"
    );
    assert!(processes_under(&dir).is_empty());
}
