//! `flotilla-bench`: fleet-scale benchmarks against real hub and spoke processes.
//! Parses arguments, runs a scenario from the library, prints its table.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use flotilla_bench::fleet::{self, FleetConfig};
use flotilla_bench::machine::Machine;
use flotilla_bench::{ha, kube_apply, repo_bench, report, restart, soak, spoke_idle, spoke_rss};
use flotilla_model::duration::parse_duration;

/// jemalloc, as the hub: this one process holds thousands of simulated spokes on every
/// core, and glibc malloc's arena locks and free-chunk merging were a sixth of its CPU
/// in a fan-out (`docs/benchmarks.md`), time taken from the hub it measures. One real
/// spoke per process has no such contention.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "flotilla-bench",
    about = "Fleet-scale benchmarks for flotilla (see docs/benchmarks.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Everything on one hub: registration, idle memory, B bundles from empty, fan-outs, bytes.
    Fleet(FleetArgs),
    /// Registration and idle hub memory only (no bundles).
    Register(FleetArgs),
    /// One bundle, then single-bundle commits: fan-out latency and bytes.
    Fanout(FleetArgs),
    /// Hub replicas on a 3-member etcd: fan-out latency and etcd writes per commit,
    /// leader failover (kill -9), then the same fan-outs on one redb hub.
    Ha(HaArgs),
    /// A real flotilla-spoke's RSS, idle and after B bundles to a directory target.
    SpokeRss(SpokeRssArgs),
    /// A real flotilla-spoke's Kubernetes API requests while idle with B bundles of N
    /// objects, from kube-apiserver's own metrics (needs `tests/k8s/up DIR`).
    SpokeIdle(SpokeIdleArgs),
    /// The spoke's applier against `kubectl apply --server-side` on a real API server
    /// (first apply of 1,000 objects), and edit-to-correction time (needs `tests/k8s/up DIR`).
    KubeApply(KubeApplyArgs),
    /// (f) Renderer throughput on a generated repo of B bundles.
    Render(RepoArgs),
    /// (g) The hub's gix fetch of a new commit against `git fetch`, same repo.
    Git(RepoArgs),
    /// Reconnect spread of real spokes after the hub is SIGKILLed and restarted.
    Restart(RestartArgs),
    /// Long run with periodic commits and random spoke restarts; nothing may be lost.
    Soak(SoakArgs),
}

#[derive(Debug, Args)]
struct SoakArgs {
    #[arg(long, default_value_t = 1000)]
    spokes: usize,
    #[arg(long, default_value_t = 10)]
    bundles: usize,
    /// Warm-up plus the time the flat-memory check covers.
    #[arg(long, default_value = "20m", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    commit_every: Duration,
    /// One random spoke is restarted this often (each spoke about every 10 s by default).
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    restart_every: Duration,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    sample_every: Duration,
    /// Time before the flat-memory check starts: the hub's RSS rises under restart
    /// churn until the allocator's heaps settle (see docs/benchmarks.md, Soak).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    warm_up: Duration,
    /// Largest hub RSS growth after warm-up, in percent, that still counts as flat: the
    /// peak of the second half of the samples after warm-up against the first half's.
    #[arg(long, default_value_t = 2.0)]
    max_growth: f64,
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct HaArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// The replicas' `--leader-lease` (failover waits for it to expire).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_lease: Duration,
    /// The etcd binary (default: ~/.cache/flotilla-tools/bin/etcd).
    #[arg(long)]
    etcd: Option<PathBuf>,
    /// Skip the single redb hub comparison.
    #[arg(long)]
    no_redb: bool,
}

