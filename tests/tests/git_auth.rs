//! Git over smart HTTP (`git http-backend` behind a small HTTP server in the test) whose
//! credentials stop being accepted: the source shows the authentication error and since
//! when, the last good revision stays deployed, and it recovers when access returns.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flotilla_e2e::{Hub, Spoke, example_repo, free_port, wait_until};
use flotilla_telemetry::hyper::StatusCode;
use flotilla_telemetry::{HttpRequest, HttpResponse, reply, serve_http};

/// Runs one request through `git http-backend` (CGI), or answers 401 when access is off.
fn cgi(root: &PathBuf, allowed: &AtomicBool, req: HttpRequest) -> HttpResponse {
    if !allowed.load(Ordering::SeqCst) {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "authentication required\n",
        );
        if let Ok(v) = "Basic realm=\"git\"".parse() {
            r.headers_mut().insert("www-authenticate", v);
        }
        return r;
    }
    let content_type = req
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req.body.unwrap_or_default();
    let child = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &req.path)
        .env("QUERY_STRING", &req.query)
        .env(
            "HTTP_GIT_PROTOCOL",
            req.headers
                .get("git-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
        .env("REQUEST_METHOD", req.method.as_str())
        .env("CONTENT_TYPE", content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "no git\n");
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body);
    }
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_end(&mut out);
    }
    let _ = child.wait();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((i, sep)) = split else {
        return reply(StatusCode::BAD_GATEWAY, "text/plain", "bad CGI output\n");
    };
    let head = String::from_utf8_lossy(&out[..i]).to_string();
    let mut status = StatusCode::OK;
    let mut ctype = "application/octet-stream".to_string();
    for line in head.lines() {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "status" => {
                    status = v
                        .trim()
                        .split(' ')
                        .next()
                        .and_then(|c| c.parse::<u16>().ok())
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .unwrap_or(StatusCode::OK)
                }
                "content-type" => ctype = v.trim().to_string(),
                _ => {}
            }
        }
    }
    reply(status, &ctype, out[i + sep..].to_vec())
}

#[test]
fn a_source_whose_credentials_stop_working_shows_the_error_and_keeps_the_last_good_revision() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("http-root");
    let repo_dir = root.join("fleet");
    flotilla_e2e::copy_dir(&example_repo(), &repo_dir);
    for args in [
        vec!["init", "-q", "-b", "main"],
        vec!["add", "-A"],
        vec![
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t.invalid",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    ] {
        let ok = Command::new("git")
            .args(&args)
            .current_dir(&repo_dir)
            .status()
            .expect("git");
        assert!(ok.success());
    }
    let allowed = Arc::new(AtomicBool::new(true));
    let port = free_port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    {
        let (root, allowed) = (root.clone(), allowed.clone());
        rt.spawn(serve_http(listen, 1 << 20, move |req| {
            let (root, allowed) = (root.clone(), allowed.clone());
            async move {
                tokio::task::spawn_blocking(move || cgi(&root, &allowed, req))
                    .await
                    .unwrap_or_else(|_| reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", ""))
            }
        }));
    }
    wait_until("the HTTP git server", || {
        std::net::TcpStream::connect(listen)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });

    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &format!("http://127.0.0.1:{port}/fleet"), "");
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    wait_until("the first fetch over HTTP", || {
        let s = hub.json(&["sources"]);
        (s[0]["commit"] != "").then_some(()).ok_or(s.to_string())
    });
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);

    allowed.store(false, Ordering::SeqCst);
    let (err, since) = wait_until("the source to show the authentication failure", || {
        let s = hub.json(&["sources"]);
        let e = s[0]["error"].as_str().unwrap_or_default().to_string();
        (!e.is_empty())
            .then(|| {
                (
                    e.clone(),
                    s[0]["error_since"].as_str().unwrap_or_default().to_string(),
                )
            })
            .ok_or(s.to_string())
    });
    assert!(!since.is_empty(), "since when: {err}");
    assert!(err.contains("authentication failed"), "{err}");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    assert!(
        dev.file("examples-web").is_some(),
        "the last good revision stays deployed"
    );

    allowed.store(true, Ordering::SeqCst);
    wait_until("the error to clear once access returns", || {
        let s = hub.json(&["sources"]);
        (s[0]["error"] == "").then_some(()).ok_or(s.to_string())
    });
}
