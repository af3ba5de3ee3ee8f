//! `flotilla-spoke`: the binary edge of the spoke agent.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use flotilla_identity::JoinString;
use flotilla_model::{ClusterName, parse_labels};
use flotilla_telemetry::LogFormat;

use crate::enroll::enroll;
use crate::session::{Agent, run_forever};
use crate::state_dir::StateDir;
use crate::target::{KubeOptions, PolicySpec, TargetSpec, kubernetes};

#[derive(Debug, Parser)]
#[command(
    name = "flotilla-spoke",
    version,
    about = "The flotilla spoke agent: dials out to the hub, applies bundles, reports status"
)]
pub struct Args {
    /// Join string from `flotilla token create`; needed only for the first start. Prefer
    /// `--join-file` or `FLOTILLA_JOIN`: a command line is visible to every local user.
    #[arg(long, env = "FLOTILLA_JOIN", hide_env_values = true)]
    pub join: Option<String>,
    /// A file holding the join string (a mounted Secret, say); read on the first start.
    #[arg(long, conflicts_with = "join")]
    pub join_file: Option<PathBuf>,
    /// This cluster's name (a DNS label).
    #[arg(long)]
    pub name: String,
    /// Labels reported to the hub, k=v,k2=v2.
    #[arg(long, default_value = "")]
    pub labels: String,
    /// Where bundles go: `kubernetes` (server-side apply into the cluster) or `dir:PATH`.
    /// Default: kubernetes when a kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config)
    /// or an in-cluster config is found.
    #[arg(long)]
    pub target: Option<TargetSpec>,
    /// Kubeconfig for --target kubernetes (default: KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Spoke policy: only these namespaces may be written (comma-separated); other
    /// cluster-scoped objects are then refused. A bundle that breaks it is refused whole.
    #[arg(long, default_value = "")]
    pub allow_namespaces: String,
    /// Spoke policy: kinds refused whatever the hub sends, comma-separated, any case.
    /// `Kind` is that kind in every group the cluster serves it in (`Event` is core and
    /// events.k8s.io); `Kind.group` is one group. A kind the cluster does not serve
    /// stops the spoke at start.
    #[arg(long, default_value = "")]
    pub deny_kinds: String,
    /// Spoke policy file (YAML: allowNamespaces, denyNamespaces, denyKinds,
    /// denyBindingsToClusterRoles); merged with the flags. See
    /// examples/spoke-policy/default-deny.yaml.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Holds the key (0600), certificate and the assignment cache.
    #[arg(long)]
    pub state_dir: PathBuf,
    #[arg(long, env = "FLOTILLA_LOG", default_value = "info")]
    pub log_level: String,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Plain-HTTP listener for Prometheus /metrics and /healthz.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

pub fn init_tracing(args: &Args) {
    flotilla_telemetry::init_tracing(&args.log_level, args.log_format);
}

pub async fn run(args: Args) -> Result<()> {
    let name = ClusterName::new(&args.name)?;
    let labels = parse_labels(&args.labels).context("--labels")?;
    // Read before joining, so a mistake in it never uses up a join token.
    let policy = policy_spec(&args)?;
    // The key, the assignment cache (manifests with Secrets) and the content live here.
    flotilla_identity::files::private_dir(&args.state_dir)?;
    let state = StateDir::new(&args.state_dir);
    state.recover()?;
    if !state.is_enrolled() {
        let join = match (&args.join, &args.join_file) {
            (Some(join), _) => join.clone(),
            (None, Some(path)) => read_join_file(path)?,
            (None, None) => bail!(
                "{} holds no identity yet; pass --join-file (or FLOTILLA_JOIN) with a join \
                 string from `flotilla token create`",
                args.state_dir.display()
            ),
        };
        let join: JoinString = join.trim().parse()?;
        enroll(&state, &join, name.as_str(), &labels).await?;
    }
    let identity = state.load_identity()?;
    // Fail at start, not on every reconnect, when the key is unreadable or too open.
    state.credentials()?;
    if identity.cluster != name.as_str() {
        bail!(
            "{} belongs to cluster {:?}, not {:?}; use another --state-dir",
            args.state_dir.display(),
            identity.cluster,
            name
        );
    }
    let spec = match &args.target {
        Some(t) => t.clone(),
        None if kubernetes::config_available(args.kubeconfig.as_deref()) => TargetSpec::Kubernetes,
        None => bail!(
            "no --target given and no Kubernetes config found (--kubeconfig, KUBECONFIG, \
             ~/.kube/config, in-cluster); pass --target kubernetes or --target dir:PATH"
        ),
    };
    if matches!(spec, TargetSpec::Dir(_)) && !policy.is_empty() {
        bail!("--allow-namespaces, --deny-kinds and --policy apply to --target kubernetes only");
    }
    let target = spec
        .build(KubeOptions {
            kubeconfig: args.kubeconfig.clone(),
            policy,
            cluster: identity.cluster.clone(),
        })
        .await?;
    let agent = Arc::new(Agent::new(
        identity.cluster,
        identity.hub,
        labels,
        state,
        target,
    )?);
    if let Some(listen) = args.metrics_listen {
        let a = agent.clone();
        let scrape = Arc::new(move || a.scrape_metrics());
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listen, scrape).await {
                tracing::error!(%listen, error = %e, "metrics listener failed");
            }
        });
    }
    tokio::select! {
        _ = run_forever(agent) => {}
        _ = shutdown_signal() => tracing::info!("stopping"),
    }
    Ok(())
}

