//! Git over smart HTTP (`git http-backend` behind a small HTTP server in the test) whose
//! credentials stop being accepted: the source shows the authentication error and since
//! when, the last good revision stays deployed, and it recovers when access returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flotilla_e2e::{Hub, Spoke, example_repo, wait_until};

mod git_http;

#[test]
fn a_source_whose_credentials_stop_working_shows_the_error_and_keeps_the_last_good_revision() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("http-root");
    git_http::repo(&root, "fleet", &example_repo());
    let allowed = Arc::new(AtomicBool::new(true));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listen = {
        let allowed = allowed.clone();
        git_http::serve(
            &rt,
            &root,
            Arc::new(move |_: &_| allowed.load(Ordering::SeqCst)),
        )
    };
    let port = listen.port();

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
