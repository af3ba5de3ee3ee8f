//! Sources edited in place (`flotilla source set`): an edit that keeps a bundle keeps its
//! deployment (the spoke does not write it again), a revision can be pinned and unpinned,
//! polling can be paused or turned off in favour of webhooks signed with the source's
//! own secret, and `source remove --keep-resources` leaves the objects in place.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use flotilla_e2e::{GitServer, Hub, Spoke, configmap, example_repo, free_port, git, wait_until};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// (inode, mtime in ns) of a file the dir target wrote: every write is a new file
/// renamed into place, so an unchanged pair means the bundle was not applied again.
fn identity(path: &Path) -> (u64, i64) {
    let m = std::fs::metadata(path).expect("the bundle's file exists");
    (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec())
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn source(hub: &Hub) -> serde_json::Value {
    hub.json(&["sources"])[0].clone()
}

fn wait_for_hello(dev: &Spoke, value: &str) {
    wait_until(&format!("hello to carry {value}"), || {
        let text = dev.file("examples-hello").unwrap_or_default();
        text.contains(value).then_some(()).ok_or(text)
    });
}

#[test]
fn an_edit_of_interval_credentials_and_targets_that_keeps_a_bundle_does_not_apply_it_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = GitServer::start(&tmp.path().join("git"));
    let repo = server.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "env=dev");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    let web = dev.target.join("examples-web.yaml");
    let before = identity(&web);

    let refused = hub.cli(&["source", "add", "examples", "--repo", &repo.url]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("flotilla source set examples"), "{err}");

    let password = tmp.path().join("password");
    std::fs::write(&password, "hunter2-token\n").expect("write");
    ok(hub.cli(&[
        "source",
        "set",
        "examples",
        "--interval",
        "2s",
        "--username",
        "bob",
        "--password-file",
        password.to_str().expect("utf-8"),
        "--selector",
        "env in (dev,prod)",
    ]));
    let s = source(&hub);
    assert_eq!(s["interval_seconds"], 2);
    assert_eq!(s["username"], "bob");
    assert_eq!(s["credentials"], serde_json::json!(["password"]));
    assert_eq!(
        s["targets"][0]["clusterSelector"], "env in (dev,prod)",
        "{s}"
    );
    let listed = ok(hub.cli(&["sources", "-o", "json"])) + &ok(hub.cli(&["sources", "-o", "wide"]));
    assert!(!listed.contains("hunter2"), "{listed}");

    // A change to the other bundle, deployed after the edit: by then any re-apply the
    // edit caused would have happened (a spoke works through its stream in order).
    repo.commit_file(
        "hello/configmap.yaml",
        &configmap("hello", "after-edit"),
        "hello",
    );
    wait_for_hello(&dev, "after-edit");
    assert_eq!(identity(&web), before, "examples-web was not applied again");
    let stored = hub.dir.join("credentials/examples/password");
    assert_eq!(
        flotilla_e2e::file_mode(&stored),
        0o600,
        "the password is kept 0600 on the hub"
    );
    let log = hub.proc.log_text();
    assert!(!log.contains("hunter2"), "the password is never logged");
}

#[test]
fn a_pinned_tag_is_deployed_until_the_pin_is_dropped_and_a_paused_source_resumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = GitServer::start(&tmp.path().join("git"));
    let repo = server.repo_from("fleet", &example_repo());
    repo.commit_file("hello/configmap.yaml", &configmap("hello", "v1"), "v1");
    git(&repo.dir, &["tag", "-a", "v1", "-m", "v1"]);
    repo.commit_file("hello/configmap.yaml", &configmap("hello", "v2"), "v2");
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "env=dev");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    wait_for_hello(&dev, "v2");

    ok(hub.cli(&["source", "set", "examples", "--revision", "v1"]));
    wait_for_hello(&dev, "v1");
    assert_eq!(source(&hub)["revision"], "v1");

    let missing = hub.cli(&["source", "set", "examples", "--revision", "v9"]);
    assert!(
        missing.status.success(),
        "the pin is stored; the poll reports it"
    );
    let err = wait_until("the missing tag to be reported", || {
        let e = source(&hub)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (!e.is_empty()).then_some(e.clone()).ok_or(e)
    });
    assert!(err.contains("revision \"v9\" not found"), "{err}");
    assert!(
        dev.file("examples-hello")
            .unwrap_or_default()
            .contains("v1")
    );

    ok(hub.cli(&["source", "set", "examples", "--revision", "", "--paused"]));
    let s = source(&hub);
    assert_eq!(
        (s["paused"].clone(), s["revision"].clone()),
        (true.into(), "".into())
    );
    ok(hub.cli(&["source", "set", "examples", "--resume"]));
    wait_for_hello(&dev, "v2");
}

#[test]
fn a_webhook_only_source_is_fetched_on_a_push_signed_with_its_own_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = GitServer::start(&tmp.path().join("git"));
    let repo = server.repo_from("fleet", &example_repo());
    let http_addr = format!("127.0.0.1:{}", free_port());
    let hub = Hub::start_with(tmp.path(), &["--http-listen", &http_addr]);
    hub.add_source("examples", &repo.url, "env=dev");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);

    let secret = tmp.path().join("hook.secret");
    std::fs::write(&secret, "per-source-s3cret").expect("write");
    ok(hub.cli(&[
        "source",
        "set",
        "examples",
        "--no-poll",
        "--webhook-secret-file",
        secret.to_str().expect("utf-8"),
    ]));
    let s = source(&hub);
    assert_eq!(s["polling_disabled"], true);
    assert_eq!(s["credentials"], serde_json::json!(["webhook-secret"]));
    repo.commit_file(
        "hello/configmap.yaml",
        &configmap("hello", "hooked"),
        "hooked",
    );

    let body = serde_json::json!({"ref": "refs/heads/main", "repository": {"clone_url": repo.url}})
        .to_string();
    let sign = |key: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("key");
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let post = |sig: String| {
        flotilla_e2e::http(
            &http_addr,
            "POST",
            "/webhooks/github",
            &[
                ("X-Hub-Signature-256", sig),
                ("X-GitHub-Event", "push".into()),
            ],
            body.as_bytes(),
        )
    };
    let (status, text) = post(sign("some-other-secret"));
    assert_eq!(status, 401, "{text}");
    let (status, text) = post(sign("per-source-s3cret"));
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("examples"), "{text}");
    wait_for_hello(&dev, "hooked");
}

#[test]
fn removing_a_source_with_keep_resources_leaves_its_objects_in_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = GitServer::start(&tmp.path().join("git"));
    let repo = server.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "env=dev");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);

    ok(hub.cli(&["source", "remove", "examples", "--keep-resources"]));
    wait_until("the bundles to leave the spoke's status", || {
        let rows = hub.status();
        rows.is_empty().then_some(()).ok_or(format!("{rows:?}"))
    });
    wait_until("the spoke to forget both bundles", || {
        let log = dev.proc.log_text();
        (log.matches("kept=true").count() >= 2)
            .then_some(())
            .ok_or(log)
    });
    assert!(dev.file("examples-web").is_some(), "web stays in place");
    assert!(dev.file("examples-hello").is_some(), "hello stays in place");
}
