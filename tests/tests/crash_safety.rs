//! Crash safety: the hub is killed with SIGKILL 50 times while a client floods it with
//! status reports and new clusters register. Every time, the store must open, every
//! acknowledged registration must still be there, and no record may be corrupt.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use flotilla_e2e::{GitServer, Hub, Proc, Spoke, bin, example_repo, wait_until};
use flotilla_identity::{Credentials, JoinString, csr, files, pin};
use flotilla_proto::v1::{
    Hello, RegisterRequest, SpokeMsg, Status, registration_client::RegistrationClient,
    spoke_client::SpokeClient, spoke_msg,
};

const ROUNDS: usize = 50;

fn start_hub(hub: &Hub, log: std::path::PathBuf) -> Proc {
    let p = Proc::spawn(
        Command::new(bin("flotilla-hub"))
            .args(["run", "--data-dir"])
            .arg(&hub.dir)
            .args(["--listen", &hub.addr]),
        log,
    );
    wait_until("the hub to listen", || {
        TcpStream::connect(&hub.addr)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    p
}

/// Sends status reports as fast as the hub takes them, until the connection dies.
async fn flood(addr: String, creds: Credentials) {
    let Ok(channel) = flotilla_identity::connect(&addr, &creds).await else {
        return;
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut client = SpokeClient::new(channel);
    let hello = SpokeMsg {
        msg: Some(spoke_msg::Msg::Hello(Hello {
            cluster_name: "dev".into(),
            ..Default::default()
        })),
    };
    if tx.send(hello).await.is_err() {
        return;
    }
    let Ok(resp) = client
        .sync(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let _stream = resp.into_inner();
    for i in 0u64.. {
        let msg = SpokeMsg {
            msg: Some(spoke_msg::Msg::Status(Status {
                bundle: if i % 2 == 0 {
                    "examples-hello"
                } else {
                    "examples-web"
                }
                .into(),
                deployment_id: format!("d-{:020x}", i),
                state: if i % 3 == 0 { "NotReady" } else { "Ready" }.into(),
                message: format!("report {i}"),
                ..Default::default()
            })),
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

async fn register(join: &JoinString, name: &str) -> bool {
    let Ok(ca) = pin::fetch_pinned_ca(&join.hub, &join.ca_sha256).await else {
        return false;
    };
    let Ok((_, csr_pem)) = csr::generate_csr(name) else {
        return false;
    };
    let creds = Credentials {
        ca_pem: flotilla_identity::der_to_pem(&ca),
        cert_pem: None,
        key_pem: None,
    };
    let Ok(channel) = flotilla_identity::connect(&join.hub, &creds).await else {
        return false;
    };
    RegistrationClient::new(channel)
        .register(RegisterRequest {
            token: join.token.clone(),
            csr_pem,
            requested_name: name.into(),
            ..Default::default()
        })
        .await
        .is_ok()
}

#[test]
fn fifty_kill_9s_under_status_load_lose_no_registration_and_corrupt_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let mut hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    dev.proc.kill();
    let creds = Credentials {
        ca_pem: files::read_public(&dev.state.join("ca.pem")).expect("ca"),
        cert_pem: Some(files::read_public(&dev.state.join("cert.pem")).expect("cert")),
        key_pem: Some(files::read_secret(&dev.state.join("key.pem")).expect("key")),
    };
    let joiner: JoinString = hub.token("1h", 20).parse().expect("join string");
    hub.proc.kill();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut acknowledged = Vec::new();
    let mut loaded_rounds = 0;
    for round in 0..ROUNDS {
        let mut p = start_hub(&hub, tmp.path().join(format!("hub-round-{round}.log")));
        let flood = rt.spawn(flood(hub.addr.clone(), creds.clone()));
        if round % 5 == 0 {
            let name = format!("joined-{round}");
            if rt.block_on(register(&joiner, &name)) {
                acknowledged.push(name);
            }
        }
        // Kill at a different point of the write stream each round (fault injection,
        // not synchronisation).
        let after = Duration::from_millis(20 + (round as u64 * 37) % 180);
        rt.block_on(async { tokio::time::sleep(after).await });
        p.kill();
        flood.abort();
        let log = p.log_text();
        assert!(!log.contains("corrupt"), "round {round}: {log}");
        if log.contains("spoke connected") {
            loaded_rounds += 1;
        }
    }

    assert!(
        loaded_rounds >= ROUNDS / 2,
        "the status flood reached the hub in most rounds ({loaded_rounds}/{ROUNDS})"
    );
    // The store opens, and everything acknowledged is there.
    hub.restart();
    let clusters = hub.json(&["clusters"]);
    let names: Vec<&str> = clusters
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"dev"), "{names:?}");
    for n in &acknowledged {
        assert!(
            names.contains(&n.as_str()),
            "acknowledged registration {n} lost: {names:?}"
        );
    }
    assert!(
        acknowledged.len() >= ROUNDS / 10,
        "registrations went through: {acknowledged:?}"
    );
    let tokens = hub.json(&["token", "list"]);
    let uses: u64 = tokens
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["uses"].as_u64())
        .sum();
    assert!(
        uses > acknowledged.len() as u64,
        "token uses survive: {tokens}"
    );
    let rows = hub.json(&["status", "--cluster", "dev"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    assert!(hub.json(&["sources"])[0]["name"] == "examples");
}
