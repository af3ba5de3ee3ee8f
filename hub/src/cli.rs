//! `flotilla-hub init` and `flotilla-hub run`: the binary edge of the hub.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use flotilla_identity::{Ca, ClientConfig, Role, files};
use flotilla_model::duration::parse_duration;

use crate::fleet::{Fleet, FleetParts};
use crate::layout::DataDir;
use crate::server::{self, ServerTls};
use crate::sources;
use crate::store::Store;

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

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the hub's CA, serving and admin certificates, admin.conf and the state store.
    Init(InitArgs),
    /// Serve spokes and admins.
    Run(RunArgs),
    /// Operator certificates.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
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
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub advertise: String,
}

#[derive(Debug, ClapArgs)]
pub struct RunArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// Lifetime of the client certificates issued to spokes.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub cert_lifetime: Duration,
}

pub fn init_tracing(log: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Entry point shared by `flotilla-hub` and the quickstart.
pub async fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Init(a) => init(&a),
        Command::Run(a) => serve(a).await,
        Command::Admin {
            command: AdminCommand::Issue(a),
        } => issue_operator(&a),
    }
}

/// Writes an operator certificate, its key (0600) and a client config naming them.
fn write_operator(
    ca: &Ca,
    server: &str,
    name: &str,
    role: Role,
    lifetime: Duration,
    conf_path: &std::path::Path,
) -> Result<()> {
    if !flotilla_model::names::is_dns_label(name) {
        bail!("--name {name:?} must be a DNS label");
    }
    let dir = conf_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let stem = conf_path
        .file_stem()
        .context("--out needs a file name")?
        .to_string_lossy()
        .to_string();
    let issued = ca.issue_operator(name, role, lifetime)?;
    let (cert, key) = (format!("{stem}.pem"), format!("{stem}-key.pem"));
    files::write_public(&dir.join(&cert), issued.cert_pem.as_bytes())?;
    files::write_secret(&dir.join(&key), issued.key_pem.as_bytes())?;
    let conf = ClientConfig {
        server: server.to_string(),
        ca: "ca.pem".into(),
        cert: cert.into(),
        key: key.into(),
    };
    if !dir.join("ca.pem").exists() {
        files::write_public(&dir.join("ca.pem"), ca.cert_pem().as_bytes())?;
    }
    files::write_public(conf_path, conf.to_yaml().as_bytes())?;
    Ok(())
}

fn load_ca(dir: &DataDir) -> Result<Ca> {
    let ca_pem = files::read_public(&dir.ca_cert())?;
    Ok(Ca::load(&ca_pem, &files::read_secret(&dir.ca_key())?)?)
}

fn issue_operator(args: &IssueArgs) -> Result<()> {
    let dir = DataDir::new(&args.data_dir);
    let ca = load_ca(&dir)?;
    let server = read_advertise(&dir)?;
    write_operator(
        &ca,
        &server,
        &args.name,
        args.role,
        args.lifetime,
        &args.out,
    )?;
    println!(
        "wrote {} ({} {}); use it with: flotilla --config {} clusters",
        args.out.display(),
        args.role,
        args.name,
        args.out.display()
    );
    Ok(())
}

pub fn init(args: &InitArgs) -> Result<()> {
    let dir = DataDir::new(&args.data_dir);
    if dir.ca_cert().exists() {
        bail!(
            "{} is already initialised (found {}); use another --data-dir",
            dir.root().display(),
            dir.ca_cert().display()
        );
    }
    std::fs::create_dir_all(dir.root())
        .with_context(|| format!("creating {}", dir.root().display()))?;
    let (ca, ca_key) = Ca::generate("flotilla hub CA")?;
    files::write_public(&dir.ca_cert(), ca.cert_pem().as_bytes())?;
    files::write_secret(&dir.ca_key(), ca_key.as_bytes())?;
    let host = args
        .advertise
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        .context("--advertise must be host:port")?;
    let server = ca.issue_server(&[host])?;
    files::write_public(&dir.server_cert(), server.cert_pem.as_bytes())?;
    files::write_secret(&dir.server_key(), server.key_pem.as_bytes())?;
    write_operator(
        &ca,
        &args.advertise,
        "admin",
        Role::Admin,
        Duration::from_secs(365 * 24 * 3600),
        &dir.admin_conf(),
    )?;
    files::write_public(
        &dir.hub_conf(),
        format!("advertise: {}\n", args.advertise).as_bytes(),
    )?;
    drop(Store::open(&dir.state())?);
    println!("initialised hub in {}", dir.root().display());
    println!("  CA sha256:   {}", ca.fingerprint());
    println!("  advertise:   {}", args.advertise);
    println!("  admin config: {}", dir.admin_conf().display());
    println!(
        "next: flotilla-hub run --data-dir {}   then: flotilla --config {} token create",
        dir.root().display(),
        dir.admin_conf().display()
    );
    Ok(())
}

fn read_advertise(dir: &DataDir) -> Result<String> {
    let text = files::read_public(&dir.hub_conf())?;
    text.lines()
        .find_map(|l| l.strip_prefix("advertise:").map(|v| v.trim().to_string()))
        .filter(|v| !v.is_empty())
        .with_context(|| format!("{} has no advertise line", dir.hub_conf().display()))
}

async fn serve(args: RunArgs) -> Result<()> {
    let dir = DataDir::new(&args.data_dir);
    if !dir.ca_cert().exists() {
        bail!(
            "{} is not an initialised hub data dir; run: flotilla-hub init --data-dir {}",
            dir.root().display(),
            dir.root().display()
        );
    }
    let ca = load_ca(&dir)?;
    let tls = ServerTls {
        cert_pem: files::read_public(&dir.server_cert())?,
        key_pem: files::read_secret(&dir.server_key())?,
        ca_pem: ca.cert_pem().to_string(),
    };
    let advertise = read_advertise(&dir)?;
    let state_path = dir.state();
    let (store, snapshot) = tokio::task::spawn_blocking(move || Store::open(&state_path))
        .await
        .context("opening the state store")??;
    let (fleet, reconcile_rx) = Fleet::restore(
        FleetParts {
            store,
            ca,
            advertise,
            cert_lifetime: args.cert_lifetime,
            data_dir: dir.root().to_path_buf(),
        },
        &snapshot,
    )?;
    drop(snapshot);
    tokio::spawn(sources::run_reconciler(fleet.clone(), reconcile_rx));
    let all_sources: Vec<_> = fleet.sources.iter().map(|s| s.value().clone()).collect();
    for s in all_sources {
        tokio::spawn(sources::run_poller(fleet.clone(), s));
    }
    tracing::info!(listen = %args.listen, clusters = fleet.clusters.len(), sources = fleet.sources.len(), "flotilla hub serving");
    server::serve(Arc::clone(&fleet), args.listen, tls, shutdown_signal())
        .await
        .context("gRPC server")?;
    tracing::info!("flotilla hub stopped");
    Ok(())
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
