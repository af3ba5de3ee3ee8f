//! Commands that talk to the hub's Admin API: their clap tree (`AdminCommand`, flattened
//! into `flotilla`'s), the typed `Client` every one of them goes through (one deadline
//! per call, `--request-timeout`), and `dispatch`, which runs one command and prints it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use flotilla_identity::ClientConfig;
use flotilla_model::duration::parse_duration;
use flotilla_model::{LabelSelector, Labels, parse_labels};
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::output::Printer;
use crate::views::{
    BundleView, ClusterView, GroupView, RolloutView, SourceView, StatusView, TargetView,
    TokenCreatedView, TokenView,
};

/// Every command that needs a hub.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List registered clusters, or show one.
    Clusters {
        /// A cluster name: show only it (an error if there is none).
        name: Option<String>,
    },
    /// Cluster operations.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// List git sources, or show one.
    Sources {
        /// A source name: show only it (an error if there is none).
        name: Option<String>,
    },
    /// Source operations.
    Source {
        #[command(subcommand)]
        command: SourceCommand,
    },
    /// List bundles with their fleet-wide state, or show one.
    Bundles {
        /// A bundle name (SOURCE-PATH): show only it (an error if there is none).
        name: Option<String>,
    },
    /// Per-cluster status of every bundle, or of one.
    Status(StatusArgs),
    /// List cluster groups with their status, or show one.
    Groups {
        /// A group name: show only it (an error if there is none).
        name: Option<String>,
    },
    /// Cluster group operations.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Staged rollouts: status (optionally live), pause, resume.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Live progress of every bundle (clusters Ready/total, states, deployments).
    Watch(WatchArgs),
    /// Dry run: which clusters get which bundles of SOURCE (or SOURCE/BUNDLE), and why.
    Targets {
        /// A source name, or SOURCE/BUNDLE for one bundle of it.
        source: String,
    },
    /// List join tokens, or show one (the same as `token list [ID]`).
    Tokens {
        /// A token id: show only it (an error if there is none).
        id: Option<String>,
    },
    /// Join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Deployment history: what each cluster and bundle received (commit, deployment,
    /// applied, Ready or failed and why) and how its state changed since.
    History(crate::history::HistoryArgs),
    /// Where COMMIT runs: each cluster of every bundle the commit changed, and whether
    /// it runs the commit, is Pending on it, Failed it, or runs an Older or Newer one.
    Where {
        /// A commit id, or 7 or more of its first characters.
        commit: String,
    },
    /// The audit trail: every change made through the hub (and every refused attempt),
    /// who made it, from where, and the result.
    Audit(crate::history::AuditArgs),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Set hub-side labels (they win over all others): k=v to set, k- to remove the key
    /// wherever it came from (join token, accepted or spoke-set) until it is set again.
    Label {
        /// The cluster.
        name: String,
        /// Changes: key=value to set, key- to remove.
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Trust labels the spoke reported (see PENDING-LABELS in `clusters -o wide`): the
    /// named keys, or every pending one. A named key it no longer reports is removed.
    AcceptLabels {
        /// The cluster.
        name: String,
        /// Label keys to accept; none accepts every pending label.
        keys: Vec<String>,
    },
    /// Close the cluster's stream now and refuse its certificates from then on.
    Revoke {
        /// The cluster.
        name: String,
    },
    /// Forget the cluster and its status; joining again needs a new token.
    Delete {
        /// The cluster.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Add a git source.
    Add(Box<SourceAddArgs>),
    /// Change a source in place: only the options given change, and a bundle the change
    /// keeps keeps its deployment (nothing is unassigned or applied again).
    Set(Box<SourceSetArgs>),
    /// Remove a source; its bundles are unassigned from every cluster.
    Remove {
        /// The source.
        name: String,
        /// Spokes forget the source's bundles but leave their objects in place.
        #[arg(long)]
        keep_resources: bool,
    },
}

/// Credentials and trust of a source. Files are read here and their contents sent to
/// the hub, which keeps them in its data dir (0600) and never shows them again.
#[derive(Debug, Args, Default)]
pub struct SourceAuthArgs {
    /// HTTP(S) user name.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the HTTP(S) password or token.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// SSH private key for ssh:// and git@host:path repos.
    #[arg(long, value_name = "FILE")]
    pub ssh_key_file: Option<PathBuf>,
    /// The host keys SSH accepts (known_hosts format); any other host is refused.
    #[arg(long, value_name = "FILE")]
    pub known_hosts_file: Option<PathBuf>,
    /// PEM CA certificates an https:// server must chain to (instead of the usual roots).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Secret this source's webhooks are signed with, instead of the hub's.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// SSH keys trusted to sign commits (git's gpg.ssh.allowedSignersFile format).
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// OpenPGP public keys trusted to sign commits (armored or binary).
    #[arg(long, value_name = "FILE")]
    pub gpg_keys: Option<PathBuf>,
}

/// Largest credential file sent (the hub refuses more).
const MAX_CREDENTIAL_FILE: u64 = 1 << 20;

impl SourceAuthArgs {
    fn to_pb(&self) -> Result<Option<pb::SourceAuth>> {
        let read = |p: &Option<PathBuf>| -> Result<Vec<u8>> {
            let Some(p) = p else { return Ok(Vec::new()) };
            let len = std::fs::metadata(p)
                .with_context(|| format!("reading {}", p.display()))?
                .len();
            if len > MAX_CREDENTIAL_FILE {
                bail!(
                    "{} is {len} bytes, over the limit of {MAX_CREDENTIAL_FILE}",
                    p.display()
                );
            }
            let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            if data.iter().all(u8::is_ascii_whitespace) {
                bail!("{} is empty", p.display());
            }
            Ok(data)
        };
        let auth = pb::SourceAuth {
            username: self.username.clone().unwrap_or_default(),
            password: read(&self.password_file)?,
            ssh_key: read(&self.ssh_key_file)?,
            known_hosts: read(&self.known_hosts_file)?,
            ca_pem: read(&self.ca_file)?,
            webhook_secret: read(&self.webhook_secret_file)?,
            allowed_signers: read(&self.allowed_signers)?,
            gpg_keys: read(&self.gpg_keys)?,
        };
        Ok((auth != pb::SourceAuth::default()).then_some(auth))
    }
}

#[derive(Debug, Args)]
pub struct SourceAddArgs {
    /// The source's name (a DNS label); its bundles are named NAME-PATH.
    pub name: String,
    /// git URL: file://, git://, https://, ssh:// or git@host:path.
    #[arg(long)]
    pub repo: String,
    /// The branch to follow.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// A commit id or tag to deploy instead of the branch's head.
    #[arg(long)]
    pub revision: Option<String>,
    /// Folder in the repo to read bundles from; repeatable.
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// Polling interval; 0 turns polling off (webhook only).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Webhook only: never poll on a timer.
    #[arg(long)]
    pub no_poll: bool,
    /// Add it paused: nothing is fetched or deployed until `source set NAME --resume`.
    #[arg(long)]
    pub paused: bool,
    /// Deploy only commits signed by a key from --allowed-signers or --gpg-keys.
    #[arg(long)]
    pub verify_commits: bool,
    #[command(flatten)]
    pub auth: SourceAuthArgs,
    #[command(flatten)]
    pub helm: Box<HelmAuthArgs>,
    #[command(flatten)]
    pub targets: TargetArgs,
}

#[derive(Debug, Args)]
pub struct SourceSetArgs {
    /// The source to change.
    pub name: String,
    /// New git URL.
    #[arg(long)]
    pub repo: Option<String>,
    /// New branch to follow.
    #[arg(long)]
    pub branch: Option<String>,
    /// A commit id or tag to deploy instead of the branch's head; "" follows the head again.
    #[arg(long)]
    pub revision: Option<String>,
    /// Replaces the source's paths; repeatable.
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// Polling interval; 0 turns polling off (webhook only).
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Webhook only: never poll on a timer.
    #[arg(long, conflicts_with = "interval")]
    pub no_poll: bool,
    /// Stop fetching and deploying new revisions; the last one stays deployed.
    #[arg(long, conflicts_with = "resume")]
    pub paused: bool,
    /// Fetch and deploy again after --paused.
    #[arg(long)]
    pub resume: bool,
    /// Deploy only commits signed by a trusted key from now on.
    #[arg(long, conflicts_with = "no_verify_commits")]
    pub verify_commits: bool,
    /// Stop checking commit signatures.
    #[arg(long)]
    pub no_verify_commits: bool,
    /// Delete a stored credential: username, password, ssh-key, known-hosts, ca,
    /// webhook-secret, allowed-signers, gpg-keys; repeatable.
    #[arg(long = "clear", value_name = "NAME")]
    pub clear: Vec<String>,
    /// Target everything in the group "default" again (drops all targets).
    #[arg(long)]
    pub default_targets: bool,
    #[command(flatten)]
    pub auth: SourceAuthArgs,
    /// Replace the source's targets with these.
    #[command(flatten)]
    pub targets: TargetArgs,
}

impl SourceSetArgs {
    fn to_pb(&self) -> Result<pb::SetSourceRequest> {
        let targets = self.targets.targets()?;
        let flag = |on: bool, off: bool| (on || off).then_some(on);
        Ok(pb::SetSourceRequest {
            name: self.name.clone(),
            repo: self.repo.clone(),
            branch: self.branch.clone(),
            revision: self.revision.clone(),
            set_paths: !self.paths.is_empty(),
            paths: self.paths.clone(),
            interval_seconds: if self.no_poll {
                Some(0)
            } else {
                // Only an interval of zero turns polling off; 500ms polls every second.
                self.interval
                    .map(|d| if d.is_zero() { 0 } else { d.as_secs().max(1) })
            },
            set_targets: !targets.is_empty() || self.default_targets,
            targets,
            paused: flag(self.paused, self.resume),
            verify_commits: flag(self.verify_commits, self.no_verify_commits),
            auth: self.auth.to_pb()?,
            clear_credentials: self.clear.clone(),
        })
    }
}

/// A source's targets; each flag is one target, and targets are ORed.
#[derive(Debug, Args, Default)]
pub struct TargetArgs {
    /// A target by cluster labels (kubectl -l form); repeatable, targets are ORed.
    #[arg(long = "selector")]
    pub selectors: Vec<String>,
    /// A target by cluster group; repeatable.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// A target by cluster group labels; repeatable.
    #[arg(long = "group-selector")]
    pub group_selectors: Vec<String>,
    /// A target by cluster name; repeatable.
    #[arg(long = "cluster")]
    pub clusters: Vec<String>,
}

// ---- Helm chart repository credentials (remote charts, issue #15) -----------------
/// Credentials for the Helm repositories and OCI registries a source's bundles name.
/// The files are read here and sent to the hub, which keeps them (0600) and never
/// returns them.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Helm chart repositories")]
pub struct HelmAuthArgs {
    /// Username for the chart repositories (basic auth; OCI token requests).
    #[arg(long)]
    pub helm_username: Option<String>,
    /// File holding the password.
    #[arg(long)]
    pub helm_password_file: Option<std::path::PathBuf>,
    /// PEM CA bundle: the only roots trusted for the repositories' TLS.
    #[arg(long)]
    pub helm_ca_file: Option<std::path::PathBuf>,
    /// File holding a bearer token for an OCI registry.
    #[arg(long)]
    pub helm_token_file: Option<std::path::PathBuf>,
    /// Send the credentials only to chart URLs this regex matches (Fleet's
    /// helmRepoURLRegex).
    #[arg(long)]
    pub helm_repo_url_regex: Option<String>,
    /// Speak plain HTTP to OCI registries (Helm's --plain-http).
    #[arg(long)]
    pub helm_plain_http: bool,
}

impl HelmAuthArgs {
    /// None when no Helm flag was given.
    pub fn to_pb(&self) -> Result<Option<pb::HelmRepoAuth>> {
        let read = |p: &Option<std::path::PathBuf>| -> Result<Vec<u8>> {
            match p {
                Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display())),
                None => Ok(Vec::new()),
            }
        };
        let auth = pb::HelmRepoAuth {
            username: self.helm_username.clone().unwrap_or_default(),
            password: read(&self.helm_password_file)?.trim_ascii_end().to_vec(),
            ca_pem: read(&self.helm_ca_file)?,
            token: read(&self.helm_token_file)?.trim_ascii_end().to_vec(),
            url_regex: self.helm_repo_url_regex.clone().unwrap_or_default(),
            plain_http: self.helm_plain_http,
            stored: Vec::new(),
        };
        Ok((auth != pb::HelmRepoAuth::default()).then_some(auth))
    }
}
// ---- end of Helm chart repository credentials ---------------------------------------

