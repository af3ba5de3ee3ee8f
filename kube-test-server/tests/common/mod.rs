//! Shared setup for the component tests: start an in-process test server, build a
//! kube-rs client from the kubeconfig it writes, and send raw requests.

#![allow(dead_code)]

use std::time::Duration;

use flotilla_kube_test_server::{Options, RunningServer, TestServer};
use http_body_util::BodyExt;
use hyper::Request;
use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use serde_json::Value;

pub async fn start() -> RunningServer {
    start_with(Options::default()).await
}

pub async fn start_with(opts: Options) -> RunningServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    TestServer::start(opts).await.expect("test server starts")
}

/// A kube-rs client configured only from the server's kubeconfig (TLS + token).
pub async fn client(server: &RunningServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig_yaml()).expect("kubeconfig parses");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(cfg).expect("client builds")
}

/// A raw response: status code and JSON body (or `Value::String` for non-JSON).
pub struct Raw {
    pub code: u16,
    pub body: Value,
}

/// Sends one request through kube-rs's transport and reads the whole body.
pub async fn raw(client: &Client, method: &str, path: &str, content_type: &str, body: &str) -> Raw {
    let mut b = Request::builder().method(method).uri(path);
    if !content_type.is_empty() {
        b = b.header("content-type", content_type);
    }
    let req = b
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .expect("request builds");
    let resp = client.send(req).await.expect("request is sent");
    let code = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .expect("body reads")
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Raw { code, body }
}

/// Opens a watch and returns a function that yields its next event (type, object),
/// or None when the stream ends. Fails the test if nothing comes within 10 s.
pub struct WatchStream {
    body: kube::client::Body,
    buf: Vec<u8>,
}

pub async fn open_watch(client: &Client, path: &str) -> WatchStream {
    let req = Request::builder()
        .uri(path)
        .body(kube::client::Body::empty())
        .expect("request builds");
    let resp = client.send(req).await.expect("watch opens");
    assert_eq!(resp.status().as_u16(), 200, "watch {path}");
    WatchStream {
        body: resp.into_body(),
        buf: Vec::new(),
    }
}

impl WatchStream {
    pub async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let v: Value = serde_json::from_slice(&line).expect("watch lines are JSON");
                return Some((
                    v["type"].as_str().unwrap_or_default().to_string(),
                    v["object"].clone(),
                ));
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("a watch event arrives within 10s")?;
            if let Ok(data) = frame.expect("frame reads").into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }
}