#[derive(Debug, Args)]
struct RestartArgs {
    #[arg(long, default_value_t = 100)]
    spokes: usize,
    /// How long the hub stays down.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    down: Duration,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RepoArgs {
    #[arg(long, default_value_t = 1000)]
    bundles: usize,
    #[arg(long, default_value_t = 4096)]
    bundle_bytes: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

#[derive(Debug, Args)]
struct FleetArgs {
    #[arg(long, default_value_t = 1000)]
    spokes: usize,
    /// Bundles in the generated repo (fleet: default 50; fanout: 1; register: 0).
    #[arg(long)]
    bundles: Option<usize>,
    /// ConfigMap payload per bundle, bytes.
    #[arg(long, default_value_t = 4096)]
    bundle_bytes: usize,
    /// Fresh hubs to repeat the scenario on; the tables show each run and the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Single-bundle commits per run.
    #[arg(long, default_value_t = 3)]
    fanouts: usize,
    /// Enrollments and first connects in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Source poll interval: the fan-out trigger (there is no webhook yet).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// A simulated apply slower than this reports WaitApplied before its outcome, as the
    /// real spoke; 0s reports it before every apply (two reports per Assign).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    wait_report_after: Duration,
    /// Spread connections over source addresses 127.0.0.1..=127.0.0.K (0: kernel's choice).
    #[arg(long, default_value_t = 0)]
    source_ips: u8,
    /// Write each bundle into a per-spoke directory instead of a no-op apply.
    #[arg(long)]
    write_dir: bool,
    /// Where flotilla-hub and flotilla-spoke are (default: beside this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where hub data, the repo and logs go (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Longest any phase may take.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    phase_timeout: Duration,
    /// Pause with all spokes idle before reading the hub's RSS. At least jemalloc's
    /// 10 s dirty-page decay: read sooner, the RSS still counts pages the hub has
    /// already freed (docs/benchmarks.md, memory per idle spoke).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    idle_settle: Duration,
    /// Record a `perf` profile of the hub per phase into DIR/<phase>.data.
    #[arg(long, value_name = "DIR")]
    profile: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct KubeApplyArgs {
    /// The control plane's folder, as given to `tests/k8s/up`.
    #[arg(long)]
    k8s_dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 300)]
    deployments: usize,
    #[arg(long, default_value_t = 300)]
    services: usize,
    #[arg(long, default_value_t = 100)]
    custom_resources: usize,
    #[arg(long, default_value_t = 298)]
    configmaps: usize,
    /// Out-of-band edits timed to their correction.
    #[arg(long, default_value_t = 20)]
    edits: usize,
}

