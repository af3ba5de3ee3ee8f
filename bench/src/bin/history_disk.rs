//! Benchmark: the disk the deployment history takes at fleet scale, under the default
//! retention (`flotilla_hub::history::Retention::default()`).
//!
//! It plays a churn model through the hub's own history module (`History::deployed`'s
//! body `record_deployment`, and `History::status` as the spokes' reports arrive) into a
//! real redb store (`flotilla_hub::store::Store`), then reports the store file's size.
//! The model, per (cluster, bundle) pair, over `--days`:
//! - `--deploys-per-day` deployments (default 0.25: a bundle changes about twice a week;
//!   a busy fleet repo takes several commits a day, but each touches few of 50 bundles),
//!   each reported Ready (the deployment entry is updated in place, not duplicated);
//! - `--drift-per-month` drift episodes (default 1), each Ready → Modified (with a field
//!   diff of ~120 bytes) → Ready: two state-change entries.
//!
//! Times are spread evenly with a per-pair offset; names look like real ones (40-hex
//! commits, `d-` + 20-hex deployment ids, 12-character cluster names).
//!
//! Run: `cargo run --release -p flotilla-bench --bin history_disk [-- --clusters 10000]`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use flotilla_hub::history::{Deployment, History, Retention};
use flotilla_hub::records::StatusRecord;
use flotilla_hub::store::{Snapshot, Store};
use flotilla_model::{ClusterName, State};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    clusters: usize,
    #[arg(long, default_value_t = 50)]
    bundles: usize,
    #[arg(long, default_value_t = 90)]
    days: u32,
    #[arg(long, default_value_t = 0.25)]
    deploys_per_day: f64,
    #[arg(long, default_value_t = 1.0)]
    drift_per_month: f64,
    /// Where the store goes (a temporary folder by default; removed at the end).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Do not write: open the store already in `--dir` as a hub starts (`Store::open`,
    /// `History::restore`) and report the time and this process's memory.
    #[arg(long, requires = "dir")]
    restore_only: bool,
}

/// This process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Opens the store at `path` as a hub starts and prints what it cost.
async fn measure_restore(path: &std::path::Path) -> Result<()> {
    let (before, _) = rss_mib();
    let began = Instant::now();
    let (store, snapshot) = Store::open(path).context("opening the store")?;
    let opened = began.elapsed();
    let rows = snapshot.rows.len();
    let history = History::restore(
        store.clone(),
        Retention::default(),
        &snapshot,
        1_700_000_000 + 90 * DAY,
    )?;
    let restored = began.elapsed();
    drop(snapshot);
    // What the start queued (pruning, the index of old stores) is on disk.
    store.commit(Vec::new()).await?;
    let (after, peak) = rss_mib();
    println!(
        "| rows read at start | Store::open | + History::restore | RSS before | RSS after start (snapshot dropped) | peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {rows} | {opened:.1?} | {restored:.1?} | {before:.0} MiB | {after:.0} MiB | {peak:.0} MiB |"
    );
    drop(history);
    Ok(())
}

/// Clusters fed through one `History` before it is dropped: bounds the benchmark's own
/// memory; the store holds everything.
const CLUSTERS_PER_ROUND: usize = 200;

const DAY: i64 = 86_400;

fn status(id: &str, state: State, message: &str, at: i64) -> StatusRecord {
    StatusRecord {
        deployment_id: id.to_string(),
        state,
        message: message.to_string(),
        resources: Vec::new(),
        updated_at: at,
    }
}

