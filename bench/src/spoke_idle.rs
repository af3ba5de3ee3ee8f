//! API requests of an idle spoke, counted by the Kubernetes API server itself. A real
//! hub and a real `flotilla-spoke --target kubernetes` (as the restricted ServiceAccount
//! of `tests/k8s/up`'s `spoke.kubeconfig`) apply B bundles of N ConfigMaps each; once
//! every bundle is Ready and the spoke has settled, kube-apiserver's own
//! `apiserver_request_total` is read before and after an idle window. The same window is
//! measured first with no spoke at all, so the API server's own traffic (its lease
//! heartbeats and the like) is told apart from the spoke's.
//!
//! Needs a control plane from `tests/k8s/up DIR` (its `admin.kubeconfig`,
//! `spoke.kubeconfig` and `bin/kubectl`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::fleet::SOURCE;
use crate::hub::{HubProcess, find_bin};
use crate::machine::Machine;
use crate::repo::{bundle_folder, git};
use crate::spoke_rss::{Killed, wait_cluster};

#[derive(Debug, Clone)]
pub struct SpokeIdleConfig {
    pub bundles: usize,
    pub objects: usize,
    /// The idle window measured, with and without the spoke.
    pub window: Duration,
    /// Time after the last bundle is Ready before the window starts.
    pub settle: Duration,
    /// The control plane's folder (`tests/k8s/up DIR`).
    pub k8s_dir: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub timeout: Duration,
}

/// Requests served in a window: `(resource, verb)` → count. `resource` is
/// `plural[.group][/subresource]`.
pub type Requests = BTreeMap<(String, String), u64>;

#[derive(Debug, Clone, Default)]
pub struct SpokeIdleResult {
    /// The API server alone, during one window before the spoke starts.
    pub baseline: Requests,
    /// During one window with the spoke idle, holding every bundle.
    pub idle: Requests,
    /// Watches open on the API server at the end (`apiserver_longrunning_requests`), by
    /// resource.
    pub watches_open: BTreeMap<String, u64>,
    /// The spoke's RSS at the end, caches included.
    pub spoke_rss: u64,
}

/// What the spoke reads and writes here: the ConfigMaps it applies and its inventory
/// (ConfigMaps), the bundles' Namespace, its Events. The summary counts these; the other
/// rows are the API server's own informers and reconcilers, in both windows alike.
const SPOKE_RESOURCES: [&str; 3] = ["configmaps", "namespaces", "events.events.k8s.io"];

/// Verbs that change something.
const MUTATING: [&str; 6] = [
    "APPLY",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "DELETECOLLECTION",
];

