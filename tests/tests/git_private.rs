//! Private git: HTTPS with a user name, a password file and a custom CA (`git
//! http-backend` behind basic auth and a TLS front), and SSH with a key and a known-hosts
//! file against a real `sshd` on loopback. Each is accepted with the right credentials
//! and refused with wrong ones (password, host key, client key), and no secret is shown.

use std::path::Path;
use std::process::Command;

use flotilla_e2e::{Hub, Proc, Spoke, example_repo, free_port, wait_until};

mod git_http;

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write");
    p.to_str().expect("utf-8 path").to_string()
}

fn add(hub: &Hub, name: &str, url: &str, extra: &[&str]) {
    let mut args = vec!["source", "add", name, "--repo", url, "--interval", "1s"];
    args.extend(extra);
    let out = hub.cli(&args);
    assert!(
        out.status.success(),
        "source add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The source's commit once it fetched, or its error once it failed.
fn outcome(hub: &Hub, name: &str) -> Result<String, String> {
    wait_until(&format!("source {name} to fetch or fail"), || {
        let all = hub.json(&["sources"]);
        let s = all
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_default();
        let (commit, error) = (s["commit"].as_str(), s["error"].as_str());
        match (commit, error) {
            (_, Some(e)) if !e.is_empty() => Ok(Err(e.to_string())),
            (Some(c), _) if !c.is_empty() => Ok(Ok(c.to_string())),
            _ => Err(s.to_string()),
        }
    })
}

#[test]
fn https_with_a_password_file_and_a_custom_ca_is_accepted_and_wrong_ones_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("http-root");
    git_http::repo(&root, "fleet", &example_repo());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let plain = git_http::serve(&rt, &root, git_http::basic_auth("alice", "t0ken-alice"));
    let (ca, _) = flotilla_identity::Ca::generate("private git CA").expect("CA");
    let server = ca.issue_server(&["127.0.0.1".into()]).expect("server cert");
    let tls = git_http::tls_front(&rt, plain, &server.cert_pem, &server.key_pem);
    let url = format!("https://127.0.0.1:{}/fleet", tls.port());
    let ca_file = write(tmp.path(), "ca.pem", ca.cert_pem());
    let good = write(tmp.path(), "good", "t0ken-alice\n");
    let bad = write(tmp.path(), "bad", "wrong-password\n");

    let hub = Hub::start(tmp.path());
    let auth = |password: &str| {
        vec![
            "--username",
            "alice",
            "--ca-file",
            &ca_file,
            "--password-file",
        ]
        .into_iter()
        .map(String::from)
        .chain([password.to_string()])
        .collect::<Vec<_>>()
    };
    let good_args = auth(&good);
    add(
        &hub,
        "private",
        &url,
        &good_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let bad_args = auth(&bad);
    add(
        &hub,
        "wrongpass",
        &url,
        &bad_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    add(
        &hub,
        "noca",
        &url,
        &["--username", "alice", "--password-file", &good],
    );

    assert!(
        outcome(&hub, "private").is_ok(),
        "{:?}",
        outcome(&hub, "private")
    );
    let join = hub.token("1h", 1);
    let _dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    wait_until("the private bundles to be Ready on dev", || {
        let rows = hub.status();
        let ready = rows
            .iter()
            .filter(|(c, b, s)| c == "dev" && b.starts_with("private-") && s == "Ready")
            .count();
        (ready == 2).then_some(()).ok_or(format!("{rows:?}"))
    });
    let err = outcome(&hub, "wrongpass").expect_err("a wrong password is refused");
    assert!(err.contains("authentication failed"), "{err}");
    let err = outcome(&hub, "noca").expect_err("an unknown CA is refused");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let shown = String::from_utf8_lossy(&hub.cli(&["sources", "-o", "json"]).stdout).to_string()
        + &hub.proc.log_text();
    assert!(
        !shown.contains("t0ken-alice"),
        "the password is never shown"
    );
    assert!(
        !shown.contains("wrong-password"),
        "the password is never shown"
    );
}

/// A real `sshd` on a loopback port that lets the current user in with `client_pub`'s
/// key, serving git over SSH (git-upload-pack on the user's shell).
struct Sshd {
    port: u16,
    host_pub: String,
    _proc: Proc,
}

fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub")).expect("public key")
}

impl Sshd {
    fn start(dir: &Path, authorized: &str) -> Option<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            assert!(
                std::env::var("CI").is_err(),
                "CI needs /usr/sbin/sshd (Debian openssh-server)"
            );
            eprintln!("skipping: no /usr/sbin/sshd (Debian openssh-server)");
            return None;
        }
        std::fs::create_dir_all(dir).expect("sshd dir");
        let host_pub = keygen(&dir.join("host_key"));
        std::fs::write(dir.join("authorized_keys"), authorized).expect("authorized_keys");
        // Privilege separation wants this folder when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
        let proc = Proc::spawn(
            Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config")),
            dir.join("sshd.log"),
        );
        wait_until("sshd to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        Some(Sshd {
            port,
            host_pub,
            _proc: proc,
        })
    }

    /// A known_hosts line for this server.
    fn known_hosts(&self) -> String {
        let mut key = self.host_pub.split_whitespace();
        let (kind, data) = (key.next().unwrap_or(""), key.next().unwrap_or(""));
        format!("[127.0.0.1]:{} {kind} {data}\n", self.port)
    }
}

