//! Issue 8's soak: N simulated spokes against a real hub for a long time, with periodic
//! commits and random spoke restarts. At the end every spoke must have converged on the
//! latest revision of every bundle (nothing lost), and the hub's memory, sampled
//! throughout, should stay flat after warm-up.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flotilla_identity::{Credentials, JoinString};
use rand::Rng;
use tokio::sync::watch;

use crate::hub::HubProcess;
use crate::machine;
use crate::net::Dial;
use crate::repo::FleetRepo;
use crate::sim::{self, SimSettings, SpokeStats};

pub struct SoakConfig {
    pub spokes: usize,
    pub bundles: usize,
    pub duration: Duration,
    pub commit_every: Duration,
    pub restart_every: Duration,
    pub sample_every: Duration,
    pub warm_up: Duration,
    /// Largest RSS growth after warm-up, in percent, that still counts as flat.
    pub max_growth_pct: f64,
    pub bin_dir: Option<std::path::PathBuf>,
}

pub struct SoakResult {
    /// (seconds since start, hub RSS bytes).
    pub rss: Vec<(f64, u64)>,
    pub commits: u64,
    pub restarts: u64,
    pub converged: usize,
    pub failed: usize,
    pub hub_ready_pairs: u64,
}

struct Sim {
    name: String,
    creds: Credentials,
    stats: Arc<SpokeStats>,
    stop: watch::Sender<bool>,
}

fn spawn(settings: &Arc<SimSettings>, dial: &Dial, s: &Sim) {
    let rx = s.stop.subscribe();
    tokio::spawn(sim::run(
        settings.clone(),
        s.name.clone(),
        dial.clone(),
        s.creds.clone(),
        s.stats.clone(),
        rx,
    ));
}

