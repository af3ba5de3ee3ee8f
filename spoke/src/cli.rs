//! `flotilla-spoke`: the binary edge of the spoke agent.
//!
//! Start-up checks everything local first (labels, policy, state dir against the join
//! string, the target and, before registering, that the Kubernetes API answers), so a
//! mistake never uses up a join token or leaves a phantom cluster on the hub. A
//! permanent refusal by the hub ends the process with its own exit code
//! ([`exit_code`], `docs/operations.md`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use flotilla_identity::{JoinString, Refusal};
use flotilla_model::{ClusterName, parse_labels};
use flotilla_telemetry::LogFormat;

use crate::applier::{KubeOptions, PolicySpec, TargetSpec, kubernetes};
use crate::enroll::{Refused, enroll};
use crate::renewal::Certificates;
use crate::session::{Agent, OnRefusal, run_forever};
use crate::state_dir::StateDir;

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
    /// Register again with the join string given, replacing the identity in
    /// --state-dir (after `flotilla cluster delete`, or to move to another hub). Without
    /// it, a join string other than the one the state dir was enrolled with is refused.
    #[arg(long)]
    pub rejoin: bool,
    /// When the hub refuses this spoke for good (revoked, deleted, certificate expired
    /// beyond the hub's recovery grace): `exit` with that refusal's exit code, or
    /// `retry` every 10 minutes, logging the refusal, while enforcing the cached state.
    #[arg(long, value_enum, default_value_t = OnRefusal::Exit)]
    pub on_refusal: OnRefusal,
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
    let policy = policy_spec(&args)?;
    // The key, the assignment cache (manifests with Secrets) and the content live here.
    flotilla_identity::files::private_dir(&args.state_dir)?;
    let state = StateDir::new(&args.state_dir);
    state.recover()?;
    let join = join_text(&args)?;
    let registration = registration(&args, &state, &name, join)?;
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
            cluster: name.to_string(),
        })
        .await?;
    match &spec {
        TargetSpec::Dir(dir) => check_writable(dir)?,
        // An enrolled spoke starts while its API server is down and keeps trying; a new
        // one does not register a cluster it cannot apply to.
        TargetSpec::Kubernetes if registration.is_some() => {
            check_api_answers(args.kubeconfig.as_deref()).await?
        }
        TargetSpec::Kubernetes => {}
    }
    if let Some((join, text)) = registration {
        enroll(&state, &join, &text, name.as_str(), &labels).await?;
    }
    let identity = state.load_identity()?;
    let agent = Arc::new(Agent::new(
        identity.cluster.clone(),
        identity.hub_addresses(),
        labels,
        state.clone(),
        target,
    )?);
    // Fails at start, not on every reconnect, when the key is unreadable or too open.
    let certs = Certificates::start(state, identity.cluster, agent.subscribe_outbound())?;
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
        refused = run_forever(agent, certs, args.on_refusal) => return Err(refused.into()),
        _ = shutdown_signal() => tracing::info!("stopping"),
    }
    Ok(())
}

/// The join string from --join, FLOTILLA_JOIN or --join-file, if any.
fn join_text(args: &Args) -> Result<Option<String>> {
    Ok(match (&args.join, &args.join_file) {
        (Some(join), _) => Some(join.clone()),
        (None, Some(path)) => Some(read_join_file(path)?),
        (None, None) => None,
    })
}

/// Whether this start registers, and with which join string: the state dir has no
/// identity yet, or `--rejoin` replaces it. A join string other than the one the
/// identity came from is refused without `--rejoin`, instead of being ignored.
fn registration(
    args: &Args,
    state: &StateDir,
    name: &ClusterName,
    join: Option<String>,
) -> Result<Option<(JoinString, String)>> {
    let dir = args.state_dir.display();
    let parsed = match &join {
        Some(text) => Some(text.trim().parse::<JoinString>()?),
        None if args.rejoin => bail!("--rejoin needs a join string (--join-file or FLOTILLA_JOIN)"),
        None => None,
    };
    if !state.is_enrolled() {
        let (Some(join), Some(text)) = (parsed, join) else {
            bail!(
                "{dir} holds no identity yet; pass --join-file (or FLOTILLA_JOIN) with a join \
                 string from `flotilla token create`"
            );
        };
        return Ok(Some((join, text)));
    }
    let identity = state.load_identity()?;
    if let (Some(join), Some(text)) = (parsed, join) {
        if args.rejoin {
            tracing::warn!(state_dir = %dir, old_cluster = %identity.cluster, "--rejoin: registering again, replacing the identity in the state dir");
            return Ok(Some((join, text)));
        }
        if !identity.enrolled_with(&text, &join.hubs()?) {
            bail!(
                "{dir} already holds the identity of cluster {:?} (hub {}), enrolled with \
                 another join string than the one given; pass --rejoin to register again \
                 with the new one (replacing that identity), or drop the join string to \
                 keep it",
                identity.cluster,
                identity.hub_addresses().join(",")
            );
        }
    }
    if identity.cluster != name.as_str() {
        bail!(
            "{dir} belongs to cluster {:?}, not {:?}; use another --state-dir",
            identity.cluster,
            name
        );
    }
    Ok(None)
}

/// A directory target must take our files before anyone registers for it.
fn check_writable(dir: &std::path::Path) -> Result<()> {
    let probe = dir.join(format!(".flotilla-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("target dir {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// How long a new spoke waits for the Kubernetes API server before refusing to register.
const API_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The kubeconfig loads and the API server it names answers.
async fn check_api_answers(kubeconfig: Option<&std::path::Path>) -> Result<()> {
    let config = kubernetes::client_config(kubeconfig).await?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let version = tokio::time::timeout(API_CHECK_TIMEOUT, client.apiserver_version())
        .await
        .map_err(|_| {
            anyhow!(
                "the Kubernetes API server {server} did not answer within {}s; not registering",
                API_CHECK_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| {
            format!("the Kubernetes API server {server} does not answer; not registering")
        })?;
    tracing::info!(%server, version = %version.git_version, "the Kubernetes API server answers");
    Ok(())
}

/// The process exit code for an error from [`run`]: one per kind of permanent refusal
/// (documented in `docs/operations.md`), 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<Refused>().map(|r| r.refusal) {
        None => 1,
        Some(Refusal::Revoked) => 3,
        Some(Refusal::NotRegistered) => 4,
        Some(
            Refusal::BeyondGrace | Refusal::Superseded | Refusal::WrongKey | Refusal::UnknownIssuer,
        ) => 5,
        Some(Refusal::Token | Refusal::NameTaken) => 6,
    }
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
