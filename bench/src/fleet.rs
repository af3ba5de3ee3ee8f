//! The fleet scenario: one real hub process, N simulated spokes, and the phases the
//! issue measures, in order, on the same hub:
//!
//! 1. **register** - N spokes enroll and open their Sync streams (bounded concurrency);
//!    then hub RSS with N idle spokes and no bundles.
//! 2. **initial** - a source with B bundles targeting every cluster is added to the hub;
//!    time until every spoke has reported every bundle Ready.
//! 3. **fan-out** - commits that change one bundle; the hub polls the repo every
//!    `interval`; time from the commit until every spoke reported the new deployment
//!    Ready (p50/p99/max per spoke), and the bytes the hub sent meanwhile.
//!
//! Client-side times are when a simulated spoke queued its Ready status; the hub's own
//! view (Admin `ListBundles`) is then polled until it agrees, and that time is reported
//! as well.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flotilla_identity::JoinString;
use tokio::sync::{Semaphore, watch};

use crate::hub::HubProcess;
use crate::machine;
use crate::net::Dial;
use crate::repo::{FleetRepo, bundle_folder};
use crate::sim::{self, SimSettings, SpokeStats};
use crate::stats::percentile;

/// Name of the source the scenario adds; bundles are `bench-app-NNNN`.
pub const SOURCE: &str = "bench";

#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub spokes: usize,
    /// Bundles in the repo (0 skips the initial and fan-out phases).
    pub bundles: usize,
    /// Payload of each bundle's ConfigMap, in bytes.
    pub bundle_bytes: usize,
    /// Fresh hubs to run the whole scenario on.
    pub runs: usize,
    /// Single-bundle commits per run.
    pub fanouts: usize,
    /// Enrollments and first connects in flight at once.
    pub concurrency: usize,
    /// Source poll interval, seconds (the fan-out trigger).
    pub interval_secs: u64,
    pub heartbeat: Duration,
    /// A simulated apply slower than this reports WaitApplied first (zero: always, two
    /// reports per Assign, as spokes before issue 18 did).
    pub wait_report_after: Duration,
    /// Spread connections over 127.0.0.1 .. 127.0.0.K (0: let the kernel choose).
    pub source_ips: u8,
    /// Write bundles into per-spoke directories instead of a no-op apply.
    pub write_dir: bool,
    /// Where flotilla-hub is; default: beside this executable.
    pub bin_dir: Option<PathBuf>,
    /// Where hub data, the repo and logs go; default: a temporary directory.
    pub work_dir: Option<PathBuf>,
    /// Longest any one phase may take before the run fails.
    pub phase_timeout: Duration,
    /// Pause with all spokes idle before reading the hub's RSS.
    pub idle_settle: Duration,
    /// Print progress to stderr.
    pub verbose: bool,
    /// Record a `perf` profile of the hub for each phase into this directory.
    pub profile: Option<PathBuf>,
}

