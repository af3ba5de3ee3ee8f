//! The `flotilla-spoke` binary reads `--policy FILE` before anything else: a mistake in
//! it stops the spoke before it joins (so no join token is used up), naming the file,
//! the key and its line.

use std::process::Command;

#[test]
fn a_policy_file_with_an_unknown_key_stops_the_spoke_before_it_joins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "denyKinds: [Secret]\ndenyKind: [ConfigMap]\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-spoke"))
        .args(["--name", "dev", "--target", "kubernetes", "--join"])
        .arg("flotilla://unused@127.0.0.1:1?ca-sha256=00")
        .arg("--policy")
        .arg(&policy)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("run flotilla-spoke");
    assert!(!out.status.success(), "the spoke must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("policy file {}", policy.display()))
            && stderr.contains("denyKind")
            && stderr.contains("line 2"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "it never started to join"
    );
}