/// A deterministic 64-bit mix (splitmix64) for ids that look random.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hex(seed: u64, len: usize) -> String {
    (0..len.div_ceil(16))
        .map(|i| format!("{:016x}", mix(seed.wrapping_add(i as u64))))
        .collect::<String>()[..len]
        .to_string()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("history.redb");
    if args.restore_only {
        return measure_restore(&path).await;
    }
    let (store, _) = Store::open(&path).context("opening the store")?;
    let retention = Retention::default();
    let span = i64::from(args.days) * DAY;
    let start = 1_700_000_000;
    let end = start + span;
    let deploys = (args.deploys_per_day * f64::from(args.days)).round() as i64;
    let drifts = (args.drift_per_month * f64::from(args.days) / 30.0).round() as i64;
    let diff = "ConfigMap/app: data.replicas: hub wants \"3\", cluster has \"5\"; metadata.labels.team: removed out of band";
    let bundles: Vec<Arc<str>> = (0..args.bundles)
        .map(|b| Arc::from(format!("apps-bundle-{b:02}")))
        .collect();
    let began = Instant::now();
    let mut entries = 0u64;
    for round in (0..args.clusters).step_by(CLUSTERS_PER_ROUND) {
        let history = History::restore(store.clone(), retention, &Snapshot::default(), end)?;
        for c in round..(round + CLUSTERS_PER_ROUND).min(args.clusters) {
            let cluster = ClusterName::new(&format!("prod-eu-{c:05}"))?;
            for (b, bundle) in bundles.iter().enumerate() {
                let pair = (c * args.bundles + b) as u64;
                let offset = (mix(pair) % DAY as u64) as i64;
                let mut prev: Option<StatusRecord> = None;
                let mut events: Vec<(i64, bool)> = (0..deploys)
                    .map(|k| (start + offset + k * span / deploys.max(1), true))
                    .chain(
                        (0..drifts)
                            .map(|k| (start + offset + DAY / 2 + k * span / drifts.max(1), false)),
                    )
                    .filter(|(t, _)| *t < end)
                    .collect();
                events.sort();
                let mut deployment = 0u64;
                for (t, is_deploy) in events {
                    if is_deploy {
                        deployment += 1;
                        let id = format!("d-{}", hex(pair << 20 | deployment, 20));
                        history.record_deployment(
                            &cluster,
                            bundle,
                            Deployment {
                                deployment_id: id.clone(),
                                commit: hex(deployment << 8 | b as u64, 40),
                                source: "apps".into(),
                                assigned_at: t,
                                applied_at: None,
                                ready_at: None,
                                failed_at: None,
                                failure: String::new(),
                            },
                        );
                        let ready = status(&id, State::Ready, "", t + 30);
                        // A new deployment: the previous report is about another one.
                        history.status(&cluster, bundle, None, &ready);
                        prev = Some(ready);
                        entries += 1;
                    } else if let Some(p) = prev.clone() {
                        let id = p.deployment_id.clone();
                        let modified = status(&id, State::Modified, diff, t);
                        history.status(&cluster, bundle, Some(p.state), &modified);
                        let fixed = status(&id, State::Ready, "", t + 60);
                        history.status(&cluster, bundle, Some(modified.state), &fixed);
                        prev = Some(fixed);
                        entries += 2;
                    }
                }
            }
        }
        // Backpressure: wait until this round is on disk before the next.
        store.commit(Vec::new()).await?;
        drop(history);
        if round % (CLUSTERS_PER_ROUND * 10) == 0 {
            eprintln!(
                "{round}/{} clusters, {entries} entries, {:.0?}",
                args.clusters,
                began.elapsed()
            );
        }
    }
    let kept_per_pair = ((deploys + 2 * drifts) as usize).min(retention.max_per_pair);
    let kept = (args.clusters * args.bundles * kept_per_pair) as u64;
    drop(store);
    // The writer thread closes the file when its last handle is gone.
    let meta = loop {
        match Store::open(&path) {
            Ok(_) => break std::fs::metadata(&path)?,
            Err(_) => std::thread::yield_now(),
        }
    };
    let bytes = meta.len();
    let allocated = {
        use std::os::unix::fs::MetadataExt;
        meta.blocks() * 512
    };
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "| clusters × bundles | days | model per pair | entries written | kept (retention {} / {} per pair) | store file | allocated | bytes per kept entry | time |",
        humantime(retention.max_age.as_secs()),
        retention.max_per_pair
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} × {} | {} | {deploys} deployments + {drifts} drift episodes | {entries} | {kept} | {:.2} GiB | {:.2} GiB | {} | {:.0?} |",
        args.clusters,
        args.bundles,
        args.days,
        gib(bytes),
        gib(allocated),
        bytes / kept.max(1),
        began.elapsed()
    );
    Ok(())
}

fn humantime(secs: u64) -> String {
    format!("{}d", secs / 86_400)
}
