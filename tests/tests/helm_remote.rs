//! A bundle whose fleet.yaml names a chart in a Helm repository, end to end: charts made
//! by the real `helm package` and indexed by `helm repo index`, served behind basic auth
//! by the project's HTTP test helper; the source carries the credentials
//! (`--helm-username`, `--helm-password-file`); the hub fetches the chart once for two
//! spokes; when the repository goes away the bundle shows the fetch error and its last
//! good revision stays deployed; when it comes back the bundle recovers without a new
//! commit.
//!
//! `helm` comes from `HELM` or `~/.cache/flotilla-tools/bin/helm` (required under
//! `CI=true`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use flotilla_e2e::{GitServer, Hub, Spoke, wait_until, write_file};
use flotilla_telemetry::admission::Admission;
use flotilla_telemetry::hyper::StatusCode;
use flotilla_telemetry::{HttpLimits, HttpRequest, HttpResponse, reply, serve_http_with};

/// `Basic base64("chart-user:chart-pass")`.
const GOOD_BASIC: &str = "Basic Y2hhcnQtdXNlcjpjaGFydC1wYXNz";
const PASSWORD: &str = "chart-pass";

fn helm() -> Option<PathBuf> {
    let path = std::env::var_os("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/flotilla-tools/bin/helm")
        });
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs helm: set HELM or run tests/k8s/tools/build helm"
    );
    eprintln!("skipped: no helm (set HELM, or run tests/k8s/tools/build helm)");
    None
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run helm");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Packages chart `web` at `version` (a ConfigMap saying which version it is) into
/// `repo` and indexes the folder again, as a chart publisher would.
fn publish(helm: &Path, work: &Path, repo: &Path, url: &str, version: &str) {
    let src = work.join(format!("src-{version}/web"));
    write_file(
        &src,
        "Chart.yaml",
        &format!("apiVersion: v2\nname: web\nversion: {version}\n"),
    );
    write_file(
        &src,
        "templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  chart: {{ .Chart.Version }}\n",
    );
    run(Command::new(helm)
        .arg("package")
        .arg(&src)
        .arg("-d")
        .arg(repo));
    run(Command::new(helm)
        .args(["repo", "index"])
        .arg(repo)
        .args(["--url", url]));
}

/// The chart repository: `repo` served at `/charts/` behind basic auth, or 503 for
/// everything while `down` is set.
struct ChartRepo {
    url: String,
    down: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

fn serve(
    root: &Path,
    down: &AtomicBool,
    log: &Mutex<Vec<String>>,
    req: &HttpRequest,
) -> HttpResponse {
    if let Ok(mut l) = log.lock() {
        l.push(req.path.clone());
    }
    if down.load(Ordering::SeqCst) {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "down\n");
    }
    let authorized = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(GOOD_BASIC);
    if !authorized {
        return reply(StatusCode::UNAUTHORIZED, "text/plain", "");
    }
    let name = req.path.strip_prefix("/charts/").unwrap_or("");
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return reply(StatusCode::NOT_FOUND, "text/plain", "");
    }
    match std::fs::read(root.join(name)) {
        Ok(b) => reply(StatusCode::OK, "application/octet-stream", b),
        Err(_) => reply(StatusCode::NOT_FOUND, "text/plain", ""),
    }
}

impl ChartRepo {
    fn start(root: &Path) -> ChartRepo {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let down = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (root, d, log) = (root.to_path_buf(), down.clone(), requests.clone());
        runtime.spawn(serve_http_with(
            listener,
            HttpLimits::with_max_body(1 << 20),
            Admission::new(64),
            move |req: HttpRequest| {
                let (root, d, log) = (root.clone(), d.clone(), log.clone());
                async move { serve(&root, &d, &log, &req) }
            },
        ));
        ChartRepo {
            url: format!("http://{addr}/charts"),
            down,
            requests,
            _runtime: runtime,
        }
    }

