//! Issue 8's reconnect spread: N real `flotilla-spoke` processes are connected to a hub,
//! the hub is SIGKILLed, kept down for a while, and started again; the time at which
//! each cluster shows connected again (polled through the Admin API) gives the spread
//! of reconnects, which the spokes' jittered exponential backoff should keep wide.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::hub::{HubProcess, find_bin};
use crate::stats::median;

pub struct RestartConfig {
    pub spokes: usize,
    pub down: Duration,
    pub runs: usize,
    pub bin_dir: Option<PathBuf>,
}

pub struct RestartRun {
    /// Seconds after the hub listened again at which each spoke was seen connected.
    pub reconnects: Vec<f64>,
}

struct Spokes(Vec<Child>);

impl Drop for Spokes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn connected(hub: &HubProcess) -> Result<BTreeMap<String, bool>> {
    Ok(hub
        .clusters()
        .await?
        .into_iter()
        .map(|c| (c.name, c.connected))
        .collect())
}

pub async fn run_once(cfg: &RestartConfig, work: &Path) -> Result<RestartRun> {
    let mut hub = HubProcess::start(cfg.bin_dir.as_deref(), work).await?;
    let join = hub
        .token(u32::try_from(cfg.spokes).unwrap_or(u32::MAX))
        .await?;
    let spoke_bin = find_bin(cfg.bin_dir.as_deref(), "flotilla-spoke")?;
    let mut spokes = Spokes(Vec::new());
    for i in 0..cfg.spokes {
        let name = format!("spoke-{i:04}");
        spokes.0.push(
            Command::new(&spoke_bin)
                .args(["--join", &join, "--name", &name, "--labels", "bench=true"])
                .arg("--target")
                .arg(format!(
                    "dir:{}",
                    work.join("targets").join(&name).display()
                ))
                .arg("--state-dir")
                .arg(work.join("state").join(&name))
                .args(["--log-level", "warn"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting flotilla-spoke")?,
        );
    }
    let started = Instant::now();
    loop {
        let c = connected(&hub).await?;
        if c.values().filter(|v| **v).count() == cfg.spokes {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("only {} of {} spokes connected", c.len(), cfg.spokes);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    hub.kill();
    tokio::time::sleep(cfg.down).await;
    hub.restart(cfg.bin_dir.as_deref()).await?;
    let up = Instant::now();
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    while seen.len() < cfg.spokes {
        if up.elapsed() > Duration::from_secs(300) {
            bail!("only {} of {} spokes came back", seen.len(), cfg.spokes);
        }
        let t = up.elapsed().as_secs_f64();
        for (name, on) in connected(&hub).await? {
            if on {
                seen.entry(name).or_insert(t);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    hub.kill();
    Ok(RestartRun {
        reconnects: seen.into_values().collect(),
    })
}

pub async fn run(cfg: &RestartConfig) -> Result<Vec<RestartRun>> {
    let mut out = Vec::new();
    for _ in 0..cfg.runs.max(1) {
        let dir = tempfile::Builder::new()
            .prefix("flotilla-bench-restart")
            .tempdir()?;
        out.push(run_once(cfg, dir.path()).await?);
    }
    Ok(out)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn report(cfg: &RestartConfig, runs: &[RestartRun]) -> String {
    let mut s = format!(
        "Reconnect spread after a hub SIGKILL: {} real spokes, hub down {:.0} s, seconds from the hub listening again until each spoke shows connected\n\n| run | first | p10 | p50 | p90 | last | spokes in the busiest 100 ms |\n|---|---|---|---|---|---|---|\n",
        cfg.spokes,
        cfg.down.as_secs_f64()
    );
    let mut rows = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let mut v = r.reconnects.clone();
        v.sort_by(f64::total_cmp);
        let mut buckets: BTreeMap<u64, usize> = BTreeMap::new();
        for t in &v {
            *buckets.entry((t * 10.0) as u64).or_default() += 1;
        }
        let busiest = buckets.values().copied().max().unwrap_or(0);
        let row = [
            pct(&v, 0.0),
            pct(&v, 0.1),
            pct(&v, 0.5),
            pct(&v, 0.9),
            pct(&v, 1.0),
        ];
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {busiest} |\n",
            i + 1,
            row[0],
            row[1],
            row[2],
            row[3],
            row[4]
        ));
        rows.push((row, busiest as f64));
    }
    let m = |k: usize| median(rows.iter().map(|(r, _)| r[k])).unwrap_or(0.0);
    s.push_str(&format!(
        "| median | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |\n",
        m(0),
        m(1),
        m(2),
        m(3),
        m(4),
        median(rows.iter().map(|(_, b)| *b)).unwrap_or(0.0)
    ));
    s
}
