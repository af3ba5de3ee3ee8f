//! Harness for flotilla's end-to-end tests: starts the real `flotilla-hub`,
//! `flotilla-spoke` and `flotilla` binaries as processes, serves git over `git daemon` on
//! loopback, and waits on conditions (never on fixed sleeps).
//!
//! The binaries are found next to the test executable (`target/debug`). `cargo test
//! --workspace` builds them; when running this package alone, `cargo build --bins` first.

pub mod charts;
pub mod doctest;
pub mod etcd;
pub mod k8s;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous: CI machines are small and busy. Tests never assert on time.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The permission bits of `path` (`0o600` for a private key), or a panic naming it.
pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Path of a workspace binary, e.g. `flotilla-hub`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps layout");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found; run `cargo build --bins` first (cargo test --workspace does it)",
        p.display()
    );
    p
}

/// Polls `probe` until it returns `Some`, or panics naming `what` and the last state.
pub fn wait_until<T>(what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
    wait_until_within(TIMEOUT, what, probe)
}

/// [`wait_until`] with a deadline of its own, for work that is slow in a debug build
/// (rendering and hashing tens of MiB).
pub fn wait_until_within<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match probe() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}; last observation: {last}");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed on drop; its stderr goes to a log file shown on failure.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).expect("log dir");
        }
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn process");
        Proc { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own; returns whether it succeeded.
    pub fn wait_exit(&mut self) -> bool {
        wait_until("process exit", || match self.child.try_wait() {
            Ok(Some(status)) => Ok(status.success()),
            Ok(None) => Err("still running".into()),
            Err(e) => Err(e.to_string()),
        })
    }

    /// Asks the process to stop (SIGTERM) and returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        sent && self.wait_exit()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs git in `dir` as a test author, asserting success.
pub fn git(dir: &Path, args: &[&str]) {
    git_with_input(dir, args, b"");
}

/// Runs git in `dir` with `input` on stdin (plumbing such as `hash-object --stdin` or
/// `mktree`), asserting success; returns its trimmed stdout.
pub fn git_with_input(dir: &Path, args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("git")
        .args([
            "-c",
            "user.name=flotilla-test",
            "-c",
            "user.email=test@flotilla.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git is installed");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).expect("write to git");
    }
    let out = child.wait_with_output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes `text` to `dir/rel`, creating folders.
pub fn write_file(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(p, text).expect("write file");
}

/// A ConfigMap named `name` whose `data.v` is `value`.
pub fn configmap(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: \"{value}\"\n")
}

/// `git daemon` serving every repo under `root` on a loopback port.
pub struct GitServer {
    pub root: PathBuf,
    pub port: u16,
    _daemon: Proc,
}

impl GitServer {
    pub fn start(root: &Path) -> GitServer {
        std::fs::create_dir_all(root).expect("git root");
        let port = free_port();
        // Run git-daemon itself, not `git daemon`: the `git` wrapper forks the daemon as a
        // child, so killing the wrapper would leave the daemon listening.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .expect("git --exec-path");
        let daemon = Proc::spawn(
            Command::new(Path::new(&exec_path).join("git-daemon"))
                .arg("--reuseaddr")
                .arg("--export-all")
                .arg(format!("--base-path={}", root.display()))
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(root),
            root.with_extension("git-daemon.log"),
        );
        wait_until("git daemon to listen", || {
            TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        GitServer {
            root: root.to_path_buf(),
            port,
            _daemon: daemon,
        }
    }

    /// A working repo under the served root, initialised from `src`'s files.
    pub fn repo_from(&self, name: &str, src: &Path) -> Repo {
        let dir = self.root.join(name);
        copy_dir(src, &dir);
        git(&dir, &["init", "-q", "-b", "main"]);
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "initial"]);
        Repo {
            dir,
            url: format!("git://127.0.0.1:{}/{name}", self.port),
        }
    }
}

pub struct Repo {
    pub dir: PathBuf,
    pub url: String,
}

impl Repo {
    pub fn commit_file(&self, rel: &str, content: &str, message: &str) {
        let p = self.dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write file");
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "-m", message]);
    }
}

pub fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read dir").flatten() {
        let to = dest.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// The example fleet repo in `examples/`, which the quickstart uses too.
pub fn example_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet-repo")
}

/// A running hub process with its data dir.
pub struct Hub {
    pub dir: PathBuf,
    pub addr: String,
    pub config: PathBuf,
    pub proc: Proc,
    run_args: Vec<String>,
}

