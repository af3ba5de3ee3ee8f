//! `flotilla quickstart`: a whole fleet on one machine. It initialises a hub, turns
//! `examples/fleet-repo` into a local git repo, starts the hub and three spokes
//! (env=dev, env=test, env=prod) with directory targets, waits until every assigned
//! bundle is Ready, and prints the status table and where the files are.
//!
//! The hub and spokes are separate processes: this binary re-executes itself as
//! `flotilla hub …` and `flotilla spoke …`, which run exactly the code of
//! `flotilla-hub` and `flotilla-spoke`. Whatever ends the quickstart (SIGINT, SIGTERM,
//! an error, `--exit-when-ready`), it stops and reaps every process it started.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::process::{Child, Command};

use crate::admin::{Client, SourceAddArgs, TokenSpec};
use crate::output::{Printer, emit, table};
use crate::views::StatusView;

const SPOKES: [(&str, &str); 3] = [
    ("dev", "env=dev"),
    ("test", "env=test"),
    ("prod", "env=prod"),
];

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Exit 0 once everything is Ready (non-zero with the reason on timeout).
    #[arg(long)]
    pub exit_when_ready: bool,
    /// Working folder for the hub, repo, spokes and targets (default: a new temp folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The example fleet repo to serve.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fleet-repo"))]
    pub examples: PathBuf,
    /// How long to wait for everything to become Ready.
    #[arg(long, default_value = "120s", value_parser = flotilla_model::duration::parse_duration)]
    pub timeout: Duration,
}

/// The processes the quickstart started.
#[derive(Default)]
struct Fleet {
    children: Vec<Child>,
}

impl Fleet {
    /// Kills every child and waits for it, so none outlives the quickstart.
    async fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
        for c in &mut self.children {
            let _ = c.wait().await;
        }
        self.children.clear();
    }
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        // No handler: only Ctrl-C as tokio sees it.
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

pub async fn run(args: QuickstartArgs) -> Result<()> {
    let mut fleet = Fleet::default();
    let result = tokio::select! {
        r = run_fleet(&args, &mut fleet) => r,
        sig = stop_signal() => {
            eprintln!("{sig}: stopping the hub and spokes");
            Ok(())
        }
    };
    fleet.stop().await;
    result
}

async fn run_fleet(args: &QuickstartArgs, fleet: &mut Fleet) -> Result<()> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("flotilla-quickstart-{}", std::process::id())),
    };
    if dir.exists() {
        bail!("{} already exists; pass another --dir", dir.display());
    }
    std::fs::create_dir_all(dir.join("logs"))?;
    let exe = std::env::current_exe().context("locating the flotilla binary")?;
    let repo = dir.join("fleet-repo");
    make_repo(&args.examples, &repo)?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let hub_dir = dir.join("hub");
    emit(&format!("quickstart in {}\n", dir.display()))?;

    let status = Command::new(&exe)
        .args(["hub", "init", "--data-dir"])
        .arg(&hub_dir)
        .args(["--advertise", &addr])
        .stdout(Stdio::null())
        .status()
        .await?;
    if !status.success() {
        bail!("flotilla hub init failed");
    }
    fleet.children.push(spawn(
        &exe,
        &[
            "hub",
            "run",
            "--data-dir",
            &path_str(&hub_dir),
            "--listen",
            &addr,
        ],
        &dir.join("logs/hub.log"),
    )?);
    let config = hub_dir.join("admin.conf");
    let client = wait_for_hub(&config, Duration::from_secs(30)).await?;
    emit(&format!(
        "hub listening on {addr} (log: {})\n",
        dir.join("logs/hub.log").display()
    ))?;

    client
        .add_source(&SourceAddArgs {
            name: "examples".into(),
            repo: format!("file://{}", repo.display()),
            branch: "main".into(),
            paths: vec![".".into()],
            interval: Duration::from_secs(2),
            revision: None,
            no_poll: false,
            paused: false,
            verify_commits: false,
            auth: Default::default(),
            targets: Default::default(),
            helm: Default::default(),
        })
        .await?;
    for (name, labels) in SPOKES {
        // One token per spoke, carrying the spoke's labels: targeting trusts labels the
        // hub handed out, not what a spoke says about itself.
        let join = client
            .create_token(TokenSpec {
                ttl: Duration::from_secs(3600),
                max_uses: 1,
                description: format!("quickstart {name}"),
                labels: flotilla_model::parse_labels(labels)?,
                allow_spoke_labels: Vec::new(),
            })
            .await?
            .join;
        let target = dir.join("targets").join(name);
        fleet.children.push(spawn(
            &exe,
            &[
                "spoke",
                "--join",
                &join,
                "--name",
                name,
                "--labels",
                labels,
                "--target",
                &format!("dir:{}", target.display()),
                "--state-dir",
                &path_str(&dir.join("spokes").join(name)),
            ],
            &dir.join("logs").join(format!("spoke-{name}.log")),
        )?);
    }
    emit("started spokes dev, test, prod; waiting for every bundle to be Ready…\n")?;

    let table_out = Printer {
        format: None,
        no_headers: false,
    };
    let ready = wait_until_ready(&client, args.timeout).await;
    let rows = client.all_status().await.unwrap_or_default();
    table_out.list(&rows)?;
    if let Err(reason) = ready {
        bail!("{reason} (logs are in {})", dir.join("logs").display());
    }
    emit("\n")?;
    if args.exit_when_ready {
        // The hub and spokes stop with us: name only what outlives them.
        emit(&format!(
            "{}\nthe hub and spokes have stopped; their files stay in {}\n",
            where_things_are(&dir, &repo),
            dir.display()
        ))?;
        return Ok(());
    }
    emit(&format!(
        "{}admin CLI:  flotilla --config {} status\n",
        where_things_are(&dir, &repo),
        config.display()
    ))?;
    emit(&format!(
        "\nwatching status; commit to {} to see changes roll out. Ctrl-C stops everything.\n",
        repo.display()
    ))?;
    watch(&client).await
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn spawn(exe: &Path, args: &[&str], log: &Path) -> Result<Child> {
    let log_file = std::fs::File::create(log)?;
    Command::new(exe)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} {}", exe.display(), args.first().unwrap_or(&"")))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Copies the example repo into `dest` and commits it on `main` with the git CLI.