/// A policy file larger than this is not a policy someone wrote by hand.
const MAX_POLICY_FILE: u64 = 1024 * 1024;

/// The spoke policy from the flags and the `--policy` file together.
fn policy_spec(args: &Args) -> Result<PolicySpec> {
    let flags = PolicySpec::from_flags(&args.allow_namespaces, &args.deny_kinds)?;
    let Some(path) = &args.policy else {
        return Ok(flags);
    };
    let text = read_small_file(path, MAX_POLICY_FILE, "policy file")?;
    Ok(flags.merge(PolicySpec::from_yaml(path, &text)?)?)
}

/// Ctrl-C or SIGTERM (what systemd and Kubernetes send).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A join string is a few hundred bytes; a larger file is not one.
const MAX_JOIN_FILE: u64 = 16 * 1024;

fn read_join_file(path: &std::path::Path) -> Result<String> {
    read_small_file(path, MAX_JOIN_FILE, "--join-file")
}

/// A text file an operator wrote, read only up to `max` bytes: a larger one is refused
/// before it is read whole.
fn read_small_file(path: &std::path::Path, max: u64, what: &str) -> Result<String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).with_context(|| format!("opening {what} {}", path.display()))?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {what} {} (UTF-8 text)", path.display()))?;
    if text.len() as u64 > max {
        bail!("{what} {} is larger than {max} bytes", path.display());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_files_that_are_too_large_missing_or_not_text_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big.join");
        std::fs::write(&big, vec![b'a'; MAX_JOIN_FILE as usize + 1]).expect("write");
        let err = format!("{:#}", read_join_file(&big).expect_err("refused"));
        assert!(
            err.contains("--join-file") && err.contains("larger than 16384 bytes"),
            "{err}"
        );

        let missing = dir.path().join("missing.yaml");
        let err = format!(
            "{:#}",
            read_small_file(&missing, 10, "policy file").expect_err("refused")
        );
        assert!(
            err.contains("opening policy file") && err.contains("missing.yaml"),
            "{err}"
        );

        let binary = dir.path().join("binary.join");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).expect("write");
        let err = format!("{:#}", read_join_file(&binary).expect_err("refused"));
        assert!(err.contains("UTF-8"), "{err}");

        let ok = dir.path().join("ok.join");
        std::fs::write(&ok, "abcd1234.secret\n").expect("write");
        assert_eq!(read_join_file(&ok).expect("read"), "abcd1234.secret\n");
    }

    #[test]
    fn a_join_string_given_both_inline_and_as_a_file_is_refused() {
        let err = Args::try_parse_from([
            "flotilla-spoke",
            "--name",
            "dev",
            "--state-dir",
            "/tmp/x",
            "--join",
            "abcd1234.secret",
            "--join-file",
            "/tmp/dev.join",
        ])
        .expect_err("refused");
        assert!(err.to_string().contains("cannot be used with"), "{err}");
    }
}