impl TargetArgs {
    /// One target per flag given; none means the group `default`, as in Fleet.
    pub fn targets(&self) -> Result<Vec<pb::Target>> {
        for s in self.selectors.iter().chain(&self.group_selectors) {
            s.parse::<LabelSelector>()
                .with_context(|| format!("selector {s:?}"))?;
        }
        let mut t: Vec<pb::Target> = Vec::new();
        t.extend(
            self.selectors
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| pb::Target {
                    cluster_selector: s.clone(),
                    ..Default::default()
                }),
        );
        t.extend(self.groups.iter().map(|g| pb::Target {
            cluster_group: g.clone(),
            ..Default::default()
        }));
        t.extend(self.group_selectors.iter().map(|s| pb::Target {
            cluster_group_selector: s.clone(),
            ..Default::default()
        }));
        t.extend(self.clusters.iter().map(|c| pb::Target {
            cluster_name: c.clone(),
            ..Default::default()
        }));
        Ok(t)
    }
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Partition-by-partition progress of a bundle's rollout.
    Status {
        /// The bundle (SOURCE-PATH).
        bundle: String,
        /// Follow it until the revision current when the command starts (or --revision)
        /// is Done (exit 0); exit 1 when it halts or on --timeout.
        #[arg(long)]
        watch: bool,
        /// With --watch: wait for this commit (a prefix of its hash) instead.
        #[arg(long, requires = "watch")]
        revision: Option<String>,
        /// With --watch: give up after this long, listing what is not Ready and why.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Stop handing the new deployment to more clusters.
    Pause {
        /// The bundle (SOURCE-PATH).
        bundle: String,
    },
    /// Let a paused rollout go on.
    Resume {
        /// The bundle (SOURCE-PATH).
        bundle: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Add (or replace) a cluster group: a named label selector.
    Add {
        /// The group's name (a DNS label).
        name: String,
        /// Which clusters belong (kubectl -l form); empty: every cluster.
        #[arg(long, default_value = "")]
        selector: String,
        /// Labels of the group itself, k=v (for clusterGroupSelector); repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Remove a cluster group.
    Remove {
        /// The group.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this bundle (an error if there is none).
    pub bundle: Option<String>,
    /// Only this cluster (an error if there is none).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only rows that are not Ready, each with every non-ready resource.
    #[arg(long)]
    pub not_ready: bool,
    /// At most this many rows; the next page's token is printed on stderr.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Page token from a previous --limit call.
    #[arg(long = "continue")]
    pub continue_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Exit 0 once every bundle is Ready; exit 1 after --timeout, listing what is not.
    #[arg(long)]
    pub until_ready: bool,
    /// With --until-ready: how long to wait.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token; prints only the join string (`-o json`: id, join, expires).
    Create {
        /// How long the token can be used.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// How many spokes can join with it.
        #[arg(long, default_value_t = 1)]
        max_uses: u32,
        /// Free text shown by `token list`.
        #[arg(long, default_value = "")]
        description: String,
        /// Labels fixed on every cluster that joins with this token, k=v[,k=v]; they
        /// win over whatever the spoke asks for.
        #[arg(long, value_parser = parse_labels, default_value = "")]
        labels: Labels,
        /// Label keys whose value the joining spoke may choose itself (its --labels),
        /// at registration only; comma-separated.
        #[arg(long, value_delimiter = ',')]
        allow_spoke_labels: Vec<String>,
    },
    /// List tokens (never their secrets: those are shown once, at creation), or one.
    List {
        /// A token id: show only it (an error if there is none).
        id: Option<String>,
    },
    /// Revoke a token by id so it can no longer be used to join.
    Revoke {
        /// The token's id (see `token list`).
        id: String,
    },
}

/// The hub's Admin API, typed: every call has the `--request-timeout` deadline and
/// turns a gRPC status into one readable error.
pub struct Client {
    inner: AdminClient<Channel>,
    /// Where the client config came from, to connect again after a hub restart.
    config: PathBuf,
    server: String,
    timeout: Option<Duration>,
}

fn default_config() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".config/flotilla/admin.conf");
    p.exists().then_some(p)
}

/// Whether an error means the hub went away (restart, network, no answer) rather than
/// refused the call.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<HubError>().is_some_and(|h| {
            matches!(
                h.code,
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
            )
        }) || c.downcast_ref::<Unreachable>().is_some()
    })
}

