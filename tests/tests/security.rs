//! Identity lifecycle and hardening, each control proven against real processes:
//! renewal, revocation, deletion, tokens, operator roles, CA pinning, key file modes,
//! TLS versions, secrets in logs, and oversized messages.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use flotilla_e2e::{GitServer, Hub, Spoke, bin, cli_as, example_repo, wait_until};
use flotilla_identity::{Credentials, Identity, files};
use flotilla_proto::v1::{Hello, SpokeMsg, Status, spoke_client::SpokeClient, spoke_msg};

fn runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

fn serial_of(spoke: &Spoke) -> String {
    let pem = files::read_public(&spoke.state.join("cert.pem")).expect("cert");
    let ders = flotilla_identity::pem_to_ders(&pem).expect("pem");
    Identity::serial_hex(&ders[0]).expect("serial")
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn certificates_are_renewed_on_the_open_stream_without_reapplying_anything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start_with(tmp.path(), &["--cert-lifetime", "6s"]);
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    let first = serial_of(&dev);

    // Two renewals: the second proves the renewed certificate is itself renewable.
    let mut seen = vec![first.clone()];
    wait_until("two certificate renewals", || {
        let s = serial_of(&dev);
        if !seen.contains(&s) {
            seen.push(s);
        }
        (seen.len() >= 3).then_some(()).ok_or(format!("{seen:?}"))
    });
    let log = dev.proc.log_text();
    assert_eq!(
        count(&log, "sync stream open"),
        1,
        "the stream never dropped:\n{log}"
    );
    assert_eq!(
        count(&log, "applied bundle="),
        2,
        "each bundle applied once:\n{log}"
    );
    assert!(log.contains("client certificate renewed"), "{log}");
    let mode = flotilla_e2e::file_mode(&dev.state.join("key.pem"));
    assert_eq!(mode, 0o600, "the renewed key is 0600 too");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
}

#[test]
fn a_spoke_whose_certificate_expired_beyond_the_grace_says_how_to_rejoin_and_exits_5() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // No grace: an expired certificate cannot be recovered (tests/recovery.rs has one
    // that can).
    let hub = Hub::start_with(
        tmp.path(),
        &["--cert-lifetime", "3s", "--recovery-grace", "0s"],
    );
    let join = hub.token("1h", 1);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    // identity.json is the last file enrollment writes (`StateDir::save_enrollment`).
    wait_until("dev to enroll", || {
        dev.state
            .join("identity.json")
            .exists()
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    dev.proc.kill();
    let (_, not_after) = Identity::validity(
        &flotilla_identity::pem_to_ders(
            &files::read_public(&dev.state.join("cert.pem")).expect("cert"),
        )
        .expect("pem")[0],
    )
    .expect("validity");
    wait_until("the certificate to expire", || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        (now > not_after)
            .then_some(())
            .ok_or(format!("{now} <= {not_after}"))
    });
    let mut again = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let code = wait_until("the spoke to exit", || match again.proc.child.try_wait() {
        Ok(Some(status)) => Ok(status.code()),
        _ => Err(again.proc.log_text()),
    });
    let log = again.proc.log_text();
    assert_eq!(code, Some(5), "{log}");
    assert!(
        log.contains("recovery grace") && log.contains("flotilla cluster delete dev"),
        "{log}"
    );
}

