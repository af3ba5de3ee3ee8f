//! `flotilla-hub init` and `flotilla-hub run`: the binary edge of the hub.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args as ClapArgs, Parser, Subcommand};
use flotilla_identity::{Role, files};
use flotilla_model::duration::parse_duration;
use flotilla_telemetry::LogFormat;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, FleetParts};
use crate::layout::DataDir;
use crate::pki::{self, HubPki};
use crate::server;
use crate::sources;
use crate::store::{Op, Store, Table};
use crate::targeting::{DEFAULT_GROUP, GroupSpec};

#[derive(Debug, Parser)]
#[command(
    name = "flotilla-hub",
    version,
    about = "The flotilla hub: git → bundles → spokes over mTLS gRPC"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct LogArgs {
    /// Log filter, e.g. info, debug, flotilla_hub=debug.
    #[arg(long, global = true, env = "FLOTILLA_LOG", default_value = "info")]
    pub log_level: String,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the hub's CA, serving and admin certificates, admin.conf and the state store.
    Init(InitArgs),
    /// Serve spokes and admins.
    Run(Box<RunArgs>),
    /// Operator certificates.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The hub CA: rotate it without stranding spokes.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Start a rotation: a new signing CA, the old one still trusted. A running hub
    /// rotates in place and asks every connected spoke still on the previous CA to
    /// renew within its `--rotation-window`; with the hub stopped, only the files change
    /// and spokes are asked as they connect after the next start.
    Rotate {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// A rotation's progress (clusters on the signing CA / all) and an estimate; asks
    /// the running hub, or reads the store when the hub is stopped.
    Status {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Ask every connected spoke still on the previous CA (or every connected spoke,
    /// with --all) to renew now, each at a random moment within --window.
    Renew {
        #[arg(long)]
        data_dir: PathBuf,
        /// Spread the renewals over this long, so the hub is not asked for every
        /// certificate at once.
        #[arg(long, default_value = "1m", value_parser = parse_duration)]
        window: Duration,
        /// Every connected spoke, not only those on the previous CA.
        #[arg(long)]
        all: bool,
    },
    /// Finish a rotation once no cluster depends on the previous CA: the hub serves
    /// from the new CA and trusts only it (a running hub at once, for new connections).
    Retire {
        #[arg(long)]
        data_dir: PathBuf,
        /// Retire even if some clusters would be stranded.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Issue an operator certificate and write a client config for it.
    Issue(IssueArgs),
}

#[derive(Debug, ClapArgs)]
pub struct IssueArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// viewer (read only) or admin.
    #[arg(long)]
    pub role: Role,
    /// Who the certificate is for (a DNS label), shown in the hub's logs.
    #[arg(long, default_value = "operator")]
    pub name: String,
    /// Client config to write; the certificate and key go beside it.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "365d", value_parser = parse_duration)]
    pub lifetime: Duration,
}

#[derive(Debug, ClapArgs)]
pub struct InitArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// host:port that spokes and the CLI dial; goes into join strings and admin.conf.
    /// Several, comma-separated (A1,A2,…), name the hub's replicas: clients try them in
    /// order, spokes fail over between them, and the serving certificate names each host.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub advertise: String,
    /// Succeed without changing anything when the data dir is already initialised, so
    /// an init container can run it at every start (the Helm chart does).
    #[arg(long)]
    pub if_missing: bool,
    /// Where the hub's state lives: `redb` (`state.redb` in --data-dir, the default) or
    /// `etcd://host:2379[,host:2379...]`. See docs/operations.md, "State store".
    #[arg(long, default_value = "redb")]
    pub store: crate::store::StoreUrl,
}

#[derive(Debug, ClapArgs)]
pub struct RunArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Kubernetes mode: reach the API server of `--namespace` through this kubeconfig.
    /// Without it, the in-cluster ServiceAccount (or `$KUBECONFIG`) is used.
    #[arg(long, requires = "namespace")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes mode: the namespace whose GitRepos, Sources, ClusterGroups and
    /// Clusters configure the hub; the Admin API then refuses to change them.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Where the hub's state lives: `redb` (`state.redb` in --data-dir, the default) or
    /// `etcd://host:2379[,host:2379...]`. See docs/operations.md, "State store".
    #[arg(long, default_value = "redb")]
    pub store: crate::store::StoreUrl,
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// Replicas on etcd: the TTL of each replica's etcd lease. The leader renews it at a
    /// third of this; when the leader dies, another replica leads within it. See
    /// docs/operations.md, "High availability".
    #[arg(long, default_value = "10s", value_parser = parse_lease)]
    pub leader_lease: Duration,
    /// Lifetime of the client certificates issued to spokes (at least 1s; tests use
    /// seconds).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub cert_lifetime: Duration,
    /// How long after its certificate expired a spoke may still recover it by proving
    /// it holds the key (a hub outage longer than the certificate lifetime). After it,
    /// the cluster must join again. `0s` turns recovery off. See docs/security.md.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub recovery_grace: Duration,
    /// During a CA rotation, each spoke still on the previous CA is asked to renew at a
    /// random moment within this long after it connects.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub rotation_window: Duration,
    /// A connected spoke that sends nothing for this long is marked Offline and its
    /// stream closed. Spokes send a heartbeat every 10 s, so keep this above that.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_window: Duration,
    /// Largest bundle content sent to a spoke, in bytes (the rendered manifests; above
    /// 16 MiB they go in chunks); at most 64 MiB, the ceiling a spoke accepts. A
    /// deployment over it is not sent: that bundle shows ErrApplied on that cluster, the
    /// others go on. `--max-assign-bytes` is its older name.
    #[arg(long, alias = "max-assign-bytes", default_value_t = flotilla_proto::limits::MAX_CONTENT_BYTES,
          value_parser = clap::value_parser!(u64).range(1024..=flotilla_proto::limits::MAX_CONTENT_BYTES))]
    pub max_content_bytes: u64,
    /// Plain-HTTP listener for /metrics, /healthz and /webhooks/{github,gitlab,gitea}.
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Shared secret for webhook signatures (GitHub/Gitea HMAC, GitLab token); a 0600
    /// file. Without it, webhooks are refused.
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
    /// The webhook secret itself, for Kubernetes, whose Secret volumes are group-readable
    /// under an fsGroup (which `--webhook-secret-file` refuses). Give it through the
    /// environment (`FLOTILLA_WEBHOOK_SECRET` from a Secret), not on the command line,
    /// which every local user can read.
    #[arg(
        long,
        env = "FLOTILLA_WEBHOOK_SECRET",
        hide_env_values = true,
        conflicts_with = "webhook_secret_file"
    )]
    pub webhook_secret: Option<String>,
    /// Label keys a spoke may set on itself (comma-separated, e.g. `region,zone`): its
    /// reported value moves the cluster at once. Any other label a spoke reports waits
    /// for `flotilla cluster accept-labels`.
    #[arg(long, value_delimiter = ',', value_parser = parse_label_key)]
    pub self_label_keys: Vec<String>,
    /// Unknown fleet.yaml keys fail their bundle (with file:line; the last good revision
    /// stays deployed) instead of being warnings. A fleet.yaml can ask for the same with
    /// `strict: true`.
    #[arg(long)]
    pub strict_fleet_yaml: bool,
    #[command(flatten)]
    pub tree_budget: TreeBudgetArgs,
    #[command(flatten)]
    pub ports: PortLimitArgs,
    #[command(flatten)]
    pub history: crate::history::RetentionArgs,
    #[command(flatten)]
    pub audit: crate::audit::AuditArgs,
    #[command(flatten)]
    pub dashboard: crate::dashboard::DashboardArgs,
}

