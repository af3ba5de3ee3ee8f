//! `flotilla render` as a user runs it on the example repo and on broken input.

use std::process::Command;

fn flotilla() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
}

fn example(path: &str) -> String {
    format!(
        "{}/../examples/fleet-repo/{path}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn render_shows_what_a_cluster_with_these_labels_gets() {
    let prod = flotilla()
        .args(["render", &example("web"), "-l", "env=prod"])
        .output()
        .expect("run");
    assert!(
        prod.status.success(),
        "{}",
        String::from_utf8_lossy(&prod.stderr)
    );
    let text = String::from_utf8_lossy(&prod.stdout);
    assert!(
        text.contains("replicas: 3") && text.contains("namespace: web"),
        "{text}"
    );

    let test = flotilla()
        .args(["render", &example("web"), "-l", "env=test"])
        .output()
        .expect("run");
    assert!(test.status.success());
    assert!(test.stdout.is_empty(), "doNotDeploy renders nothing");
    assert!(String::from_utf8_lossy(&test.stderr).contains("doNotDeploy"));
}

#[test]
fn render_reports_broken_yaml_with_file_and_line_and_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("bad.yaml"),
        "kind: ConfigMap\nmetadata: [oops\n",
    )
    .expect("write");
    let out = flotilla()
        .arg("render")
        .arg(tmp.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:"), "{stderr}");
}

#[test]
fn admin_commands_without_a_config_say_how_to_get_one() {
    let out = flotilla()
        .arg("clusters")
        .env_remove("FLOTILLA_CONFIG")
        .env("HOME", "/nonexistent")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}