#[test]
fn a_revoked_cluster_is_disconnected_and_cannot_reconnect() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);

    let out = hub.cli(&["cluster", "revoke", "dev"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("dev to be disconnected", || {
        let c = hub.json(&["clusters"]);
        (c[0]["connected"] == false && c[0]["revoked"] == true)
            .then_some(())
            .ok_or(c.to_string())
    });
    wait_until("dev's reconnect to be refused", || {
        let log = dev.proc.log_text();
        (count(&log, "has been revoked") >= 2)
            .then_some(())
            .ok_or(log)
    });
    assert_eq!(hub.json(&["clusters"])[0]["connected"], false);
    // It keeps enforcing what it had: nothing is torn down by a revocation.
    assert!(dev.file("examples-web").is_some());
}

#[test]
fn a_deleted_cluster_must_rejoin_with_a_new_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let join = hub.token("1h", 2);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_connected("dev");
    let out = hub.cli(&["cluster", "delete", "dev"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hub.json(&["clusters"]).as_array().map(Vec::len), Some(0));
    wait_until("the old identity to be refused", || {
        let log = dev.proc.log_text();
        log.contains("not registered with this hub")
            .then_some(())
            .ok_or(log)
    });
    drop(dev);

    // Same name, fresh state dir, new token: a new identity.
    let fresh = tmp.path().join("fresh");
    let new_join = hub.token("1h", 1);
    let rejoined = Spoke::start(&fresh, &new_join, "dev", "env=dev");
    hub.wait_connected("dev");
    assert!(rejoined.state.join("cert.pem").exists());
}

#[test]
fn tokens_are_listed_without_secrets_and_can_be_revoked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let join = hub.token("1h", 3);
    let token = join
        .strip_prefix("flotilla://")
        .and_then(|r| r.split_once('@'))
        .map(|(t, _)| t.to_string())
        .expect("join string carries a token");
    let (id, secret) = token.split_once('.').expect("ID.SECRET");
    assert_eq!(secret.len(), 32, "128 random bits, hex");

    let list = hub.json(&["token", "list"]);
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["uses"], 0);
    assert!(
        !list.to_string().contains(secret),
        "the secret is shown only once"
    );
    let state = files::read_public(&hub.dir.join("state.redb")).unwrap_or_default();
    assert!(!state.contains(secret), "only a hash is stored");

    let out = hub.cli(&["token", "revoke", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut spoke = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    assert!(!spoke.proc.wait_exit());
    assert!(
        spoke.proc.log_text().contains("unknown or was revoked"),
        "{}",
        spoke.proc.log_text()
    );
}

#[test]
fn a_viewer_can_read_but_every_mutating_call_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let viewer = tmp.path().join("viewer/viewer.conf");
    hub.issue_viewer("auditor", &viewer);
    let key_mode = flotilla_e2e::file_mode(&tmp.path().join("viewer/viewer-key.pem"));
    assert_eq!(key_mode, 0o600);
    let join = hub.token("1h", 1);
    let _dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    wait_until("dev to register", || {
        let c = hub.json(&["clusters"]);
        (c.as_array().map(Vec::len) == Some(1))
            .then_some(())
            .ok_or(c.to_string())
    });

    for read in [
        vec!["clusters"],
        vec!["sources"],
        vec!["bundles"],
        vec!["status"],
        vec!["token", "list"],
    ] {
        let out = cli_as(&viewer, &read);
        assert!(
            out.status.success(),
            "viewer may run {read:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token_id = hub.json(&["token", "list"])[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mutations: Vec<Vec<&str>> = vec![
        vec!["token", "create"],
        vec!["token", "revoke", &token_id],
        vec!["source", "add", "x", "--repo", "git://127.0.0.1:1/x"],
        vec!["source", "remove", "x"],
        vec!["cluster", "label", "dev", "env=prod"],
        vec!["cluster", "accept-labels", "dev"],
        vec!["cluster", "revoke", "dev"],
        vec!["cluster", "delete", "dev"],
        vec!["group", "add", "eu", "--selector", "region=eu"],
        vec!["group", "remove", "default"],
        vec!["rollout", "pause", "x"],
        vec!["rollout", "resume", "x"],
    ];
    for m in &mutations {
        let out = cli_as(&viewer, m);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "viewer must not run {m:?}");
        assert!(stderr.contains("needs the admin role"), "{m:?}: {stderr}");
    }
    let c = hub.json(&["clusters"]);
    assert_eq!(c[0]["revoked"], false, "nothing changed: {c}");
    assert_eq!(c[0]["labels"]["env"], "dev");
    assert_eq!(
        hub.json(&["token", "list"]).as_array().map(Vec::len),
        Some(1)
    );
    let groups = hub.json(&["groups"]);
    let names: Vec<&str> = groups
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["default"],
        "no group added or removed: {groups}"
    );
}

#[test]
fn a_spoke_refuses_a_hub_whose_ca_does_not_match_the_pin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let join = hub.token("1h", 1);
    let (head, _) = join.rsplit_once("ca-sha256=").expect("pin");
    let forged = format!("{head}ca-sha256={}", "ab".repeat(32));
    let mut spoke = Spoke::start(tmp.path(), &forged, "dev", "env=dev");
    assert!(!spoke.proc.wait_exit());
    let log = spoke.proc.log_text();
    assert!(log.contains("pin mismatch"), "{log}");
    assert!(
        !spoke.state.join("key.pem").exists(),
        "no key material written"
    );
    assert_eq!(
        hub.json(&["token", "list"])[0]["uses"],
        0,
        "the token was never sent"
    );
}