/// The hub did not answer or could not be dialled.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(String);

/// The hub answered a call with an error status: its message, and the code kept for
/// telling a refusal from an outage.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HubError {
    pub code: tonic::Code,
    message: String,
}

/// Runs `fut` under `timeout` (none: wait for ever), naming `what` timed out.
async fn deadline<T>(
    timeout: Option<Duration>,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match timeout {
        None => fut.await,
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => Err(Unreachable(format!(
                "{}: no answer within {t:?} (--request-timeout)",
                what()
            ))
            .into()),
        },
    }
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    let message = if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        s.message().to_string()
    };
    HubError {
        code: s.code(),
        message,
    }
    .into()
}

/// The hub's reply to a call, or its status as an error.
type Reply<T> = std::result::Result<tonic::Response<T>, tonic::Status>;

impl Client {
    pub async fn connect(config: Option<&Path>, timeout: Option<Duration>) -> Result<Client> {
        let path = config.map(Path::to_path_buf).or_else(default_config).ok_or_else(|| {
            anyhow!("no client config: pass --config D/admin.conf or set FLOTILLA_CONFIG (flotilla-hub init writes one)")
        })?;
        let cfg = ClientConfig::load(&path)?;
        let creds = cfg.credentials()?;
        let what = || {
            format!(
                "connecting to the hub at {} (from {})",
                cfg.server,
                path.display()
            )
        };
        let servers = cfg
            .servers()
            .with_context(|| format!("the server line of {}", path.display()))?;
        // Several addresses name the hub's replicas: the first that answers serves.
        let (channel, _) = deadline(timeout, what, async {
            flotilla_identity::connect_first(&servers, &creds)
                .await
                .map_err(|e| Unreachable(format!("{}: {e}", what())).into())
        })
        .await?;
        Ok(Client {
            inner: AdminClient::new(channel).max_decoding_message_size(64 * 1024 * 1024),
            config: path,
            server: cfg.server,
            timeout,
        })
    }

