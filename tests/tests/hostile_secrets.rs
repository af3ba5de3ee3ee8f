//! Red-team suite, secrets at rest and on the command line: what the hub and a spoke
//! leave on disk is owner-only, the join string need not appear in a process's argv,
//! and a webhook secret that would authenticate nothing stops the hub from starting.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use flotilla_e2e::{
    GitServer, Hub, Proc, bin, example_repo, file_mode as mode, free_port, wait_until,
};

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn data_dir_store_state_dir_cache_and_bundle_files_are_owner_only_and_argv_holds_no_join_string() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 1);
    let join_file = tmp.path().join("dev.join");
    std::fs::write(&join_file, format!("{join}\n")).expect("write the join file");

    let target = tmp.path().join("targets/dev");
    let state = tmp.path().join("spokes/dev");
    let spoke = Proc::spawn(
        Command::new(bin("flotilla-spoke"))
            .args(["--name", "dev", "--labels", "env=dev"])
            .arg("--join-file")
            .arg(&join_file)
            .arg("--target")
            .arg(format!("dir:{}", target.display()))
            .arg("--state-dir")
            .arg(&state),
        tmp.path().join("spoke-dev.log"),
    );
    wait_until("the spoke to write a bundle", || {
        std::fs::read_dir(&target)
            .ok()
            .and_then(|mut d| d.next())
            .map(|_| ())
            .ok_or_else(|| "no bundle file yet".to_string())
    });

    let secret = join
        .split('.')
        .nth(1)
        .expect("ID.SECRET inside the join string");
    let argv = std::fs::read(format!("/proc/{}/cmdline", spoke.child.id())).expect("cmdline");
    assert!(
        !String::from_utf8_lossy(&argv).contains(secret),
        "the join secret is not in the spoke's command line"
    );

    assert_eq!(mode(&hub.dir), 0o700, "the hub's data dir");
    assert_eq!(mode(&hub.dir.join("state.redb")), 0o600, "the hub's store");
    assert_eq!(mode(&state), 0o700, "the spoke's state dir");
    let cached = files_under(&state);
    assert!(
        cached.iter().any(|p| p.starts_with(state.join("content"))),
        "the spoke caches content: {cached:?}"
    );
    // Certificates and the identity record are public; everything else is not.
    let public = ["cert.pem", "ca.pem", "identity.json"];
    for f in cached
        .iter()
        .filter(|p| !public.iter().any(|n| p.ends_with(n)))
    {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    for f in files_under(&target) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[test]
fn an_empty_webhook_secret_file_stops_the_hub_from_starting() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("hub");
    let addr = format!("127.0.0.1:{}", free_port());
    let init = Command::new(bin("flotilla-hub"))
        .args(["init", "--data-dir"])
        .arg(&dir)
        .args(["--advertise", &addr])
        .output()
        .expect("flotilla-hub init");
    assert!(init.status.success());
    let secret = tmp.path().join("webhook.secret");
    std::fs::write(&secret, "  \n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let out = Command::new(bin("flotilla-hub"))
        .args(["run", "--data-dir"])
        .arg(&dir)
        .args(["--listen", &addr])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--webhook-secret-file")
        .arg(&secret)
        .output()
        .expect("flotilla-hub run");
    assert!(!out.status.success(), "the hub refuses to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--webhook-secret-file") && stderr.contains("is empty"),
        "{stderr}"
    );
}

#[test]
fn source_urls_are_redacted_everywhere() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    // Nothing listens there: the fetch fails with an error that quotes the URL.
    let url = format!(
        "http://bob:s3cr3t-pw@127.0.0.1:{}/fleet.git?private_token=tok-9876",
        free_port()
    );
    hub.add_source("private", &url, "");
    let sources = wait_until("the fetch to fail", || {
        let v = hub.json(&["sources"]);
        if v[0]["error"].as_str().is_some_and(|e| !e.is_empty()) {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    let wide = hub.cli(&["sources", "-o", "wide"]);
    let yaml = hub.cli(&["sources", "-o", "yaml"]);
    let shown = [
        sources.to_string(),
        String::from_utf8_lossy(&wide.stdout).to_string(),
        String::from_utf8_lossy(&yaml.stdout).to_string(),
        hub.proc.log_text(),
    ];
    for text in &shown {
        assert!(
            !text.contains("s3cr3t-pw") && !text.contains("tok-9876"),
            "a secret of the URL is shown: {text}"
        );
    }
    assert_eq!(
        sources[0]["repo"],
        url.replace("s3cr3t-pw", "***").replace("tok-9876", "***"),
        "the URL is shown with its secrets redacted"
    );
}