#[test]
fn key_files_readable_by_others_are_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut hub = Hub::start(tmp.path());
    let join = hub.token("1h", 1);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    // identity.json is the last file enrollment writes (`StateDir::save_enrollment`).
    wait_until("dev to enroll", || {
        dev.state
            .join("identity.json")
            .exists()
            .then_some(())
            .ok_or_else(|| "no".to_string())
    });
    dev.proc.kill();
    let loosen = |p: &std::path::Path| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).expect("chmod")
    };
    loosen(&dev.state.join("key.pem"));
    let mut again = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    assert!(!again.proc.wait_exit());
    assert!(
        again.proc.log_text().contains("chmod 600"),
        "{}",
        again.proc.log_text()
    );

    hub.proc.kill();
    loosen(&hub.dir.join("hub-key.pem"));
    let out = Command::new(bin("flotilla-hub"))
        .args(["run", "--data-dir"])
        .arg(&hub.dir)
        .args(["--listen", &hub.addr])
        .output()
        .expect("run hub");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[test]
fn the_hub_refuses_tls_below_1_3() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let rt = runtime();
    let result = rt.block_on(async {
        let roots = hub.ca_roots();
        static TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        let connect = |versions: &'static [&'static rustls::SupportedProtocolVersion]| {
            let config = rustls::ClientConfig::builder_with_protocol_versions(versions)
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            let addr = hub.addr.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls_pki_types::ServerName::try_from("flotilla-hub")
                    .expect("name")
                    .to_owned();
                tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map(|_| ())
            }
        };
        (connect(TLS12).await, connect(TLS13).await)
    });
    assert!(result.0.is_err(), "TLS 1.2 must be refused");
    assert!(result.1.is_ok(), "TLS 1.3 works: {:?}", result.1);
}

#[test]
fn logs_never_contain_tokens_or_keys_even_at_debug_level() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    let secret = join
        .strip_prefix("flotilla://")
        .and_then(|r| r.split_once('@'))
        .and_then(|(t, _)| t.split_once('.'))
        .map(|(_, s)| s.to_string())
        .expect("secret");
    let spoke_key = files::read_secret(&dev.state.join("key.pem")).expect("key");
    let key_body: String = spoke_key.lines().nth(1).unwrap_or_default().to_string();
    for (who, log) in [("hub", hub.proc.log_text()), ("spoke", dev.proc.log_text())] {
        assert!(log.contains("DEBUG"), "{who} ran at debug level");
        assert!(!log.contains(&secret), "{who} log leaks the token secret");
        assert!(!log.contains("PRIVATE KEY"), "{who} log leaks key material");
        assert!(!log.contains(&key_body), "{who} log leaks the spoke key");
    }
}

#[test]
fn an_oversized_message_closes_only_that_stream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 2);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let test = Spoke::start(tmp.path(), &join, "test", "env=test");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    hub.wait_ready_bundles("test", &["examples-hello"]);
    dev.proc.kill();
    let creds = Credentials {
        ca_pem: files::read_public(&dev.state.join("ca.pem")).expect("ca"),
        cert_pem: Some(files::read_public(&dev.state.join("cert.pem")).expect("cert")),
        key_pem: Some(files::read_secret(&dev.state.join("key.pem")).expect("key")),
    };
    let err = runtime().block_on(async {
        let channel = flotilla_identity::connect(&hub.addr, &creds)
            .await
            .expect("connect");
        let mut client = SpokeClient::new(channel);
        let msgs = vec![
            SpokeMsg {
                msg: Some(spoke_msg::Msg::Hello(Hello::default())),
            },
            SpokeMsg {
                msg: Some(spoke_msg::Msg::Status(Status {
                    bundle: "examples-hello".into(),
                    state: "Ready".into(),
                    message: "x".repeat(8 * 1024 * 1024),
                    ..Default::default()
                })),
            },
        ];
        let mut stream = client
            .sync(tokio_stream::iter(msgs))
            .await
            .expect("stream opens")
            .into_inner();
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => break None,
                Ok(Err(s)) => break Some(s),
                Err(_) => break None,
            }
        }
    });
    let err = err.expect("the hub closes the stream with an error");
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{err:?}"
    );
    assert!(err.message().contains("too large"), "{err:?}");
    // The other spoke is untouched and the hub still serves.
    let clusters = hub.json(&["clusters"]);
    let test_row = clusters
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["name"] == "test")
        .cloned()
        .expect("test listed");
    assert_eq!(test_row["connected"], true, "{clusters}");
    assert!(test.file("examples-hello").is_some());
}

