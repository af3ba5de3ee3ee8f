//! The hub's remote chart fetcher (`flotilla_hub::charts`) against real servers and the
//! real Helm: charts made by `helm package`, a repository index made by `helm repo
//! index` and served by the project's HTTP test helper (`flotilla_e2e::charts`), version ranges checked against
//! `helm pull`, and an OCI registry from Debian's `docker-registry` package, with TLS from
//! a test CA and htpasswd auth, that `helm push` fills.
//!
//! The pinned `helm` comes from `HELM` or `~/.cache/flotilla-tools/bin/helm` (built by
//! `tests/k8s/tools/build`); `docker-registry` from `/usr/bin`. Without them the tests
//! skip with a message, except under `CI=true`, where they must run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_e2e::charts::{
    CHART_BASIC, CHART_PASSWORD, CHART_USER, ChartRepo, helm, package, run,
};
use flotilla_hub::charts::{ChartAuth, ChartError, ChartLimits, Charts};
use flotilla_render::RemoteChart;
use flotilla_telemetry::admission::Admission;
use flotilla_telemetry::hyper::StatusCode;
use flotilla_telemetry::{HttpLimits, HttpRequest, reply, serve_http_with};

/// bcrypt of `chart-pass` (cost 4), for the registry's htpasswd file.
const HTPASSWD: &str = "chart-user:$2b$04$uJ5KiLbMNVEg7rI2FRd/AOp79ui4PPMlPdnogTJzCZzDlk0/T9itK\n";

/// A reference tool, or None (skip) outside CI.
fn tool(env: &str, fallback: PathBuf) -> Option<PathBuf> {
    let path = std::env::var_os(env).map_or(fallback, PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is required under CI=true",
        path.display()
    );
    eprintln!("skipping: {} not found", path.display());
    None
}

/// A chart whose ConfigMap says `note`.
fn template(note: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}\ndata:\n  note: {note}\n"
    )
}

/// A repository holding `web` at several versions, indexed by the real `helm repo index`.
fn web_repo(helm: &Path, work: &Path) -> ChartRepo {
    let out = work.join("repo");
    for v in ["0.9.0", "1.0.0", "1.2.0", "1.2.5", "1.10.0", "2.0.0-rc.1"] {
        package(helm, work, "web", v, &template("stock"), &out);
    }
    let server = ChartRepo::start(&out);
    server.index(helm);
    server
}

fn request(repo: &str, chart: &str, version: &str) -> RemoteChart {
    RemoteChart {
        chart: chart.to_string(),
        repo: (!repo.is_empty()).then(|| repo.to_string()),
        version: (!version.is_empty()).then(|| version.to_string()),
    }
}

