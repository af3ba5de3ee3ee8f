//! `flotilla render DIR`: what a cluster with these labels would receive, without a hub.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use flotilla_model::parse_labels;
use flotilla_render as render;

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// A bundle folder (with fleet.yaml, flotilla.yaml, or raw YAML).
    pub dir: PathBuf,
    /// Cluster labels, key=value; repeatable.
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    #[arg(long, default_value = "local")]
    pub cluster_name: String,
    /// Cluster groups the cluster belongs to; repeatable.
    #[arg(long = "cluster-group")]
    pub cluster_groups: Vec<String>,
    /// Helm charts: the cluster's Kubernetes version, as `helm template --kube-version`
    /// (default v1.20.0, Helm's).
    #[arg(long)]
    pub kube_version: Option<String>,
    /// Helm charts: API versions the cluster serves besides Helm's defaults, as
    /// `helm template --api-versions` (comma-separated, repeatable).
    #[arg(long = "api-versions", value_delimiter = ',')]
    pub api_versions: Vec<String>,
}

pub fn run(args: &RenderArgs) -> Result<()> {
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        labels.extend(parse_labels(l)?);
    }
    let capabilities = if args.kube_version.is_some() || !args.api_versions.is_empty() {
        Some(
            render::Capabilities::helm_template(args.kube_version.as_deref(), &args.api_versions)
                .map_err(anyhow::Error::msg)?,
        )
    } else {
        None
    };
    let info = render::ClusterInfo {
        name: args.cluster_name.clone(),
        labels,
        groups: args
            .cluster_groups
            .iter()
            .map(|g| render::GroupInfo {
                name: g.clone(),
                labels: BTreeMap::new(),
            })
            .collect(),
        capabilities,
    };
    let name = args
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "bundle".into());
    let limits = render::Limits::default();
    let bundle = match render::load_bundle_dir(&args.dir, &name, &limits) {
        Ok(b) => b,
        Err(diags) => fail(&diags)?,
    };
    for w in bundle.warnings() {
        eprintln!("warning: {w}");
    }
    if let render::Selection::DoNotDeploy = bundle.select(&info) {
        eprintln!(
            "# this cluster gets nothing from {}: doNotDeploy",
            args.dir.display()
        );
        return Ok(());
    }
    match bundle.render(&info) {
        Ok(r) => {
            print!("{}", r.manifest);
            Ok(())
        }
        Err(diags) => fail(&diags),
    }
}

fn fail<T>(diags: &[render::Diagnostic]) -> Result<T> {
    for d in diags {
        eprintln!("error: {d}");
    }
    bail!("{} error(s) rendering the bundle", diags.len())
}