fn hub_tool(hub: &Hub, args: &[&str]) -> std::process::Output {
    Command::new(bin("flotilla-hub"))
        .args(args)
        .arg("--data-dir")
        .arg(&hub.dir)
        .output()
        .expect("run flotilla-hub")
}

fn fingerprint_of_file(path: &std::path::Path) -> String {
    let pem = files::read_public(path).expect("pem");
    flotilla_identity::fingerprint(&flotilla_identity::pem_to_ders(&pem).expect("pem")[0])
}

#[test]
fn a_ca_rotation_moves_every_spoke_to_the_new_ca_without_stranding_any() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let mut hub = Hub::start_with(tmp.path(), &["--cert-lifetime", "6s"]);
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 2);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let mut away = Spoke::start(tmp.path(), &join, "away", "env=test");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    hub.wait_ready_bundles("away", &["examples-hello"]);
    away.proc.kill();
    let old_ca = fingerprint_of_file(&hub.dir.join("ca.pem"));

    hub.proc.kill();
    let out = hub_tool(&hub, &["ca", "rotate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_ca = fingerprint_of_file(&hub.dir.join("ca.pem"));
    assert_ne!(old_ca, new_ca);
    hub.restart();

    wait_until("dev to renew from the new CA", || {
        let pem = files::read_public(&dev.state.join("cert.pem")).unwrap_or_default();
        let ders = flotilla_identity::pem_to_ders(&pem).unwrap_or_default();
        let issuer = ders.get(1).map(|d| flotilla_identity::fingerprint(d));
        (issuer.as_deref() == Some(new_ca.as_str()))
            .then_some(())
            .ok_or(format!("issuer {issuer:?}"))
    });
    let trusted =
        flotilla_identity::pem_to_ders(&files::read_public(&dev.state.join("ca.pem")).expect("ca"))
            .expect("pem");
    assert_eq!(
        trusted.len(),
        2,
        "during the overlap the spoke trusts both CAs"
    );

    // `away` never renewed: retiring now would strand it, so it is refused.
    hub.proc.kill();
    let out = hub_tool(&hub, &["ca", "retire"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("away") && stderr.contains("stranded"),
        "{stderr}"
    );

    // Once `away` reconnects and renews, retirement goes through.
    hub.restart();
    let away = Spoke::start(tmp.path(), &join, "away", "env=test");
    wait_until("away to renew from the new CA", || {
        let pem = files::read_public(&away.state.join("cert.pem")).unwrap_or_default();
        let ders = flotilla_identity::pem_to_ders(&pem).unwrap_or_default();
        let issuer = ders.get(1).map(|d| flotilla_identity::fingerprint(d));
        (issuer.as_deref() == Some(new_ca.as_str()))
            .then_some(())
            .ok_or(format!("issuer {issuer:?}"))
    });
    hub.proc.kill();
    let out = hub_tool(&hub, &["ca", "retire"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hub.restart();

    wait_until(
        "both spokes to reconnect to the hub serving with the new CA",
        || {
            let c = hub.json(&["clusters"]);
            let all = c
                .as_array()
                .map(|a| a.iter().all(|x| x["connected"] == true));
            (all == Some(true)).then_some(()).ok_or(c.to_string())
        },
    );
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    let new_join = hub.token("1h", 1);
    assert!(
        new_join.ends_with(&new_ca),
        "new join strings pin the new CA: {new_join}"
    );
    let late = Spoke::start(tmp.path(), &new_join, "late", "env=dev");
    hub.wait_ready_bundles("late", &["examples-hello", "examples-web"]);
    assert!(late.file("examples-hello").is_some());
}
