//! The web dashboard end to end (#21): a real hub run with `--dashboard`, real spokes,
//! git over `git daemon`. The pages show the fleet, a cluster and a bundle; text that
//! came from git reaches them escaped; the live feed carries the fleet's events; and the
//! dashboard refuses what it must: other methods than GET, a TLS caller without an
//! operator's certificate, and a plain listener other hosts could reach.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_e2e::{
    GitServer, HttpAnswer, Hub, Spoke, TIMEOUT, bin, configmap, example_repo, free_port, http_over,
    wait_until,
};
use flotilla_identity::{ClientConfig, Credentials, files};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A bundle whose fleet.yaml has markup in a key: the hub reports the unknown key as a
/// warning, quoting it, and the bundle page shows that warning.
const HOSTILE_FLEET_YAML: &str = "defaultNamespace: tricky
\"<script>alert('owned')</script>\": 1
";

fn get(addr: &str, method: &str, path: &str) -> HttpAnswer {
    let s = TcpStream::connect(addr).expect("connect to the dashboard");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    http_over(s, addr, method, path, &[], b"")
}

#[test]
fn the_dashboard_shows_the_fleet_a_cluster_and_a_bundle_with_what_git_wrote_escaped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    repo.commit_file("tricky/fleet.yaml", HOSTILE_FLEET_YAML, "markup in a key");
    repo.commit_file("tricky/cm.yaml", &configmap("tricky", "x"), "tricky");
    let dash = format!("127.0.0.1:{}", free_port());
    let hub = Hub::start_with(tmp.path(), &["--dashboard", "--dashboard-listen", &dash]);
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let _dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles(
        "dev",
        &["examples-hello", "examples-tricky", "examples-web"],
    );

    let overview = get(&dash, "GET", "/");
    assert_eq!(overview.status, 200, "{overview:?}");
    let csp = overview
        .header("content-security-policy")
        .expect("a CSP header");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(overview.header("x-frame-options"), Some("DENY"));
    assert_eq!(overview.header("cache-control"), Some("no-store"));
    for shown in [
        "<tr data-cluster=\"dev\" data-state=\"Ready\">",
        "<tr data-bundle=\"examples-hello\" data-state=\"Ready\">",
        "<tr data-source=\"examples\">",
        "No rollout in progress.",
    ] {
        assert!(
            overview.body.contains(shown),
            "{shown} in {}",
            overview.body
        );
    }

    // The history is read from the store, which its writer fills a moment after the
    // reports that the status table shows from memory.
    let cluster = wait_until("the cluster page to show its history", || {
        let page = get(&dash, "GET", "/clusters/dev");
        if page.body.contains("id=\"history\"") {
            Ok(page)
        } else {
            Err(format!("{page:?}"))
        }
    });
    assert_eq!(cluster.status, 200, "{cluster:?}");
    assert!(
        cluster
            .body
            .contains("<tr data-label=\"env\"><td>env</td><td>dev</td>"),
        "{}",
        cluster.body
    );

    let bundle = get(&dash, "GET", "/bundles/examples-tricky");
    assert_eq!(bundle.status, 200, "{bundle:?}");
    assert!(
        !bundle.body.contains("<script>alert"),
        "markup from git reached the page as markup: {}",
        bundle.body
    );
    assert!(
        bundle
            .body
            .contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;"),
        "the warning is shown, as text: {}",
        bundle.body
    );
    assert!(
        bundle.body.contains("<svg id=\"rollout-chart\""),
        "{}",
        bundle.body
    );
    assert!(
        bundle.body.contains(
            "<tr data-cluster=\"dev\" data-bundle=\"examples-tricky\" data-state=\"Ready\">"
        ),
        "{}",
        bundle.body
    );

    assert_eq!(get(&dash, "GET", "/clusters/nope").status, 404);
    assert_eq!(get(&dash, "GET", "/bundles/%zz").status, 404);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let refused = get(&dash, method, "/");
        assert_eq!(refused.status, 405, "{method}: {refused:?}");
        assert_eq!(refused.header("allow"), Some("GET"), "{method}");
    }

    // The live feed: connected first, then the fleet's events as they happen.
    let mut events = TcpStream::connect(&dash).expect("connect");
    events
        .write_all(format!("GET /events HTTP/1.1\r\nHost: {dash}\r\n\r\n").as_bytes())
        .expect("write");
    let mut seen = read_until(&mut events, "{\"kind\":\"Hello\"}");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    repo.commit_file(
        "hello/configmap.yaml",
        &configmap("hello", "again"),
        "a new greeting",
    );
    seen = read_until(&mut events, "\"kind\":\"StatusChanged\"");
    assert!(seen.contains("\"bundle\":\"examples-hello\""), "{seen}");
}