/// A source's git tree budget, checked from object headers before any blob is read. A
/// commit over it fails its source's revision; the previous one stays deployed.
#[derive(Debug, ClapArgs)]
pub struct TreeBudgetArgs {
    /// Most entries (files, folders, links) in one commit's tree.
    #[arg(long, default_value_t = flotilla_render::Limits::default().max_tree_entries)]
    pub max_tree_entries: usize,
    /// Largest object a fetch accepts, and largest blob under a source's paths, in bytes.
    #[arg(long, default_value_t = flotilla_render::Limits::default().max_tree_blob_bytes)]
    pub max_blob_bytes: u64,
    /// Most blob bytes in total under a source's paths.
    #[arg(long, default_value_t = flotilla_render::Limits::default().max_tree_total_bytes)]
    pub max_tree_bytes: u64,
}

impl TreeBudgetArgs {
    fn limits(&self) -> flotilla_render::Limits {
        flotilla_render::Limits {
            max_tree_entries: self.max_tree_entries,
            max_tree_blob_bytes: self.max_blob_bytes,
            max_tree_total_bytes: self.max_tree_bytes,
            ..flotilla_render::Limits::default()
        }
    }
}

/// Budgets and deadlines that keep the hub's ports available to spokes and operators
/// when anyone else can reach them (see `docs/operations.md`, "Connection limits").
#[derive(Debug, Clone, ClapArgs)]
pub struct PortLimitArgs {
    /// gRPC port: time for a new connection to finish its TLS handshake.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// gRPC port: time for a TLS connection to send its HTTP/2 preface.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub http2_preface_timeout: Duration,
    /// gRPC port: lifetime of a connection without a client certificate (registration,
    /// health checks).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub unauthenticated_max_age: Duration,
    /// gRPC port: connections without a verified client certificate held at once; a new
    /// one over the cap evicts the oldest.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_unauthenticated_connections: u32,
    /// gRPC port: connections with a verified client certificate (spokes, operators)
    /// held at once; a new one over the budget is closed. Keep the fd limit above this.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_authenticated_connections: u32,
    /// gRPC port: HTTP/2 PING interval to every connection.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,
    /// gRPC port: a connection that does not answer a PING within this is closed.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,
    /// gRPC port: concurrent calls (HTTP/2 streams) per connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,
    /// HTTP port: time for a request head to arrive, and for an idle kept-alive
    /// connection to start its next request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,
    /// HTTP port: time for a request body to arrive once its head is read.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub http_body_timeout: Duration,
    /// HTTP port: connections held at once; a new one over the cap evicts the oldest.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
}

