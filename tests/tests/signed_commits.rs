//! Signed commits (`--verify-commits`): commits signed for real with `ssh-keygen` (git's
//! `gpg.format=ssh`) and with `gpg` are deployed when the key is trusted; an unsigned
//! commit or one signed by an unknown key is not, the source says why, and the last
//! verified revision stays deployed.

use std::path::Path;
use std::process::Command;

use flotilla_e2e::{GitServer, Hub, Spoke, configmap, example_repo, git, wait_until};

/// Runs `cmd`, asserting success; returns its stdout.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("the program is installed");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Commits `hello`'s ConfigMap with `value`, signed with git's `-S` and `config`.
fn commit_signed(repo: &Path, value: &str, config: &[&str], gnupg: Option<&Path>) {
    std::fs::write(repo.join("hello/configmap.yaml"), configmap("hello", value)).expect("write");
    git(repo, &["add", "-A"]);
    let mut cmd = Command::new("git");
    cmd.args([
        "-c",
        "user.name=signer",
        "-c",
        "user.email=signer@t.invalid",
    ])
    .args(config.iter().flat_map(|c| ["-c", c]))
    .args(["commit", "-q", "-S", "-m", value])
    .current_dir(repo);
    if let Some(home) = gnupg {
        cmd.env("GNUPGHOME", home);
    }
    run(&mut cmd);
}

fn source(hub: &Hub) -> serde_json::Value {
    hub.json(&["sources"])[0].clone()
}

fn wait_for_error(hub: &Hub, contains: &str) -> serde_json::Value {
    wait_until(&format!("the source to report {contains:?}"), || {
        let s = source(hub);
        s["error"]
            .as_str()
            .is_some_and(|e| e.contains(contains))
            .then(|| s.clone())
            .ok_or(s.to_string())
    })
}

fn wait_for_hello(dev: &Spoke, value: &str) {
    wait_until(&format!("hello to carry {value}"), || {
        let text = dev.file("examples-hello").unwrap_or_default();
        text.contains(value).then_some(()).ok_or(text)
    });
}

fn head(repo: &Path) -> String {
    String::from_utf8_lossy(&run(Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo)))
    .trim()
    .to_string()
}

/// Stops the gpg-agent this test's GNUPGHOME started.
struct GpgAgent<'a>(&'a Path);

impl Drop for GpgAgent<'_> {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", self.0)
            .status();
    }
}

#[test]
fn only_commits_signed_by_a_trusted_ssh_or_openpgp_key_are_deployed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).expect("keys");
    for name in ["trusted", "stranger"] {
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(keys.join(name)));
    }
    let trusted_pub = std::fs::read_to_string(keys.join("trusted.pub")).expect("pub");
    let allowed = keys.join("allowed_signers");
    std::fs::write(&allowed, format!("signer@t.invalid {trusted_pub}")).expect("write");
    let ssh_sign = |key: &str| {
        vec![
            "gpg.format=ssh".to_string(),
            format!("user.signingkey={}", keys.join(key).display()),
        ]
    };

    let server = GitServer::start(&tmp.path().join("git"));
    let repo = server.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    let out = hub.cli(&[
        "source",
        "add",
        "examples",
        "--repo",
        &repo.url,
        "--interval",
        "1s",
        "--verify-commits",
        "--allowed-signers",
        allowed.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let join = hub.token("1h", 1);
    let dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");

    // The initial commit is unsigned: nothing is deployed.
    let s = wait_for_error(&hub, "is not signed");
    assert_eq!(s["commit"], "", "{s}");

    let trusted: Vec<String> = ssh_sign("trusted");
    commit_signed(
        &repo.dir,
        "ssh-signed",
        &trusted.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
    );
    wait_for_hello(&dev, "ssh-signed");
    let verified = head(&repo.dir);
    let s = source(&hub);
    assert_eq!(
        (s["verified_commit"].clone(), s["error"].clone()),
        (verified.clone().into(), "".into())
    );

    let stranger = ssh_sign("stranger");
    commit_signed(
        &repo.dir,
        "by-a-stranger",
        &stranger.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
    );
    let s = wait_for_error(&hub, "is signed by a key that is not trusted");
    assert!(
        s["error"].as_str().unwrap_or_default().contains("SHA256:"),
        "{s}"
    );
    assert_eq!(
        s["commit"],
        verified.as_str(),
        "the last verified revision stays"
    );
    assert!(
        dev.file("examples-hello")
            .unwrap_or_default()
            .contains("ssh-signed")
    );

    // OpenPGP: a key made by gpg in a throwaway home, trusted through --gpg-keys.
    let gnupg = tmp.path().join("gnupg");
    std::fs::create_dir_all(&gnupg).expect("gnupg");
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let _agent = GpgAgent(&gnupg);
    let gpg = || {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &gnupg).args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        c
    };
    run(gpg().args([
        "--quick-gen-key",
        "Signer <signer@t.invalid>",
        "ed25519",
        "sign",
        "never",
    ]));
    let armored = run(gpg().args(["--armor", "--export", "signer@t.invalid"]));
    let gpg_keys = keys.join("signers.asc");
    std::fs::write(&gpg_keys, armored).expect("write");
    let gpg_config = ["gpg.format=openpgp", "user.signingkey=signer@t.invalid"];

    // Signed by gpg but the key is not trusted yet.
    commit_signed(&repo.dir, "gpg-untrusted", &gpg_config, Some(&gnupg));
    wait_for_error(&hub, "OpenPGP");
    let out = hub.cli(&[
        "source",
        "set",
        "examples",
        "--gpg-keys",
        gpg_keys.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_hello(&dev, "gpg-untrusted");
    assert_eq!(source(&hub)["verified_commit"], head(&repo.dir).as_str());

    commit_signed(&repo.dir, "gpg-signed", &gpg_config, Some(&gnupg));
    wait_for_hello(&dev, "gpg-signed");
    let s = source(&hub);
    assert_eq!(
        s["credentials"],
        serde_json::json!(["allowed-signers", "gpg-keys"])
    );
}

#[test]
fn verify_commits_without_a_trusted_key_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    let out = hub.cli(&[
        "source",
        "add",
        "examples",
        "--repo",
        "git://127.0.0.1:1/fleet",
        "--verify-commits",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--verify-commits needs --allowed-signers or --gpg-keys"),
        "{err}"
    );
}