#[derive(Debug, Args)]
struct SpokeIdleArgs {
    /// The control plane's folder, as given to `tests/k8s/up`.
    #[arg(long)]
    k8s_dir: PathBuf,
    #[arg(long, default_value_t = 50)]
    bundles: usize,
    /// Objects (ConfigMaps) per bundle.
    #[arg(long, default_value_t = 20)]
    objects: usize,
    /// The idle window, measured with the API server alone and with the spoke.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    window: Duration,
    /// Wait after the last bundle is Ready before the window starts.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    settle: Duration,
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SpokeRssArgs {
    #[arg(long, default_value_t = 50)]
    bundles: usize,
    #[arg(long, default_value_t = 4096)]
    bundle_bytes: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// RSS sampling window in each state.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    window: Duration,
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn fleet_config(a: FleetArgs, default_bundles: usize) -> FleetConfig {
    let bundles = a.bundles.unwrap_or(default_bundles);
    FleetConfig {
        spokes: a.spokes,
        bundles,
        bundle_bytes: a.bundle_bytes,
        runs: a.runs,
        fanouts: if bundles == 0 { 0 } else { a.fanouts },
        concurrency: a.concurrency,
        interval_secs: a.interval.as_secs().max(1),
        heartbeat: a.heartbeat,
        wait_report_after: a.wait_report_after,
        source_ips: a.source_ips,
        write_dir: a.write_dir,
        bin_dir: a.bin_dir,
        work_dir: a.work_dir,
        phase_timeout: a.phase_timeout,
        idle_settle: a.idle_settle,
        verbose: true,
        profile: a.profile,
    }
}

fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let limit = flotilla_bench::machine::raise_nofile_limit();
    eprintln!("[flotilla-bench] open-file limit {limit}");
    let machine = Machine::describe();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Fleet(a) | Cmd::Register(a) | Cmd::Fanout(a) if a.spokes == 0 => {
                bail!("--spokes must be at least 1")
            }
            Cmd::Fleet(a) => print_fleet(&machine, fleet_config(a, 50)).await,
            Cmd::Register(a) => print_fleet(&machine, fleet_config(a, 0)).await,
            Cmd::Fanout(a) => print_fleet(&machine, fleet_config(a, 1)).await,
            Cmd::Ha(a) if a.fleet.spokes == 0 || a.replicas < 2 => {
                bail!("--spokes must be at least 1 and --replicas at least 2")
            }
            Cmd::Ha(a) => {
                let fleet = FleetConfig {
                    bundles: 1,
                    runs: 1,
                    ..fleet_config(a.fleet, 1)
                };
                let cfg = ha::HaConfig {
                    fleet,
                    replicas: a.replicas,
                    leader_lease: a.leader_lease,
                    etcd: a.etcd,
                    redb: !a.no_redb,
                };
                let result = ha::run(&cfg).await?;
                println!("{}", ha::report(&cfg, &machine, &result));
                Ok(())
            }
            Cmd::Soak(a) => {
                let cfg = soak::SoakConfig {
                    spokes: a.spokes,
                    bundles: a.bundles,
                    duration: a.duration,
                    commit_every: a.commit_every,
                    restart_every: a.restart_every,
                    sample_every: a.sample_every,
                    warm_up: a.warm_up,
                    max_growth_pct: a.max_growth,
                    bin_dir: a.bin_dir,
                };
                let r = soak::run(&cfg).await?;
                println!("{}\n{}", machine_line(&machine), soak::report(&cfg, &r));
                match soak::growth_after_warm_up(&cfg, &r) {
                    Some(g) if g.percent > cfg.max_growth_pct => bail!(
                        "hub memory after warm-up peaked {:+.1}% higher in its second half than in its first (more than {:.1}%)",
                        g.percent,
                        cfg.max_growth_pct
                    ),
                    Some(_) => Ok(()),
                    None => bail!("fewer than two memory samples after the warm-up; lengthen --duration"),
                }
            }
            Cmd::Restart(a) => {
                let cfg = restart::RestartConfig {
                    spokes: a.spokes,
                    down: a.down,
                    runs: a.runs,
                    bin_dir: a.bin_dir,
                };
                let runs = restart::run(&cfg).await?;
                println!(
                    "{}\n{}",
                    machine_line(&machine),
                    restart::report(&cfg, &runs)
                );
                Ok(())
            }
            Cmd::Render(a) => {
                let dir = tempfile::tempdir()?;
                let runs =
                    repo_bench::render_throughput(dir.path(), a.bundles, a.bundle_bytes, a.runs)?;
                println!(
                    "{}\n{}",
                    machine_line(&machine),
                    repo_bench::report_render(&runs)
                );
                Ok(())
            }
            Cmd::Git(a) => {
                let dir = tempfile::tempdir()?;
                let runs = repo_bench::fetch_ratio(dir.path(), a.bundles, a.bundle_bytes, a.runs)?;
                println!(
                    "{}\n{}",
                    machine_line(&machine),
                    repo_bench::report_fetch(&runs)
                );
                Ok(())
            }
            Cmd::SpokeRss(a) => {
                let cfg = spoke_rss::SpokeRssConfig {
                    bundles: a.bundles,
                    bundle_bytes: a.bundle_bytes,
                    runs: a.runs,
                    window: a.window,
                    bin_dir: a.bin_dir,
                    timeout: Duration::from_secs(300),
                };
                let runs = spoke_rss::run(&cfg).await?;
                println!("{}", spoke_rss::report(&cfg, &machine, &runs));
                Ok(())
            }
            Cmd::KubeApply(a) => {
                let cfg = kube_apply::KubeApplyConfig {
                    k8s_dir: a.k8s_dir,
                    runs: a.runs.max(1),
                    deployments: a.deployments,
                    services: a.services,
                    custom_resources: a.custom_resources,
                    configmaps: a.configmaps,
                    edits: a.edits.max(1),
                };
                let result = kube_apply::run(&cfg).await?;
                println!("{}\n{}", machine_line(&machine), kube_apply::report(&cfg, &result));
                Ok(())
            }
            Cmd::SpokeIdle(a) => {
                let cfg = spoke_idle::SpokeIdleConfig {
                    bundles: a.bundles,
                    objects: a.objects,
                    window: a.window,
                    settle: a.settle,
                    k8s_dir: a.k8s_dir,
                    bin_dir: a.bin_dir,
                    timeout: Duration::from_secs(600),
                };
                let result = spoke_idle::run(&cfg).await?;
                println!("{}", spoke_idle::report(&cfg, &machine, &result));
                Ok(())
            }
        }
    })
}

fn machine_line(m: &Machine) -> String {
    m.to_string()
}

async fn print_fleet(machine: &Machine, cfg: FleetConfig) -> Result<()> {
    let runs = fleet::run(&cfg).await?;
    println!("{}", report::fleet(&cfg, machine, &runs));
    Ok(())
}