impl PortLimitArgs {
    fn grpc(&self) -> server::ConnectionLimits {
        server::ConnectionLimits {
            handshake_timeout: self.tls_handshake_timeout,
            preface_timeout: self.http2_preface_timeout,
            unauthenticated_max_age: self.unauthenticated_max_age,
            max_unauthenticated: usize_from(self.max_unauthenticated_connections),
            max_authenticated: usize_from(self.max_authenticated_connections),
            keepalive_interval: self.http2_keepalive_interval,
            keepalive_timeout: self.http2_keepalive_timeout,
            max_streams_per_connection: self.max_streams_per_connection,
        }
    }

    fn http(&self) -> crate::http::HttpPortLimits {
        crate::http::HttpPortLimits {
            header_timeout: self.http_header_timeout,
            body_timeout: self.http_body_timeout,
            max_connections: usize_from(self.http_max_connections),
        }
    }
}

fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(2) {
        return Err(format!(
            "{s}: a lease must last at least 2s (etcd counts in seconds)"
        ));
    }
    Ok(d)
}

fn parse_label_key(s: &str) -> Result<String, String> {
    flotilla_model::labels::validate_key(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn usize_from(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

pub fn init_tracing(log: &LogArgs) {
    flotilla_telemetry::init_tracing(&log.log_level, log.log_format);
}

/// Entry point shared by `flotilla-hub` and the quickstart.
pub async fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Init(a) => init(&a).await,
        Command::Run(a) => serve(*a).await,
        Command::Admin {
            command: AdminCommand::Issue(a),
        } => issue_operator(&a),
        Command::Ca { command } => ca_command(command).await,
    }
}

fn issue_operator(args: &IssueArgs) -> Result<()> {
    let dir = DataDir::new(&args.data_dir);
    pki::issue_operator(&dir, &args.name, args.role, args.lifetime, &args.out)?;
    println!(
        "wrote {} ({} {}); use it with: flotilla --config {} clusters",
        args.out.display(),
        args.role,
        args.name,
        args.out.display()
    );
    Ok(())
}

fn open_store_records(dir: &DataDir) -> Result<Vec<crate::records::ClusterRecord>> {
    let (_, snapshot) = Store::open(&dir.state()).with_context(|| {
        format!(
            "opening {} (stop the hub first: the store allows one process)",
            dir.state().display()
        )
    })?;
    Ok(snapshot
        .records::<crate::records::ClusterRecord>(crate::store::Table::Clusters)?
        .into_iter()
        .map(|(_, c)| c)
        .collect())
}

async fn ca_command(cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Rotate { data_dir } => {
            let dir = DataDir::new(&data_dir);
            match admin_client(&dir).await {
                Ok(mut admin) => {
                    let reply = tokio::time::timeout(
                        ADMIN_TIMEOUT,
                        admin.rotate_ca(flotilla_proto::v1::RotateCaRequest {}),
                    )
                    .await
                    .context("Admin.RotateCa did not answer")?
                    .map_err(|s| anyhow::anyhow!("Admin.RotateCa: {}", s.message()))?
                    .into_inner();
                    println!(
                        "new signing CA sha256 {}; the previous CA stays trusted.",
                        reply.signing_ca_sha256
                    );
                    println!(
                        "the running hub uses it now: {} connected spoke(s) asked to renew within {}s; \
                         the others are asked when they connect.",
                        reply.scheduled, reply.rotation_window_seconds
                    );
                }
                Err(running) => {
                    // Only a stopped hub leaves the store (and so the files) to us.
                    open_store_records(&dir).with_context(|| {
                        format!("asking the running hub failed too: {running:#}")
                    })?;
                    let fp = pki::rotate(&dir, &read_advertise(&dir)?)?;
                    println!("new signing CA sha256 {fp}; the previous CA stays trusted.");
                    println!(
                        "hub stopped: when it starts, each spoke still on the previous CA is asked to \
                         renew within the hub's --rotation-window (default 5m) of connecting."
                    );
                }
            }
            println!(
                "watch: flotilla-hub ca status --data-dir {}",
                data_dir.display()
            );
            println!(
                "then:  flotilla-hub ca retire --data-dir {}",
                data_dir.display()
            );
            Ok(())
        }
        CaCommand::Status { data_dir } => {
            let dir = DataDir::new(&data_dir);
            match running_ca_status(&dir).await {
                Ok(status) => print!("{}", format_ca_status(&status)),
                Err(running) => {
                    // A stopped hub leaves the store to us; a running one that did not
                    // answer keeps it locked, and then both reasons are worth reading.
                    let offline = offline_ca_status(&dir).with_context(|| {
                        format!("asking the running hub failed too: {running:#}")
                    })?;
                    print!("{offline}");
                }
            }
            Ok(())
        }
        CaCommand::Renew {
            data_dir,
            window,
            all,
        } => {
            let dir = DataDir::new(&data_dir);
            let mut admin = admin_client(&dir)
                .await
                .context("`ca renew` asks the running hub")?;
            let call = admin.renew_certificates(flotilla_proto::v1::RenewCertificatesRequest {
                window_seconds: window.as_secs(),
                all,
            });
            let reply = tokio::time::timeout(ADMIN_TIMEOUT, call)
                .await
                .context("Admin.RenewCertificates did not answer")?
                .map_err(|s| anyhow::anyhow!("Admin.RenewCertificates: {}", s.message()))?
                .into_inner();
            println!(
                "asked {} connected spoke(s) to renew within {}s",
                reply.scheduled,
                window.as_secs()
            );
            Ok(())
        }
        CaCommand::Retire { data_dir, force } => {
            let dir = DataDir::new(&data_dir);
            match admin_client(&dir).await {
                Ok(mut admin) => {
                    let reply = tokio::time::timeout(
                        ADMIN_TIMEOUT,
                        admin.retire_ca(flotilla_proto::v1::RetireCaRequest { force }),
                    )
                    .await
                    .context("Admin.RetireCa did not answer")?
                    .map_err(|s| anyhow::anyhow!("Admin.RetireCa: {}", s.message()))?
                    .into_inner();
                    println!(
                        "previous CA retired; the running hub now serves with the CA sha256 {} \
                         and trusts only it; new join strings pin it.",
                        reply.ca_sha256
                    );
                }
                Err(running) => {
                    let clusters = open_store_records(&dir).with_context(|| {
                        format!("asking the running hub failed too: {running:#}")
                    })?;
                    pki::retire(&dir, &clusters, force, &read_advertise(&dir)?)?;
                    println!("previous CA retired; the hub serves with the new CA when it starts.");
                }
            }
            Ok(())
        }
    }
}

