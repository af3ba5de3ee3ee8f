//! `flotilla render DIR`: what a cluster with these labels would receive, without a hub.
//! DIR is read as a source with `--path .` reads its repo: the same discovery finds the
//! same bundles (`flotilla_render::discover`), and each is rendered in path order. YAML
//! by default; `-o json` prints a kubectl-style `List`, `-o name` one `kind/name` per
//! object.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use flotilla_model::parse_labels;
use flotilla_render as render;

use crate::output::{Format, Printer, emit};

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// A repo or bundle folder (bundles are the folders with fleet.yaml or flotilla.yaml;
    /// without any, the folder's raw YAML is one bundle).
    pub dir: PathBuf,
    /// Cluster labels, key=value[,key=value]; repeatable.
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// The cluster's name, for `${cluster.name}` and clusterName customizations.
    #[arg(long, default_value = "local")]
    pub cluster_name: String,
    /// Cluster groups the cluster belongs to; repeatable.
    #[arg(long = "cluster-group")]
    pub cluster_groups: Vec<String>,
    /// Fail on unknown fleet.yaml keys, as `flotilla-hub run --strict-fleet-yaml` does.
    #[arg(long)]
    pub strict: bool,
    /// Helm charts: the cluster's Kubernetes version, as `helm template --kube-version`
    /// (default v1.20.0, Helm's).
    #[arg(long)]
    pub kube_version: Option<String>,
    /// Helm charts: API versions the cluster serves besides Helm's defaults, as
    /// `helm template --api-versions` (comma-separated, repeatable).
    #[arg(long = "api-versions", value_delimiter = ',')]
    pub api_versions: Vec<String>,
}

pub fn run(args: &RenderArgs, out: Printer) -> Result<()> {
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
    let source = std::fs::canonicalize(&args.dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_string()))
        .unwrap_or_else(|| "bundle".into());
    let limits = render::Limits::default();
    let bundles = render::discover(&args.dir, &source, &[], &limits);
    let several = bundles.len() > 1;
    let mut failed = 0usize;
    let mut rendered = Vec::new();
    for lb in bundles {
        let shown = if lb.path.is_empty() { "." } else { &lb.path };
        let bundle = match lb.result {
            Ok(b) => b,
            Err(diags) => {
                failed += report(&lb.name, &diags);
                continue;
            }
        };
        let strict_failure = args.strict && !bundle.unknown_keys().is_empty();
        for w in bundle.warnings() {
            let is_unknown_key = bundle
                .unknown_keys()
                .iter()
                .any(|u| u.file == w.file && u.line == w.line);
            if !(strict_failure && is_unknown_key) {
                eprintln!("warning: {w}");
            }
        }
        if strict_failure {
            for d in bundle.unknown_keys() {
                eprintln!("error: bundle {}: {d} (--strict)", lb.name);
            }
            failed += 1;
            continue;
        }
        if let render::Selection::DoNotDeploy = bundle.select(&info) {
            eprintln!(
                "# this cluster gets nothing from bundle {}: doNotDeploy",
                lb.name
            );
            continue;
        }
        match bundle.render(&info) {
            Ok(r) => rendered.push((format!("# bundle {} ({shown})\n", lb.name), r)),
            Err(diags) => failed += report(&lb.name, &diags),
        }
    }
    print_rendered(&rendered, several, out)?;
    if failed > 0 {
        bail!("{failed} bundle(s) failed to render");
    }
    Ok(())
}

/// Prints the renders in the chosen format; YAML names each bundle when there are several.
fn print_rendered(
    rendered: &[(String, std::sync::Arc<render::Rendered>)],
    several: bool,
    out: Printer,
) -> Result<()> {
    let objects = || rendered.iter().flat_map(|(_, r)| &r.objects);
    match out.format {
        None | Some(Format::Yaml | Format::Table | Format::Wide) => {
            for (header, r) in rendered {
                if several {
                    emit(header)?;
                }
                emit(&r.manifest)?;
            }
            Ok(())
        }
        Some(Format::Name) => emit(
            &objects()
                .map(|o| format!("{}/{}\n", o.kind.to_lowercase(), o.name))
                .collect::<String>(),
        ),
        Some(Format::Json) => {
            let items: Vec<&serde_json::Value> = objects().map(|o| &o.value).collect();
            let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items });
            emit(&(serde_json::to_string_pretty(&list)? + "\n"))
        }
    }
}

/// Prints a bundle's errors; returns 1 (one failed bundle).
fn report(bundle: &str, diags: &[render::Diagnostic]) -> usize {
    for d in diags {
        eprintln!("error: bundle {bundle}: {d}");
    }
    1
}