fn fetcher(dir: &Path, limits: ChartLimits) -> Arc<Charts> {
    // As the hub's main does; a second install is refused and harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(Charts::open(dir, limits).expect("open the chart cache"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn repository_versions_resolve_as_helm_pull_resolves_them() {
    let Some(helm) = helm() else { return };
    let work = tempfile::tempdir().expect("tmp");
    let repo = web_repo(&helm, work.path());
    let charts = fetcher(&work.path().join("cache"), ChartLimits::default());
    let rt = runtime();
    for range in [
        "",
        "1.2.0",
        "~1.2",
        "^1",
        ">=1.0, <1.10",
        "1.x",
        ">= 2.0.0-0",
        "< 1",
        "1.0 - 1.2",
        "1.2",
        "> 1.2",
        "<= 1.2",
        "^0.9",
        "~1",
        "1.0.0 || 1.10.0",
    ] {
        let pulled = work.path().join(format!("pull-{}", hex_of(range)));
        std::fs::create_dir_all(&pulled).expect("mkdir");
        let mut cmd = Command::new(&helm);
        cmd.args(["pull", "web", "--repo", &repo.url, "-d"])
            .arg(&pulled);
        if !range.is_empty() {
            cmd.args(["--version", range]);
        }
        run(&mut cmd);
        let file = std::fs::read_dir(&pulled)
            .expect("helm pulled")
            .flatten()
            .next()
            .expect("one archive")
            .path();
        let helm_version = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("web-"))
            .and_then(|n| n.strip_suffix(".tgz"))
            .expect("web-VERSION.tgz")
            .to_string();

        let got = rt
            .block_on(
                charts
                    .session()
                    .fetch(&request(&repo.url, "web", range), &ChartAuth::default()),
            )
            .unwrap_or_else(|e| panic!("range {range:?}: {e}"));
        assert_eq!(got.version, helm_version, "range {range:?}");
        assert_eq!(got.name, "web");
        assert_eq!(
            &got.bytes[..],
            &std::fs::read(&file).expect("read")[..],
            "range {range:?}: the same archive as helm pull"
        );
    }
    let none = rt
        .block_on(
            charts
                .session()
                .fetch(&request(&repo.url, "web", "^3"), &ChartAuth::default()),
        )
        .expect_err("no 3.x");
    assert!(
        matches!(none, ChartError::NoVersion { .. }) && none.to_string().contains("1.10.0"),
        "{none}"
    );
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn basic_auth_is_sent_to_the_repository_and_a_refusal_says_so_without_the_password() {
    let Some(helm) = helm() else { return };
    let work = tempfile::tempdir().expect("tmp");
    let repo = web_repo(&helm, work.path());
    repo.needs_auth.store(true, Ordering::SeqCst);
    let charts = fetcher(&work.path().join("cache"), ChartLimits::default());
    let rt = runtime();
    let fetch = |auth: ChartAuth| {
        rt.block_on(
            charts
                .session()
                .fetch(&request(&repo.url, "web", "1.2.0"), &auth),
        )
    };

    let anonymous = fetch(ChartAuth::default()).expect_err("refused");
    assert!(anonymous.to_string().contains("HTTP 401"), "{anonymous}");
    let wrong = fetch(ChartAuth {
        username: Some(CHART_USER.into()),
        password: Some("not-the-password".into()),
        ..ChartAuth::default()
    })
    .expect_err("refused");
    let text = wrong.to_string();
    assert!(
        text.contains("HTTP 401") && text.contains("credentials"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");

    let ok = fetch(ChartAuth {
        username: Some(CHART_USER.into()),
        password: Some(CHART_PASSWORD.into()),
        ..ChartAuth::default()
    })
    .expect("accepted");
    assert_eq!(ok.version, "1.2.0");
    let debug = format!(
        "{:?}",
        ChartAuth {
            username: Some(CHART_USER.into()),
            password: Some(CHART_PASSWORD.into()),
            ..ChartAuth::default()
        }
    );
    assert!(!debug.contains(CHART_PASSWORD), "{debug}");
}

#[test]
fn an_archive_that_does_not_match_the_index_digest_is_refused() {
    let Some(helm) = helm() else { return };
    let work = tempfile::tempdir().expect("tmp");
    let repo = web_repo(&helm, work.path());
    // Same name and version, other content: what a tampered mirror would serve.
    let other = package(
        &helm,
        work.path(),
        "web",
        "1.2.0",
        "tampered",
        &work.path().join("o"),
    );
    std::fs::copy(&other, repo.dir.join("web-1.2.0.tgz")).expect("swap");
    let charts = fetcher(&work.path().join("cache"), ChartLimits::default());
    let err = runtime()
        .block_on(
            charts
                .session()
                .fetch(&request(&repo.url, "web", "1.2.0"), &ChartAuth::default()),
        )
        .expect_err("refused");
    assert!(matches!(err, ChartError::Digest { .. }), "{err}");
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert_eq!(charts.cache().held(), 0, "a refused archive is not cached");
}

#[test]
fn an_index_over_its_limit_is_refused_before_it_is_parsed() {
    let Some(helm) = helm() else { return };
    let work = tempfile::tempdir().expect("tmp");
    let repo = web_repo(&helm, work.path());
    let limits = ChartLimits {
        max_index_bytes: 512,
        ..ChartLimits::default()
    };
    let charts = fetcher(&work.path().join("cache"), limits);
    let err = runtime()
        .block_on(
            charts
                .session()
                .fetch(&request(&repo.url, "web", ""), &ChartAuth::default()),
        )
        .expect_err("refused");
    assert!(
        matches!(err, ChartError::TooLarge { max: 512, .. }),
        "{err}"
    );
}

#[test]
fn a_chart_is_downloaded_once_and_then_served_from_its_digest_on_disk() {
    use std::os::unix::fs::PermissionsExt;
    let Some(helm) = helm() else { return };
    let work = tempfile::tempdir().expect("tmp");
    let repo = web_repo(&helm, work.path());
    let cache_dir = work.path().join("cache");
    let rt = runtime();
    let want = request(&repo.url, "web", "~1.2");
    let first = fetcher(&cache_dir, ChartLimits::default());
    // Two bundles naming the same chart in one poll read the index once.
    let mut session = first.session();
    let a = rt
        .block_on(session.fetch(&want, &ChartAuth::default()))
        .expect("fetch");
    let b = rt
        .block_on(session.fetch(&want, &ChartAuth::default()))
        .expect("fetch");
    assert_eq!(a, b);
    assert_eq!(repo.count("/index.yaml"), 1);
    assert_eq!(repo.count("/web-1.2.5.tgz"), 1);

    // A restarted hub finds it on disk: the index is read again, the archive is not.
    let restarted = fetcher(&cache_dir, ChartLimits::default());
    let c = rt
        .block_on(restarted.session().fetch(&want, &ChartAuth::default()))
        .expect("fetch");
    assert_eq!(c, a);
    assert_eq!(repo.count("/index.yaml"), 2);
    assert_eq!(repo.count("/web-1.2.5.tgz"), 1, "served from the cache");

    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&cache_dir), 0o700);
    let hex = a.digest.strip_prefix("sha256:").expect("sha256");
    assert_eq!(mode(&cache_dir.join(format!("{hex}.tgz"))), 0o600);

    // A corrupt cache file is not used: it is fetched again.
    std::fs::write(cache_dir.join(format!("{hex}.tgz")), b"garbage").expect("corrupt");
    let again = fetcher(&cache_dir, ChartLimits::default());
    let d = rt
        .block_on(again.session().fetch(&want, &ChartAuth::default()))
        .expect("fetch");
    assert_eq!(d, a);
    assert_eq!(repo.count("/web-1.2.5.tgz"), 2);
}

