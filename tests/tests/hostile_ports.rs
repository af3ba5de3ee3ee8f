//! Red team, open ports (#13): anyone who can reach the hub's gRPC and HTTP ports parks
//! idle TCP connections, TLS sessions that never start HTTP/2, and HTTP requests that
//! never finish. The hub must keep answering its admins and spokes while they are held,
//! hold no more of them than its budgets allow, and close each one once its deadline
//! passes. Real hub and spoke processes, real TLS, git over `git daemon`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flotilla_e2e::{GitServer, Hub, Spoke, example_repo, free_port, wait_until};
use flotilla_identity::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What every HTTP/2 client sends first: the connection preface and an empty SETTINGS.
const H2_PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

fn runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// A TLS client that trusts the hub's CA, speaks h2, and presents `client` if given.
fn tls(hub: &Hub, client: Option<&ClientConfig>) -> tokio_rustls::TlsConnector {
    let builder = rustls::ClientConfig::builder().with_root_certificates(hub.ca_roots());
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(conf) => {
            let creds = conf.credentials().expect("admin credentials");
            let chain = CertificateDer::pem_slice_iter(
                creds.cert_pem.as_deref().expect("admin cert").as_bytes(),
            )
            .collect::<Result<Vec<_>, _>>()
            .expect("cert pem");
            let key = PrivateKeyDer::from_pem_slice(
                creds.key_pem.as_deref().expect("admin key").as_bytes(),
            )
            .expect("key pem");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Counts the attacker's sockets that the hub has closed (EOF or reset seen).
#[derive(Clone, Default)]
struct Closed(Arc<AtomicUsize>);

impl Closed {
    /// Holds `conn` open, reading (never answering) until the hub closes it.
    fn watch(&self, mut conn: impl AsyncRead + Unpin + Send + 'static) {
        let closed = self.0.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// A connection attempt the hub cut off before it was even established.
    fn refused(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Waits until the hub has closed at least `n` of the connections watched.
    fn wait_for(&self, what: &str, n: usize, opened: usize) {
        wait_until(what, || {
            let c = self.count();
            if c >= n {
                Ok(())
            } else {
                Err(format!("{c} of {opened} closed"))
            }
        });
    }
}

/// `flotilla clusters` answers: the admin API is still served.
fn assert_admin_answers(hub: &Hub) {
    let clusters = hub.cli(&["clusters"]);
    assert!(
        clusters.status.success(),
        "{}",
        String::from_utf8_lossy(&clusters.stderr)
    );
}

/// The attacker's moves, each opening `n` connections and handing them to `closed`.
struct Attacker<'a> {
    grpc: &'a str,
    http: &'a str,
    closed: Closed,
}

impl Attacker<'_> {
    /// TCP connections that never send a byte.
    async fn idle_tcp(&self, addr: &str, n: usize) {
        for _ in 0..n {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            self.closed.watch(tcp);
        }
    }

    /// TLS sessions (with `tls`'s certificate, if any) that complete the handshake and
    /// then send `first` (nothing, or an HTTP/2 preface) and nothing more.
    async fn tls_sessions(&self, tls: &tokio_rustls::TlsConnector, first: &[u8], n: usize) {
        let name = ServerName::try_from("flotilla-hub").expect("server name");
        for _ in 0..n {
            let tcp = TcpStream::connect(self.grpc).await.expect("connect");
            match tls.connect(name.clone(), tcp).await {
                Ok(mut s) => {
                    if s.write_all(first).await.is_ok() && s.flush().await.is_ok() {
                        self.closed.watch(s);
                    } else {
                        self.closed.refused();
                    }
                }
                // Evicted by the hub mid-handshake to make room for newer connections.
                Err(_) => self.closed.refused(),
            }
        }
    }

    /// HTTP requests whose head never ends.
    async fn half_headers(&self, n: usize) {
        for _ in 0..n {
            let mut tcp = TcpStream::connect(self.http).await.expect("connect");
            if tcp
                .write_all(b"POST /webhooks/github HTTP/1.1\r\nHost: hub\r\nX-Slow: ")
                .await
                .is_ok()
            {
                self.closed.watch(tcp);
            } else {
                self.closed.refused();
            }
        }
    }
}

/// File descriptors the hub process holds open.
fn open_fds(hub: &Hub) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", hub.proc.child.id()))
        .map(|d| d.count())
        .unwrap_or(usize::MAX)
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of the first sample of `name` whose labels contain `labels`.
fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn start_hub(base: &Path, flags: &[&str]) -> (Hub, String) {
    let http = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--http-listen", http.as_str()];
    args.extend_from_slice(flags);
    let hub = Hub::start_with(base, &args);
    wait_until("the HTTP listener", || {
        std::net::TcpStream::connect(&http)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    (hub, http)
}

#[test]
fn thousands_of_idle_and_half_open_connections_leave_the_hub_to_its_admins_and_spokes() {
    const UNAUTHENTICATED_CAP: usize = 200;
    const HTTP_CAP: usize = 100;
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    // Deadlines far beyond the test: only the budgets can protect the hub here.
    let (hub, http) = start_hub(
        tmp.path(),
        &[
            "--max-unauthenticated-connections",
            "200",
            "--http-max-connections",
            "100",
            "--tls-handshake-timeout",
            "1h",
            "--http2-preface-timeout",
            "1h",
            "--unauthenticated-max-age",
            "1h",
            "--http-header-timeout",
            "1h",
        ],
    );
    hub.add_source("examples", &repo.url, "");
    let baseline = open_fds(&hub);

    let rt = runtime();
    let closed = Closed::default();
    let attacker = Attacker {
        grpc: &hub.addr,
        http: &http,
        closed: closed.clone(),
    };
    let (idle_grpc, half_open_tls, idle_http, half_headers) = (2000, 600, 1500, 500);
    rt.block_on(async {
        attacker.idle_tcp(&hub.addr, idle_grpc).await;
        attacker
            .tls_sessions(&tls(&hub, None), b"", half_open_tls)
            .await;
        attacker.idle_tcp(&http, idle_http).await;
        attacker.half_headers(half_headers).await;
    });
    let opened = idle_grpc + half_open_tls + idle_http + half_headers;

    // The attacker still holds every socket it opened; the hub holds at most its caps.
    let bound = baseline + UNAUTHENTICATED_CAP + HTTP_CAP + 20;
    wait_until("the hub to hold no more than its budgets", || {
        let fds = open_fds(&hub);
        if fds <= bound {
            Ok(())
        } else {
            Err(format!("{fds} fds open, bound {bound}"))
        }
    });
    closed.wait_for(
        "the hub to close all but the newest parked connections",
        opened - UNAUTHENTICATED_CAP - HTTP_CAP,
        opened,
    );

    // While the newest ones are still parked, admins and new spokes get through.
    assert_admin_answers(&hub);
    let join = hub.token("1h", 1);
    let _dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);

    let scrape = http_get(&http, "/metrics");
    let evicted = metric(
        &scrape,
        "flotilla_hub_connections_dropped_total",
        r#"reason="evicted""#,
    );
    assert!(evicted.is_some_and(|n| n > 0.0), "{scrape}");
    let unauthenticated = metric(
        &scrape,
        "flotilla_hub_connections",
        r#"listener="grpc",state="unauthenticated""#,
    )
    .expect("unauthenticated connections gauge");
    assert!(unauthenticated <= UNAUTHENTICATED_CAP as f64, "{scrape}");
    drop(rt);
}

#[test]
fn idle_and_half_open_connections_are_closed_once_their_deadlines_pass() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (hub, http) = start_hub(
        tmp.path(),
        &[
            "--tls-handshake-timeout",
            "1s",
            "--http2-preface-timeout",
            "1s",
            "--unauthenticated-max-age",
            "2s",
            "--http2-keepalive-interval",
            "1s",
            "--http2-keepalive-timeout",
            "1s",
            "--http-header-timeout",
            "1s",
        ],
    );
    let admin = ClientConfig::load(&hub.config).expect("admin.conf");
    let rt = runtime();
    let closed = Closed::default();
    let attacker = Attacker {
        grpc: &hub.addr,
        http: &http,
        closed: closed.clone(),
    };
    let n = 50;
    rt.block_on(async {
        // No TLS handshake at all.
        attacker.idle_tcp(&hub.addr, n).await;
        // A handshake without a certificate, then no HTTP/2 preface.
        attacker.tls_sessions(&tls(&hub, None), b"", n).await;
        // A verified admin certificate, then no HTTP/2 preface.
        let as_admin = tls(&hub, Some(&admin));
        attacker.tls_sessions(&as_admin, b"", n).await;
        // HTTP/2 started, with and without a certificate, then PINGs never answered.
        let (no_cert, preface) = (tls(&hub, None), H2_PREFACE_AND_SETTINGS);
        attacker.tls_sessions(&no_cert, preface, n).await;
        attacker.tls_sessions(&as_admin, preface, n).await;
        // The HTTP port: nothing sent, and a head that never ends.
        attacker.idle_tcp(&http, n).await;
        attacker.half_headers(n).await;
    });
    let opened = 7 * n;
    closed.wait_for("the hub to close every idle connection", opened, opened);
    assert_admin_answers(&hub);
    drop(rt);
}

#[test]
fn a_certified_connection_over_its_budget_is_closed_and_its_place_comes_back_when_one_ends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (hub, http) = start_hub(tmp.path(), &["--max-authenticated-connections", "3"]);
    let admin = ClientConfig::load(&hub.config).expect("admin.conf");
    let rt = runtime();
    let (held, over) = (Closed::default(), Closed::default());
    let as_admin = tls(&hub, Some(&admin));
    let first_three = Attacker {
        grpc: &hub.addr,
        http: &http,
        closed: held.clone(),
    };
    let fourth = Attacker {
        grpc: &hub.addr,
        http: &http,
        closed: over.clone(),
    };
    rt.block_on(first_three.tls_sessions(&as_admin, H2_PREFACE_AND_SETTINGS, 3));
    rt.block_on(fourth.tls_sessions(&as_admin, H2_PREFACE_AND_SETTINGS, 1));
    wait_until("the hub to close the fourth certified connection", || {
        (over.count() == 1)
            .then_some(())
            .ok_or_else(|| "still open".to_string())
    });
    assert_eq!(held.count(), 0, "the three within budget are kept");
    let scrape = http_get(&http, "/metrics");
    let refused = metric(
        &scrape,
        "flotilla_hub_connections_dropped_total",
        r#"reason="over_budget""#,
    );
    assert_eq!(refused, Some(1.0), "{scrape}");

    // Ending the held connections gives the budget back to the admin's CLI.
    drop(rt);
    wait_until("the admin CLI to get a place again", || {
        let out = hub.cli(&["clusters"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
}
