//! Recovery without people: a hub outage longer than the spokes' certificate lifetime
//! heals by itself, within the hub's recovery grace, and a spoke refused for good says
//! so with its exit code instead of redialling forever.

use std::time::{Duration, Instant};

use flotilla_e2e::{GitServer, Hub, Spoke, example_repo, wait_until};
use flotilla_identity::{Identity, files};

/// How long the hub stays away: three certificate lifetimes.
const OUTAGE: Duration = Duration::from_secs(90);
const LIFETIME: &str = "30s";

fn leaf(spoke: &Spoke) -> Vec<u8> {
    let pem = files::read_public(&spoke.state.join("cert.pem")).expect("cert.pem");
    flotilla_identity::pem_to_ders(&pem).expect("pem").remove(0)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[test]
fn spokes_whose_certificates_expired_during_a_hub_outage_recover_without_rejoining() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let mut hub = Hub::start_with(tmp.path(), &["--cert-lifetime", LIFETIME]);
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 2);
    let spokes = [
        Spoke::start(tmp.path(), &join, "dev", "env=dev"),
        Spoke::start(tmp.path(), &join, "test", "env=test"),
    ];
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    hub.wait_ready_bundles("test", &["examples-hello"]);

    hub.proc.kill();
    // The outage itself is the scenario: it lasts OUTAGE, and at least until every
    // spoke's certificate has expired.
    let down = Instant::now();
    loop {
        let expired = spokes
            .iter()
            .all(|s| Identity::validity(&leaf(s)).is_ok_and(|(_, na)| na < unix_now()));
        if expired && down.elapsed() >= OUTAGE {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let expired_serials: Vec<String> = spokes
        .iter()
        .map(|s| Identity::serial_hex(&leaf(s)).expect("serial"))
        .collect();
    hub.restart();

    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    hub.wait_ready_bundles("test", &["examples-hello"]);
    wait_until("every spoke connected on a recovered certificate", || {
        let c = hub.json(&["clusters"]);
        let connected = c
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|x| x["connected"] == true));
        connected.then_some(()).ok_or(c.to_string())
    });
    for (spoke, old) in spokes.iter().zip(&expired_serials) {
        let log = spoke.proc.log_text();
        assert!(log.contains("client certificate recovered"), "{log}");
        assert_eq!(
            log.matches("enrolled with the hub").count(),
            1,
            "{} never joined again:\n{log}",
            spoke.name
        );
        let now = Identity::serial_hex(&leaf(spoke)).expect("serial");
        assert_ne!(&now, old, "{} holds a new certificate", spoke.name);
        let (_, not_after) = Identity::validity(&leaf(spoke)).expect("validity");
        assert!(not_after > unix_now() - 5, "the new certificate is current");
    }
    let log = hub.proc.log_text();
    assert_eq!(
        log.matches("expired certificate recovered").count(),
        2,
        "one recovery per spoke:\n{log}"
    );
}

#[test]
fn a_deleted_cluster_cannot_recover_and_its_spoke_exits_with_code_4() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(tmp.path(), &["--cert-lifetime", "3s"]);
    let join = hub.token("1h", 1);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_connected("dev");
    dev.proc.kill();
    let out = hub.cli(&["cluster", "delete", "dev"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let not_after = Identity::validity(&leaf(&dev)).expect("validity").1;
    wait_until("dev's certificate to expire", || {
        (unix_now() > not_after)
            .then_some(())
            .ok_or(format!("{} <= {not_after}", unix_now()))
    });
    let mut again = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let code = wait_until("the spoke to exit", || match again.proc.child.try_wait() {
        Ok(Some(status)) => Ok(status.code()),
        _ => Err(again.proc.log_text()),
    });
    let log = again.proc.log_text();
    assert_eq!(code, Some(4), "{log}");
    assert!(
        log.contains("certificate recovery refused") && log.contains("not registered"),
        "{log}"
    );
}
