//! The dashboard in a real browser (#21): headless Chromium, driven by
//! `tests/browser/dashboard.mjs` (playwright-core), watches a real hub with spokes while
//! this test commits to git. It asserts what a person sees: a commit's fan-out moving to
//! Ready without a reload, and a broken commit showing its error with file:line. It
//! saves the screenshots `docs/dashboard.md` shows into `docs/img/`.
//!
//! Needs `node`, Chromium (`/usr/bin/chromium`, or `$CHROMIUM`) and `npm ci` in
//! `tests/browser/`. Under `CI=true` they are required; elsewhere the test skips with a
//! message when one is missing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use flotilla_e2e::{GitServer, Hub, Spoke, configmap, example_repo, free_port};

/// The spokes of the fleet the browser watches; each runs `examples-hello`.
const CLUSTERS: [(&str, &str); 3] = [("dev", "env=dev"), ("qa", "env=dev"), ("test", "env=test")];

/// Kills the browser script if the test fails before it ends.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the script needs, or why it cannot run here.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium, or set CHROMIUM)",
            chromium.display()
        ));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("no node on PATH (apt-get install nodejs npm)".into());
    }
    if !browser_dir.join("node_modules/playwright-core").exists() {
        return Err(format!(
            "playwright-core is not installed: run `npm ci` in {}",
            browser_dir.display()
        ));
    }
    Ok((chromium, browser_dir))
}

fn head(repo: &Path) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo)
        .output()
        .expect("git rev-parse");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_person_watching_the_dashboard_sees_a_commit_fan_out_and_a_failure_live() {
    let (chromium, browser_dir) = match tools() {
        Ok(t) => t,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the browser test is required under CI=true: {why}")
        }
        Err(why) => {
            eprintln!("skipping the dashboard browser test: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let dash = format!("127.0.0.1:{}", free_port());
    let hub = Hub::start_with(tmp.path(), &["--dashboard", "--dashboard-listen", &dash]);
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 3);
    let _spokes: Vec<Spoke> = CLUSTERS
        .iter()
        .map(|(name, labels)| Spoke::start(tmp.path(), &join, name, labels))
        .collect();
    for (name, _) in CLUSTERS {
        hub.wait_connected(name);
    }
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img");
    std::fs::create_dir_all(&screenshots).expect("docs/img");
    let names: Vec<&str> = CLUSTERS.iter().map(|(n, _)| *n).collect();

    let mut script = Script(
        Command::new("node")
            .arg(browser_dir.join("dashboard.mjs"))
            .current_dir(&browser_dir)
            .env("DASHBOARD_URL", format!("http://{dash}"))
            .env("CHROMIUM", &chromium)
            .env("SCREENSHOTS", &screenshots)
            .env("CLUSTERS", names.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run node"),
    );
    let mut to_script = script.0.stdin.take().expect("stdin");
    let from_script = BufReader::new(script.0.stdout.take().expect("stdout"));
    let mut done = false;
    for line in from_script.lines() {
        let line = line.expect("read the script's output");
        let msg: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                eprintln!("script: {line}");
                continue;
            }
        };
        match msg["need"].as_str() {
            Some("commit") => repo.commit_file(
                "hello/configmap.yaml",
                &configmap("hello", "a new greeting"),
                "hello: a new greeting",
            ),
            Some("break") => repo.commit_file(
                "hello/broken.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata: [unclosed\n",
                "hello: a broken manifest",
            ),
            _ if msg["done"] == true => {
                done = true;
                break;
            }
            other => panic!("the script asked for {other:?}: {line}"),
        }
        writeln!(to_script, "{}", head(&repo.dir)).expect("answer the script");
    }
    drop(to_script);
    let status = script.0.wait().expect("wait for node");
    assert!(
        status.success() && done,
        "the browser script failed ({status}); its errors are above"
    );
    for shot in ["overview", "bundle", "error", "cluster"] {
        let png = screenshots.join(format!("dashboard-{shot}.png"));
        assert!(png.exists(), "{} was not saved", png.display());
    }
}