    /// Dials the hub again with the same config, e.g. after it restarted.
    pub async fn reconnect(&mut self) -> Result<()> {
        *self = Client::connect(Some(&self.config.clone()), self.timeout).await?;
        Ok(())
    }

    /// One unary call with the deadline; `call` gets its own handle on the channel.
    pub(crate) async fn call<T, F>(
        &self,
        what: &str,
        call: impl FnOnce(AdminClient<Channel>) -> F,
    ) -> Result<T>
    where
        F: Future<Output = Reply<T>>,
    {
        let what = || format!("{what} (hub at {})", self.server);
        deadline(self.timeout, what, async {
            call(self.inner.clone())
                .await
                .map(tonic::Response::into_inner)
                .map_err(status_err)
        })
        .await
    }

    pub async fn clusters(&self) -> Result<Vec<ClusterView>> {
        let r = self
            .call("listing clusters", |mut c| async move {
                c.list_clusters(pb::ListClustersRequest {}).await
            })
            .await?;
        Ok(r.clusters.into_iter().map(Into::into).collect())
    }

    pub async fn cluster(&self, name: &str) -> Result<ClusterView> {
        named(self.clusters().await?, "cluster", name, |c| &c.name)
    }

    pub async fn label_cluster(
        &self,
        name: String,
        set: Labels,
        remove: Vec<String>,
    ) -> Result<ClusterView> {
        let r = self
            .call("labelling the cluster", |mut c| async move {
                c.label_cluster(pb::LabelClusterRequest { name, set, remove })
                    .await
            })
            .await?;
        Ok(r.into())
    }