/// How long `ca rotate`, `ca status` and `ca renew` wait for the hub before deciding it is stopped.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// An Admin client for the hub whose data dir this is, as its admin (`admin.conf`).
async fn admin_client(
    dir: &DataDir,
) -> Result<flotilla_proto::v1::admin_client::AdminClient<tonic::transport::Channel>> {
    let conf = flotilla_identity::ClientConfig::load(&dir.admin_conf())?;
    let creds = conf.credentials()?;
    let (channel, _) = tokio::time::timeout(
        ADMIN_TIMEOUT,
        flotilla_identity::connect_first(&conf.servers()?, &creds),
    )
    .await
    .with_context(|| format!("the hub at {} did not answer", conf.server))??;
    Ok(flotilla_proto::v1::admin_client::AdminClient::new(channel))
}

/// `Admin.CaStatus` from the running hub, within `ADMIN_TIMEOUT`.
async fn running_ca_status(dir: &DataDir) -> Result<flotilla_proto::v1::CaStatusResponse> {
    let mut admin = admin_client(dir).await?;
    let reply = tokio::time::timeout(
        ADMIN_TIMEOUT,
        admin.ca_status(flotilla_proto::v1::CaStatusRequest {}),
    )
    .await
    .context("Admin.CaStatus did not answer")?
    .map_err(|s| anyhow::anyhow!("Admin.CaStatus: {}", s.message()))?;
    Ok(reply.into_inner())
}

