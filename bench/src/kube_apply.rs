//! The spoke's Kubernetes applier against `kubectl apply --server-side` on the real
//! kube-apiserver and etcd of `tests/k8s/up`, in one run and with the same credentials
//! (the restricted ServiceAccount of `spoke.kubeconfig`):
//!
//! - the first apply of a bundle of N objects (a Namespace, a CRD with its custom
//!   resources, Deployments, Services, ConfigMaps) into an empty namespace. kubectl does
//!   what a person must do with a CRD and its objects: apply the Namespace and CRD, wait
//!   for the CRD to be Established, apply the rest. Both start with no discovery cache.
//! - the time from an out-of-band edit of an object to its correction by the applier
//!   with `correctDrift`, woken by its own watches and calling the agent's
//!   `applier::enforce`, as `flotilla-spoke` does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flotilla_model::State;
use flotilla_spoke::applier::kubernetes::{KubeApplier, KubeOptions, client_config};
use flotilla_spoke::applier::{Applier, DeployOptions, Desired, enforce};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};

use crate::stats::median;

#[derive(Debug, Clone)]
pub struct KubeApplyConfig {
    /// The control plane's folder (`tests/k8s/up DIR`).
    pub k8s_dir: PathBuf,
    pub runs: usize,
    pub deployments: usize,
    pub services: usize,
    pub custom_resources: usize,
    /// ConfigMaps, on top of the rest; the default makes 1,000 objects in all.
    pub configmaps: usize,
    /// Out-of-band edits timed to their correction.
    pub edits: usize,
}

impl KubeApplyConfig {
    pub fn objects(&self) -> usize {
        2 + self.deployments + self.services + self.custom_resources + self.configmaps
    }
}

#[derive(Debug, Clone, Default)]
pub struct KubeApplyResult {
    /// Per run: (kubectl, spoke) wall time of the first apply.
    pub applies: Vec<(Duration, Duration)>,
    /// Each edit's time to correction.
    pub corrections: Vec<Duration>,
}

/// The test CRD's group: the spoke's ClusterRole grants it (`examples/spoke-rbac.yaml`).
const GROUP: &str = "test.flotilla.dev";

/// One bundle's manifests, in namespace `ns`, with a CRD whose plural is `widgets<id>`.
/// The Namespace and CRD come back apart from the rest, for kubectl's two steps.
fn manifests(cfg: &KubeApplyConfig, ns: &str, id: &str) -> (String, String) {
    let plural = format!("widgets{id}");
    let kind = format!("Widget{id}");
    let first = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata: {{name: {plural}.{GROUP}}}\n\
         spec:\n  group: {GROUP}\n  scope: Namespaced\n\
         \x20 names: {{plural: {plural}, singular: widget{id}, kind: {kind}}}\n\
         \x20 versions:\n  - name: v1\n    served: true\n    storage: true\n\
         \x20   schema:\n      openAPIV3Schema:\n        type: object\n\
         \x20       x-kubernetes-preserve-unknown-fields: true\n"
    );
    let mut rest = String::new();
    for i in 0..cfg.deployments {
        rest.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web-{i}, namespace: {ns}}}\n\
             spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web-{i}}}}}\n\
             \x20 template:\n    metadata: {{labels: {{app: web-{i}}}}}\n\
             \x20   spec: {{containers: [{{name: web, image: nginx:1.27, ports: [{{containerPort: 80}}]}}]}}\n"
        ));
    }
    for i in 0..cfg.services {
        rest.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: web-{i}, namespace: {ns}}}\n\
             spec: {{selector: {{app: web-{i}}}, ports: [{{port: 80, targetPort: 80}}]}}\n"
        ));
    }
    for i in 0..cfg.configmaps {
        rest.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}, namespace: {ns}}}\n\
             data: {{k: \"value-{i}\"}}\n"
        ));
    }
    for i in 0..cfg.custom_resources {
        rest.push_str(&format!(
            "---\napiVersion: {GROUP}/v1\nkind: {kind}\nmetadata: {{name: w-{i}, namespace: {ns}}}\n\
             spec: {{size: {i}}}\n"
        ));
    }
    (first, rest)
}