/// `flotilla-hub init --data-dir DIR --advertise ADVERTISE EXTRA…`, which must succeed.
fn hub_init(dir: &Path, advertise: &str, extra: &[&str]) {
    let out = Command::new(bin("flotilla-hub"))
        .args(["init", "--data-dir"])
        .arg(dir)
        .args(["--advertise", advertise])
        .args(extra)
        .output()
        .expect("run flotilla-hub init");
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hub {
    /// The hub's CA as the roots a TLS client of the hub trusts.
    pub fn ca_roots(&self) -> rustls::RootCertStore {
        use rustls_pki_types::pem::PemObject;
        let ca = flotilla_identity::files::read_public(&self.dir.join("ca.pem")).expect("hub CA");
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.expect("CA pem")).expect("CA root");
        }
        roots
    }

    pub fn start(base: &Path) -> Hub {
        Self::start_with(base, &[])
    }

    /// Starts a hub with extra `flotilla-hub run` flags, e.g. `--cert-lifetime 6s`.
    pub fn start_with(base: &Path, run_args: &[&str]) -> Hub {
        Self::start_with_init(base, &[], run_args)
    }

    /// Starts a hub with extra `flotilla-hub init` and `run` flags, e.g. `--store URL`.
    pub fn start_with_init(base: &Path, init_args: &[&str], run_args: &[&str]) -> Hub {
        Self::start_initialised(base, |addr| addr.to_string(), init_args, run_args)
    }

    /// Starts a hub initialised with `--advertise advertise(ADDR)`, where ADDR is the
    /// address it listens on (for several addresses: `|a| format!("{other},{a}")`).
    pub fn start_advertising(
        base: &Path,
        advertise: impl FnOnce(&str) -> String,
        run_args: &[&str],
    ) -> Hub {
        Self::start_initialised(base, advertise, &[], run_args)
    }

    fn start_initialised(
        base: &Path,
        advertise: impl FnOnce(&str) -> String,
        init_args: &[&str],
        run_args: &[&str],
    ) -> Hub {
        let dir = base.join("hub");
        let addr = format!("127.0.0.1:{}", free_port());
        hub_init(&dir, &advertise(&addr), init_args);
        let hub = Hub {
            proc: Self::spawn(&dir, &addr, base, run_args),
            config: dir.join("admin.conf"),
            dir,
            addr,
            run_args: run_args.iter().map(ToString::to_string).collect(),
        };
        hub.wait_ready();
        hub
    }

    /// `n` hub replicas sharing one fleet in the etcd at `store` (issue 20): `flotilla-hub
    /// init --advertise A1,…,An --store STORE` once, its data dir copied for each
    /// replica (`base/replica-I`), each run with `--listen Ai --store STORE` and
    /// `run_args`. Each copy's `admin.conf` names its own replica first, so
    /// `replicas[i].cli(..)` asks replica i while it is up (and the next one when not).
    pub fn start_replicas(base: &Path, n: usize, store: &str, run_args: &[&str]) -> Vec<Hub> {
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let first = base.join("replica-0");
        hub_init(&first, &addrs.join(","), &["--store", store]);
        let mut args = vec!["--store".to_string(), store.to_string()];
        args.extend(run_args.iter().map(ToString::to_string));
        let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
        let hubs: Vec<Hub> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let dir = base.join(format!("replica-{i}"));
                if i > 0 {
                    copy_dir(&first, &dir);
                }
                let mine_first: Vec<&str> = addrs[i..]
                    .iter()
                    .chain(&addrs[..i])
                    .map(String::as_str)
                    .collect();
                let config = dir.join("admin.conf");
                let text = std::fs::read_to_string(&config).expect("admin.conf");
                let text = text.replace(&addrs.join(","), &mine_first.join(","));
                std::fs::write(&config, text).expect("write admin.conf");
                Hub {
                    proc: Self::spawn(&dir, addr, base, &args_ref),
                    config,
                    dir,
                    addr: addr.clone(),
                    run_args: args.clone(),
                }
            })
            .collect();
        for hub in &hubs {
            hub.wait_ready();
        }
        hubs
    }

    fn spawn(dir: &Path, addr: &str, base: &Path, run_args: &[&str]) -> Proc {
        Proc::spawn(
            Command::new(bin("flotilla-hub"))
                .args(["run", "--data-dir"])
                .arg(dir)
                .args(["--listen", addr, "--log-level", "debug"])
                .args(run_args),
            base.join(format!("hub-{}.log", free_port())),
        )
    }

    /// Stops the hub process (SIGKILL) and starts it again on the same data dir and port.
    pub fn restart(&mut self) {
        self.proc.kill();
        let base = self
            .dir
            .parent()
            .expect("hub dir has a parent")
            .to_path_buf();
        let args: Vec<&str> = self.run_args.iter().map(String::as_str).collect();
        self.proc = Self::spawn(&self.dir, &self.addr, &base, &args);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        wait_until("the hub to answer", || {
            let out = self.cli(&["clusters"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).to_string())
            }
        });
    }

    /// Issues a viewer's client config to `out` with `flotilla-hub admin issue`, asserting
    /// success.
    pub fn issue_viewer(&self, name: &str, out: &Path) {
        let issued = Command::new(bin("flotilla-hub"))
            .args(["admin", "issue", "--data-dir"])
            .arg(&self.dir)
            .args(["--role", "viewer", "--name", name, "--out"])
            .arg(out)
            .output()
            .expect("run flotilla-hub admin issue");
        assert!(
            issued.status.success(),
            "flotilla-hub admin issue: {}",
            String::from_utf8_lossy(&issued.stderr)
        );
    }

    /// Runs the `flotilla` CLI against this hub as its admin.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli_as(&self.config, args)
    }

    /// Runs the CLI with `-o json`, asserting success.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "flotilla {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("CLI prints JSON")
    }

    /// Waits until the hub lists `cluster` as connected.
    pub fn wait_connected(&self, cluster: &str) {
        wait_until(&format!("{cluster} to connect"), || {
            let c = self.json(&["clusters"]);
            let connected = c.as_array().is_some_and(|all| {
                all.iter()
                    .any(|x| x["name"] == cluster && x["connected"] == true)
            });
            connected.then_some(()).ok_or(c.to_string())
        });
    }

    /// A join token whose spokes choose their own `env`, `region` and `tier` at join,
    /// as the fixture's spokes do (`Spoke::start(.., "env=dev")`). Those labels are
    /// trusted only because the token says so, and only at registration: what a spoke
    /// reports later waits for an admin (`tests/hostile_claims.rs`).
    pub fn token(&self, ttl: &str, max_uses: u32) -> String {
        self.token_with(
            ttl,
            max_uses,
            &["--allow-spoke-labels", SPOKE_CHOSEN_LABEL_KEYS],
        )
    }

    /// A join token with extra `flotilla token create` flags, e.g. `--labels env=prod`.
    pub fn token_with(&self, ttl: &str, max_uses: u32, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--ttl", ttl, "--max-uses"];
        let max_uses = max_uses.to_string();
        args.push(&max_uses);
        args.extend(extra);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn add_source(&self, name: &str, repo: &str, selector: &str) {
        let out = self.cli(&[
            "source",
            "add",
            name,
            "--repo",
            repo,
            "--branch",
            "main",
            "--path",
            ".",
            "--interval",
            "1s",
            "--selector",
            selector,
        ]);
        assert!(
            out.status.success(),
            "source add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Status rows as (cluster, bundle, state).
    pub fn status(&self) -> Vec<(String, String, String)> {
        let v = self.json(&["status"]);
        v.as_array()
            .expect("status is an array")
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (s("cluster"), s("bundle"), s("state"))
            })
            .collect()
    }

    /// Waits until `cluster` has exactly `bundles`, all Ready.
    pub fn wait_ready_bundles(&self, cluster: &str, bundles: &[&str]) {
        wait_until(&format!("{cluster} to have {bundles:?} Ready"), || {
            let rows: Vec<_> = self
                .status()
                .into_iter()
                .filter(|(c, _, _)| c == cluster)
                .collect();
            let names: Vec<&str> = rows.iter().map(|(_, b, _)| b.as_str()).collect();
            let all_ready = rows.iter().all(|(_, _, s)| s == "Ready");
            if names == bundles && all_ready {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        });
    }
}

/// Runs the `flotilla` CLI with the client config at `config`.
pub fn cli_as(config: &Path, args: &[&str]) -> Output {
    Command::new(bin("flotilla"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run flotilla")
}

/// The label keys `Hub::token` lets a joining spoke choose: the ones the fixture's
/// tests give their spokes.
pub const SPOKE_CHOSEN_LABEL_KEYS: &str = "env,region,tier";

/// A running spoke process with a directory target.
pub struct Spoke {
    pub name: String,
    pub target: PathBuf,
    pub state: PathBuf,
    pub proc: Proc,
}

impl Spoke {
    pub fn start(base: &Path, join: &str, name: &str, labels: &str) -> Spoke {
        Self::start_with(base, join, name, labels, &[])
    }

    /// Starts a spoke with extra flags, e.g. `--metrics-listen ADDR`.
    pub fn start_with(base: &Path, join: &str, name: &str, labels: &str, extra: &[&str]) -> Spoke {
        let target = base.join("targets").join(name);
        let state = base.join("spokes").join(name);
        let proc = Proc::spawn(
            Command::new(bin("flotilla-spoke"))
                .args(["--join", join, "--name", name, "--labels", labels])
                .arg("--target")
                .arg(format!("dir:{}", target.display()))
                .arg("--state-dir")
                .arg(&state)
                .args(["--log-level", "debug"])
                .args(extra),
            base.join(format!("spoke-{name}-{}.log", free_port())),
        );
        Spoke {
            name: name.to_string(),
            target,
            state,
            proc,
        }
    }

    pub fn file(&self, bundle: &str) -> Option<String> {
        std::fs::read_to_string(self.target.join(format!("{bundle}.yaml"))).ok()
    }
}

/// One HTTP/1.1 request over a plain socket; returns (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let answer = http_over(s, addr, method, path, headers, body);
    (answer.status, answer.body)
}

/// What an HTTP/1.1 server answered: the status, the head (status line and headers)
/// and the body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpAnswer {
    /// The value of header `name` (case-insensitive), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request over `stream` (a socket, or a TLS session over one), read until
/// the server closes it (the request asks it to).
pub fn http_over(
    mut stream: impl std::io::Read + std::io::Write,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> HttpAnswer {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify: what arrived is the answer.
    let _ = stream.read_to_end(&mut raw);
    let out = String::from_utf8_lossy(&raw);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    HttpAnswer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// The value of Prometheus metric `name` (its first sample) from `GET http://ADDR/metrics`.
pub fn metric(addr: &str, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}