    pub async fn accept_labels(&self, name: String, keys: Vec<String>) -> Result<ClusterView> {
        let r = self
            .call("accepting labels", |mut c| async move {
                c.accept_cluster_labels(pb::AcceptClusterLabelsRequest { name, keys })
                    .await
            })
            .await?;
        Ok(r.into())
    }

    pub async fn revoke_cluster(&self, name: String) -> Result<ClusterView> {
        let r = self
            .call("revoking the cluster", |mut c| async move {
                c.revoke_cluster(pb::RevokeClusterRequest { name }).await
            })
            .await?;
        Ok(r.into())
    }

    pub async fn delete_cluster(&self, name: String) -> Result<()> {
        self.call("deleting the cluster", |mut c| async move {
            c.delete_cluster(pb::DeleteClusterRequest { name }).await
        })
        .await?;
        Ok(())
    }

    pub async fn sources(&self) -> Result<Vec<SourceView>> {
        let r = self
            .call("listing sources", |mut c| async move {
                c.list_sources(pb::ListSourcesRequest {}).await
            })
            .await?;
        Ok(r.sources.into_iter().map(Into::into).collect())
    }

    pub async fn add_source(&self, a: &SourceAddArgs) -> Result<SourceView> {
        let source = pb::Source {
            name: a.name.clone(),
            repo: a.repo.clone(),
            branch: a.branch.clone(),
            revision: a.revision.clone().unwrap_or_default(),
            paths: a.paths.clone(),
            interval_seconds: a.interval.as_secs().max(1),
            polling_disabled: a.no_poll || a.interval.is_zero(),
            paused: a.paused,
            verify_commits: a.verify_commits,
            auth: a.auth.to_pb()?,
            helm_auth: a.helm.to_pb()?,
            targets: a.targets.targets()?,
            ..Default::default()
        };
        let r = self
            .call("adding the source", |mut c| async move {
                c.add_source(pb::AddSourceRequest {
                    source: Some(source),
                })
                .await
            })
            .await?;
        Ok(r.into())
    }