/// Reads kube-apiserver's `/metrics` with the admin kubeconfig.
async fn scrape(k8s_dir: &Path) -> Result<String> {
    let out = tokio::process::Command::new(k8s_dir.join("bin/kubectl"))
        .arg("--kubeconfig")
        .arg(k8s_dir.join("admin.kubeconfig"))
        .args(["get", "--raw", "/metrics"])
        .output()
        .await
        .context("running kubectl get --raw /metrics")?;
    if !out.status.success() {
        bail!(
            "kubectl get --raw /metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("the API server's metrics are not UTF-8")
}

/// The samples of `metric` for API resources (not `/metrics`, `/readyz` and other plain
/// paths), keyed by `(resource, verb)`.
fn samples(text: &str, metric: &str) -> Requests {
    let mut out = Requests::new();
    let prefix = format!("{metric}{{");
    for line in text.lines() {
        let Some((labels, value)) = line
            .strip_prefix(&prefix)
            .and_then(|rest| rest.rsplit_once("} "))
        else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"'))
                .unwrap_or_default()
        };
        let (group, resource, sub) = (label("group"), label("resource"), label("subresource"));
        if resource.is_empty() {
            continue;
        }
        let mut name = resource.to_string();
        if !group.is_empty() {
            name = format!("{name}.{group}");
        }
        if !sub.is_empty() {
            name = format!("{name}/{sub}");
        }
        let Ok(n) = value.trim().parse::<f64>() else {
            continue;
        };
        *out.entry((name, label("verb").to_string())).or_default() += n as u64;
    }
    out
}

fn delta(before: &Requests, after: &Requests) -> Requests {
    after
        .iter()
        .filter_map(|(k, a)| {
            let d = a.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

async fn window(k8s_dir: &Path, length: Duration) -> Result<Requests> {
    let before = samples(&scrape(k8s_dir).await?, "apiserver_request_total");
    // A benchmark window: the point is to let time pass and count what happened.
    tokio::time::sleep(length).await;
    let after = samples(&scrape(k8s_dir).await?, "apiserver_request_total");
    Ok(delta(&before, &after))
}

/// A repo of `bundles` bundles, each one file of `objects` ConfigMaps in namespace
/// `bench-idle`.
fn create_repo(dir: &Path, bundles: usize, objects: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..bundles {
        let folder = bundle_folder(i);
        let b = dir.join(&folder);
        std::fs::create_dir_all(&b)?;
        std::fs::write(b.join("fleet.yaml"), "defaultNamespace: bench-idle\n")?;
        let docs: Vec<String> = (0..objects)
            .map(|k| {
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {folder}-{k:02}\ndata:\n  index: \"{k}\"\n"
                )
            })
            .collect();
        std::fs::write(b.join("configmaps.yaml"), docs.join("---\n"))?;
    }
    git(dir, &["init", "-q", "-b", "main"])?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", "idle bench"])?;
    Ok(())
}

pub async fn run(cfg: &SpokeIdleConfig) -> Result<SpokeIdleResult> {
    for f in ["admin.kubeconfig", "spoke.kubeconfig", "bin/kubectl"] {
        if !cfg.k8s_dir.join(f).exists() {
            bail!(
                "{} has no {f}: start a control plane with tests/k8s/up {}",
                cfg.k8s_dir.display(),
                cfg.k8s_dir.display()
            );
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix("flotilla-bench-idle")
        .tempdir()?;
    let work: &Path = tmp.path();
    eprintln!(
        "[flotilla-bench] spoke-idle: {} s with the API server alone",
        cfg.window.as_secs()
    );
    let baseline = window(&cfg.k8s_dir, cfg.window).await?;

    let hub = HubProcess::start(cfg.bin_dir.as_deref(), work).await?;
    let join = hub.token(1).await?;
    let spoke = Killed(
        Command::new(find_bin(cfg.bin_dir.as_deref(), "flotilla-spoke")?)
            .args(["--join", &join, "--name", "idle-spoke"])
            .args(["--target", "kubernetes", "--kubeconfig"])
            .arg(cfg.k8s_dir.join("spoke.kubeconfig"))
            .arg("--state-dir")
            .arg(work.join("spoke-state"))
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("spoke.log"))?)
            .spawn()
            .context("starting flotilla-spoke")?,
    );
    wait_cluster(&hub, cfg.timeout, 0).await?;
    create_repo(&work.join("repo"), cfg.bundles, cfg.objects)?;
    hub.add_source(SOURCE, &work.join("repo").display().to_string(), 1)
        .await?;
    eprintln!(
        "[flotilla-bench] spoke-idle: applying {} bundles × {} ConfigMaps",
        cfg.bundles, cfg.objects
    );
    wait_cluster(
        &hub,
        cfg.timeout,
        u32::try_from(cfg.bundles).unwrap_or(u32::MAX),
    )
    .await?;
    tokio::time::sleep(cfg.settle).await;
    eprintln!(
        "[flotilla-bench] spoke-idle: {} s with the spoke idle",
        cfg.window.as_secs()
    );
    let idle = window(&cfg.k8s_dir, cfg.window).await?;
    let watches_open = samples(
        &scrape(&cfg.k8s_dir).await?,
        "apiserver_longrunning_requests",
    )
    .into_iter()
    .filter(|((_, verb), n)| verb == "WATCH" && *n > 0)
    .map(|((resource, _), n)| (resource, n))
    .collect();
    Ok(SpokeIdleResult {
        baseline,
        idle,
        watches_open,
        spoke_rss: crate::machine::rss_bytes(spoke.0.id()).unwrap_or(0),
    })
}

pub fn report(cfg: &SpokeIdleConfig, machine: &Machine, r: &SpokeIdleResult) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{machine}");
    let _ = writeln!(
        o,
        "\nAPI requests in {} s, from kube-apiserver's apiserver_request_total: the API server alone, then with a real spoke idle holding {} bundles × {} ConfigMaps (target: 0 mutating, no periodic GET/LIST; watches only)\n",
        cfg.window.as_secs(),
        cfg.bundles,
        cfg.objects
    );
    let _ = writeln!(o, "| resource | verb | alone | spoke idle | the spoke's |");
    let _ = writeln!(o, "|---|---|---|---|---|");
    let keys: std::collections::BTreeSet<_> = r.baseline.keys().chain(r.idle.keys()).collect();
    let (mut mutating, mut reads) = (0i64, 0i64);
    for k in keys {
        let alone = r.baseline.get(k).copied().unwrap_or(0);
        let idle = r.idle.get(k).copied().unwrap_or(0);
        let spoke = idle as i64 - alone as i64;
        let counted = SPOKE_RESOURCES.contains(&k.0.as_str());
        if counted && MUTATING.contains(&k.1.as_str()) {
            mutating += spoke.max(0);
        } else if counted && k.1 != "WATCH" {
            reads += spoke.max(0);
        }
        let _ = writeln!(o, "| {} | {} | {alone} | {idle} | {spoke} |", k.0, k.1);
    }
    let _ = writeln!(
        o,
        "\nThe spoke's requests on what it uses ({}): {mutating} mutating, {reads} GET/LIST.\n",
        SPOKE_RESOURCES.join(", ")
    );
    let _ = writeln!(
        o,
        "The spoke's RSS at the end: {:.1} MiB.\n",
        r.spoke_rss as f64 / (1u64 << 20) as f64
    );
    let _ = writeln!(o, "Watches open at the end:\n");
    let _ = writeln!(o, "| resource | watches |");
    let _ = writeln!(o, "|---|---|");
    for (resource, n) in &r.watches_open {
        let _ = writeln!(o, "| {resource} | {n} |");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counters_are_read_by_resource_and_verb_and_plain_paths_are_left_out() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="GET",version="v1"} 12
apiserver_request_total{code="404",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="GET",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 5
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",subresource="/readyz",verb="GET",version=""} 9
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="status",verb="PATCH",version="v1"} 1
"#;
        let s = samples(text, "apiserver_request_total");
        let key = |r: &str, v: &str| (r.to_string(), v.to_string());
        assert_eq!(s.get(&key("configmaps", "GET")), Some(&15));
        assert_eq!(s.get(&key("leases.coordination.k8s.io", "PUT")), Some(&5));
        assert_eq!(s.get(&key("deployments.apps/status", "PATCH")), Some(&1));
        assert_eq!(s.len(), 3, "{s:?}");
        let mut later = s.clone();
        *later.entry(key("configmaps", "GET")).or_default() += 2;
        assert_eq!(
            delta(&s, &later),
            Requests::from([(key("configmaps", "GET"), 2)])
        );
    }
}
