//! Helm chart repositories for tests: the pinned `helm` (to package and index charts, and
//! as the oracle), and a repository folder served over HTTP by the project's test helper
//! (`flotilla_telemetry::serve_http_with`), with basic auth, an outage switch and a log of
//! the paths asked for.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use flotilla_telemetry::admission::Admission;
use flotilla_telemetry::hyper::StatusCode;
use flotilla_telemetry::{HttpLimits, HttpRequest, HttpResponse, reply, serve_http_with};

pub const CHART_USER: &str = "chart-user";
pub const CHART_PASSWORD: &str = "chart-pass";
/// `Basic base64("chart-user:chart-pass")`.
pub const CHART_BASIC: &str = "Basic Y2hhcnQtdXNlcjpjaGFydC1wYXNz";

/// The pinned `helm` (`HELM`, or `~/.cache/flotilla-tools/bin/helm` built by
/// `tests/k8s/tools/build`), or None (the test skips) outside `CI=true`.
pub fn helm() -> Option<PathBuf> {
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

/// Runs a reference tool, asserting success; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a reference tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm package` of chart `name` at `version` with one template, `templates/cm.yaml`;
/// returns the archive's path in `out`. `work` holds the chart sources.
pub fn package(
    helm: &Path,
    work: &Path,
    name: &str,
    version: &str,
    template: &str,
    out: &Path,
) -> PathBuf {
    let n = std::fs::read_dir(work).map_or(0, Iterator::count);
    let dir = work.join(format!("chart-src-{n}")).join(name);
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(
        dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
    )
    .expect("write");
    std::fs::write(dir.join("templates/cm.yaml"), template).expect("write");
    std::fs::create_dir_all(out).expect("mkdir");
    run(Command::new(helm)
        .arg("package")
        .arg(&dir)
        .arg("-d")
        .arg(out));
    out.join(format!("{name}-{version}.tgz"))
}

/// A Helm repository: the files of `dir` at `URL/NAME`.
pub struct ChartRepo {
    /// `http://127.0.0.1:PORT/charts`
    pub url: String,
    pub dir: PathBuf,
    /// Refuse requests without [`CHART_BASIC`] (401 with a Basic challenge).
    pub needs_auth: Arc<AtomicBool>,
    /// Answer 503 to everything, as a repository in an outage.
    pub down: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl ChartRepo {
    pub fn start(dir: &Path) -> ChartRepo {
        std::fs::create_dir_all(dir).expect("mkdir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let needs_auth = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = Served {
            root: dir.to_path_buf(),
            needs_auth: needs_auth.clone(),
            down: down.clone(),
            log: requests.clone(),
        };
        runtime.spawn(serve_http_with(
            listener,
            HttpLimits::with_max_body(1 << 20),
            Admission::new(64),
            move |req: HttpRequest| {
                let state = state.clone();
                async move { state.answer(&req) }
            },
        ));
        ChartRepo {
            url: format!("http://{addr}/charts"),
            dir: dir.to_path_buf(),
            needs_auth,
            down,
            requests,
            _runtime: runtime,
        }
    }

    /// `helm repo index` over the folder, with absolute URLs to this server.
    pub fn index(&self, helm: &Path) {
        run(Command::new(helm)
            .args(["repo", "index"])
            .arg(&self.dir)
            .args(["--url", &self.url]));
    }

    /// How many requests asked for a path ending in `suffix`.
    pub fn count(&self, suffix: &str) -> usize {
        self.requests
            .lock()
            .expect("log")
            .iter()
            .filter(|p| p.ends_with(suffix))
            .count()
    }
}

#[derive(Clone)]
struct Served {
    root: PathBuf,
    needs_auth: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    fn answer(&self, req: &HttpRequest) -> HttpResponse {
        if let Ok(mut l) = self.log.lock() {
            l.push(req.path.clone());
        }
        if self.down.load(Ordering::SeqCst) {
            return reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "down\n");
        }
        let authorized = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(CHART_BASIC);
        if self.needs_auth.load(Ordering::SeqCst) && !authorized {
            let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain", "who are you\n");
            if let Ok(v) = "Basic realm=\"charts\"".parse() {
                r.headers_mut().insert("www-authenticate", v);
            }
            return r;
        }
        let name = req.path.strip_prefix("/charts/").unwrap_or("");
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return reply(StatusCode::NOT_FOUND, "text/plain", "");
        }
        match std::fs::read(self.root.join(name)) {
            Ok(b) => reply(StatusCode::OK, "application/octet-stream", b),
            Err(_) => reply(StatusCode::NOT_FOUND, "text/plain", ""),
        }
    }
}
