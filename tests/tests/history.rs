//! The hub's memory of the fleet, end to end with a real hub and spokes: deployment
//! history (`flotilla history`, `flotilla where`) across commits, a failure and a hub
//! restart, retention by count; and the audit trail (`flotilla audit`, `--audit-log`),
//! which records every mutating call, refusals included, and which a viewer can read
//! but not alter.

use std::process::Command;

use flotilla_e2e::{GitServer, Hub, Spoke, cli_as, configmap, wait_until, write_file};
use serde_json::Value;

/// Clusters labelled env=next get the `next` overlay; commits that change only the
/// overlay change only their deployments.
const FLEET_YAML: &str = "targetCustomizations:
  - name: next
    clusterSelector:
      matchLabels:
        env: next
    yaml:
      overlays:
        - next
";

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().expect("the CLI prints an array")
}

fn head(repo: &std::path::Path) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo)
        .output()
        .expect("git rev-parse");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// (cluster, verdict) of `flotilla where COMMIT`, sorted; the CLI's error when it fails
/// (no deployment at that commit yet).
fn try_verdicts(hub: &Hub, commit: &str) -> Result<Vec<(String, String)>, String> {
    let out = hub.cli(&["where", commit, "-o", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let mut out: Vec<(String, String)> = rows(&v)
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("cluster"), s("verdict"))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn verdicts(hub: &Hub, commit: &str) -> Vec<(String, String)> {
    try_verdicts(hub, commit).unwrap_or_else(|e| panic!("flotilla where {commit}: {e}"))
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn history_answers_where_a_commit_runs_across_a_failure_a_restart_and_retention() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write_file(&src, "app/fleet.yaml", FLEET_YAML);
    write_file(&src, "app/cm.yaml", &configmap("app", "stable-1"));
    write_file(
        &src,
        "app/overlays/next/cm.yaml",
        &configmap("app", "next-1"),
    );
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &src);
    let mut hub = Hub::start_with(tmp.path(), &["--history-max-per-bundle", "2"]);
    hub.add_source("s", &repo.url, "");
    let join = hub.token("1h", 3);
    let _p1 = Spoke::start(tmp.path(), &join, "p1", "env=prod");
    let n1 = Spoke::start(tmp.path(), &join, "n1", "env=next");
    let n2 = Spoke::start(tmp.path(), &join, "n2", "env=next");
    for c in ["p1", "n1", "n2"] {
        hub.wait_ready_bundles(c, &["s-app"]);
    }
    let commit_a = head(&repo.dir);

    // Commit B changes only the next overlay, and n2 cannot apply it: a folder squats
    // on its manifest file.
    let squat = n2.target.join("s-app.yaml");
    std::fs::remove_file(&squat).expect("remove");
    std::fs::create_dir_all(squat.join("blocker")).expect("squat");
    repo.commit_file(
        "app/overlays/next/cm.yaml",
        &configmap("app", "next-2"),
        "B",
    );
    let commit_b = head(&repo.dir);
    assert_ne!(commit_a, commit_b);
    let want_b = pairs(&[("n1", "Running"), ("n2", "Failed"), ("p1", "Older")]);
    wait_until("where B: n1 runs it, n2 failed, p1 is older", || {
        let got = try_verdicts(&hub, &commit_b)?;
        (got == want_b).then_some(()).ok_or(format!("{got:?}"))
    });
    assert!(n1.file("s-app").unwrap_or_default().contains("next-2"));

    let at_a = hub.json(&["history", "--commit", &commit_a]);
    let mut clusters: Vec<&str> = rows(&at_a)
        .iter()
        .map(|r| r["cluster"].as_str().unwrap_or_default())
        .collect();
    clusters.sort();
    assert_eq!(clusters, vec!["n1", "n2", "p1"], "{at_a}");
    assert!(
        rows(&at_a)
            .iter()
            .all(|r| r["kind"] == "Deployment"
                && !r["ready"].as_str().unwrap_or_default().is_empty()),
        "every deployment of A became Ready: {at_a}"
    );
    let want_a = pairs(&[("n1", "Newer"), ("n2", "Newer"), ("p1", "Running")]);
    assert_eq!(verdicts(&hub, &commit_a[..8]), want_a);
    let n2_rows = hub.json(&["history", "--cluster", "n2", "--bundle", "s-app"]);
    let failed = rows(&n2_rows).last().cloned().expect("n2 has history");
    assert_eq!(failed["commit"], commit_b.as_str());
    assert!(
        !failed["failure"].as_str().unwrap_or_default().is_empty(),
        "the failure says why: {failed}"
    );
    let table = hub.cli(&["history", "--cluster", "n2"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("Failed: ") && text.contains("OUTCOME"),
        "{text}"
    );

    // The history is on disk: a SIGKILLed hub comes back with all of it.
    hub.restart();
    assert_eq!(verdicts(&hub, &commit_b), want_b);
    assert_eq!(hub.json(&["history", "--commit", &commit_a]), at_a);

    // Retention: at most two entries per cluster and bundle; a third deployment on n1
    // drops its oldest (A's).
    repo.commit_file(
        "app/overlays/next/cm.yaml",
        &configmap("app", "next-3"),
        "C",
    );
    let commit_c = head(&repo.dir);
    let n1_commits = wait_until("n1 to get C with two entries kept", || {
        let v = hub.json(&["history", "--cluster", "n1", "--bundle", "s-app"]);
        let commits: Vec<String> = rows(&v)
            .iter()
            .map(|r| r["commit"].as_str().unwrap_or_default().to_string())
            .collect();
        // The pair is pruned just after C's entry lands: wait for both.
        (commits.last() == Some(&commit_c) && commits.len() <= 2)
            .then_some(commits.clone())
            .ok_or(v.to_string())
    });
    assert_eq!(n1_commits, vec![commit_b.clone(), commit_c.clone()]);
    let at_a = hub.json(&["history", "--commit", &commit_a]);
    let clusters: Vec<&str> = rows(&at_a)
        .iter()
        .map(|r| r["cluster"].as_str().unwrap_or_default())
        .collect();
    assert!(!clusters.contains(&"n1"), "n1's A entry is gone: {at_a}");
    assert!(
        clusters.contains(&"p1"),
        "p1 keeps A, its only deployment: {at_a}"
    );

    // A fleet-wide answer comes in pages: `--limit` cuts it, stderr says how to go on,
    // and the pages add up to the whole, once each.
    let whole = hub.json(&["history"]);
    let mut paged: Vec<Value> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut args = vec!["history", "--limit", "2", "-o", "json"];
        if let Some(t) = &token {
            args.extend(["--continue", t.as_str()]);
        }
        let out = hub.cli(&args);
        assert!(out.status.success(), "{out:?}");
        let page: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert!(rows(&page).len() <= 2, "{page}");
        paged.extend(rows(&page).iter().cloned());
        let err = String::from_utf8_lossy(&out.stderr);
        match err.split("--continue ").nth(1) {
            Some(rest) => token = Some(rest.trim_end().trim_end_matches(')').to_string()),
            None => break,
        }
    }
    let key = |r: &Value| r.to_string();
    let mut whole_rows = rows(&whole).clone();
    whole_rows.sort_by_key(key);
    paged.sort_by_key(key);
    assert_eq!(
        paged, whole_rows,
        "pages of two add up to the whole, once each"
    );
    assert!(rows(&whole).len() > 2, "the paging was exercised: {whole}");
}

/// The Admin and Registration methods that only read. Every other method of the two
/// services must leave an audit record; a method added to the proto fails this test
/// until it is classified here.
const READS: &[&str] = &[
    "ListClusters",
    "ListSources",
    "ListBundles",
    "GetStatus",
    "ListTokens",
    "ListGroups",
    "Targets",
    "Watch",
    "RolloutStatus",
    "CaStatus",
    "History",
    "Where",
    "Audit",
];

/// `Service/Method` of every mutating method of Admin and Registration, from the
/// proto's own descriptor.
fn mutating_methods() -> Vec<String> {
    use prost::Message;
    let fds = prost_types::FileDescriptorSet::decode(flotilla_proto::v1::FILE_DESCRIPTOR_SET)
        .expect("the proto descriptor decodes");
    let mut out = Vec::new();
    for file in fds.file {
        for service in file.service {
            let s = service.name();
            if s != "Admin" && s != "Registration" {
                continue;
            }
            for m in &service.method {
                if !READS.contains(&m.name()) {
                    out.push(format!("{s}/{}", m.name()));
                }
            }
        }
    }
    out
}

fn audit_records(config: &std::path::Path) -> Vec<Value> {
    let out = cli_as(config, &["audit", "-o", "json"]);
    assert!(
        out.status.success(),
        "flotilla audit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    rows(&v).clone()
}

#[test]
fn every_mutating_call_is_audited_and_a_viewer_can_read_the_trail_but_not_alter_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = tmp.path().join("audit.jsonl");
    let log_arg = log.display().to_string();
    let http_addr = format!("127.0.0.1:{}", flotilla_e2e::free_port());
    let hub = Hub::start_with(
        tmp.path(),
        &["--audit-log", &log_arg, "--http-listen", &http_addr],
    );
    let viewer = tmp.path().join("viewer/viewer.conf");
    hub.issue_viewer("auditor", &viewer);

    // An admin change and a registration, recorded with who, what and the result.
    let out = hub.cli(&["group", "add", "eu", "--selector", "region=eu"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let join = hub.token("1h", 1);
    let _dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_connected("dev");
    let find = |recs: &[Value], method: &str| -> Value {
        recs.iter()
            .find(|r| r["method"] == method)
            .cloned()
            .unwrap_or_else(|| panic!("no {method} record in {recs:?}"))
    };
    // A webhook delivery (refused: this hub has no webhook secret) is recorded too.
    let (status, _) = wait_until("the HTTP listener", || {
        std::net::TcpStream::connect(&http_addr).map_err(|e| e.to_string())?;
        Ok(flotilla_e2e::http(
            &http_addr,
            "POST",
            "/webhooks/github",
            &[],
            b"{}",
        ))
    });
    assert_eq!(status, 403);
    let before = audit_records(&viewer);
    let hook = find(&before, "Webhook/github");
    assert_eq!(
        (hook["who"].as_str(), hook["result"].as_str()),
        (Some("webhook/github"), Some("403"))
    );
    let group = find(&before, "Admin/AddGroup");
    assert!(
        group["who"]
            .as_str()
            .unwrap_or_default()
            .starts_with("admin/"),
        "{group}"
    );
    assert_eq!(group["result"], "Ok");
    assert_eq!(group["fields"]["name"], "eu");
    assert_eq!(group["fields"]["selector"], "region=eu");
    assert!(
        group["peer"]
            .as_str()
            .unwrap_or_default()
            .starts_with("127.0.0.1:"),
        "{group}"
    );
    let register = find(&before, "Registration/Register");
    assert_eq!(register["result"], "Ok");
    assert_eq!(register["fields"]["requested_name"], "dev");
    assert!(
        register["who"]
            .as_str()
            .unwrap_or_default()
            .starts_with("token/"),
        "{register}"
    );
    assert!(
        !register
            .to_string()
            .contains(join.split('.').nth(1).unwrap_or("-")),
        "never the token's secret: {register}"
    );

    // The viewer tries every mutating method the proto has; each is refused and each
    // refusal is recorded.
    let methods = mutating_methods();
    assert!(methods.len() >= 15, "{methods:?}");
    let cfg = flotilla_identity::ClientConfig::load(&viewer).expect("viewer.conf");
    let creds = cfg.credentials().expect("viewer credentials");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let channel = flotilla_identity::connect(&cfg.server, &creds)
            .await
            .expect("the viewer connects");
        for m in &methods {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.expect("ready");
            let path: tonic::codegen::http::uri::PathAndQuery =
                format!("/flotilla.v1.{m}").parse().expect("a method path");
            let codec = tonic_prost::ProstCodec::<(), ()>::default();
            let reply = grpc.unary(tonic::Request::new(()), path, codec).await;
            assert!(reply.is_err(), "the viewer's {m} must be refused");
        }
    });
    let after = audit_records(&viewer);
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "nothing the viewer did changed an earlier record"
    );
    for m in &methods {
        let refused = after[before.len()..]
            .iter()
            .find(|r| &r["method"] == m && r["who"] == "viewer/auditor")
            .unwrap_or_else(|| panic!("the viewer's {m} is not in the audit trail"));
        assert_ne!(refused["result"], "Ok", "{refused}");
        if m.starts_with("Admin/") {
            assert_eq!(refused["result"], "PermissionDenied", "{refused}");
        }
    }
    assert!(
        !after
            .iter()
            .any(|r| r["method"] == "Admin/Audit" || r["method"] == "Admin/ListClusters"),
        "reads are not audited"
    );

    // The file sink has the same records, one JSON line each, owner-only.
    assert_eq!(flotilla_e2e::file_mode(&log), 0o600);
    let lines = wait_until("the audit log to catch up", || {
        let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
        let lines: Vec<Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        (lines.len() == after.len())
            .then_some(lines.clone())
            .ok_or(format!("{} lines", lines.len()))
    });
    let seqs: Vec<&Value> = lines.iter().map(|l| &l["seq"]).collect();
    let want: Vec<&Value> = after.iter().map(|r| &r["seq"]).collect();
    assert_eq!(seqs, want);
}
