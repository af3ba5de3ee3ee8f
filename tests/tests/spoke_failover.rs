//! A hub with several advertised addresses (issue 20: replicas): the join string and
//! `admin.conf` carry them all, and the spoke and the CLI get through while one of them
//! refuses connections.

use flotilla_e2e::{GitServer, Hub, Spoke, example_repo, free_port};
use sha2::{Digest, Sha256};

#[test]
fn a_spoke_whose_first_hub_address_refuses_connections_is_ready_through_the_second() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Enrolment tries the join string's addresses in order; the stream starts at the
    // address the cluster's name picks (`spoke/src/dial.rs`), the first one for this
    // name. So both dial the closed port first.
    let name = "nomad";
    assert_eq!(Sha256::digest(name.as_bytes())[0] % 2, 0);
    let closed = format!("127.0.0.1:{}", free_port());
    let server = GitServer::start(&tmp.path().join("git"));
    let repo = server.repo_from("fleet", &example_repo());
    let hub = Hub::start_advertising(tmp.path(), |open| format!("{closed},{open}"), &[]);
    // The CLI (`hub.cli`) tries admin.conf's addresses in order and gets through.
    hub.add_source("examples", &repo.url, "env=dev");
    let join = hub.token("1h", 1);
    assert!(join.contains(&format!("@{closed},{}?", hub.addr)), "{join}");

    let spoke = Spoke::start(tmp.path(), &join, name, "env=dev");
    hub.wait_ready_bundles(name, &["examples-hello", "examples-web"]);
    assert!(spoke.file("examples-web").is_some());
    let log = spoke.proc.log_text();
    assert!(
        log.contains("cannot enroll at this hub address")
            && log.contains("cannot reach the hub at this address"),
        "the spoke dialled the closed address first and moved on:\n{log}"
    );
    let identity = std::fs::read_to_string(spoke.state.join("identity.json")).expect("identity");
    assert!(
        identity.contains(&closed) && identity.contains(&hub.addr),
        "{identity}"
    );
}