/// `ca status` from the running hub's answer.
fn format_ca_status(s: &flotilla_proto::v1::CaStatusResponse) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let phase = if s.rotating {
        "CA rotation in progress"
    } else {
        "no CA rotation in progress"
    };
    let _ = writeln!(
        out,
        "{phase}: {}/{} clusters on the signing CA (sha256 {})",
        s.on_signing_ca, s.clusters, s.signing_ca_sha256
    );
    for p in &s.pending {
        let when = match (p.connected, p.renew_at.is_empty()) {
            (true, false) => format!("asked to renew at {}", p.renew_at),
            (true, true) => "connected, not asked (run `flotilla-hub ca renew`)".to_string(),
            (false, _) => "offline: asked to renew once it connects".to_string(),
        };
        let _ = writeln!(out, "  {:<24} {when}", p.name);
    }
    if s.pending.is_empty() {
        if s.rotating {
            let _ = writeln!(out, "ready: flotilla-hub ca retire");
        }
    } else if s.estimated_done.is_empty() {
        let _ = writeln!(
            out,
            "estimate: unknown while a cluster is offline or not asked; a spoke renews within {}s of connecting",
            s.rotation_window_seconds
        );
    } else {
        let _ = writeln!(
            out,
            "estimate: every cluster asked by {} (renewal follows within seconds)",
            s.estimated_done
        );
    }
    out
}

/// `ca status` with the hub stopped: the store says who is on which CA.
fn offline_ca_status(dir: &DataDir) -> Result<String> {
    let clusters = open_store_records(dir)?;
    let waiting = pki::depending_on_previous(dir, &clusters)?;
    let total = clusters.iter().filter(|c| !c.revoked).count();
    let rotating = dir.ca_previous().exists();
    let mut out = format!(
        "{}: {}/{total} clusters on the signing CA (hub stopped)\n",
        if rotating {
            "CA rotation in progress"
        } else {
            "no CA rotation in progress"
        },
        total - waiting.len(),
    );
    if !waiting.is_empty() {
        out.push_str(&format!(
            "waiting for {} cluster(s) to renew: {}\nestimate: within the hub's --rotation-window of each one connecting, once the hub runs\n",
            waiting.len(),
            waiting.join(", ")
        ));
    } else if rotating {
        out.push_str("every cluster holds a certificate from the new CA: ready to retire\n");
    }
    Ok(out)
}