fn kubectl(k8s_dir: &Path, cache: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(k8s_dir.join("bin/kubectl"))
        .arg("--kubeconfig")
        .arg(k8s_dir.join("spoke.kubeconfig"))
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `kubectl apply --server-side` as a person applies a CRD with its objects: Namespace and
/// CRD, wait for Established, then the rest. A fresh discovery cache, like a first run.
fn kubectl_apply(cfg: &KubeApplyConfig, ns: &str, id: &str, dir: &Path) -> Result<Duration> {
    let (first, rest) = manifests(cfg, ns, id);
    let (a, b) = (
        dir.join(format!("{id}-first.yaml")),
        dir.join(format!("{id}-rest.yaml")),
    );
    std::fs::write(&a, first)?;
    std::fs::write(&b, rest)?;
    let cache = dir.join(format!("{id}-cache"));
    let crd = format!("crd/widgets{id}.{GROUP}");
    let started = Instant::now();
    for args in [
        vec!["apply", "--server-side", "-f", path_str(&a)?],
        vec![
            "wait",
            "--for",
            "condition=Established",
            &crd,
            "--timeout",
            "60s",
        ],
        vec!["apply", "--server-side", "-f", path_str(&b)?],
    ] {
        kubectl(&cfg.k8s_dir, &cache, &args)?;
    }
    Ok(started.elapsed())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("a temp path that is not UTF-8")
}

/// An applier as `flotilla-spoke --target kubernetes` starts one: client, discovery,
/// policy (none here).
async fn spoke_target(kubeconfig: &Path) -> Result<KubeApplier> {
    KubeApplier::connect(KubeOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        policy: Default::default(),
        cluster: "bench".to_string(),
    })
    .await
}

fn desired(bundle: &str, content: String, options: DeployOptions) -> Desired {
    Desired {
        bundle: bundle.to_string(),
        deployment_id: "d-1".to_string(),
        content: content.into_bytes(),
        options,
    }
}

pub async fn run(cfg: &KubeApplyConfig) -> Result<KubeApplyResult> {
    let spoke_kc = cfg.k8s_dir.join("spoke.kubeconfig");
    let admin =
        kube::Client::try_from(client_config(Some(&cfg.k8s_dir.join("admin.kubeconfig"))).await?)?;
    let tmp = tempfile::tempdir()?;
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let mut result = KubeApplyResult::default();

    for run in 0..cfg.runs {
        // kubectl first in even runs and second in odd ones, so neither always meets a
        // warmer API server.
        let kubectl_id = format!("k{tag}{run}");
        let spoke_id = format!("s{tag}{run}");
        let mut times = (Duration::ZERO, Duration::ZERO);
        for side in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                times.0 =
                    kubectl_apply(cfg, &format!("bench-{kubectl_id}"), &kubectl_id, tmp.path())?;
            } else {
                let (first, rest) = manifests(cfg, &format!("bench-{spoke_id}"), &spoke_id);
                let d = desired(
                    &format!("apply-{spoke_id}"),
                    first + &rest,
                    DeployOptions::default(),
                );
                // Timed from the spoke's start, discovery included, as kubectl's is.
                let started = Instant::now();
                let t = spoke_target(&spoke_kc).await?;
                let out = t.apply(&d).await.context("the spoke's apply")?;
                times.1 = started.elapsed();
                if out.state == State::ErrApplied {
                    bail!("the spoke's apply failed: {}", out.message);
                }
            }
        }
        eprintln!(
            "run {}: kubectl {:.2} s, spoke {:.2} s",
            run + 1,
            times.0.as_secs_f64(),
            times.1.as_secs_f64()
        );
        result.applies.push(times);
    }

    result.corrections = corrections(cfg, &spoke_kc, admin, &tag).await?;
    Ok(result)
}

