//! `flotilla`: the operator's command line. Parses arguments into one clap tree and
//! dispatches; the work is in `admin` (Admin API calls), `render_cmd` (local rendering)
//! and `quickstart`. Every error ends here as one `error: ...` line and exit 1, and a
//! closed stdout (`flotilla token list | head -1`) ends the program quietly.
#![forbid(unsafe_code)]

mod admin;
mod history;
mod output;
mod progress;
#[cfg(feature = "quickstart")]
mod quickstart;
mod render_cmd;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::output::{Format, Printer};

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "GitOps for fleets of Kubernetes clusters: the operator CLI"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes, kubectl style.
#[derive(Debug, Args)]
struct Global {
    /// Client config written by `flotilla-hub init` (admin.conf).
    #[arg(long, global = true, env = "FLOTILLA_CONFIG")]
    config: Option<PathBuf>,
    /// Output format (default: a table for reads, a `kind/name verb` line for changes).
    #[arg(short = 'o', long, global = true, value_enum)]
    output: Option<Format>,
    /// Leave out the header line of tables.
    #[arg(long, global = true)]
    no_headers: bool,
    /// How long to wait for the hub to answer each call (and the connect); 0: for ever.
    #[arg(long, global = true, default_value = "30s", value_parser = flotilla_model::duration::parse_duration)]
    request_timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Admin(admin::AdminCommand),
    /// Render a bundle folder locally, as a cluster with these labels would receive it.
    Render(render_cmd::RenderArgs),
    /// Print a shell completion script: `source <(flotilla completion bash)`.
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Run a hub, the example repo and three spokes on this machine.
    #[cfg(feature = "quickstart")]
    Quickstart(quickstart::QuickstartArgs),
    /// Run the hub (what `flotilla-hub` does); used by the quickstart.
    #[cfg(feature = "quickstart")]
    #[command(hide = true)]
    Hub(flotilla_hub::cli::Args),
    /// Run a spoke (what `flotilla-spoke` does); used by the quickstart.
    #[cfg(feature = "quickstart")]
    #[command(hide = true)]
    Spoke(flotilla_spoke::cli::Args),
}

fn main() -> ExitCode {
    // A panic is a bug in flotilla, not the user's: one line that says so, and no
    // backtrace whatever RUST_BACKTRACE says.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let what = info.payload_as_str().unwrap_or("panic").replace('\n', " ");
        eprintln!("error: internal error{at} (a bug in flotilla; please report it): {what}");
    }));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// One line on stderr and exit 1; a reader that went away (a closed pipe) is not an
/// error worth a word.
fn fail(e: &anyhow::Error) -> ExitCode {
    let broken_pipe = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    // `{:#}` is the cause chain on one line; the Debug form (with a backtrace under
    // RUST_BACKTRACE) is never printed.
    let text = format!("{e:#}").replace('\n', " ");
    eprintln!("error: {text}");
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> Result<()> {
    let out = Printer {
        format: cli.global.output,
        no_headers: cli.global.no_headers,
    };
    match cli.command {
        Command::Admin(command) => {
            let timeout = Some(cli.global.request_timeout).filter(|t| !t.is_zero());
            let client = admin::Client::connect(cli.global.config.as_deref(), timeout).await?;
            admin::dispatch(client, command, out).await
        }
        Command::Render(args) => render_cmd::run(&args, out),
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "flotilla", &mut script);
            output::emit(&String::from_utf8_lossy(&script))
        }
        #[cfg(feature = "quickstart")]
        Command::Quickstart(args) => quickstart::run(args).await,
        #[cfg(feature = "quickstart")]
        Command::Hub(args) => {
            flotilla_hub::cli::init_tracing(&args.log);
            flotilla_hub::cli::run(args).await
        }
        #[cfg(feature = "quickstart")]
        Command::Spoke(args) => {
            flotilla_spoke::cli::init_tracing(&args);
            flotilla_spoke::cli::run(args).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument and flag of every visible command says what it is for.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "flotilla", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }
}