    pub async fn set_source(&self, a: &SourceSetArgs) -> Result<SourceView> {
        let req = a.to_pb()?;
        let r = self
            .call("changing the source", |mut c| async move {
                c.set_source(req).await
            })
            .await?;
        Ok(r.into())
    }

    pub async fn remove_source(&self, name: String, keep_resources: bool) -> Result<()> {
        self.call("removing the source", |mut c| async move {
            c.remove_source(pb::RemoveSourceRequest {
                name,
                keep_resources,
            })
            .await
        })
        .await?;
        Ok(())
    }

    pub async fn bundles(&self) -> Result<Vec<BundleView>> {
        let r = self
            .call("listing bundles", |mut c| async move {
                c.list_bundles(pb::ListBundlesRequest {}).await
            })
            .await?;
        Ok(r.bundles.into_iter().map(Into::into).collect())
    }

    /// Status rows and the next page's token. A bundle or cluster named in the query
    /// that does not exist is an error, not an empty table.
    pub async fn status(&self, q: pb::GetStatusRequest) -> Result<(Vec<StatusView>, String)> {
        let (bundle, cluster) = (q.bundle.clone(), q.cluster.clone());
        let r = self
            .call(
                "getting status",
                |mut c| async move { c.get_status(q).await },
            )
            .await?;
        if r.rows.is_empty() {
            if !bundle.is_empty() {
                named(self.bundles().await?, "bundle", &bundle, |b| &b.name)?;
            }
            if !cluster.is_empty() {
                self.cluster(&cluster).await?;
            }
        }
        Ok((
            r.rows.into_iter().map(Into::into).collect(),
            r.next_page_token,
        ))
    }

    /// Every status row, of every bundle and cluster, fetched a page at a time so a
    /// large fleet never makes one reply over the message size limit.
    pub async fn all_status(&self) -> Result<Vec<StatusView>> {
        const PAGE: u32 = 5000;
        let mut rows = Vec::new();
        let mut page_token = String::new();
        loop {
            let (page, next) = self
                .status(pb::GetStatusRequest {
                    page_size: PAGE,
                    page_token,
                    ..Default::default()
                })
                .await?;
            rows.extend(page);
            if next.is_empty() {
                return Ok(rows);
            }
            page_token = next;
        }
    }

    pub async fn create_token(&self, spec: TokenSpec) -> Result<TokenCreatedView> {
        let r = self
            .call("creating a token", |mut c| async move {
                c.create_token(pb::CreateTokenRequest {
                    ttl_seconds: spec.ttl.as_secs(),
                    max_uses: spec.max_uses,
                    description: spec.description,
                    labels: spec.labels,
                    spoke_label_keys: spec.allow_spoke_labels,
                })
                .await
            })
            .await?;
        Ok(r.into())
    }

    pub async fn tokens(&self) -> Result<Vec<TokenView>> {
        let r = self
            .call("listing tokens", |mut c| async move {
                c.list_tokens(pb::ListTokensRequest {}).await
            })
            .await?;
        Ok(r.tokens.into_iter().map(Into::into).collect())
    }

    pub async fn revoke_token(&self, id: String) -> Result<()> {
        self.call("revoking the token", |mut c| async move {
            c.revoke_token(pb::RevokeTokenRequest { id }).await
        })
        .await?;
        Ok(())
    }

    pub async fn groups(&self) -> Result<Vec<GroupView>> {
        let r = self
            .call("listing groups", |mut c| async move {
                c.list_groups(pb::ListGroupsRequest {}).await
            })
            .await?;
        Ok(r.groups.into_iter().map(Into::into).collect())
    }

    pub async fn add_group(&self, group: pb::Group) -> Result<GroupView> {
        let r = self
            .call("adding the group", |mut c| async move {
                c.add_group(group).await
            })
            .await?;
        Ok(r.into())
    }

    pub async fn remove_group(&self, name: String) -> Result<()> {
        self.call("removing the group", |mut c| async move {
            c.remove_group(pb::RemoveGroupRequest { name }).await
        })
        .await?;
        Ok(())
    }

    pub async fn targets(&self, source: String, bundle: String) -> Result<Vec<TargetView>> {
        let r = self
            .call("computing targets", |mut c| async move {
                c.targets(pb::TargetsRequest { source, bundle }).await
            })
            .await?;
        Ok(r.rows.into_iter().map(Into::into).collect())
    }

    pub async fn rollout(&self, bundle: &str) -> Result<RolloutView> {
        let bundle = bundle.to_string();
        let r = self
            .call("getting the rollout", |mut c| async move {
                c.rollout_status(pb::RolloutRequest { bundle }).await
            })
            .await?;
        Ok(r.into())
    }

