//! kubectl (an independent Kubernetes client) against the test server:
//! `get`, `apply --server-side` (with and without conflicts) and `delete`.
//! See <https://kubernetes.io/docs/reference/kubectl/generated/kubectl_apply/> and
//! <https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts>.
//!
//! kubectl may be missing on a developer machine: then these tests print a skip
//! message and pass, except under `CI=true`, where they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::start;
use serde_json::Value;

fn kubectl_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| "kubectl".into());
    match Command::new(&bin)
        .arg("version")
        .arg("--client")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Some(bin),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("kubectl is required under CI=true but cannot run: {e}");
            }
            eprintln!("SKIP: kubectl not found ({e}); install kubectl to run the kubectl tests");
            None
        }
    }
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    /// Runs kubectl off the async runtime and returns its output.
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache);
        cmd.args(args);
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            cmd.stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("kubectl starts");
            if let Some(input) = stdin {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(input.as_bytes())
                    .expect("write stdin");
            }
            child.wait_with_output().expect("kubectl finishes")
        })
        .await
        .expect("kubectl task")
    }

    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a, None).await).expect("kubectl prints JSON")
    }
}

fn setup(dir: &Path, server: &flotilla_kube_test_server::RunningServer) -> Option<Kubectl> {
    let bin = kubectl_bin()?;
    let kubeconfig = dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    Some(Kubectl {
        bin,
        kubeconfig,
        cache: dir.join("cache"),
    })
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
  labels: {app: shop}
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_applies_server_side_and_deletes() {
    let server = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(k) = setup(dir.path(), &server) else {
        return;
    };

    let out = k.ok(&["get", "namespaces"], None).await;
    assert!(
        out.contains("NAME") && out.contains("default") && out.contains("kube-system"),
        "{out}"
    );

    let out = k
        .ok(&["apply", "--server-side", "-f", "-"], Some(MANIFESTS))
        .await;
    assert!(out.contains("namespace/shop serverside-applied"), "{out}");
    assert!(
        out.contains("configmap/settings serverside-applied"),
        "{out}"
    );
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );

    let cm = k
        .json(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "shop",
            "--show-managed-fields",
        ])
        .await;
    assert_eq!(cm["data"]["color"], "blue");
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(cm["metadata"]["managedFields"][0]["operation"], "Apply");

    let listed = k
        .ok(
            &["get", "deploy", "-n", "shop", "-l", "app notin (db)"],
            None,
        )
        .await;
    assert!(listed.contains("web"), "{listed}");
    let by_field = k
        .json(&[
            "get",
            "cm",
            "-A",
            "--field-selector",
            "metadata.name=settings",
        ])
        .await;
    assert_eq!(by_field["items"].as_array().map(Vec::len), Some(1));

    // A different manager edits the field; kubectl's next apply conflicts, then forces.
    k.ok(
        &[
            "patch",
            "cm",
            "settings",
            "-n",
            "shop",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"color":"red"}}"#,
        ],
        None,
    )
    .await;
    let conflict = k
        .run(&["apply", "--server-side", "-f", "-"], Some(MANIFESTS))
        .await;
    assert!(!conflict.status.success());
    let err = String::from_utf8_lossy(&conflict.stderr);
    assert!(
        err.contains("conflict") && err.contains(".data.color") && err.contains("kubectl-patch"),
        "{err}"
    );
    k.ok(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(MANIFESTS),
    )
    .await;
    let cm = k
        .json(&["get", "configmap", "settings", "-n", "shop"])
        .await;
    assert_eq!(cm["data"]["color"], "blue");

    // Dropping a key from the manifest removes it on the next apply.
    let fewer = MANIFESTS.replace("  labels: {app: shop}\n", "");
    k.ok(&["apply", "--server-side", "-f", "-"], Some(&fewer))
        .await;
    let cm = k
        .json(&["get", "configmap", "settings", "-n", "shop"])
        .await;
    assert!(cm["metadata"].get("labels").is_none(), "{}", cm["metadata"]);

    let out = k
        .ok(&["delete", "deployment", "web", "-n", "shop"], None)
        .await;
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let gone = k
        .run(&["get", "deployment", "web", "-n", "shop"], None)
        .await;
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
    k.ok(&["delete", "namespace", "shop"], None).await;
    let cms = k.json(&["get", "cm", "-A"]).await;
    assert_eq!(
        cms["items"].as_array().map(Vec::len),
        Some(0),
        "the namespace took its ConfigMap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_a_crd_waits_for_it_and_applies_its_objects() {
    let server = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(k) = setup(dir.path(), &server) else {
        return;
    };
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;
    k.ok(&["apply", "--server-side", "-f", "-"], Some(crd))
        .await;
    k.ok(
        &[
            "wait",
            "--for",
            "condition=established",
            "crd/widgets.example.com",
            "--timeout=20s",
        ],
        None,
    )
    .await;
    let w = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\nspec: {size: 3}\n";
    let out = k.ok(&["apply", "--server-side", "-f", "-"], Some(w)).await;
    assert!(
        out.contains("widget.example.com/w1 serverside-applied"),
        "{out}"
    );
    let got = k.json(&["get", "wd", "w1"]).await;
    assert_eq!(got["spec"]["size"], 3);
    k.ok(&["delete", "widget", "w1"], None).await;
}

/// The binary, as `flotilla-kube-test-server --listen 127.0.0.1:0 --kubeconfig-out PATH`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_a_kubeconfig_that_kubectl_can_use() {
    let Some(bin) = kubectl_bin() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla-kube-test-server"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(&kc)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&kc).is_ok_and(|s| s.contains("current-context")) {
        assert!(Instant::now() < deadline, "kubeconfig not written in 20s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let k = Kubectl {
        bin,
        kubeconfig: kc,
        cache: dir.path().join("cache"),
    };
    let out = k.ok(&["get", "ns", "default", "-o", "name"], None).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.trim(), "namespace/default");
}