#[test]
fn a_chart_named_by_its_archive_url_is_fetched_with_the_same_auth_and_bounds() {
    let Some(helm) = helm() else { return };
    let work = tempfile::tempdir().expect("tmp");
    let repo = web_repo(&helm, work.path());
    repo.needs_auth.store(true, Ordering::SeqCst);
    let url = format!("{}/web-1.2.0.tgz", repo.url);
    let want = request("", &url, "");
    let auth = ChartAuth {
        username: Some(CHART_USER.into()),
        password: Some(CHART_PASSWORD.into()),
        ..ChartAuth::default()
    };
    let rt = runtime();
    let charts = fetcher(&work.path().join("cache"), ChartLimits::default());

    let refused = rt
        .block_on(charts.session().fetch(&want, &ChartAuth::default()))
        .expect_err("no credentials");
    assert!(refused.to_string().contains("HTTP 401"), "{refused}");

    let got = rt
        .block_on(charts.session().fetch(&want, &auth))
        .expect("fetched");
    assert_eq!((got.name.as_str(), got.version.as_str()), ("web", "1.2.0"));
    assert_eq!(repo.count("/index.yaml"), 0, "no index is read for a URL");
    let archive = std::fs::read(repo.dir.join("web-1.2.0.tgz")).expect("archive");
    assert_eq!(&got.bytes[..], &archive[..]);
    // Cached under its digest, as repository charts are.
    let hex = got.digest.strip_prefix("sha256:").expect("sha256");
    let cached =
        std::fs::read(work.path().join("cache").join(format!("{hex}.tgz"))).expect("cached");
    assert_eq!(cached, archive);

    let small = fetcher(
        &work.path().join("cache-small"),
        ChartLimits {
            max_chart_bytes: 64,
            ..ChartLimits::default()
        },
    );
    let err = rt
        .block_on(small.session().fetch(&want, &auth))
        .expect_err("over the limit");
    assert!(matches!(err, ChartError::TooLarge { max: 64, .. }), "{err}");
}