    pub async fn pause_rollout(&self, bundle: String) -> Result<RolloutView> {
        let r = self
            .call("pausing the rollout", |mut c| async move {
                c.pause_rollout(pb::RolloutRequest { bundle }).await
            })
            .await?;
        Ok(r.into())
    }

    pub async fn resume_rollout(&self, bundle: String) -> Result<RolloutView> {
        let r = self
            .call("resuming the rollout", |mut c| async move {
                c.resume_rollout(pb::RolloutRequest { bundle }).await
            })
            .await?;
        Ok(r.into())
    }

    /// Fleet events, for redrawing live views. The deadline covers opening the stream,
    /// not its life.
    pub async fn watch(&self) -> Result<tonic::Streaming<pb::Event>> {
        self.call("opening the event stream", |mut c| async move {
            c.watch(pb::WatchRequest {}).await
        })
        .await
    }
}

/// The item of `items` called `name`, or kubectl's `KIND "NAME" not found`.
fn named<T>(items: Vec<T>, kind: &str, name: &str, key: impl Fn(&T) -> &str) -> Result<T> {
    items
        .into_iter()
        .find(|i| key(i) == name)
        .ok_or_else(|| anyhow!("{kind} {name:?} not found"))
}

/// What a join token grants; see `TokenCommand::Create`.
#[derive(Debug)]
pub struct TokenSpec {
    pub ttl: Duration,
    pub max_uses: u32,
    pub description: String,
    pub labels: Labels,
    pub allow_spoke_labels: Vec<String>,
}

/// Splits `k=v` (set) and `k-` (remove) arguments, as `kubectl label` does.
fn parse_label_changes(args: &[String]) -> Result<(Labels, Vec<String>)> {
    let mut set = Labels::new();
    let mut remove = Vec::new();
    for a in args {
        if let Some(k) = a.strip_suffix('-').filter(|k| !k.contains('=')) {
            flotilla_model::labels::validate_key(k)?;
            remove.push(k.to_string());
        } else {
            set.extend(parse_labels(a)?);
        }
    }
    if set.is_empty() && remove.is_empty() {
        bail!("give at least one label: k=v to set or k- to remove");
    }
    Ok((set, remove))
}

/// Prints one object by name or the whole list.
async fn get<T: crate::output::Row>(
    out: Printer,
    all: impl Future<Output = Result<Vec<T>>>,
    kind: &str,
    name: Option<String>,
    key: impl Fn(&T) -> &str,
) -> Result<()> {
    let all = all.await?;
    match name {
        None => out.list(&all),
        Some(n) => out.one(&named(all, kind, &n, key)?),
    }
}

