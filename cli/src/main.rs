//! `flotilla`: the operator's command line. Parses arguments and dispatches; the work is
//! in `admin` (Admin API calls), `render` (local rendering) and `quickstart`.
#![forbid(unsafe_code)]

mod admin;
mod output;
mod progress;
mod quickstart;
mod render_cmd;
mod views;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "GitOps for fleets of Kubernetes clusters: the operator CLI"
)]
struct Cli {
    /// Client config written by `flotilla-hub init` (admin.conf).
    #[arg(long, global = true, env = "FLOTILLA_CONFIG")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List registered clusters.
    Clusters,
    /// Cluster operations.
    Cluster {
        #[command(subcommand)]
        command: admin::ClusterCommand,
    },
    /// List git sources.
    Sources,
    /// Source operations.
    Source {
        #[command(subcommand)]
        command: admin::SourceCommand,
    },
    /// List bundles with their fleet-wide state.
    Bundles,
    /// Per-cluster status of every bundle, or of one.
    Status(admin::StatusArgs),
    /// List cluster groups with their status.
    Groups,
    /// Cluster group operations.
    Group {
        #[command(subcommand)]
        command: admin::GroupCommand,
    },
    /// Staged rollouts: status (optionally live), pause, resume.
    Rollout {
        #[command(subcommand)]
        command: admin::RolloutCommand,
    },
    /// Live progress of every bundle (clusters Ready/total, by state).
    Watch {
        /// Exit 0 once every bundle is Ready (non-zero after --timeout).
        #[arg(long)]
        until_ready: bool,
        #[arg(long, default_value = "10m", value_parser = flotilla_model::duration::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Dry run: which clusters get which bundles of SOURCE (or SOURCE/BUNDLE), and why.
    Targets { source: String },
    /// Join tokens.
    Token {
        #[command(subcommand)]
        command: admin::TokenCommand,
    },
    /// Render a bundle folder locally, as a cluster with these labels would receive it.
    Render(render_cmd::RenderArgs),
    /// Run a hub, the example repo and three spokes on this machine.
    Quickstart(quickstart::QuickstartArgs),
    /// Run the hub (what `flotilla-hub` does); used by the quickstart.
    #[command(hide = true)]
    Hub(flotilla_hub::cli::Args),
    /// Run a spoke (what `flotilla-spoke` does); used by the quickstart.
    #[command(hide = true)]
    Spoke(flotilla_spoke::cli::Args),
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Hub(args) => {
            flotilla_hub::cli::init_tracing(&args.log);
            flotilla_hub::cli::run(args).await
        }
        Command::Spoke(args) => {
            flotilla_spoke::cli::init_tracing(&args);
            flotilla_spoke::cli::run(args).await
        }
        Command::Render(args) => render_cmd::run(&args),
        Command::Quickstart(args) => quickstart::run(args).await,
        command => {
            let client = admin::Client::connect(cli.config.as_deref()).await?;
            admin::dispatch(client, command_to_admin(command), cli.output).await
        }
    }
}

fn command_to_admin(c: Command) -> admin::AdminCommand {
    match c {
        Command::Clusters => admin::AdminCommand::Clusters,
        Command::Cluster { command } => admin::AdminCommand::Cluster(command),
        Command::Sources => admin::AdminCommand::Sources,
        Command::Source { command } => admin::AdminCommand::Source(command),
        Command::Bundles => admin::AdminCommand::Bundles,
        Command::Status(a) => admin::AdminCommand::Status(a),
        Command::Token { command } => admin::AdminCommand::Token(command),
        Command::Groups => admin::AdminCommand::Groups,
        Command::Group { command } => admin::AdminCommand::Group(command),
        Command::Targets { source } => admin::AdminCommand::Targets(source),
        Command::Rollout { command } => admin::AdminCommand::Rollout(command),
        Command::Watch {
            until_ready,
            timeout,
        } => admin::AdminCommand::Watch {
            until_ready,
            timeout,
        },
        Command::Hub(_) | Command::Spoke(_) | Command::Render(_) | Command::Quickstart(_) => {
            unreachable!("handled before connecting")
        }
    }
}
