//! A real Kubernetes control plane for tests, and the pinned `kubectl`.
//!
//! The cluster is the one the environment names (`FLOTILLA_E2E_KUBECONFIG` and
//! `FLOTILLA_E2E_ADMIN_KUBECONFIG`, which `.ci/run` sets from `tests/k8s/up`'s `DIR/env`;
//! or a kind/k3d cluster, see `docs/e2e-real-cluster.md`), else one that `tests/k8s/up DIR
//! --owner-pid PID` starts for this test process, stopped when the process exits. Without
//! either (no settings, no Go to build the control plane, no cached binaries) the caller
//! skips with a message; under `CI=true` that is a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `tests/k8s/up`'s restricted spoke kubeconfig (`examples/spoke-rbac.yaml`).
pub const SPOKE_KUBECONFIG_ENV: &str = "FLOTILLA_E2E_KUBECONFIG";
/// `tests/k8s/up`'s admin kubeconfig (cluster-admin).
pub const ADMIN_KUBECONFIG_ENV: &str = "FLOTILLA_E2E_ADMIN_KUBECONFIG";

/// The kubeconfigs of a control plane, and the kubectl to drive it.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    /// The spoke's restricted ServiceAccount (`examples/spoke-rbac.yaml`).
    pub spoke: String,
    /// Someone allowed everything: the tests' own hands.
    pub admin: String,
    /// The pinned kubectl.
    pub kubectl: PathBuf,
}

impl ControlPlane {
    /// The admin kubeconfig as a path.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        PathBuf::from(&self.admin)
    }

    /// Applies flotilla's and Fleet's CRDs from `crds/` and waits until the API server
    /// serves them.
    pub fn install_crds(&self) {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
        self.kubectl(&["apply", "--server-side", "-f", &crds.display().to_string()]);
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/gitrepos.fleet.cattle.io",
            "crd/clustergroups.fleet.cattle.io",
            "crd/sources.flotilla.dev",
            "crd/clustergroups.flotilla.dev",
            "crd/clusters.flotilla.dev",
            "crd/bundlestatuses.flotilla.dev",
        ]);
    }

    /// `kubectl --kubeconfig ADMIN ARGS...`, asserting success; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_with_input(args, None)
    }

    /// [`Self::kubectl`] with `input` on stdin (`kubectl apply -f -`).
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> String {
        match self.try_kubectl(args, input) {
            Ok(stdout) => stdout,
            Err(e) => panic!("{e}"),
        }
    }

    /// `kubectl` as the admin, with its stderr as the error when it fails.
    pub fn try_kubectl(&self, args: &[&str], input: Option<&str>) -> Result<String, String> {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.admin)
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

/// The control plane this test process shares, or None when the test should skip (never
/// under `CI=true`).
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

fn kubectl_path() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_bin().join("kubectl"))
}

/// The pinned `kubectl` (`KUBECTL`, or `~/.cache/flotilla-tools/bin/kubectl` built by
/// `tests/k8s/tools/build`), or None (the test skips) outside `CI=true`.
pub fn kubectl() -> Option<PathBuf> {
    let path = kubectl_path();
    if path.is_file() {
        return Some(path);
    }
    skip::<PathBuf>("no kubectl (set KUBECTL, or run tests/k8s/tools/build kubectl)")
}

fn skip<T>(why: &str) -> Option<T> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs it: {why}"
    );
    eprintln!("skipped: {why}");
    None
}

fn find_or_start() -> Option<ControlPlane> {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(spoke) = from_env(SPOKE_KUBECONFIG_ENV).or_else(|| from_env(ADMIN_KUBECONFIG_ENV)) {
        let admin = from_env(ADMIN_KUBECONFIG_ENV).unwrap_or_else(|| spoke.clone());
        return Some(ControlPlane {
            spoke,
            admin,
            kubectl: kubectl()?,
        });
    }
    let have_go = Command::new("go").arg("version").output().is_ok()
        || Path::new("/usr/local/go/bin/go").is_file();
    let have_binaries = ["kube-apiserver", "etcd", "kubectl"]
        .iter()
        .all(|t| tools_bin().join(t).is_file());
    if !have_go && !have_binaries {
        return skip(&format!(
            "no {SPOKE_KUBECONFIG_ENV}, and neither Go nor the cached kube-apiserver/etcd \
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
        Ok(s) if s.success() => {}
        Ok(s) => {
            return skip(&format!(
                "tests/k8s/up {} exited with {s}; see its output above",
                dir.display()
            ));
        }
        Err(e) => return skip(&format!("running tests/k8s/up: {e}")),
    }
    let env: HashMap<String, String> = match std::fs::read_to_string(dir.join("env")) {
        Ok(text) => text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        Err(e) => return skip(&format!("tests/k8s/up wrote no {}/env: {e}", dir.display())),
    };
    let Some(spoke) = env.get(SPOKE_KUBECONFIG_ENV).cloned() else {
        return skip(&format!(
            "{}/env has no {SPOKE_KUBECONFIG_ENV}",
            dir.display()
        ));
    };
    let admin = env
        .get(ADMIN_KUBECONFIG_ENV)
        .cloned()
        .unwrap_or_else(|| spoke.clone());
    Some(ControlPlane {
        spoke,
        admin,
        kubectl: dir.join("bin/kubectl"),
    })
}