/// Debian's `docker-registry` on a loopback port, TLS from a test CA, htpasswd auth.
struct Registry {
    host: String,
    ca_pem: String,
    ca_file: PathBuf,
    child: Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry(dir: &Path) -> Option<Registry> {
    let bin = tool("DOCKER_REGISTRY", PathBuf::from("/usr/bin/docker-registry"))?;
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "flotilla test registry CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    std::fs::create_dir_all(dir).expect("mkdir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("write");
    std::fs::write(dir.join("tls.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("tls-key.pem"), key.serialize_pem()).expect("write");
    std::fs::write(dir.join("htpasswd"), HTPASSWD).expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {d}/tls.pem\n    key: {d}/tls-key.pem\nauth:\n  htpasswd:\n    realm: flotilla-test\n    path: {d}/htpasswd\n",
        root = dir.join("data").display(),
        d = dir.display(),
    );
    std::fs::write(dir.join("config.yml"), config).expect("write");
    let child = Command::new(bin)
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("registry.log")).expect("log"))
        .spawn()
        .expect("start docker-registry");
    let host = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&host).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Registry {
        host,
        ca_pem: ca_cert.pem(),
        ca_file,
        child,
    })
}

#[test]
fn oci_charts_pushed_by_helm_are_pulled_with_basic_auth_over_a_private_ca() {
    let Some(helm) = helm() else { return };
    let work = tempfile::tempdir().expect("tmp");
    let Some(reg) = registry(&work.path().join("registry")) else {
        return;
    };
    let out = work.path().join("pkgs");
    let mut pushed = BTreeMap::new();
    for v in ["1.0.0", "1.2.0", "1.3.0-rc.1"] {
        let tgz = package(&helm, work.path(), "web", v, &template("oci"), &out);
        run(Command::new(&helm)
            .arg("push")
            .arg(&tgz)
            .arg(format!("oci://{}/charts", reg.host))
            .arg("--ca-file")
            .arg(&reg.ca_file)
            .args(["--username", CHART_USER, "--password", CHART_PASSWORD])
            .env(
                "HELM_REGISTRY_CONFIG",
                work.path().join("helm-registry.json"),
            ));
        pushed.insert(v, std::fs::read(&tgz).expect("read"));
    }
    let charts = fetcher(&work.path().join("cache"), ChartLimits::default());
    let rt = runtime();
    let reference = format!("oci://{}/charts/web", reg.host);
    let auth = ChartAuth {
        username: Some(CHART_USER.into()),
        password: Some(CHART_PASSWORD.into()),
        ca_pem: Some(reg.ca_pem.clone()),
        ..ChartAuth::default()
    };
    let fetch = |version: &str, auth: &ChartAuth| {
        rt.block_on(
            charts
                .session()
                .fetch(&request("", &reference, version), auth),
        )
    };

    let exact = fetch("1.0.0", &auth).expect("exact tag");
    assert_eq!(
        (exact.name.as_str(), exact.version.as_str()),
        ("web", "1.0.0")
    );
    assert_eq!(&exact.bytes[..], &pushed["1.0.0"][..]);
    let ranged = fetch("^1", &auth).expect("range over the tag list");
    assert_eq!(ranged.version, "1.2.0", "prereleases only when asked for");
    assert_eq!(&ranged.bytes[..], &pushed["1.2.0"][..]);
    let latest = fetch("", &auth).expect("latest");
    assert_eq!(latest.version, "1.2.0");

    let untrusted = fetch(
        "1.0.0",
        &ChartAuth {
            ca_pem: None,
            ..auth.clone()
        },
    )
    .expect_err("the test CA is not a platform root");
    assert!(
        untrusted.to_string().to_lowercase().contains("certificate"),
        "{untrusted}"
    );
    let refused = fetch(
        "1.0.0",
        &ChartAuth {
            password: Some("wrong".into()),
            ..auth.clone()
        },
    )
    .expect_err("wrong password");
    assert!(refused.to_string().contains("HTTP 401"), "{refused}");
    let missing = fetch("9.9.9", &auth).expect_err("no such tag");
    assert!(missing.to_string().contains("HTTP 404"), "{missing}");
}

