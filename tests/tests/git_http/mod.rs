//! Smart-HTTP git for the end-to-end tests: `git http-backend` (CGI) behind a small
//! HTTP server that asks for credentials (basic auth) as a private git host does, and a
//! TLS front for it with a test CA. Shared by `git_auth.rs` and `git_private.rs`; each
//! uses a part, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use flotilla_e2e::{free_port, wait_until};
use flotilla_telemetry::hyper::{HeaderMap, StatusCode};
use flotilla_telemetry::{HttpRequest, HttpResponse, reply, serve_http};

/// Decides from a request's headers whether it may read the repos.
pub type Allow = dyn Fn(&HeaderMap) -> bool + Send + Sync;

/// A git repo under `root`/`name` holding `src`'s files in one commit on `main`.
pub fn repo(root: &Path, name: &str, src: &Path) -> PathBuf {
    let dir = root.join(name);
    flotilla_e2e::copy_dir(src, &dir);
    flotilla_e2e::git(&dir, &["init", "-q", "-b", "main"]);
    flotilla_e2e::git(&dir, &["add", "-A"]);
    flotilla_e2e::git(&dir, &["commit", "-q", "-m", "init"]);
    dir
}

/// Serves every repo under `root` over smart HTTP on a loopback port, on `rt`; returns
/// its address once it accepts connections.
pub fn serve(rt: &tokio::runtime::Runtime, root: &Path, allow: Arc<Allow>) -> SocketAddr {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let root = root.to_path_buf();
    rt.spawn(serve_http(listen, 1 << 20, move |req| {
        let (root, allow) = (root.clone(), allow.clone());
        async move {
            tokio::task::spawn_blocking(move || cgi(&root, &*allow, req))
                .await
                .unwrap_or_else(|_| reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", ""))
        }
    }));
    wait_until("the HTTP git server", || {
        std::net::TcpStream::connect(listen)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    listen
}

/// `Authorization` header check for HTTP basic auth with `user` and `password`.
pub fn basic_auth(user: &str, password: &str) -> Arc<Allow> {
    use base64::Engine;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    Arc::new(move |h: &HeaderMap| {
        h.get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == want)
    })
}

/// Terminates TLS on a loopback port with `cert_pem`/`key_pem` and forwards each
/// connection to `backend`, on `rt`; returns its address.
pub fn tls_front(
    rt: &tokio::runtime::Runtime,
    backend: SocketAddr,
    cert_pem: &str,
    key_pem: &str,
) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("server certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("server key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    addr
}

/// Runs one request through `git http-backend` (CGI), or answers 401 when `allow`
/// refuses its headers.
fn cgi(root: &Path, allow: &Allow, req: HttpRequest) -> HttpResponse {
    if !allow(&req.headers) {
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