/// Applies ConfigMaps with correctDrift, then edits them one at a time as someone else
/// would and times each edit until the applier has put the value back.
async fn corrections(
    cfg: &KubeApplyConfig,
    spoke_kc: &Path,
    admin: kube::Client,
    tag: &str,
) -> Result<Vec<Duration>> {
    let ns = format!("bench-drift-{tag}");
    let mut yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n");
    for i in 0..cfg.edits {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}, namespace: {ns}}}\ndata: {{k: \"desired\"}}\n"
        ));
    }
    let options = DeployOptions {
        correct_drift: true,
        ..DeployOptions::default()
    };
    let t = Arc::new(spoke_target(spoke_kc).await?);
    let d = desired(&format!("drift-{tag}"), yaml, options);
    t.apply(&d).await.context("the drift bundle applies")?;
    let changes = t.changes().context("the Kubernetes target has watches")?;
    // What flotilla-spoke's enforcement loop does when a watch wakes it.
    let enforcer = {
        let (t, d) = (t.clone(), d.clone());
        tokio::spawn(async move {
            loop {
                changes.notified().await;
                let _ = enforce(t.as_ref(), &d, State::Ready, &|| {}).await;
            }
        })
    };
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("", "v1", "ConfigMap"),
        "configmaps",
    );
    let cms: Api<DynamicObject> = Api::namespaced_with(admin, &ns, &ar);
    // Let the watch caches fill before the first edit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut out = Vec::with_capacity(cfg.edits);
    for i in 0..cfg.edits {
        let name = format!("cm-{i}");
        cms.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "edited by hand"}})),
        )
        .await
        .context("the out-of-band edit")?;
        let edited = Instant::now();
        loop {
            let cm = cms.get(&name).await?;
            if cm.data["data"]["k"] == "desired" {
                break;
            }
            if edited.elapsed() > Duration::from_secs(60) {
                enforcer.abort();
                bail!("{ns}/{name} was not corrected within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out.push(edited.elapsed());
    }
    enforcer.abort();
    Ok(out)
}

pub fn report(cfg: &KubeApplyConfig, r: &KubeApplyResult) -> String {
    let secs = |d: Duration| d.as_secs_f64();
    let mut s = format!(
        "first apply of {} objects ({} Deployments, {} Services, {} ConfigMaps, a CRD with {} custom resources, a Namespace), {} runs\n\
         run   kubectl apply --server-side   spoke   spoke/kubectl\n",
        cfg.objects(),
        cfg.deployments,
        cfg.services,
        cfg.configmaps,
        cfg.custom_resources,
        r.applies.len()
    );
    for (i, (k, sp)) in r.applies.iter().enumerate() {
        s.push_str(&format!(
            "{:<5} {:>26.2} s {:>6.2} s {:>13.2}\n",
            i + 1,
            secs(*k),
            secs(*sp),
            secs(*sp) / secs(*k).max(f64::EPSILON)
        ));
    }
    let kubectl: Vec<f64> = r.applies.iter().map(|(k, _)| secs(*k)).collect();
    let spoke: Vec<f64> = r.applies.iter().map(|(_, s)| secs(*s)).collect();
    let (mk, ms) = (
        median(kubectl).unwrap_or_default(),
        median(spoke).unwrap_or_default(),
    );
    s.push_str(&format!(
        "median {:>25.2} s {:>6.2} s {:>13.2}\n",
        mk,
        ms,
        ms / mk.max(f64::EPSILON)
    ));
    let mut ms_each: Vec<f64> = r
        .corrections
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    ms_each.sort_by(f64::total_cmp);
    s.push_str(&format!(
        "out-of-band edit to correction, {} edits: median {:.0} ms, max {:.0} ms\n",
        ms_each.len(),
        median(ms_each.iter().copied()).unwrap_or_default(),
        ms_each.last().copied().unwrap_or(0.0)
    ));
    s
}