pub async fn init(args: &InitArgs) -> Result<()> {
    let dir = DataDir::new(&args.data_dir);
    if dir.ca_cert().exists() && args.if_missing {
        println!(
            "{} is already initialised (found {}); nothing to do",
            dir.root().display(),
            dir.ca_cert().display()
        );
        return Ok(());
    }
    if dir.ca_cert().exists() {
        bail!(
            "{} is already initialised (found {}); use another --data-dir",
            dir.root().display(),
            dir.ca_cert().display()
        );
    }
    let advertise = flotilla_identity::addrs::hub_addresses(&args.advertise)
        .context("--advertise")?
        .join(",");
    files::private_dir(dir.root()).with_context(|| format!("creating {}", dir.root().display()))?;
    files::write_public(
        &dir.hub_conf(),
        format!("advertise: {advertise}\n").as_bytes(),
    )?;
    let ca = pki::init(&dir, &advertise)?;
    // Sources without targets go to the group `default`; out of the box it holds every
    // cluster, as in Fleet.
    let (store, _) = Store::connect(&args.store, dir.root()).await?;
    let default_group = GroupSpec {
        name: DEFAULT_GROUP.to_string(),
        selector: Default::default(),
        labels: Default::default(),
    };
    store
        .commit(vec![Op::put_json(
            Table::Groups,
            DEFAULT_GROUP,
            &default_group,
        )])
        .await?;
    println!("initialised hub in {}", dir.root().display());
    println!("  CA sha256:   {}", ca.fingerprint());
    println!("  advertise:   {advertise}");
    println!("  admin config: {}", dir.admin_conf().display());
    println!(
        "next: flotilla-hub run --data-dir {} --listen {}{}   then: flotilla --config {} token create",
        dir.root().display(),
        listen_for(&advertise),
        match &args.store {
            crate::store::StoreUrl::Redb => String::new(),
            other => format!(" --store {other}"),
        },
        dir.admin_conf().display()
    );
    Ok(())
}

/// The `--listen` that serves what `--advertise` names (its first address; each replica
/// listens on its own): the address itself when it is one (127.0.0.1:7443), otherwise
/// every interface on its port (hub.example.com:443).
fn listen_for(advertise: &str) -> String {
    let advertise = advertise.split(',').next().unwrap_or(advertise);
    if advertise.parse::<SocketAddr>().is_ok() {
        return advertise.to_string();
    }
    let port = advertise.rsplit_once(':').map_or("7443", |(_, p)| p);
    format!("0.0.0.0:{port}")
}

pub(crate) fn read_advertise(dir: &DataDir) -> Result<String> {
    let text = files::read_public(&dir.hub_conf())?;
    text.lines()
        .find_map(|l| l.strip_prefix("advertise:").map(|v| v.trim().to_string()))
        .filter(|v| !v.is_empty())
        .with_context(|| format!("{} has no advertise line", dir.hub_conf().display()))
}

/// How often the clusters' `last_seen` is checked for a store write (`Fleet::flush_last_seen`
/// writes it only when it moved by minutes, or the spoke left).
const LAST_SEEN_FLUSH: Duration = Duration::from_secs(15);