pub async fn run(cfg: &SoakConfig) -> Result<SoakResult> {
    machine::raise_nofile_limit();
    let tmp = tempfile::Builder::new()
        .prefix("flotilla-bench-soak")
        .tempdir()?;
    let work = tmp.path();
    let hub = HubProcess::start(cfg.bin_dir.as_deref(), work).await?;
    let repo_dir = work.join("repo");
    let (bundles, repo_dir2) = (cfg.bundles, repo_dir.clone());
    let repo =
        tokio::task::spawn_blocking(move || FleetRepo::create(&repo_dir2, bundles, 1024)).await??;
    let repo = Arc::new(repo);
    hub.add_source("soak", &repo.url(), 1).await?;
    let join: JoinString = hub
        .token(u32::try_from(cfg.spokes).unwrap_or(u32::MAX))
        .await?
        .parse()?;
    let settings = Arc::new(SimSettings {
        join,
        labels: [("bench".to_string(), "true".to_string())].into(),
        heartbeat: Duration::from_secs(10),
        wait_report_after: sim::WAIT_REPORT_AFTER,
        write_dir: None,
        ready_reports: AtomicU64::new(0),
    });
    let dial = Dial {
        hub: hub.addr.parse().context("hub address")?,
        others: Vec::new(),
        source: None,
    };
    let mut sims = Vec::with_capacity(cfg.spokes);
    for chunk in (0..cfg.spokes).collect::<Vec<_>>().chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (settings, dial) = (settings.clone(), dial.clone());
            set.spawn(async move {
                let name = format!("soak-{i:05}");
                let creds = sim::enroll(&settings, &name, &dial).await;
                (name, creds)
            });
        }
        while let Some(r) = set.join_next().await {
            let (name, creds) = r?;
            let creds = creds.with_context(|| format!("enrolling {name}"))?;
            let (stop, _) = watch::channel(false);
            let s = Sim {
                name,
                creds,
                stats: Arc::new(SpokeStats::default()),
                stop,
            };
            spawn(&settings, &dial, &s);
            sims.push(s);
        }
    }
    let started = Instant::now();
    let pid = hub.pid();
    let mut rss = Vec::new();
    let (mut commits, mut restarts, mut generation) = (0u64, 0u64, 0u64);
    let mut next_commit = started + cfg.commit_every;
    let mut next_restart = started + cfg.restart_every;
    let mut next_sample = started;
    while started.elapsed() < cfg.duration {
        let now = Instant::now();
        if now >= next_sample {
            rss.push((
                started.elapsed().as_secs_f64(),
                machine::rss_bytes(pid).unwrap_or(0),
            ));
            next_sample += cfg.sample_every;
        }
        if now >= next_commit {
            generation += 1;
            let (repo, i, g) = (
                repo.clone(),
                rand::rng().random_range(0..cfg.bundles.max(1)),
                generation,
            );
            tokio::task::spawn_blocking(move || repo.change_bundle(i, g)).await??;
            commits += 1;
            next_commit += cfg.commit_every;
        }
        while now >= next_restart && !sims.is_empty() {
            let s = &mut sims[rand::rng().random_range(0..cfg.spokes)];
            let _ = s.stop.send(true);
            let (stop, _) = watch::channel(false);
            s.stop = stop;
            spawn(&settings, &dial, s);
            restarts += 1;
            next_restart += cfg.restart_every;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing lost: every cluster ends on every bundle, Ready, as the hub sees it.
    let want = u32::try_from(cfg.bundles).unwrap_or(u32::MAX);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ready_pairs;
    loop {
        let clusters = hub.clusters().await?;
        ready_pairs = clusters.iter().map(|c| u64::from(c.bundles_ready)).sum();
        let all = clusters.len() == cfg.spokes
            && clusters
                .iter()
                .all(|c| c.connected && c.bundles == want && c.bundles_ready == want);
        if all {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "after the soak only {ready_pairs} of {} bundle deployments are Ready",
                cfg.spokes * cfg.bundles
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    rss.push((
        started.elapsed().as_secs_f64(),
        machine::rss_bytes(pid).unwrap_or(0),
    ));
    let converged = sims
        .iter()
        .filter(|s| s.stats.ready_count().0 == cfg.bundles)
        .count();
    let failed = sims
        .iter()
        .filter(|s| s.stats.failed.get().is_some())
        .count();
    for s in &sims {
        let _ = s.stop.send(true);
    }
    Ok(SoakResult {
        rss,
        commits,
        restarts,
        converged,
        failed,
        hub_ready_pairs: ready_pairs,
    })
}

/// Hub RSS after the warm-up, split into an earlier and a later half. Memory that keeps
/// growing peaks higher in the later half; memory that has settled moves within a band
/// (the allocator's heaps breathe with the churn) and peaks no higher. Comparing the two
/// peaks, rather than the first sample with the peak, does not depend on where in that
/// band the warm-up happened to end.
pub struct Growth {
    pub from: u64,
    pub to: u64,
    pub early_peak: u64,
    pub late_peak: u64,
    /// The later peak against the earlier one.
    pub percent: f64,
}

/// `None` unless there are at least two samples after the warm-up.
pub fn growth_after_warm_up(cfg: &SoakConfig, r: &SoakResult) -> Option<Growth> {
    let warm: Vec<u64> = r
        .rss
        .iter()
        .filter(|(t, _)| *t >= cfg.warm_up.as_secs_f64())
        .map(|(_, b)| *b)
        .collect();
    if warm.len() < 2 {
        return None;
    }
    let (early, late) = warm.split_at(warm.len() / 2);
    let early_peak = early.iter().copied().max()?;
    let late_peak = late.iter().copied().max()?;
    Some(Growth {
        from: *warm.first()?,
        to: *warm.last()?,
        early_peak,
        late_peak,
        percent: (late_peak as f64 / early_peak.max(1) as f64 - 1.0) * 100.0,
    })
}

pub fn report(cfg: &SoakConfig, r: &SoakResult) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let secs = |d: Duration| {
        let s = d.as_secs_f64();
        if s < 1.0 {
            format!("{:.0} ms", s * 1000.0)
        } else {
            format!("{s:.0} s")
        }
    };
    let mut s = format!(
        "Soak: {} simulated spokes, {} bundles, {:.0} min; a commit every {}, a spoke restart every {}\n\n",
        cfg.spokes,
        cfg.bundles,
        cfg.duration.as_secs_f64() / 60.0,
        secs(cfg.commit_every),
        secs(cfg.restart_every)
    );
    s.push_str(&format!(
        "commits {}, spoke restarts {} ({:.1} per spoke), spokes converged on every bundle {}/{}, failed {}, Ready pairs on the hub {}\n\n| t | hub RSS |\n|---|---|\n",
        r.commits,
        r.restarts,
        r.restarts as f64 / cfg.spokes.max(1) as f64,
        r.converged,
        cfg.spokes,
        r.failed,
        r.hub_ready_pairs
    ));
    for (t, b) in &r.rss {
        s.push_str(&format!("| {t:.0} s | {:.1} MiB |\n", mib(*b)));
    }
    if let Some(g) = growth_after_warm_up(cfg, r) {
        s.push_str(&format!(
            "\nafter warm-up ({:.0} s): {:.1} MiB -> {:.1} MiB; peak {:.1} MiB in the first half, {:.1} MiB in the second ({:+.1}%): {}\n",
            cfg.warm_up.as_secs_f64(),
            mib(g.from),
            mib(g.to),
            mib(g.early_peak),
            mib(g.late_peak),
            g.percent,
            if g.percent <= cfg.max_growth_pct {
                format!("flat (within {:.1}%)", cfg.max_growth_pct)
            } else {
                format!("NOT flat (more than {:.1}%)", cfg.max_growth_pct)
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(warm_up_secs: u64) -> SoakConfig {
        SoakConfig {
            spokes: 10,
            bundles: 1,
            duration: Duration::from_secs(600),
            commit_every: Duration::from_secs(30),
            restart_every: Duration::from_millis(100),
            sample_every: Duration::from_secs(30),
            warm_up: Duration::from_secs(warm_up_secs),
            max_growth_pct: 2.0,
            bin_dir: None,
        }
    }

    fn result(rss: &[(f64, u64)]) -> SoakResult {
        SoakResult {
            rss: rss.to_vec(),
            commits: 0,
            restarts: 0,
            converged: 10,
            failed: 0,
            hub_ready_pairs: 10,
        }
    }

    #[test]
    fn settled_memory_that_moves_within_a_band_is_flat() {
        // Ends its warm-up in a trough, then breathes: no higher later than earlier.
        let r = result(&[
            (0.0, 50),
            (30.0, 100),
            (60.0, 103),
            (90.0, 101),
            (120.0, 102),
            (150.0, 100),
        ]);
        let g = growth_after_warm_up(&cfg(30), &r).expect("samples after warm-up");
        assert_eq!(
            (g.from, g.to, g.early_peak, g.late_peak),
            (100, 100, 103, 102)
        );
        assert!(g.percent < 0.0, "{}", g.percent);
        assert!(report(&cfg(30), &r).contains("flat (within 2.0%)"));
    }

    #[test]
    fn memory_that_keeps_growing_is_not_flat() {
        let r = result(&[(30.0, 100), (60.0, 101), (90.0, 103), (120.0, 104)]);
        let g = growth_after_warm_up(&cfg(30), &r).expect("samples after warm-up");
        assert_eq!((g.early_peak, g.late_peak), (101, 104));
        assert!(
            (g.percent - 100.0 * 3.0 / 101.0).abs() < 1e-9,
            "{}",
            g.percent
        );
        assert!(report(&cfg(30), &r).contains("NOT flat"));
    }

    #[test]
    fn a_later_bulge_that_shrinks_before_the_end_is_not_flat() {
        let r = result(&[(30.0, 100), (60.0, 100), (90.0, 110), (120.0, 100)]);
        assert!(report(&cfg(30), &r).contains("NOT flat"));
    }

    #[test]
    fn fewer_than_two_samples_after_warm_up_give_no_verdict() {
        let r = result(&[(0.0, 100), (30.0, 120), (60.0, 121)]);
        assert!(growth_after_warm_up(&cfg(60), &r).is_none());
        assert!(growth_after_warm_up(&cfg(90), &r).is_none());
    }
}