    fn count(&self, suffix: &str) -> usize {
        self.requests
            .lock()
            .expect("log")
            .iter()
            .filter(|p| p.ends_with(suffix))
            .count()
    }
}

fn bundle_row(hub: &Hub, name: &str) -> serde_json::Value {
    hub.json(&["bundles"])
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == name).cloned())
        .unwrap_or_default()
}

#[test]
fn a_chart_from_a_helm_repository_deploys_and_its_last_good_revision_outlives_the_repository() {
    let Some(helm) = helm() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let charts = tmp.path().join("charts");
    std::fs::create_dir_all(&charts).expect("mkdir");
    let repo = ChartRepo::start(&charts);
    publish(&helm, tmp.path(), &charts, &repo.url, "1.0.0");

    let fleet_yaml = |version: &str| {
        format!(
            "defaultNamespace: web\nhelm:\n  chart: web\n  repo: {}\n  version: \"{version}\"\n  releaseName: web\n",
            repo.url
        )
    };
    let src = tmp.path().join("src");
    write_file(&src, "web/fleet.yaml", &fleet_yaml("~1.0"));
    let git = GitServer::start(&tmp.path().join("git"));
    let gitrepo = git.repo_from("remote", &src);

    let hub = Hub::start(tmp.path());
    let password_file = tmp.path().join("helm-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("write");
    let out = hub.cli(&[
        "source",
        "add",
        "remote",
        "--repo",
        &gitrepo.url,
        "--interval",
        "1s",
        "--helm-username",
        "chart-user",
        "--helm-password-file",
        &password_file.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let join = hub.token("1h", 2);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let prod = Spoke::start(tmp.path(), &join, "prod", "env=prod");
    hub.wait_ready_bundles("dev", &["remote-web"]);
    hub.wait_ready_bundles("prod", &["remote-web"]);
    for spoke in [&dev, &prod] {
        let text = spoke.file("remote-web").expect("manifest");
        assert!(text.contains("chart: \"1.0.0\""), "{text}");
    }
    assert_eq!(
        repo.count("/web-1.0.0.tgz"),
        1,
        "one fetch for every cluster"
    );

    // The password went to the hub, and nothing of it comes back.
    let sources = hub.cli(&["sources", "-o", "json"]);
    let shown = String::from_utf8_lossy(&sources.stdout);
    assert!(!shown.contains(PASSWORD), "{shown}");
    let v: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(v[0]["helm_auth"]["stored"], serde_json::json!(["password"]));

    // The repository goes away while a new version is asked for: the bundle shows why,
    // and the clusters keep running the last good revision.
    repo.down.store(true, Ordering::SeqCst);
    gitrepo.commit_file("web/fleet.yaml", &fleet_yaml("~1.1"), "web 1.1");
    let error = wait_until("the fetch error on the bundle", || {
        let row = bundle_row(&hub, "remote-web");
        let error = row["error"].as_str().unwrap_or_default().to_string();
        if error.contains("HTTP 503") {
            Ok(error)
        } else {
            Err(format!("{row}"))
        }
    });
    assert!(error.contains("web/fleet.yaml"), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");
    assert!(
        dev.file("remote-web")
            .expect("manifest")
            .contains("chart: \"1.0.0\""),
        "the last good revision stays deployed"
    );

    // It comes back with 1.1.0: the next poll fetches again, with no new commit.
    publish(&helm, tmp.path(), &charts, &repo.url, "1.1.0");
    repo.down.store(false, Ordering::SeqCst);
    wait_until("1.1.0 on dev", || {
        let text = dev.file("remote-web").unwrap_or_default();
        if text.contains("chart: \"1.1.0\"") {
            Ok(())
        } else {
            Err(text)
        }
    });
    hub.wait_ready_bundles("prod", &["remote-web"]);
    let row = bundle_row(&hub, "remote-web");
    assert_eq!(row["error"], "", "{row}");
}
