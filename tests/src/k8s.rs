//! A real Kubernetes control plane for the end-to-end tests, and the pinned `kubectl`.
//!
//! The cluster is the one the environment names (`FLOTILLA_E2E_KUBECONFIG` and
//! `FLOTILLA_E2E_ADMIN_KUBECONFIG`, which `.ci/run` sets from `tests/k8s/up`'s `DIR/env`;
//! or a kind/k3d cluster, see `docs/e2e-real-cluster.md`), else one `tests/k8s/up` starts
//! for this test process and stops when it exits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kubeconfigs of a control plane.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    /// The spoke's restricted ServiceAccount (`examples/spoke-rbac.yaml`).
    pub spoke: String,
    /// Someone allowed everything: the tests' own hands.
    pub admin: String,
}

/// The control plane the environment names, or one started under `dir` by `tests/k8s/up`
/// and owned by this process.
pub fn control_plane(dir: &Path) -> ControlPlane {
    if let Ok(spoke) = std::env::var("FLOTILLA_E2E_KUBECONFIG") {
        let admin = std::env::var("FLOTILLA_E2E_ADMIN_KUBECONFIG")
            .ok()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| spoke.clone());
        return ControlPlane { spoke, admin };
    }
    let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/up");
    let status = Command::new(up)
        .arg(dir)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .status()
        .expect("tests/k8s/up runs (it needs Go to build the control plane once)");
    assert!(status.success(), "tests/k8s/up {} failed", dir.display());
    let env: HashMap<String, String> = std::fs::read_to_string(dir.join("env"))
        .expect("tests/k8s/up wrote DIR/env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let spoke = env["FLOTILLA_E2E_KUBECONFIG"].clone();
    let admin = env
        .get("FLOTILLA_E2E_ADMIN_KUBECONFIG")
        .cloned()
        .unwrap_or_else(|| spoke.clone());
    ControlPlane { spoke, admin }
}

/// The pinned `kubectl` (`KUBECTL`, or `~/.cache/flotilla-tools/bin/kubectl` built by
/// `tests/k8s/tools/build`), or None (the test skips) outside `CI=true`.
pub fn kubectl() -> Option<PathBuf> {
    let path = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/flotilla-tools/bin/kubectl")
        });
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs kubectl: set KUBECTL or run tests/k8s/tools/build kubectl"
    );
    eprintln!("skipped: no kubectl (set KUBECTL, or run tests/k8s/tools/build kubectl)");
    None
}
