//! Webhooks (GitHub, GitLab, Gitea; valid and invalid signatures) and Prometheus metrics,
//! including the content-addressed promise: a reconnecting spoke gets zero content bytes.

use std::net::TcpStream;

use flotilla_e2e::{GitServer, Hub, Spoke, example_repo, free_port, http, wait_until};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET: &str = "webhook-s3cret";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn metric(addr: &str, name: &str) -> f64 {
    let (status, text) = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

fn start_hub(tmp: &std::path::Path) -> (Hub, String) {
    let secret_file = tmp.join("webhook.secret");
    std::fs::write(&secret_file, SECRET).expect("write secret");
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let http_addr = format!("127.0.0.1:{}", free_port());
    let hub = Hub::start_with(
        tmp,
        &[
            "--http-listen",
            &http_addr,
            "--webhook-secret-file",
            secret_file.to_str().expect("utf-8 path"),
        ],
    );
    wait_until("the HTTP listener", || {
        TcpStream::connect(&http_addr)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    (hub, http_addr)
}

#[test]
fn signed_push_webhooks_trigger_a_poll_and_bad_signatures_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let (hub, http_addr) = start_hub(tmp.path());
    // Poll once an hour: only a webhook can bring the next commit in quickly.
    let out = hub.cli(&[
        "source",
        "add",
        "examples",
        "--repo",
        &repo.url,
        "--path",
        ".",
        "--interval",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);

    let clone_url = format!("http://127.0.0.1/{}.git", "fleet");
    let github =
        serde_json::json!({"ref": "refs/heads/main", "repository": {"clone_url": clone_url}})
            .to_string();
    let gitlab =
        serde_json::json!({"ref": "refs/heads/main", "project": {"git_http_url": clone_url}})
            .to_string();

    // Refusals first: nothing may be triggered by them.
    let bad = [
        (
            "/webhooks/github",
            vec![
                ("X-Hub-Signature-256", "sha256=00".to_string()),
                ("X-GitHub-Event", "push".into()),
            ],
            github.clone(),
        ),
        ("/webhooks/github", vec![], github.clone()),
        (
            "/webhooks/gitea",
            vec![("X-Gitea-Signature", sign(b"other body"))],
            github.clone(),
        ),
        (
            "/webhooks/gitlab",
            vec![("X-Gitlab-Token", "wrong".to_string())],
            gitlab.clone(),
        ),
    ];
    for (path, headers, body) in &bad {
        let (status, text) = http(&http_addr, "POST", path, headers, body.as_bytes());
        assert_eq!(status, 401, "{path}: {text}");
        assert!(!text.contains(SECRET));
    }
    let (status, _) = http(&http_addr, "POST", "/webhooks/bitbucket", &[], b"{}");
    assert_eq!(status, 404);
    assert_eq!(
        metric(&http_addr, "flotilla_hub_webhooks_rejected_total"),
        5.0
    );

    for (round, (path, headers, body)) in [
        (
            "/webhooks/github",
            vec![
                (
                    "X-Hub-Signature-256",
                    format!("sha256={}", sign(github.as_bytes())),
                ),
                ("X-GitHub-Event", "push".to_string()),
            ],
            github.clone(),
        ),
        (
            "/webhooks/gitea",
            vec![("X-Gitea-Signature", sign(github.as_bytes()))],
            github.clone(),
        ),
        (
            "/webhooks/gitlab",
            vec![("X-Gitlab-Token", SECRET.to_string())],
            gitlab.clone(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let greeting = format!("hello round {round}");
        repo.commit_file(
            "hello/configmap.yaml",
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\ndata:\n  greeting: \"{greeting}\"\n"),
            "change greeting",
        );
        let (status, text) = http(&http_addr, "POST", path, &headers, body.as_bytes());
        assert_eq!(status, 202, "{path}: {text}");
        assert!(
            text.contains("\"examples\""),
            "{path} triggers the source: {text}"
        );
        wait_until(&format!("{path} to bring the commit to dev"), || {
            dev.file("examples-hello")
                .filter(|f| f.contains(&greeting))
                .ok_or_else(|| "old content".to_string())
        });
    }
    assert_eq!(
        metric(&http_addr, "flotilla_hub_webhooks_accepted_total"),
        3.0
    );
}

#[test]
fn metrics_count_fan_out_and_a_reconnect_sends_no_content_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let (hub, http_addr) = start_hub(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    wait_until("fan-out latency to be observed", || {
        let n = metric(&http_addr, "flotilla_hub_fanout_seconds_count");
        (n >= 2.0).then_some(()).ok_or(format!("{n}"))
    });
    let bytes = metric(&http_addr, "flotilla_hub_assign_content_bytes_total");
    let assigns = metric(&http_addr, "flotilla_hub_assigns_sent_total");
    assert!(bytes > 0.0 && assigns == 2.0, "{bytes} {assigns}");
    assert_eq!(metric(&http_addr, "flotilla_hub_connected_spokes"), 1.0);
    assert!(metric(&http_addr, "flotilla_hub_git_poll_seconds_count") >= 1.0);

    dev.proc.kill();
    wait_until("dev to drop", || {
        let n = metric(&http_addr, "flotilla_hub_connected_spokes");
        (n == 0.0).then_some(()).ok_or(format!("{n}"))
    });
    let _dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    wait_until("dev to reconnect", || {
        let n = metric(&http_addr, "flotilla_hub_connected_spokes");
        (n == 1.0).then_some(()).ok_or(format!("{n}"))
    });
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    assert_eq!(
        metric(&http_addr, "flotilla_hub_assign_content_bytes_total"),
        bytes,
        "an unchanged spoke receives zero content bytes on reconnect"
    );
    assert_eq!(
        metric(&http_addr, "flotilla_hub_assigns_sent_total"),
        assigns
    );
}

#[test]
fn spoke_metrics_count_applies_drift_and_reconnects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let mut hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let dev = Spoke::start_with(
        tmp.path(),
        &join,
        "dev",
        "env=dev",
        &["--metrics-listen", &metrics_addr],
    );
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    wait_until("the spoke's metrics listener", || {
        TcpStream::connect(&metrics_addr)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    assert_eq!(
        metric(&metrics_addr, "flotilla_spoke_apply_seconds_count"),
        2.0
    );
    assert_eq!(
        metric(&metrics_addr, "flotilla_spoke_reconnects_total"),
        0.0
    );

    // Drift (the example bundles do not correct it): the file is changed by hand.
    std::fs::write(dev.target.join("examples-hello.yaml"), "edited by hand\n").expect("tamper");
    wait_until("the drift to be counted", || {
        let n = metric(&metrics_addr, "flotilla_spoke_drift_events_total");
        (n >= 1.0).then_some(()).ok_or(format!("{n}"))
    });
    hub.restart();
    wait_until("a reconnect to be counted", || {
        let n = metric(&metrics_addr, "flotilla_spoke_reconnects_total");
        (n >= 1.0).then_some(()).ok_or(format!("{n}"))
    });
    let (_, text) = http(&metrics_addr, "GET", "/metrics", &[], b"");
    assert!(
        text.contains("flotilla_spoke_bundles{state=\"Modified\"} 1"),
        "{text}"
    );
}

#[test]
fn content_of_replaced_revisions_is_collected_in_memory_and_in_the_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let (mut hub, http_addr) = start_hub(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    assert_eq!(metric(&http_addr, "flotilla_hub_rendered_contents"), 2.0);

    for v in ["v1", "v2", "v3", "v4"] {
        repo.commit_file(
            "hello/configmap.yaml",
            &flotilla_e2e::configmap("hello", v),
            v,
        );
        wait_until(&format!("dev to get hello {v}"), || {
            let f = dev.file("examples-hello").unwrap_or_default();
            f.contains(v).then_some(()).ok_or(f)
        });
    }
    // Live: hello v4 and web. A replaced render goes on the second GC pass after it
    // lost its last reference, so at most one more (v3) may still be held.
    let held = || metric(&http_addr, "flotilla_hub_rendered_contents");
    wait_until("replaced renders to be collected", || {
        let n = held();
        (n <= 3.0).then_some(()).ok_or(format!("{n} contents held"))
    });
    assert!(held() >= 2.0, "live content was collected: {}", held());

    // After a restart (loading from the store) live content still deploys, and what the
    // store held is collected the same way.
    hub.restart();
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    repo.commit_file(
        "hello/configmap.yaml",
        &flotilla_e2e::configmap("hello", "v5"),
        "v5",
    );
    wait_until("dev to get hello v5", || {
        let f = dev.file("examples-hello").unwrap_or_default();
        f.contains("v5").then_some(()).ok_or(f)
    });
    wait_until("renders to be collected after the restart", || {
        let n = held();
        (n <= 3.0).then_some(()).ok_or(format!("{n} contents held"))
    });
    assert!(held() >= 2.0, "live content was collected: {}", held());
}