/// A fake OCI registry (the test's own, named as such) for the bearer-token flow that
/// Debian's `docker-registry` only offers with an external token server: every `/v2/`
/// request without the token gets `401` with a `Bearer` challenge whose realm, on the
/// same server, hands out the token for the right basic credentials. It serves one
/// chart, `charts/web:1.0.0`, as a Helm chart manifest over plain HTTP.
struct FakeBearerRegistry {
    host: String,
    token_requests: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

const FAKE_TOKEN: &str = "fake-registry-token";

impl FakeBearerRegistry {
    fn start(chart: Vec<u8>) -> FakeBearerRegistry {
        use sha2::Digest;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&chart)));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": digest, "size": 2},
            "layers": [{"mediaType": flotilla_hub::charts::HELM_CHART_LAYER, "digest": digest, "size": chart.len()}]
        })
        .to_string();
        let token_requests = Arc::new(Mutex::new(Vec::new()));
        let (log, realm) = (token_requests.clone(), format!("http://{host}/token"));
        runtime.spawn(serve_http_with(
            listener,
            HttpLimits::with_max_body(1 << 20),
            Admission::new(64),
            move |req: HttpRequest| {
                let (log, realm, manifest, chart, digest) = (
                    log.clone(),
                    realm.clone(),
                    manifest.clone(),
                    chart.clone(),
                    digest.clone(),
                );
                async move {
                    let auth = req
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    if req.path == "/token" {
                        if let Ok(mut l) = log.lock() {
                            l.push(req.query.clone());
                        }
                        return if auth == CHART_BASIC {
                            reply(
                                StatusCode::OK,
                                "application/json",
                                format!("{{\"token\":\"{FAKE_TOKEN}\"}}"),
                            )
                        } else {
                            reply(StatusCode::UNAUTHORIZED, "text/plain", "")
                        };
                    }
                    if auth != format!("Bearer {FAKE_TOKEN}") {
                        let mut r = reply(StatusCode::UNAUTHORIZED, "application/json", "{}");
                        let challenge = format!(
                            "Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:charts/web:pull\""
                        );
                        if let Ok(v) = challenge.parse() {
                            r.headers_mut().insert("www-authenticate", v);
                        }
                        return r;
                    }
                    if req.path == "/v2/charts/web/manifests/1.0.0" {
                        reply(
                            StatusCode::OK,
                            "application/vnd.oci.image.manifest.v1+json",
                            manifest,
                        )
                    } else if req.path == format!("/v2/charts/web/blobs/{digest}") {
                        reply(StatusCode::OK, "application/octet-stream", chart)
                    } else {
                        reply(StatusCode::NOT_FOUND, "application/json", "{}")
                    }
                }
            },
        ));
        FakeBearerRegistry {
            host,
            token_requests,
            _runtime: runtime,
        }
    }
}

#[test]
fn a_bearer_challenge_is_answered_with_a_token_from_its_realm() {
    let Some(helm) = helm() else { return };
    let work = tempfile::tempdir().expect("tmp");
    let tgz = package(
        &helm,
        work.path(),
        "web",
        "1.0.0",
        "bearer",
        &work.path().join("p"),
    );
    let chart = std::fs::read(&tgz).expect("read");
    let reg = FakeBearerRegistry::start(chart.clone());
    let charts = fetcher(&work.path().join("cache"), ChartLimits::default());
    let rt = runtime();
    let want = request("", &format!("oci://{}/charts/web", reg.host), "1.0.0");
    let fetch = |auth: ChartAuth| rt.block_on(charts.session().fetch(&want, &auth));

    let got = fetch(ChartAuth {
        username: Some(CHART_USER.into()),
        password: Some(CHART_PASSWORD.into()),
        plain_http: true,
        ..ChartAuth::default()
    })
    .expect("token flow");
    assert_eq!(&got.bytes[..], &chart[..]);
    let asked = reg.token_requests.lock().expect("log").clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].contains("service=fake")
            && asked[0].contains("scope=repository%3Acharts%2Fweb%3Apull"),
        "{asked:?}"
    );

    // A token the source supplies is sent as is, with no trip to the realm.
    let with_token = fetch(ChartAuth {
        token: Some(FAKE_TOKEN.into()),
        plain_http: true,
        ..ChartAuth::default()
    })
    .expect("static token");
    assert_eq!(with_token.digest, got.digest);
    assert_eq!(reg.token_requests.lock().expect("log").len(), 1);

    // Wrong credentials: the realm refuses, and the error says where.
    let refused = fetch(ChartAuth {
        username: Some(CHART_USER.into()),
        password: Some("wrong".into()),
        plain_http: true,
        ..ChartAuth::default()
    })
    .expect_err("refused");
    assert!(
        refused.to_string().contains("a token for") && refused.to_string().contains("HTTP 401"),
        "{refused}"
    );
}