async fn serve(args: RunArgs) -> Result<()> {
    // Before anything starts: an unsafe dashboard listener is a configuration error.
    let dashboard = args.dashboard.config()?;
    let dir = DataDir::new(&args.data_dir);
    if !dir.ca_cert().exists() {
        bail!(
            "{} is not an initialised hub data dir; run: flotilla-hub init --data-dir {}",
            dir.root().display(),
            dir.root().display()
        );
    }
    // Keys, the store and the source mirrors live here: owner-only, also for a data dir
    // that an older version created 0755.
    flotilla_identity::files::private_dir(dir.root())?;
    let pki = HubPki::load(&dir)?;
    let advertise = read_advertise(&dir)?;
    let (store, snapshot) = Store::connect(&args.store, dir.root())
        .await
        .context("opening the state store")?;
    let (fleet, reconcile_rx) = Fleet::restore(
        FleetParts {
            store,
            pki,
            advertise,
            cert_lifetime: args.cert_lifetime,
            renewal: crate::renewals::RenewalPolicy {
                recovery_grace: args.recovery_grace,
                rotation_window: args.rotation_window,
            },
            data_dir: dir.root().to_path_buf(),
            self_label_keys: args.self_label_keys.iter().cloned().collect(),
            limits: args.tree_budget.limits(),
            strict_fleet_yaml: args.strict_fleet_yaml,
            history: args.history.retention(),
            audit_log: args.audit.audit_log.clone(),
        },
        &snapshot,
    )?;
    let snapshot_revision = snapshot.revision;
    drop(snapshot);
    if matches!(args.store, crate::store::StoreUrl::Etcd(_)) {
        // A replica on etcd follows until its election says otherwise, before any task
        // that only the leader runs has started.
        fleet.leadership.follow(None);
    }
    // The hub's long-lived tasks. A task that panics (a bug in the reconcile, say) is not
    // swallowed: it cancels `stop`, the server drains, and the hub exits non-zero so
    // that its supervisor restarts it from the store.
    let stop = CancellationToken::new();
    let mut tasks: JoinSet<()> = JoinSet::new();
    // Leader-only: they prune records every replica shares.
    tasks.spawn(crate::history::run_sweeper(
        fleet.history.clone(),
        fleet.leadership.clone(),
    ));
    tasks.spawn(crate::audit::run_retention(
        fleet.audit.clone(),
        args.audit.retention(),
        fleet.leadership.clone(),
    ));
    tasks.spawn(sources::run_reconciler(fleet.clone(), reconcile_rx));
    tasks.spawn(server::watch_heartbeats(
        fleet.clone(),
        args.heartbeat_window,
    ));
    let f = fleet.clone();
    tasks.spawn(async move {
        // last_seen is persisted in batches: a heartbeat is not worth a store write.
        let mut tick = tokio::time::interval(LAST_SEEN_FLUSH);
        loop {
            tick.tick().await;
            f.flush_last_seen(false);
        }
    });
    if let Some(listen) = args.http_listen {
        let secret = match (&args.webhook_secret, &args.webhook_secret_file) {
            (Some(given), _) => {
                let secret = given.trim().to_string();
                if secret.is_empty() {
                    bail!(
                        "FLOTILLA_WEBHOOK_SECRET (--webhook-secret) is empty; put the shared secret your git host signs with in it"
                    );
                }
                Some(secret)
            }
            (None, Some(p)) => {
                let secret = files::read_secret(p)?.trim().to_string();
                // An empty key would sign anyone's payload: refuse to start rather than
                // accept unauthenticated webhooks.
                if secret.is_empty() {
                    bail!(
                        "--webhook-secret-file {} is empty; put the shared secret your git host signs with in it",
                        p.display()
                    );
                }
                Some(secret)
            }
            (None, None) => None,
        };
        let f = fleet.clone();
        let limits = args.ports.http();
        tasks.spawn(async move {
            if let Err(e) = crate::http::serve(f, listen, secret, limits).await {
                tracing::error!(%listen, error = %e, "HTTP listener failed");
            }
        });
    }
    if let Some(config) = dashboard {
        let f = fleet.clone();
        let limits = args.ports.http();
        tasks.spawn(async move {
            if let Err(e) = crate::dashboard::serve(f, config, limits).await {
                tracing::error!(listen = %config.listen, error = %e, "dashboard failed");
            }
        });
    }
    if let Some(namespace) = &args.namespace {
        let _ = fleet.kube_namespace.set(namespace.clone());
        let config = crate::kube_mode::KubeModeConfig {
            kubeconfig: args.kubeconfig.clone(),
            namespace: namespace.clone(),
        };
        let sink = Arc::new(crate::kube_mode::hub_sink::HubSink::new(fleet.clone()));
        let leadership = fleet.leadership.clone();
        tasks.spawn(async move {
            // Only the leader applies the objects and writes their status and the
            // BundleStatus views: replicas would otherwise all patch the same objects.
            // The others take the configuration from the store like any other change.
            let run = || crate::kube_mode::run(config.clone(), sink.clone());
            if let Err(e) = crate::ha::each_term(&leadership, run).await {
                // Without its configuration the hub is of no use: the panic stops it
                // (see `watch_tasks`) so that its supervisor restarts it.
                panic!("kubernetes mode stopped: {e}");
            }
        });
    }
    // Replicas on etcd: an election decides who runs the leader-only work; until it
    // has, this one follows. Every replica follows the others' writes.
    let ha_stop = CancellationToken::new();
    let mut election = None;
    if let crate::store::StoreUrl::Etcd(config) = &args.store {
        let replica = Arc::new(crate::ha::Replica::new(
            args.listen.to_string(),
            args.leader_lease,
        ));
        let etcd = crate::store::EtcdBackend::connect(config.clone()).await?;
        tasks.spawn(crate::ha::mirror::run(
            fleet.clone(),
            replica.clone(),
            snapshot_revision,
        ));
        election = Some(tokio::spawn(crate::ha::run_election(
            fleet.clone(),
            etcd,
            replica,
            ha_stop.clone(),
        )));
    }
    let all_sources: Vec<_> = fleet.sources.iter().map(|s| s.value().clone()).collect();
    for s in all_sources {
        tasks.spawn(sources::run_poller(fleet.clone(), s));
    }
    tracing::info!(listen = %args.listen, clusters = fleet.clusters.len(), sources = fleet.sources.len(), "flotilla hub serving");
    // On SIGTERM/Ctrl-C: stop accepting, end every spoke stream (spokes reconnect with
    // backoff to whichever hub comes back), and give connections a bounded time to drain.
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let f = fleet.clone();
    let stopped = stop.clone();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = stopped.cancelled() => {}
        }
        tracing::info!("shutting down: closing spoke streams");
        // A leader hands over now, not after its lease's TTL.
        ha_stop.cancel();
        let names: Vec<_> = f.sessions.iter().map(|s| s.key().clone()).collect();
        for n in names {
            f.disconnect(&n, "hub shutting down");
        }
        let _ = stopping_tx.send(());
    };
    let serving = async {
        tokio::select! {
            r = server::serve(Arc::clone(&fleet), args.listen, args.max_content_bytes, args.ports.grpc(), shutdown) => r.context("gRPC server"),
            _ = async {
                if stopping_rx.await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!("connections did not drain within 5 s; stopping anyway");
                Ok(())
            }
        }
    };
    let mut serving = std::pin::pin!(serving);
    let mut panicked = None;
    let served = tokio::select! {
        r = &mut serving => r,
        // A panic cancelled `stop`: the server drains as on SIGTERM.
        what = watch_tasks(&mut tasks, &stop) => {
            panicked = Some(what);
            serving.await
        }
    };
    if let Some(election) = election {
        // It releases the lease; bounded by its own timeout.
        let _ = tokio::time::timeout(Duration::from_secs(3), election).await;
    }
    tasks.abort_all();
    fleet.flush_last_seen(true);
    served?;
    if let Some(what) = panicked {
        bail!("a hub task panicked ({what}); stopping so that the hub restarts from its store");
    }
    tracing::info!("flotilla hub stopped");
    Ok(())
}