fn make_repo(src: &Path, dest: &Path) -> Result<()> {
    if !src.is_dir() {
        bail!(
            "example repo {} not found; pass --examples DIR",
            src.display()
        );
    }
    copy_dir(src, dest)?;
    for args in [
        vec!["init", "-q", "-b", "main"],
        vec!["add", "-A"],
        vec![
            "-c",
            "user.name=flotilla quickstart",
            "-c",
            "user.email=quickstart@flotilla.invalid",
            "commit",
            "-q",
            "-m",
            "example fleet",
        ],
    ] {
        let out = std::process::Command::new("git")
            .args(&args)
            .current_dir(dest)
            .output()
            .context("running git (is it installed?)")?;
        if !out.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dest.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to)?;
        } else {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

async fn wait_for_hub(config: &Path, timeout: Duration) -> Result<Client> {
    let start = Instant::now();
    loop {
        match Client::connect(Some(config), Some(Duration::from_secs(5))).await {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() > timeout => return Err(e.context("hub did not come up")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Ready means: all three clusters connected, each has at least one bundle, and every
/// status row is Ready. A broken bundle or an unreadable repo fails at once with its
/// error: nothing would fix it while we wait.
async fn wait_until_ready(client: &Client, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut last = String::from("no status yet");
    while start.elapsed() < timeout {
        if let Ok(sources) = client.sources().await
            && let Some(s) = sources.iter().find(|s| !s.error.is_empty())
        {
            return Err(format!("source {} failed: {}", s.name, s.error));
        }
        if let Ok(bundles) = client.bundles().await
            && let Some(b) = bundles.iter().find(|b| !b.error.is_empty())
        {
            return Err(format!("bundle {} is broken: {}", b.name, b.error));
        }
        if let (Ok(clusters), Ok(rows)) = (client.clusters().await, client.all_status().await) {
            let connected = clusters.iter().filter(|c| c.connected).count();
            let with_bundles: BTreeSet<&str> = rows.iter().map(|r| r.cluster.as_str()).collect();
            let not_ready: Vec<&StatusView> = rows.iter().filter(|r| r.state != "Ready").collect();
            if connected == SPOKES.len()
                && with_bundles.len() == SPOKES.len()
                && not_ready.is_empty()
            {
                return Ok(());
            }
            last = format!(
                "{connected}/{} clusters connected, {} of {} bundle deployments not Ready{}",
                SPOKES.len(),
                not_ready.len(),
                rows.len(),
                not_ready
                    .first()
                    .map(|r| format!(
                        " (e.g. {}/{}: {} {})",
                        r.cluster, r.bundle, r.state, r.message
                    ))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("not Ready after {timeout:?}: {last}"))
}

fn where_things_are(dir: &Path, repo: &Path) -> String {
    let rows: Vec<Vec<String>> = SPOKES
        .iter()
        .map(|(name, labels)| {
            let target = dir.join("targets").join(name);
            let files = std::fs::read_dir(&target)
                .map(|rd| {
                    let mut f: Vec<String> = rd
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().to_string())
                        .filter(|n| !n.starts_with('.'))
                        .collect();
                    f.sort();
                    f.join(",")
                })
                .unwrap_or_default();
            vec![
                name.to_string(),
                labels.to_string(),
                target.display().to_string(),
                files,
            ]
        })
        .collect();
    format!(
        "{}\nfleet repo: {}\n",
        table(&["SPOKE", "LABELS", "TARGET DIR", "FILES"], &rows),
        repo.display()
    )
}

/// Redraws the status table whenever a state or deployment changes, until a signal
/// (handled in `run`) ends the quickstart.
async fn watch(client: &Client) -> Result<()> {
    let out = Printer {
        format: None,
        no_headers: false,
    };
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Ok(rows) = client.all_status().await {
            let now: String = rows
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {} {}\n",
                        r.cluster, r.bundle, r.state, r.deployment_id
                    )
                })
                .collect();
            if now != last {
                emit(&format!("\n{}\n", chrono_free_now()))?;
                out.list(&rows)?;
                last = now;
            }
        }
    }
}

fn chrono_free_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("status changed (unix time {secs}):")
}