pub async fn dispatch(client: Client, cmd: AdminCommand, out: Printer) -> Result<()> {
    match cmd {
        AdminCommand::History(a) => {
            let (entries, next) = client.history(&a).await?;
            out.list(&entries)?;
            if let Some(token) = next {
                // On stderr, so `-o json` stays one document.
                eprintln!(
                    "(cut at {} entries; the rest: flotilla history ... --continue {token})",
                    entries.len()
                );
            }
            Ok(())
        }
        AdminCommand::Where { commit } => crate::history::where_cmd(client, commit, out).await,
        AdminCommand::Audit(a) => out.list(&client.audit(&a).await?),
        AdminCommand::Clusters { name } => {
            get(out, client.clusters(), "cluster", name, |c| &c.name).await
        }
        AdminCommand::Sources { name } => {
            get(out, client.sources(), "source", name, |s| &s.name).await
        }
        AdminCommand::Bundles { name } => {
            get(out, client.bundles(), "bundle", name, |b| &b.name).await
        }
        AdminCommand::Groups { name } => {
            get(out, client.groups(), "group", name, |g| &g.name).await
        }
        AdminCommand::Tokens { id }
        | AdminCommand::Token {
            command: TokenCommand::List { id },
        } => get(out, client.tokens(), "token", id, |t| &t.id).await,
        AdminCommand::Status(a) => {
            let (rows, next) = client
                .status(pb::GetStatusRequest {
                    bundle: a.bundle.unwrap_or_default(),
                    cluster: a.cluster.unwrap_or_default(),
                    not_ready: a.not_ready,
                    page_size: a.limit.unwrap_or(0),
                    page_token: a.continue_token.unwrap_or_default(),
                })
                .await?;
            if a.not_ready {
                // Every non-ready resource, not only the row's cut message.
                out.list_with_details(&rows, StatusView::not_ready_details)?;
            } else {
                out.list(&rows)?;
            }
            if !next.is_empty() {
                eprintln!("more rows: --continue {next}");
            }
            Ok(())
        }
        AdminCommand::Source {
            command: SourceCommand::Add(a),
        } => out.changed(&client.add_source(&a).await?, "added"),
        AdminCommand::Source {
            command: SourceCommand::Set(a),
        } => out.changed(&client.set_source(&a).await?, "configured"),
        AdminCommand::Source {
            command:
                SourceCommand::Remove {
                    name,
                    keep_resources,
                },
        } => {
            client.remove_source(name.clone(), keep_resources).await?;
            if keep_resources {
                eprintln!("its objects stay in place on every cluster");
            }
            out.done("source", &name, "removed")
        }
        AdminCommand::Cluster {
            command: ClusterCommand::Label { name, labels },
        } => {
            let (set, remove) = parse_label_changes(&labels)?;
            out.changed(&client.label_cluster(name, set, remove).await?, "labeled")
        }
        AdminCommand::Cluster {
            command: ClusterCommand::AcceptLabels { name, keys },
        } => out.changed(&client.accept_labels(name, keys).await?, "labels accepted"),
        AdminCommand::Cluster {
            command: ClusterCommand::Revoke { name },
        } => out.changed(&client.revoke_cluster(name).await?, "revoked"),
        AdminCommand::Cluster {
            command: ClusterCommand::Delete { name },
        } => {
            client.delete_cluster(name.clone()).await?;
            out.done("cluster", &name, "deleted")
        }
        AdminCommand::Watch(a) => crate::progress::watch_bundles(client, &a, out).await,
        AdminCommand::Rollout {
            command:
                RolloutCommand::Status {
                    bundle,
                    watch,
                    revision,
                    timeout,
                },
        } => {
            if watch {
                crate::progress::watch_rollout(client, &bundle, revision.as_deref(), timeout).await
            } else {
                out.list(&[client.rollout(&bundle).await?])
            }
        }
        AdminCommand::Rollout {
            command: RolloutCommand::Pause { bundle },
        } => out.changed(&client.pause_rollout(bundle).await?, "paused"),
        AdminCommand::Rollout {
            command: RolloutCommand::Resume { bundle },
        } => out.changed(&client.resume_rollout(bundle).await?, "resumed"),
        AdminCommand::Group {
            command:
                GroupCommand::Add {
                    name,
                    selector,
                    labels,
                },
        } => {
            selector
                .parse::<LabelSelector>()
                .with_context(|| format!("--selector {selector:?}"))?;
            let mut l = Labels::new();
            for x in &labels {
                l.extend(parse_labels(x)?);
            }
            let g = client
                .add_group(pb::Group {
                    name,
                    selector,
                    labels: l,
                    ..Default::default()
                })
                .await?;
            out.changed(&g, "added")
        }
        AdminCommand::Group {
            command: GroupCommand::Remove { name },
        } => {
            client.remove_group(name.clone()).await?;
            out.done("group", &name, "removed")
        }
        AdminCommand::Targets { source } => {
            let (source, bundle) = source.split_once('/').unwrap_or((source.as_str(), ""));
            out.list(
                &client
                    .targets(source.to_string(), bundle.to_string())
                    .await?,
            )
        }
        AdminCommand::Token {
            command: TokenCommand::Revoke { id },
        } => {
            client.revoke_token(id.clone()).await?;
            out.done("token", &id, "revoked")
        }
        AdminCommand::Token {
            command:
                TokenCommand::Create {
                    ttl,
                    max_uses,
                    description,
                    labels,
                    allow_spoke_labels,
                },
        } => {
            let spec = TokenSpec {
                ttl,
                max_uses,
                description,
                labels,
                allow_spoke_labels,
            };
            let created = client.create_token(spec).await?;
            match out.format {
                // The join string alone, so `JOIN=$(flotilla token create)` works.
                None => crate::output::emit(&format!("{}\n", created.join)),
                Some(_) => out.one(&created),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_changes_follow_kubectl_syntax() {
        let (set, remove) =
            parse_label_changes(&["env=prod".into(), "tier-".into()]).expect("valid");
        assert_eq!(set.get("env").map(String::as_str), Some("prod"));
        assert_eq!(remove, vec!["tier".to_string()]);
        let err = parse_label_changes(&["bad label".into()]).expect_err("refused");
        assert!(err.to_string().contains("label"), "{err}");
        assert!(!err.to_string().contains("selector"), "{err}");
        assert!(parse_label_changes(&["Bad Key-".into()]).is_err());
    }
}
