//! Commands that talk to the hub's Admin API.

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

use crate::output::{Format, print};
use crate::views::{
    BundleView, ClusterView, GroupView, RolloutView, SourceView, StatusView, TargetView, TokenView,
};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Set hub-side labels (they win over all others): k=v to set, k- to remove.
    Label {
        name: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Trust labels the spoke reported (see PENDING-LABELS in `clusters -o wide`): the
    /// named keys, or every pending one. A named key it no longer reports is removed.
    AcceptLabels { name: String, keys: Vec<String> },
    /// Close the cluster's stream now and refuse its certificates from then on.
    Revoke { name: String },
    /// Forget the cluster and its status; joining again needs a new token.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Add a git source.
    Add(SourceAddArgs),
    /// Remove a source; its bundles are unassigned from every cluster.
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct SourceAddArgs {
    pub name: String,
    /// git URL: file://, git:// or https://.
    #[arg(long)]
    pub repo: String,
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Folder in the repo to read bundles from; repeatable.
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// Polling interval.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub interval: Duration,
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
    #[command(flatten)]
    pub helm: Box<HelmAuthArgs>,
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

impl SourceAddArgs {
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
        bundle: String,
        /// Follow it live; exit 0 when Done, non-zero when Halted.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Stop handing the new deployment to more clusters.
    Pause { bundle: String },
    /// Let a paused rollout go on.
    Resume { bundle: String },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Add (or replace) a cluster group: a named label selector.
    Add {
        name: String,
        /// Which clusters belong (kubectl -l form); empty: every cluster.
        #[arg(long, default_value = "")]
        selector: String,
        /// Labels of the group itself, k=v (for clusterGroupSelector); repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Remove a cluster group.
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this bundle.
    pub bundle: Option<String>,
    /// Only this cluster.
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

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token; prints only the join string on stdout.
    Create {
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        #[arg(long, default_value_t = 1)]
        max_uses: u32,
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
    /// List tokens (never their secrets: those are shown once, at creation).
    List,
    /// Revoke a token by id so it can no longer be used to join.
    Revoke { id: String },
}

#[derive(Debug)]
pub enum AdminCommand {
    Clusters,
    Cluster(ClusterCommand),
    Sources,
    Source(SourceCommand),
    Bundles,
    Status(StatusArgs),
    Token(TokenCommand),
    Groups,
    Group(GroupCommand),
    Targets(String),
    Rollout(RolloutCommand),
    Watch {
        until_ready: bool,
        timeout: Duration,
    },
}

pub struct Client {
    inner: AdminClient<Channel>,
}

fn default_config() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".config/flotilla/admin.conf");
    p.exists().then_some(p)
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("{} ({:?})", s.message(), s.code())
}

impl Client {
    pub async fn connect(config: Option<&Path>) -> Result<Client> {
        let path = config.map(Path::to_path_buf).or_else(default_config).ok_or_else(|| {
            anyhow!("no client config: pass --config D/admin.conf or set FLOTILLA_CONFIG (flotilla-hub init writes one)")
        })?;
        let cfg = ClientConfig::load(&path)?;
        let creds = cfg.credentials()?;
        let channel = flotilla_identity::connect(&cfg.server, &creds)
            .await
            .with_context(|| {
                format!(
                    "connecting to the hub at {} (from {})",
                    cfg.server,
                    path.display()
                )
            })?;
        Ok(Client {
            inner: AdminClient::new(channel).max_decoding_message_size(64 * 1024 * 1024),
        })
    }

    pub async fn clusters(&mut self) -> Result<Vec<ClusterView>> {
        let r = self
            .inner
            .list_clusters(pb::ListClustersRequest {})
            .await
            .map_err(status_err)?;
        Ok(r.into_inner()
            .clusters
            .into_iter()
            .map(Into::into)
            .collect())
    }

    pub async fn bundles(&mut self) -> Result<Vec<BundleView>> {
        let r = self
            .inner
            .list_bundles(pb::ListBundlesRequest {})
            .await
            .map_err(status_err)?;
        Ok(r.into_inner().bundles.into_iter().map(Into::into).collect())
    }

    /// Fleet events, for redrawing live views.
    pub async fn watch(&mut self) -> Result<tonic::Streaming<pb::Event>> {
        Ok(self
            .inner
            .watch(pb::WatchRequest {})
            .await
            .map_err(status_err)?
            .into_inner())
    }

    pub async fn rollout(&mut self, bundle: &str) -> Result<RolloutView> {
        let r = self
            .inner
            .rollout_status(pb::RolloutRequest {
                bundle: bundle.to_string(),
            })
            .await
            .map_err(status_err)?;
        Ok(r.into_inner().into())
    }

    pub async fn status(&mut self, bundle: &str, cluster: &str) -> Result<Vec<StatusView>> {
        let r = self
            .inner
            .get_status(pb::GetStatusRequest {
                bundle: bundle.to_string(),
                cluster: cluster.to_string(),
                ..Default::default()
            })
            .await
            .map_err(status_err)?;
        Ok(r.into_inner().rows.into_iter().map(Into::into).collect())
    }

    pub async fn add_source(&mut self, a: &SourceAddArgs) -> Result<SourceView> {
        let targets = a.targets()?;
        let r = self
            .inner
            .add_source(pb::AddSourceRequest {
                source: Some(pb::Source {
                    name: a.name.clone(),
                    repo: a.repo.clone(),
                    branch: a.branch.clone(),
                    paths: a.paths.clone(),
                    interval_seconds: a.interval.as_secs().max(1),
                    targets,
                    helm_auth: a.helm.to_pb()?,
                    ..Default::default()
                }),
            })
            .await
            .map_err(status_err)?;
        Ok(r.into_inner().into())
    }

    pub async fn create_token(&mut self, spec: TokenSpec) -> Result<String> {
        let r = self
            .inner
            .create_token(pb::CreateTokenRequest {
                ttl_seconds: spec.ttl.as_secs(),
                max_uses: spec.max_uses,
                description: spec.description,
                labels: spec.labels,
                spoke_label_keys: spec.allow_spoke_labels,
            })
            .await
            .map_err(status_err)?;
        Ok(r.into_inner().join)
    }
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
fn parse_label_changes(
    args: &[String],
) -> Result<(std::collections::BTreeMap<String, String>, Vec<String>)> {
    let mut set = std::collections::BTreeMap::new();
    let mut remove = Vec::new();
    for a in args {
        if let Some(k) = a.strip_suffix('-').filter(|k| !k.contains('=')) {
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

pub async fn dispatch(mut client: Client, cmd: AdminCommand, format: Format) -> Result<()> {
    match cmd {
        AdminCommand::Clusters => print(&client.clusters().await?, format),
        AdminCommand::Status(a) => {
            let r = client
                .inner
                .get_status(pb::GetStatusRequest {
                    bundle: a.bundle.clone().unwrap_or_default(),
                    cluster: a.cluster.clone().unwrap_or_default(),
                    not_ready: a.not_ready,
                    page_size: a.limit.unwrap_or(0),
                    page_token: a.continue_token.clone().unwrap_or_default(),
                })
                .await
                .map_err(status_err)?
                .into_inner();
            let rows: Vec<StatusView> = r.rows.into_iter().map(Into::into).collect();
            print(&rows, format)?;
            if !r.next_page_token.is_empty() {
                eprintln!("more rows: --continue {}", r.next_page_token);
            }
            Ok(())
        }
        AdminCommand::Sources => {
            let r = client
                .inner
                .list_sources(pb::ListSourcesRequest {})
                .await
                .map_err(status_err)?;
            let v: Vec<SourceView> = r.into_inner().sources.into_iter().map(Into::into).collect();
            print(&v, format)
        }
        AdminCommand::Bundles => print(&client.bundles().await?, format),
        AdminCommand::Source(SourceCommand::Add(a)) => {
            let v = client.add_source(&a).await?;
            print(&[v], format)
        }
        AdminCommand::Source(SourceCommand::Remove { name }) => {
            client
                .inner
                .remove_source(pb::RemoveSourceRequest { name: name.clone() })
                .await
                .map_err(status_err)?;
            eprintln!("source {name} removed");
            Ok(())
        }
        AdminCommand::Cluster(ClusterCommand::Label { name, labels }) => {
            let (set, remove) = parse_label_changes(&labels)?;
            let r = client
                .inner
                .label_cluster(pb::LabelClusterRequest { name, set, remove })
                .await
                .map_err(status_err)?;
            print(&[ClusterView::from(r.into_inner())], format)
        }
        AdminCommand::Watch {
            until_ready,
            timeout,
        } => crate::progress::watch_bundles(&mut client, until_ready, timeout).await,
        AdminCommand::Rollout(RolloutCommand::Status {
            bundle,
            watch,
            timeout,
        }) => {
            if watch {
                crate::progress::watch_rollout(&mut client, &bundle, timeout).await
            } else {
                print(&[client.rollout(&bundle).await?], format)
            }
        }
        AdminCommand::Rollout(RolloutCommand::Pause { bundle }) => {
            let r = client
                .inner
                .pause_rollout(pb::RolloutRequest { bundle })
                .await
                .map_err(status_err)?;
            print(&[RolloutView::from(r.into_inner())], format)
        }
        AdminCommand::Rollout(RolloutCommand::Resume { bundle }) => {
            let r = client
                .inner
                .resume_rollout(pb::RolloutRequest { bundle })
                .await
                .map_err(status_err)?;
            print(&[RolloutView::from(r.into_inner())], format)
        }
        AdminCommand::Groups => {
            let r = client
                .inner
                .list_groups(pb::ListGroupsRequest {})
                .await
                .map_err(status_err)?;
            let v: Vec<GroupView> = r.into_inner().groups.into_iter().map(Into::into).collect();
            print(&v, format)
        }
        AdminCommand::Group(GroupCommand::Add {
            name,
            selector,
            labels,
        }) => {
            selector
                .parse::<LabelSelector>()
                .with_context(|| format!("--selector {selector:?}"))?;
            let mut l = std::collections::BTreeMap::new();
            for x in &labels {
                l.extend(parse_labels(x)?);
            }
            let r = client
                .inner
                .add_group(pb::Group {
                    name,
                    selector,
                    labels: l,
                    ..Default::default()
                })
                .await
                .map_err(status_err)?;
            print(&[GroupView::from(r.into_inner())], format)
        }
        AdminCommand::Group(GroupCommand::Remove { name }) => {
            client
                .inner
                .remove_group(pb::RemoveGroupRequest { name: name.clone() })
                .await
                .map_err(status_err)?;
            eprintln!("group {name} removed");
            Ok(())
        }
        AdminCommand::Targets(spec) => {
            let (source, bundle) = spec.split_once('/').unwrap_or((spec.as_str(), ""));
            let r = client
                .inner
                .targets(pb::TargetsRequest {
                    source: source.to_string(),
                    bundle: bundle.to_string(),
                })
                .await
                .map_err(status_err)?;
            let v: Vec<TargetView> = r.into_inner().rows.into_iter().map(Into::into).collect();
            print(&v, format)
        }
        AdminCommand::Cluster(ClusterCommand::AcceptLabels { name, keys }) => {
            let r = client
                .inner
                .accept_cluster_labels(pb::AcceptClusterLabelsRequest { name, keys })
                .await
                .map_err(status_err)?;
            print(&[ClusterView::from(r.into_inner())], format)
        }
        AdminCommand::Cluster(ClusterCommand::Revoke { name }) => {
            let r = client
                .inner
                .revoke_cluster(pb::RevokeClusterRequest { name })
                .await
                .map_err(status_err)?;
            print(&[ClusterView::from(r.into_inner())], format)
        }
        AdminCommand::Cluster(ClusterCommand::Delete { name }) => {
            client
                .inner
                .delete_cluster(pb::DeleteClusterRequest { name: name.clone() })
                .await
                .map_err(status_err)?;
            eprintln!("cluster {name} deleted");
            Ok(())
        }
        AdminCommand::Token(TokenCommand::List) => {
            let r = client
                .inner
                .list_tokens(pb::ListTokensRequest {})
                .await
                .map_err(status_err)?;
            let v: Vec<TokenView> = r.into_inner().tokens.into_iter().map(Into::into).collect();
            print(&v, format)
        }
        AdminCommand::Token(TokenCommand::Revoke { id }) => {
            client
                .inner
                .revoke_token(pb::RevokeTokenRequest { id: id.clone() })
                .await
                .map_err(status_err)?;
            eprintln!("token {id} revoked");
            Ok(())
        }
        AdminCommand::Token(TokenCommand::Create {
            ttl,
            max_uses,
            description,
            labels,
            allow_spoke_labels,
        }) => {
            let spec = TokenSpec {
                ttl,
                max_uses,
                description,
                labels,
                allow_spoke_labels,
            };
            println!("{}", client.create_token(spec).await?);
            Ok(())
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
        assert!(parse_label_changes(&["bad label".into()]).is_err());
    }
}
