//! Every refusal the skeleton promises, each asserted against a real hub process.

use std::time::{Duration, Instant};

use flotilla_e2e::{GitServer, Hub, Spoke, example_repo, wait_until};
use flotilla_identity::{Ca, Credentials, Identity, csr, files};
use flotilla_model::ClusterName;
use flotilla_proto::v1::{Hello, SpokeMsg, Status, spoke_client::SpokeClient, spoke_msg};
use tonic::Code;

fn runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// Opens a Sync stream with `creds`, sends `msgs`, and returns the first error the hub
/// answers with (at connect, at stream open, or on the stream).
async fn sync_error(addr: &str, creds: &Credentials, msgs: Vec<SpokeMsg>) -> tonic::Status {
    let channel = match flotilla_identity::connect(addr, creds).await {
        Ok(c) => c,
        Err(e) => return tonic::Status::unavailable(e.to_string()),
    };
    let mut client = SpokeClient::new(channel);
    let resp = client.sync(tokio_stream::iter(msgs)).await;
    let mut stream = match resp {
        Ok(r) => r.into_inner(),
        Err(s) => return s,
    };
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return tonic::Status::ok("stream ended without error"),
            Ok(Err(s)) => return s,
            Err(_) => return tonic::Status::ok("no error within 30s"),
        }
    }
}

fn hello(name: &str) -> SpokeMsg {
    SpokeMsg {
        msg: Some(spoke_msg::Msg::Hello(Hello {
            cluster_name: name.to_string(),
            ..Default::default()
        })),
    }
}

fn hub_ca(hub: &Hub) -> String {
    files::read_public(&hub.dir.join("ca.pem")).expect("hub CA")
}

#[test]
fn a_spoke_without_a_client_certificate_cannot_sync() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let creds = Credentials {
        ca_pem: hub_ca(&hub),
        cert_pem: None,
        key_pem: None,
    };
    let err = runtime().block_on(sync_error(&hub.addr, &creds, vec![hello("dev")]));
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("client certificate"), "{err:?}");
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let (other, _) = Ca::generate("impostor CA").expect("ca");
    let (key_pem, csr_pem) = csr::generate_csr("dev").expect("csr");
    let id = Identity::Cluster(ClusterName::new("dev").expect("name"));
    let cert = other
        .sign_csr(&csr_pem, &id, Duration::from_secs(3600))
        .expect("signed by the other CA");
    let creds = Credentials {
        ca_pem: hub_ca(&hub),
        cert_pem: Some(cert),
        key_pem: Some(key_pem),
    };
    let err = runtime().block_on(sync_error(&hub.addr, &creds, vec![hello("dev")]));
    assert_ne!(err.code(), Code::Ok, "must be refused: {err:?}");
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Unauthenticated | Code::Cancelled
        ),
        "the connection is refused: {err:?}"
    );
    wait_until("the hub to log the refused handshake", || {
        let log = hub.proc.log_text();
        log.contains("TLS handshake failed")
            .then_some(())
            .ok_or(log)
    });
}

#[test]
fn an_expired_token_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let join = hub.token("1s", 5);
    // Expiry is the behaviour under test: wait until the token's second has passed.
    let issued = Instant::now();
    wait_until("the token to expire", || {
        (issued.elapsed() > Duration::from_millis(2100))
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    let mut spoke = Spoke::start(tmp.path(), &join, "late", "env=dev");
    assert!(!spoke.proc.wait_exit(), "enrollment must fail");
    assert!(
        spoke.proc.log_text().contains("expired"),
        "{}",
        spoke.proc.log_text()
    );
    assert!(!spoke.state.join("cert.pem").exists());
    assert_eq!(hub.json(&["clusters"]).as_array().map(Vec::len), Some(0));
}

#[test]
fn a_token_with_no_uses_left_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let join = hub.token("1h", 1);
    let _first = Spoke::start(tmp.path(), &join, "first", "env=dev");
    wait_until("the first spoke to register", || {
        let c = hub.json(&["clusters"]);
        (c.as_array().map(Vec::len) == Some(1))
            .then_some(())
            .ok_or(c.to_string())
    });
    let mut second = Spoke::start(tmp.path(), &join, "second", "env=dev");
    assert!(!second.proc.wait_exit(), "enrollment must fail");
    assert!(
        second.proc.log_text().contains("no uses left"),
        "{}",
        second.proc.log_text()
    );
    assert_eq!(hub.json(&["clusters"]).as_array().map(Vec::len), Some(1));
}

#[test]
fn a_spoke_cannot_claim_another_clusters_name_or_report_on_its_bundles() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 2);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let _test = Spoke::start(tmp.path(), &join, "test", "env=test");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    hub.wait_ready_bundles("test", &["examples-hello"]);
    dev.proc.kill();

    // dev's own, valid credentials.
    let creds = Credentials {
        ca_pem: files::read_public(&dev.state.join("ca.pem")).expect("ca"),
        cert_pem: Some(files::read_public(&dev.state.join("cert.pem")).expect("cert")),
        key_pem: Some(files::read_secret(&dev.state.join("key.pem")).expect("key")),
    };
    let rt = runtime();
    let err = rt.block_on(sync_error(&hub.addr, &creds, vec![hello("test")]));
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("claims"), "{err:?}");

    let spoof_status = |bundle: &str, claimed: &str| SpokeMsg {
        msg: Some(spoke_msg::Msg::Status(Status {
            bundle: bundle.to_string(),
            deployment_id: "d-00000000000000000000".into(),
            state: "ErrApplied".into(),
            message: "spoofed".into(),
            cluster_name: claimed.to_string(),
            ..Default::default()
        })),
    };
    let err = rt.block_on(sync_error(
        &hub.addr,
        &creds,
        vec![hello("dev"), spoof_status("examples-hello", "test")],
    ));
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // test has no web bundle; dev cannot invent status for bundles it is not assigned.
    let err = rt.block_on(sync_error(
        &hub.addr,
        &creds,
        vec![hello("dev"), spoof_status("not-assigned-here", "")],
    ));
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let test_rows = hub.json(&["status", "--cluster", "test"]);
    assert!(
        test_rows
            .as_array()
            .expect("array")
            .iter()
            .all(|r| r["message"] != "spoofed"),
        "test's status is untouched: {test_rows}"
    );
}

#[test]
fn an_admin_call_without_an_admin_certificate_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let _repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    wait_until("dev to register", || {
        dev.state
            .join("cert.pem")
            .exists()
            .then_some(())
            .ok_or_else(|| "no cert yet".to_string())
    });
    // A cluster certificate is valid, but it is not an admin's.
    let conf = tmp.path().join("spoke-as-admin.conf");
    std::fs::write(
        &conf,
        format!(
            "server: {}\nca: {}\ncert: {}\nkey: {}\n",
            hub.addr,
            dev.state.join("ca.pem").display(),
            dev.state.join("cert.pem").display(),
            dev.state.join("key.pem").display()
        ),
    )
    .expect("write conf");
    let out = std::process::Command::new(flotilla_e2e::bin("flotilla"))
        .arg("--config")
        .arg(&conf)
        .arg("clusters")
        .output()
        .expect("run flotilla");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("may not call the admin API"), "{stderr}");
}
