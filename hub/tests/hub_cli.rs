//! `flotilla-hub` as a user runs it: init writes what it promises, with safe modes, and
//! refuses to clobber an existing hub or start from a directory that is not one.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn hub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flotilla-hub"))
}

#[test]
fn init_writes_the_ca_certificates_admin_config_and_store_with_private_keys_0600() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("hub");
    let out = hub()
        .args(["init", "--data-dir"])
        .arg(&dir)
        .args(["--advertise", "127.0.0.1:7443"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("CA sha256:"), "{stdout}");
    for f in [
        "ca.pem",
        "trust.pem",
        "hub.pem",
        "admin.pem",
        "admin.conf",
        "hub.conf",
        "state.redb",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    for key in ["ca-key.pem", "hub-key.pem", "admin-key.pem"] {
        let mode = std::fs::metadata(dir.join(key))
            .expect(key)
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let conf = std::fs::read_to_string(dir.join("admin.conf")).expect("conf");
    assert!(
        conf.contains("server: 127.0.0.1:7443") && !conf.contains("PRIVATE"),
        "{conf}"
    );

    let again = hub()
        .args(["init", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialised"));
}

#[test]
fn run_refuses_a_directory_that_is_not_an_initialised_hub() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = hub()
        .args(["run", "--data-dir"])
        .arg(tmp.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an initialised hub data dir"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_user_error_is_one_line_with_its_cause_and_never_a_backtrace() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = hub()
        .args(["run", "--data-dir"])
        .arg(tmp.path().join("nope"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("flotilla-hub init"), "{stderr}");
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("Caused by"),
        "{stderr}"
    );
}