/// Waits for the first task of `tasks` that panics, logs it, cancels `stop` and returns
/// its message. Tasks that end normally (a removed source's poller) are let go.
async fn watch_tasks(tasks: &mut JoinSet<()>, stop: &CancellationToken) -> String {
    loop {
        match tasks.join_next().await {
            Some(Err(e)) if e.is_panic() => {
                let payload = e.into_panic();
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(panic = %what, "a hub task panicked; stopping");
                stop.cancel();
                return what;
            }
            Some(_) => {}
            None => std::future::pending::<()>().await,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::{CancellationToken, JoinSet, listen_for, watch_tasks};

    #[tokio::test]
    async fn a_panicking_task_stops_the_hub_and_a_task_that_ends_does_not() {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        // A removed source's poller ends normally.
        tasks.spawn(async {});
        let (go, gate) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _ = gate.await;
            panic!("reconcile bug");
        });
        tasks.spawn(std::future::pending());
        let watching = watch_tasks(&mut tasks, &stop);
        let _ = go.send(());
        assert_eq!(watching.await, "reconcile bug");
        assert!(
            stop.is_cancelled(),
            "the server's shutdown waits on this token"
        );
    }

    #[test]
    fn the_printed_next_command_listens_where_init_advertised() {
        assert_eq!(listen_for("127.0.0.1:9443"), "127.0.0.1:9443");
        assert_eq!(listen_for("[::1]:9443"), "[::1]:9443");
        assert_eq!(listen_for("hub.example.com:443"), "0.0.0.0:443");
        assert_eq!(
            listen_for("127.0.0.1:9443,127.0.0.2:9443"),
            "127.0.0.1:9443"
        );
    }
}
