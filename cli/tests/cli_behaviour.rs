//! The `flotilla` binary as a shell sees it, without a hub: a closed pipe, errors under
//! `RUST_BACKTRACE=1`, completion scripts, help, and the output shapes of `render`.
//! (Commands against a real hub are in the workspace's `tests/tests/cli.rs`.)

use std::io::Read;
use std::process::{Command, Stdio};

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
fn a_reader_that_closes_the_pipe_ends_the_command_quietly() {
    // `flotilla completion bash | true`: the reader is gone before the script is written.
    let mut child = flotilla()
        .args(["completion", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flotilla");
    drop(child.stdout.take());
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(status.success(), "exit {status:?}, stderr: {stderr}");
    assert!(stderr.is_empty(), "no panic, no message: {stderr}");
}

#[test]
fn errors_are_one_line_without_a_backtrace_and_exit_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("admin.conf");
    for args in [
        vec!["clusters"],
        vec!["cluster", "label", "c1", "bad key=v"],
    ] {
        let out = flotilla()
            .arg("--config")
            .arg(&missing)
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run flotilla");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{args:?}: {stderr}");
        assert!(stderr.contains("admin.conf"), "names the file: {stderr}");
    }
}

#[test]
fn completion_scripts_cover_the_commands_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = flotilla()
            .args(["completion", shell])
            .output()
            .expect("run flotilla");
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["flotilla", "clusters", "rollout", "request-timeout"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
    let out = flotilla()
        .args(["completion", "tcsh-of-the-future"])
        .output()
        .expect("run flotilla");
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}

#[test]
fn help_describes_every_positional_argument() {
    for args in [
        vec!["clusters", "-h"],
        vec!["cluster", "label", "-h"],
        vec!["rollout", "status", "-h"],
        vec!["token", "revoke", "-h"],
    ] {
        let out = flotilla().args(&args).output().expect("run flotilla");
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        let arguments = help
            .split("Arguments:")
            .nth(1)
            .and_then(|s| s.split("Options:").next())
            .unwrap_or_default();
        assert!(!arguments.trim().is_empty(), "{args:?}: {help}");
        for line in arguments
            .lines()
            .filter(|l| l.trim_start().starts_with('[') || l.trim_start().starts_with('<'))
        {
            assert!(
                line.split_whitespace().count() > 1,
                "{args:?}: argument without help: {line}"
            );
        }
    }
}

#[test]
fn render_prints_yaml_a_json_list_or_names() {
    let run = |extra: &[&str]| {
        let out = flotilla()
            .args(["render", &example("web"), "-l", "env=prod"])
            .args(extra)
            .output()
            .expect("run flotilla");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let json: serde_json::Value = serde_json::from_str(&run(&["-o", "json"])).expect("JSON");
    assert_eq!(json["kind"], "List");
    let items = json["items"].as_array().expect("items");
    assert!(items.iter().any(|i| i["kind"] == "Deployment"), "{json}");
    let names = run(&["-o", "name"]);
    assert!(
        names.lines().all(|l| l.split('/').count() == 2),
        "kind/name lines: {names}"
    );
    assert!(names.contains("deployment/"), "{names}");
    assert!(run(&[]).contains("kind: Deployment"));
}
