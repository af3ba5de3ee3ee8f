//! Memory of a real `flotilla-spoke`: idle and connected, then after it has applied B
//! bundles to a directory target. RSS (`VmRSS`) is sampled once a second over a window
//! and the largest sample is kept.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::fleet::SOURCE;
use crate::hub::{HubProcess, find_bin};
use crate::machine::{self, Machine};
use crate::repo::FleetRepo;
use crate::stats::median;

#[derive(Debug, Clone)]
pub struct SpokeRssConfig {
    pub bundles: usize,
    pub bundle_bytes: usize,
    pub runs: usize,
    /// How long RSS is sampled in each state.
    pub window: Duration,
    pub bin_dir: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct SpokeRssResult {
    pub idle_rss: u64,
    pub loaded_rss: u64,
    pub loaded_fds: usize,
    pub applied_files: usize,
}

/// A child process killed when dropped.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn sample_max(pid: u32, window: Duration) -> u64 {
    let start = Instant::now();
    let mut max = 0;
    while start.elapsed() < window {
        max = max.max(machine::rss_bytes(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    max
}

/// Waits until the one cluster is connected with at least `ready_bundles` Ready.
pub(crate) async fn wait_cluster(
    hub: &HubProcess,
    timeout: Duration,
    ready_bundles: u32,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let c = hub.clusters().await?;
        if c.iter()
            .any(|c| c.connected && c.bundles_ready >= ready_bundles)
        {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "the real spoke did not reach {ready_bundles} Ready bundles within {timeout:?}: {c:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run_once(cfg: &SpokeRssConfig) -> Result<SpokeRssResult> {
    let tmp = tempfile::Builder::new()
        .prefix("flotilla-bench-spoke")
        .tempdir()?;
    let work: &Path = tmp.path();
    let hub = HubProcess::start(cfg.bin_dir.as_deref(), work).await?;
    let join = hub.token(1).await?;
    let target = work.join("target");
    let spoke = Killed(
        Command::new(find_bin(cfg.bin_dir.as_deref(), "flotilla-spoke")?)
            .args([
                "--join",
                &join,
                "--name",
                "real-spoke",
                "--labels",
                "bench=true",
            ])
            .arg("--target")
            .arg(format!("dir:{}", target.display()))
            .arg("--state-dir")
            .arg(work.join("spoke-state"))
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("spoke.log"))?)
            .spawn()
            .context("starting flotilla-spoke")?,
    );
    let pid = spoke.0.id();
    wait_cluster(&hub, cfg.timeout, 0).await?;
    let idle_rss = sample_max(pid, cfg.window).await;
    let repo = FleetRepo::create(&work.join("repo"), cfg.bundles, cfg.bundle_bytes)?;
    hub.add_source(SOURCE, &repo.url(), 1).await?;
    wait_cluster(
        &hub,
        cfg.timeout,
        u32::try_from(cfg.bundles).unwrap_or(u32::MAX),
    )
    .await?;
    let loaded_rss = sample_max(pid, cfg.window).await;
    let applied_files = std::fs::read_dir(&target).map_or(0, |d| d.count());
    Ok(SpokeRssResult {
        idle_rss,
        loaded_rss,
        loaded_fds: machine::open_fds(pid).unwrap_or(0),
        applied_files,
    })
}

pub async fn run(cfg: &SpokeRssConfig) -> Result<Vec<SpokeRssResult>> {
    let mut out = Vec::new();
    for r in 0..cfg.runs.max(1) {
        eprintln!(
            "[flotilla-bench] spoke-rss run {}/{}",
            r + 1,
            cfg.runs.max(1)
        );
        out.push(run_once(cfg).await?);
    }
    Ok(out)
}

pub fn report(cfg: &SpokeRssConfig, machine: &Machine, runs: &[SpokeRssResult]) -> String {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
    let mut o = String::new();
    let _ = writeln!(o, "{machine}");
    let _ = writeln!(
        o,
        "\n(e) Real flotilla-spoke RSS (max of 1 s samples over {} s), idle, then after {} bundles of {} B payload to a directory target (target: idle ≤ 20 MiB)\n",
        cfg.window.as_secs(),
        cfg.bundles,
        cfg.bundle_bytes
    );
    let _ = writeln!(
        o,
        "| run | idle RSS | RSS after {} bundles | files written | fds |",
        cfg.bundles
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            i + 1,
            mib(r.idle_rss),
            mib(r.loaded_rss),
            r.applied_files,
            r.loaded_fds
        );
    }
    let _ = writeln!(
        o,
        "| median | {} | {} | | |",
        mib(median(runs.iter().map(|r| r.idle_rss)).unwrap_or(0)),
        mib(median(runs.iter().map(|r| r.loaded_rss)).unwrap_or(0))
    );
    o
}