/// Reads the stream until `needle` arrives; what was read, or a panic with it.
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < TIMEOUT {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the event stream: {e}"),
        }
        let text = String::from_utf8_lossy(&got);
        if text.contains(needle) {
            return text.into_owned();
        }
    }
    panic!(
        "no {needle} on the event stream; got: {}",
        String::from_utf8_lossy(&got)
    );
}

/// One request to the TLS dashboard at `addr`, trusting the hub's CA and presenting
/// `client` when given.
fn get_tls(hub: &Hub, addr: &str, client: Option<&Credentials>, method: &str) -> HttpAnswer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = rustls::ClientConfig::builder().with_root_certificates(hub.ca_roots());
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(creds) => {
            let chain =
                CertificateDer::pem_slice_iter(creds.cert_pem.as_deref().expect("cert").as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("cert pem");
            let key =
                PrivateKeyDer::from_pem_slice(creds.key_pem.as_deref().expect("key").as_bytes())
                    .expect("key pem");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("flotilla-hub").expect("server name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let tcp = TcpStream::connect(addr).expect("connect to the dashboard");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    http_over(
        rustls::StreamOwned::new(conn, tcp),
        addr,
        method,
        "/",
        &[],
        b"",
    )
}

fn operator(conf: &std::path::Path) -> Credentials {
    ClientConfig::load(conf)
        .expect("client config")
        .credentials()
        .expect("credentials")
}

#[test]
fn the_dashboard_over_tls_serves_admins_and_viewers_and_refuses_everyone_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let dash = format!("127.0.0.1:{}", free_port());
    let hub = Hub::start_with(
        tmp.path(),
        &[
            "--dashboard",
            "--dashboard-tls",
            "--dashboard-listen",
            &dash,
        ],
    );
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_connected("dev");
    let viewer_conf = tmp.path().join("viewer.conf");
    hub.issue_viewer("alice", &viewer_conf);

    let admin = get_tls(&hub, &dash, Some(&operator(&hub.config)), "GET");
    assert_eq!(admin.status, 200, "{admin:?}");
    assert!(
        admin.body.contains("data-cluster=\"dev\""),
        "{}",
        admin.body
    );
    let viewer = get_tls(&hub, &dash, Some(&operator(&viewer_conf)), "GET");
    assert_eq!(viewer.status, 200, "{viewer:?}");

    // A viewer reads; nobody writes.
    let post = get_tls(&hub, &dash, Some(&operator(&viewer_conf)), "POST");
    assert_eq!(post.status, 405, "{post:?}");

    let anonymous = get_tls(&hub, &dash, None, "GET");
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert!(
        anonymous.body.contains("client certificate is required"),
        "{anonymous:?}"
    );

    // A cluster's certificate is signed by the same CA but is not an operator's.
    let spoke_creds = Credentials {
        ca_pem: files::read_public(&dev.state.join("ca.pem")).expect("ca"),
        cert_pem: Some(files::read_public(&dev.state.join("cert.pem")).expect("cert")),
        key_pem: Some(files::read_secret(&dev.state.join("key.pem")).expect("key")),
    };
    let spoke = get_tls(&hub, &dash, Some(&spoke_creds), "GET");
    assert_eq!(spoke.status, 403, "{spoke:?}");
    assert!(
        spoke.body.contains("dev"),
        "the refusal names who: {spoke:?}"
    );
}

#[test]
fn a_plain_dashboard_on_an_address_other_hosts_reach_stops_the_hub_with_the_way_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(bin("flotilla-hub"))
        .args(["run", "--data-dir"])
        .arg(tmp.path().join("hub"))
        .args(["--dashboard", "--dashboard-listen"])
        .arg(format!("0.0.0.0:{}", free_port()))
        .output()
        .expect("run flotilla-hub");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loopback") && err.contains("--dashboard-tls"),
        "{err}"
    );
}