#[test]
fn ssh_with_a_key_and_known_hosts_is_accepted_and_an_unknown_host_or_wrong_key_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    let client_pub = keygen(&keys.join("deploy"));
    keygen(&keys.join("stranger"));
    let Some(sshd) = Sshd::start(&tmp.path().join("sshd"), &client_pub) else {
        return;
    };
    let repo = git_http::repo(&tmp.path().join("repos"), "fleet", &example_repo());
    let user = String::from_utf8_lossy(&Command::new("id").arg("-un").output().expect("id").stdout)
        .trim()
        .to_string();
    let url = format!("ssh://{user}@127.0.0.1:{}{}", sshd.port, repo.display());
    let known = write(tmp.path(), "known_hosts", &sshd.known_hosts());
    let other_host = keygen(&keys.join("other_host"));
    let unknown = write(
        tmp.path(),
        "unknown_hosts",
        &format!("[127.0.0.1]:{} {}", sshd.port, other_host),
    );
    let deploy = keys.join("deploy");
    let stranger = keys.join("stranger");
    let (deploy, stranger) = (
        deploy.to_str().expect("utf-8"),
        stranger.to_str().expect("utf-8"),
    );

    let hub = Hub::start(tmp.path());
    add(
        &hub,
        "viassh",
        &url,
        &["--ssh-key-file", deploy, "--known-hosts-file", &known],
    );
    add(
        &hub,
        "unknownhost",
        &url,
        &["--ssh-key-file", deploy, "--known-hosts-file", &unknown],
    );
    add(
        &hub,
        "wrongkey",
        &url,
        &["--ssh-key-file", stranger, "--known-hosts-file", &known],
    );
    add(&hub, "nohosts", &url, &["--ssh-key-file", deploy]);

    let commit = outcome(&hub, "viassh");
    assert!(
        commit.is_ok(),
        "{commit:?}\nsshd: {}",
        sshd._proc.log_text()
    );
    let err = outcome(&hub, "unknownhost").expect_err("an unknown host key is refused");
    assert!(err.contains("host key"), "{err}");
    let err = outcome(&hub, "nohosts").expect_err("no known hosts: every host is unknown");
    assert!(err.contains("host key"), "{err}");
    let err = outcome(&hub, "wrongkey").expect_err("a key sshd does not know is refused");
    assert!(err.contains("authentication failed"), "{err}");

    let stored = hub.dir.join("credentials/viassh/ssh-key");
    assert_eq!(flotilla_e2e::file_mode(&stored), 0o600);
    let key_text = std::fs::read_to_string(deploy).expect("key");
    let secret_line = key_text.lines().nth(1).unwrap_or("none");
    let shown = String::from_utf8_lossy(&hub.cli(&["sources", "-o", "json"]).stdout).to_string()
        + &hub.proc.log_text();
    assert!(!shown.contains(secret_line), "the key is never shown");
}