impl FleetConfig {
    pub fn new(spokes: usize, bundles: usize) -> FleetConfig {
        FleetConfig {
            spokes,
            bundles,
            bundle_bytes: 4096,
            runs: 3,
            fanouts: 3,
            concurrency: 256,
            interval_secs: 1,
            heartbeat: Duration::from_secs(10),
            wait_report_after: crate::sim::WAIT_REPORT_AFTER,
            source_ips: 0,
            write_dir: false,
            bin_dir: None,
            work_dir: None,
            phase_timeout: Duration::from_secs(900),
            idle_settle: Duration::from_secs(3),
            verbose: true,
            profile: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RegisterResult {
    pub connected: usize,
    pub duration: Duration,
    pub hub_cpu_secs: f64,
    pub hub_rss_before: u64,
    pub hub_rss_idle: u64,
    pub hub_fds_idle: usize,
    pub client_rss_idle: u64,
}

impl RegisterResult {
    pub fn hub_bytes_per_spoke(&self) -> f64 {
        self.hub_rss_idle.saturating_sub(self.hub_rss_before) as f64 / self.connected.max(1) as f64
    }
}

#[derive(Debug, Clone, Default)]
pub struct InitialResult {
    pub pairs: usize,
    pub duration: Duration,
    pub hub_confirmed: Option<Duration>,
    pub hub_cpu_secs: f64,
    pub hub_rss_after: u64,
    pub wire_bytes: u64,
    pub content_bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct FanoutResult {
    pub spokes: usize,
    /// Commit until the hub logged the revision as published (poll + fetch + load).
    pub published: Option<Duration>,
    pub first_assign: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub hub_confirmed: Option<Duration>,
    pub hub_cpu_secs: f64,
    /// Bytes received on all Sync connections while the fan-out ran.
    pub wire_bytes: u64,
    /// Encoded Assign messages (protobuf only).
    pub assign_bytes: u64,
    /// Bundle size × spokes: the least any protocol could send.
    pub min_bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub register: RegisterResult,
    pub initial: Option<InitialResult>,
    pub fanouts: Vec<FanoutResult>,
    pub failed_spokes: usize,
    pub errors: u64,
    pub first_failure: Option<String>,
}

/// `perf record` attached to the hub for one phase; stopped (SIGINT, so it writes its
/// file) when dropped.
struct Profile(Option<std::process::Child>);

impl Profile {
    fn start(cfg: &FleetConfig, pid: u32, phase: &str) -> Profile {
        let Some(dir) = &cfg.profile else {
            return Profile(None);
        };
        let _ = std::fs::create_dir_all(dir);
        let child = std::process::Command::new("perf")
            .args([
                "record",
                "-F",
                "199",
                "--call-graph",
                "dwarf,16384",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(dir.join(format!("{phase}.data")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Err(e) = &child {
            eprintln!("[flotilla-bench] perf record did not start: {e}");
        }
        Profile(child.ok())
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

pub(crate) fn log(cfg: &FleetConfig, msg: impl AsRef<str>) {
    if cfg.verbose {
        eprintln!("[flotilla-bench] {}", msg.as_ref());
    }
}

pub(crate) fn bundle_name(i: usize) -> String {
    format!("{SOURCE}-{}", bundle_folder(i))
}

/// Waits (bounded by `timeout`) for `done` to report true, polling every `every`.
pub(crate) async fn wait_for(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut done: impl FnMut() -> (bool, String),
) -> Result<()> {
    let start = Instant::now();
    loop {
        let (ok, state) = done();
        if ok {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last state: {state}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs the whole scenario `cfg.runs` times, each on a fresh hub.
pub async fn run(cfg: &FleetConfig) -> Result<Vec<RunResult>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    machine::raise_nofile_limit();
    let mut out = Vec::new();
    for r in 0..cfg.runs.max(1) {
        log(cfg, format!("run {}/{}", r + 1, cfg.runs.max(1)));
        out.push(run_once(cfg).await?);
    }
    Ok(out)
}

/// One run on a fresh hub.
pub async fn run_once(cfg: &FleetConfig) -> Result<RunResult> {
    let tmp;
    let work = match &cfg.work_dir {
        Some(d) => {
            let d = d.join(format!("run-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d)?;
            d
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("flotilla-bench")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let hub = HubProcess::start(cfg.bin_dir.as_deref(), &work).await?;
    let result = drive(cfg, &hub, &work).await;
    if result.is_err() {
        eprintln!("[flotilla-bench] hub log tail:\n{}", hub.log_tail(20));
    }
    result
}

async fn drive(cfg: &FleetConfig, hub: &HubProcess, work: &std::path::Path) -> Result<RunResult> {
    let n = cfg.spokes;
    let pid = hub.pid();
    let hub_addr = hub.addr.parse().context("hub address")?;
    let join: JoinString = hub
        .token(u32::try_from(n).unwrap_or(u32::MAX).max(1))
        .await?
        .parse()?;
    let settings = Arc::new(SimSettings {
        join,
        labels: [("bench".to_string(), "true".to_string())].into(),
        heartbeat: cfg.heartbeat,
        wait_report_after: cfg.wait_report_after,
        write_dir: cfg.write_dir.then(|| work.join("targets")),
        ready_reports: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let stats: Vec<Arc<SpokeStats>> = (0..n).map(|_| Arc::new(SpokeStats::default())).collect();

    // Phase 1: registration and connect.
    let hub_rss_before = machine::rss_bytes(pid).unwrap_or(0);
    let cpu0 = machine::cpu_seconds(pid).unwrap_or(0.0);
    let profile = Profile::start(cfg, pid, "register");
    let start = Instant::now();
    spawn_spokes(cfg.concurrency, &settings, &stats, &stop_rx, |i| Dial {
        hub: hub_addr,
        others: Vec::new(),
        source: (cfg.source_ips > 0).then(|| {
            let k = u8::try_from(i % usize::from(cfg.source_ips)).unwrap_or(0);
            std::net::IpAddr::from([127, 0, 0, 1 + k])
        }),
    });
    let n_failed =
        |stats: &[Arc<SpokeStats>]| stats.iter().filter(|s| s.failed.get().is_some()).count();
    wait_for(
        "every spoke to register and connect",
        cfg.phase_timeout,
        Duration::from_millis(10),
        || {
            let connected = stats
                .iter()
                .filter(|s| s.first_connected.get().is_some())
                .count();
            let failed = n_failed(&stats);
            (
                connected + failed >= n,
                format!("{connected} connected, {failed} failed of {n}"),
            )
        },
    )
    .await?;
    let last_connect = stats
        .iter()
        .filter_map(|s| s.first_connected.get().copied())
        .max();
    let duration = last_connect.map_or(Duration::ZERO, |t| t.duration_since(start));
    let connected = stats
        .iter()
        .filter(|s| s.first_connected.get().is_some())
        .count();
    let reg_cpu = machine::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    drop(profile);
    log(
        cfg,
        format!(
            "{connected}/{n} spokes registered and connected in {duration:.2?} (hub CPU {reg_cpu:.1} s)"
        ),
    );
    // The hub must agree they are connected before the idle figure means anything.
    let hub_connected = wait_hub_connected(hub, connected, cfg.phase_timeout).await?;
    tokio::time::sleep(cfg.idle_settle).await;
    let register = RegisterResult {
        connected: hub_connected,
        duration,
        hub_cpu_secs: reg_cpu,
        hub_rss_before,
        hub_rss_idle: machine::rss_bytes(pid).unwrap_or(0),
        hub_fds_idle: machine::open_fds(pid).unwrap_or(0),
        client_rss_idle: machine::rss_bytes(std::process::id()).unwrap_or(0),
    };
    log(
        cfg,
        format!(
            "hub RSS {} MiB before, {} MiB with {} idle spokes: {:.1} KiB per spoke",
            register.hub_rss_before >> 20,
            register.hub_rss_idle >> 20,
            register.connected,
            register.hub_bytes_per_spoke() / 1024.0
        ),
    );

    let mut result = RunResult {
        register,
        ..Default::default()
    };
    let live: Vec<Arc<SpokeStats>> = stats
        .iter()
        .filter(|s| s.first_connected.get().is_some() && s.failed.get().is_none())
        .cloned()
        .collect();

    if cfg.bundles > 0 && !live.is_empty() {
        // Phase 2: B bundles to every spoke, from an empty hub.
        let repo = FleetRepo::create(&work.join("repo"), cfg.bundles, cfg.bundle_bytes)?;
        let wire0 = sum(&live, |s| s.received_bytes.load(Ordering::Relaxed));
        let content0 = sum(&live, |s| s.assign_content_bytes.load(Ordering::Relaxed));
        let cpu0 = machine::cpu_seconds(pid).unwrap_or(0.0);
        let profile = Profile::start(cfg, pid, "initial");
        let t0 = Instant::now();
        hub.add_source(SOURCE, &repo.url(), cfg.interval_secs)
            .await?;
        let b = cfg.bundles;
        wait_for(
            "every spoke to report every bundle Ready",
            cfg.phase_timeout,
            Duration::from_millis(20),
            || {
                let done = live.iter().filter(|s| s.ready_count().0 >= b).count();
                (
                    done == live.len(),
                    format!("{done}/{} spokes have all {b} bundles Ready", live.len()),
                )
            },
        )
        .await?;
        let last = live
            .iter()
            .filter_map(|s| s.ready_count().1)
            .max()
            .unwrap_or(t0);
        let duration = last.duration_since(t0);
        let hub_cpu_secs = machine::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
        drop(profile);
        let hub_confirmed = wait_hub_ready(hub, b, live.len(), cfg.phase_timeout).await?;
        let initial = InitialResult {
            pairs: live.len() * b,
            duration,
            hub_confirmed: Some(hub_confirmed.saturating_duration_since(t0)),
            hub_cpu_secs,
            hub_rss_after: machine::rss_bytes(pid).unwrap_or(0),
            wire_bytes: sum(&live, |s| s.received_bytes.load(Ordering::Relaxed)) - wire0,
            content_bytes: sum(&live, |s| s.assign_content_bytes.load(Ordering::Relaxed))
                - content0,
        };
        log(
            cfg,
            format!(
                "{} bundle×spoke pairs Ready in {:.2?} (hub agrees after {:.2?}; hub CPU {:.1} s, RSS {} MiB)",
                initial.pairs,
                initial.duration,
                initial.hub_confirmed.unwrap_or_default(),
                initial.hub_cpu_secs,
                initial.hub_rss_after >> 20
            ),
        );
        result.initial = Some(initial);

        // Phase 3: single-bundle commits.
        let target = bundle_name(0);
        for f in 0..cfg.fanouts {
            let fan = fanout(cfg, hub, &repo, &live, &settings, &target, f as u64 + 1).await?;
            log(
                cfg,
                format!(
                    "fan-out {}: published +{:.2?}, p50 {:.2?}, p99 {:.2?}, max {:.2?}, hub agrees +{:.2?}; {:.3}× minimum bytes on the wire",
                    f + 1,
                    fan.published.unwrap_or_default(),
                    fan.p50,
                    fan.p99,
                    fan.max,
                    fan.hub_confirmed.unwrap_or_default(),
                    fan.wire_bytes as f64 / fan.min_bytes.max(1) as f64
                ),
            );
            result.fanouts.push(fan);
        }
    }

    result.failed_spokes = n_failed(&stats) + n.saturating_sub(connected);
    result.errors = sum(&stats, |s| s.errors.load(Ordering::Relaxed));
    result.first_failure = stats.iter().find_map(|s| {
        s.failed
            .get()
            .cloned()
            .or_else(|| s.last_error.lock().ok().and_then(|l| l.clone()))
    });
    let _ = stop_tx.send(true);
    Ok(result)
}

/// Spawns one simulated spoke per entry of `stats` (spoke `i` named `spoke-NNNNN`,
/// dialling `dial(i)`): each enrolls (three tries) and then runs until `stop`; at most
/// `concurrency` enrollments and first connects are in flight at once.
pub(crate) fn spawn_spokes(
    concurrency: usize,
    settings: &Arc<SimSettings>,
    stats: &[Arc<SpokeStats>],
    stop_rx: &watch::Receiver<bool>,
    dial: impl Fn(usize) -> Dial,
) {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    for (i, st) in stats.iter().enumerate() {
        let (settings, st, gate, stop) =
            (settings.clone(), st.clone(), gate.clone(), stop_rx.clone());
        let dial = dial(i);
        tokio::spawn(async move {
            let name = format!("spoke-{i:05}");
            let Ok(permit) = gate.acquire_owned().await else {
                return;
            };
            let mut creds = None;
            for attempt in 0..3u64 {
                match sim::enroll(&settings, &name, &dial).await {
                    Ok(c) => {
                        creds = Some(c);
                        break;
                    }
                    Err(e) => {
                        if let Ok(mut l) = st.last_error.lock() {
                            *l = Some(format!("enroll: {e:#}"));
                        }
                        st.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
                    }
                }
            }
            let Some(creds) = creds else {
                let _ = st.failed.set("enrollment failed 3 times".into());
                return;
            };
            // Hold the gate until the first connect, so the concurrency bounds handshakes.
            let s2 = st.clone();
            let released = tokio::spawn(async move {
                for _ in 0..6000 {
                    if s2.first_connected.get().is_some() || s2.failed.get().is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                drop(permit);
            });
            sim::run(settings, name, dial, creds, st, stop).await;
            released.abort();
        });
    }
}

pub(crate) fn sum(stats: &[Arc<SpokeStats>], f: impl Fn(&SpokeStats) -> u64) -> u64 {
    stats.iter().map(|s| f(s)).sum()
}

pub(crate) async fn fanout(
    cfg: &FleetConfig,
    hub: &HubProcess,
    repo: &FleetRepo,
    live: &[Arc<SpokeStats>],
    sim: &SimSettings,
    bundle: &str,
    generation: u64,
) -> Result<FanoutResult> {
    let pid = hub.pid();
    let before: Vec<Option<String>> = live
        .iter()
        .map(|s| s.ready_of(bundle).map(|(d, _)| d))
        .collect();
    let wire0 = sum(live, |s| s.received_bytes.load(Ordering::Relaxed));
    let assign0 = sum(live, |s| s.assign_encoded_bytes.load(Ordering::Relaxed));
    // Commit at a random phase of the poll cycle: right after a fan-out the poller has
    // just polled, and committing then would always measure the longest poll wait.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let phase = Duration::from_secs(cfg.interval_secs).mul_f64(f64::from(nanos) / 1e9);
    tokio::time::sleep(phase).await;
    let profile = Profile::start(cfg, pid, &format!("fanout-{generation}"));
    let cpu0 = machine::cpu_seconds(pid).unwrap_or(0.0);
    let readies0 = sim.ready_reports.load(Ordering::Relaxed);
    let commit = repo.change_bundle(0, generation)?;
    let is_new = |i: usize, s: &SpokeStats| s.ready_on_new(bundle, before[i].as_deref());
    // Each spoke records its own Ready time, so how often this loop looks changes no
    // figure. It looks rarely, and only at the spokes not yet done: a look at 10,000
    // spokes' maps costs milliseconds of cache misses, and looking every 5 ms took a
    // sixth of a core from the hub and the simulated spokes it measures. Until the
    // spokes together have queued as many Ready reports as spokes are pending, none of
    // them is looked at (a look then is the usual one: a spoke counts once it is Ready on
    // the new deployment).
    let mut pending: Vec<usize> = (0..live.len()).collect();
    let mut looked_at = 0u64;
    wait_for(
        "every spoke to report the changed bundle Ready",
        cfg.phase_timeout,
        Duration::from_millis(100),
        || {
            let readies = sim.ready_reports.load(Ordering::Relaxed) - readies0;
            if readies - looked_at < pending.len() as u64 {
                return (
                    false,
                    format!(
                        "{readies} Ready reports since the commit, {} spokes pending",
                        pending.len()
                    ),
                );
            }
            looked_at = readies;
            pending.retain(|&i| is_new(i, &live[i]).is_none());
            (
                pending.is_empty(),
                format!(
                    "{}/{} spokes Ready on the new deployment",
                    live.len() - pending.len(),
                    live.len()
                ),
            )
        },
    )
    .await?;
    let hub_cpu_secs = machine::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    drop(profile);
    let wire_bytes = sum(live, |s| s.received_bytes.load(Ordering::Relaxed)) - wire0;
    let assign_bytes = sum(live, |s| s.assign_encoded_bytes.load(Ordering::Relaxed)) - assign0;
    let mut lat: Vec<Duration> = live
        .iter()
        .enumerate()
        .filter_map(|(i, s)| is_new(i, s))
        .map(|t| t.saturating_duration_since(commit.at))
        .collect();
    lat.sort();
    let first_assign = live
        .iter()
        .filter_map(|s| {
            s.bundles
                .lock()
                .ok()
                .and_then(|b| b.get(bundle).map(|x| x.received))
        })
        .min()
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(commit.at));
    let confirmed = wait_hub_ready(hub, repo.bundles, live.len(), cfg.phase_timeout).await?;
    let min_bytes = rendered_len(repo, live.len());
    Ok(FanoutResult {
        spokes: live.len(),
        published: hub
            .published_at(&commit.id)
            .and_then(|t| t.duration_since(commit.wall).ok()),
        first_assign,
        p50: percentile(&lat, 50.0).unwrap_or_default(),
        p99: percentile(&lat, 99.0).unwrap_or_default(),
        max: lat.last().copied().unwrap_or_default(),
        hub_confirmed: Some(confirmed.saturating_duration_since(commit.at)),
        hub_cpu_secs,
        wire_bytes,
        assign_bytes,
        min_bytes,
    })
}

/// Bundle 0's rendered size (what the hub sends as content) × spokes.
fn rendered_len(repo: &FleetRepo, spokes: usize) -> u64 {
    let dir = repo.dir.join(bundle_folder(0));
    let size = flotilla_render::load_bundle_dir(
        &dir,
        &bundle_name(0),
        &flotilla_render::Limits::default(),
    )
    .ok()
    .and_then(|b| {
        b.render(&flotilla_render::ClusterInfo {
            name: "spoke-00000".into(),
            labels: [("bench".to_string(), "true".to_string())].into(),
            groups: Vec::new(),
            capabilities: None,
        })
        .ok()
    })
    .map_or(0, |r| r.manifest.len());
    size as u64 * spokes as u64
}

pub(crate) async fn wait_hub_connected(
    hub: &HubProcess,
    expected: usize,
    timeout: Duration,
) -> Result<usize> {
    let start = Instant::now();
    loop {
        let clusters = hub.clusters().await?;
        let connected = clusters.iter().filter(|c| c.connected).count();
        if connected >= expected {
            return Ok(connected);
        }
        if start.elapsed() > timeout {
            bail!("the hub sees {connected} of {expected} spokes connected after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls the hub until each of `bundles` bundles is Ready on `spokes` clusters; the hub
/// counts a row Ready only when the reported deployment is the one it wants. Returns when.
pub(crate) async fn wait_hub_ready(
    hub: &HubProcess,
    bundles: usize,
    spokes: usize,
    timeout: Duration,
) -> Result<Instant> {
    let start = Instant::now();
    loop {
        let list = hub.bundles().await?;
        let ready = list
            .iter()
            .filter(|b| {
                b.source == SOURCE && b.ready as usize >= spokes && b.clusters as usize >= spokes
            })
            .count();
        if ready >= bundles {
            return Ok(Instant::now());
        }
        if start.elapsed() > timeout {
            bail!(
                "the hub sees {ready} of {bundles} bundles Ready on all {spokes} spokes after {timeout:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
