//! A real Kubernetes control plane for tests, as an admin: the one `.ci/run` starts with
//! `tests/k8s/up` (its settings in the environment, from `DIR/env`), or else one this
//! test process starts itself with `tests/k8s/up DIR --owner-pid PID`, stopped when the
//! process exits. Without either (no settings, no Go to build the control plane, no
//! cached binaries) the caller skips with a message; under `CI=true` that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `tests/k8s/up`'s admin kubeconfig (cluster-admin).
pub const ADMIN_KUBECONFIG_ENV: &str = "FLOTILLA_E2E_ADMIN_KUBECONFIG";

pub struct ControlPlane {
    /// A cluster-admin kubeconfig.
    pub admin_kubeconfig: PathBuf,
    /// The pinned kubectl.
    pub kubectl: PathBuf,
}

impl ControlPlane {
    /// `kubectl --kubeconfig ADMIN ARGS...`, asserting success; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_with_input(args, None)
    }

    /// [`Self::kubectl`] with `input` on stdin (`kubectl apply -f -`).
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> String {
        let out = self.try_kubectl(args, input);
        match out {
            Ok(stdout) => stdout,
            Err(e) => panic!("{e}"),
        }
    }

    /// `kubectl`, with its stderr as the error when it fails.
    pub fn try_kubectl(&self, args: &[&str], input: Option<&str>) -> Result<String, String> {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kubectl {args:?}: {e}"))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| format!("kubectl {args:?}: writing stdin: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("kubectl {args:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// The control plane, or None when the test should skip (not under `CI=true`).
pub fn control_plane() -> Option<&'static ControlPlane> {
    static PLANE: OnceLock<Option<ControlPlane>> = OnceLock::new();
    PLANE.get_or_init(find_or_start).as_ref()
}

fn tools_bin() -> PathBuf {
    let cache = std::env::var_os("FLOTILLA_TOOLS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/flotilla-tools")
        });
    cache.join("bin")
}

fn kubectl() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_bin().join("kubectl"))
}

fn skip(why: &str) -> Option<ControlPlane> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs a Kubernetes control plane: {why}"
    );
    eprintln!("skipped: {why}");
    None
}

fn find_or_start() -> Option<ControlPlane> {
    if let Some(admin) = std::env::var_os(ADMIN_KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
        return Some(ControlPlane {
            admin_kubeconfig: PathBuf::from(admin),
            kubectl: kubectl(),
        });
    }
    let have_go = Command::new("go").arg("version").output().is_ok()
        || Path::new("/usr/local/go/bin/go").is_file();
    let have_binaries = ["kube-apiserver", "etcd", "kubectl"]
        .iter()
        .all(|t| tools_bin().join(t).is_file());
    if !have_go && !have_binaries {
        return skip(&format!(
            "no {ADMIN_KUBECONFIG_ENV}, and neither Go nor the cached kube-apiserver/etcd \
             to start one (tests/k8s/up)"
        ));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("flotilla-k8s-{}", std::process::id()));
    let status = Command::new(repo.join("tests/k8s/up"))
        .arg(&dir)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .status();
    match status {
        Ok(s) if s.success() => Some(ControlPlane {
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            kubectl: dir.join("bin/kubectl"),
        }),
        Ok(s) => skip(&format!(
            "tests/k8s/up {} exited with {s}; see its output above",
            dir.display()
        )),
        Err(e) => skip(&format!("running tests/k8s/up: {e}")),
    }
}
