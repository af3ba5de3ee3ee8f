//! The HA scenario (issue 20, point 4), in one run: a 3-member etcd on loopback, hub
//! replicas sharing it, N simulated spokes spread over the replicas (spoke `i` starts at
//! replica `i mod R` and moves to the next one when its stream ends), then
//!
//! 1. **fan-out** - single-bundle commits: latency from the leader's publish to each
//!    spoke's Ready (the fleet scenario's `fanout`, with the leader as the hub), and what
//!    etcd wrote meanwhile, from its own `/metrics` before and after;
//! 2. **failover** - the leader is SIGKILLed and a bundle changed at once: time until
//!    another replica is elected, until it publishes the commit, until every spoke of
//!    the dead replica is connected again, and until every spoke is Ready on the commit;
//! 3. **redb** - the same fan-outs on a single redb hub (the fleet scenario itself), with
//!    the same spokes count, after the HA processes are gone.
//!
//! The etcd launcher here is a minimal one (the tests' `EtcdCluster` lives in a test
//! crate the bench does not depend on). Every wait is bounded by the phase timeout.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use flotilla_identity::JoinString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::fleet::{
    self, FanoutResult, FleetConfig, SOURCE, bundle_name, fanout, log, spawn_spokes, wait_for,
    wait_hub_connected, wait_hub_ready,
};
use crate::hub::HubProcess;
use crate::machine::{self, Machine};
use crate::net::Dial;
use crate::repo::FleetRepo;
use crate::sim::{SimSettings, SpokeStats};

/// Largest `/metrics` page read from etcd (its page is about 100 KiB).
const MAX_METRICS_BYTES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct HaConfig {
    /// Spokes, fan-outs, poll interval, timeouts: as for the fleet scenario.
    pub fleet: FleetConfig,
    pub replicas: usize,
    /// The replicas' `--leader-lease`.
    pub leader_lease: Duration,
    /// The etcd binary; default `~/.cache/flotilla-tools/bin/etcd`.
    pub etcd: Option<PathBuf>,
    /// Run the single-redb-hub comparison after the HA phases.
    pub redb: bool,
}

/// etcd's counters at one moment: writes from member 0 (every member applies the same
/// log), bytes summed over the members.
#[derive(Debug, Clone, Copy, Default)]
pub struct EtcdCounters {
    pub puts: f64,
    pub deletes: f64,
    pub txns: f64,
    /// Bytes of the values put (`etcd_debugging_mvcc_total_put_size_in_bytes`).
    pub put_bytes: f64,
    pub db_size: f64,
    /// Bytes the hubs sent to etcd, every member (`etcd_network_client_grpc_received_bytes_total`).
    pub client_bytes: f64,
    /// Raft replication between members (`etcd_network_peer_sent_bytes_total`).
    pub peer_bytes: f64,
}

impl EtcdCounters {
    fn since(&self, before: &EtcdCounters) -> EtcdCounters {
        EtcdCounters {
            puts: self.puts - before.puts,
            deletes: self.deletes - before.deletes,
            txns: self.txns - before.txns,
            put_bytes: self.put_bytes - before.put_bytes,
            db_size: self.db_size - before.db_size,
            client_bytes: self.client_bytes - before.client_bytes,
            peer_bytes: self.peer_bytes - before.peer_bytes,
        }
    }
}

/// One fan-out on the replicas.
#[derive(Debug, Clone)]
pub struct HaFanout {
    pub fan: FanoutResult,
    pub writes: EtcdCounters,
    /// Median Ready of the followers' spokes less that of the leader's own spokes, ms
    /// (what watching etcd adds on a follower).
    pub follower_lag_ms: f64,
}

#[derive(Debug, Clone, Default)]
pub struct FailoverResult {
    /// Spokes that were connected to the killed leader.
    pub victims: usize,
    pub elected: Option<Duration>,
    pub published: Option<Duration>,
    /// Until every spoke of the dead replica had a stream open again (polled every 5 ms).
    pub victims_connected: Duration,
    /// Until every spoke of the dead replica was Ready on the commit made at the kill.
    pub victims_ready: Duration,
    /// Until every spoke was Ready on it.
    pub all_ready: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct HaResult {
    pub connected: usize,
    pub register: Duration,
    /// Replica RSS with the spokes idle, bytes, and the leader's index.
    pub replica_rss: Vec<u64>,
    pub leader: usize,
    /// etcd's counters over an idle window of `idle` (heartbeats, lease renewals).
    pub idle: EtcdCounters,
    pub idle_window: Duration,
    pub fanouts: Vec<HaFanout>,
    pub failover: FailoverResult,
    pub failed_spokes: usize,
    pub errors: u64,
    pub redb: Vec<FanoutResult>,
}

/// One etcd member process, killed on drop.
struct Member {
    client: String,
    child: Child,
    log: PathBuf,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback etcd cluster for one run.
pub struct Etcd {
    members: Vec<Member>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Etcd {
    /// Starts `size` members under `dir` and waits until each says it is healthy.
    pub async fn start(bin: &Path, dir: &Path, size: usize, timeout: Duration) -> Result<Etcd> {
        let ports = (0..size)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<Vec<_>>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.into_iter().enumerate() {
            let data = dir.join(format!("m{i}"));
            std::fs::create_dir_all(&data)?;
            let log = dir.join(format!("m{i}.log"));
            let client = format!("127.0.0.1:{client}");
            let peer = format!("http://127.0.0.1:{peer}");
            let child = Command::new(bin)
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(data.join("data"))
                .args(["--listen-client-urls", &format!("http://{client}")])
                .args(["--advertise-client-urls", &format!("http://{client}")])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            members.push(Member { client, child, log });
        }
        let etcd = Etcd { members };
        let start = Instant::now();
        for m in &etcd.members {
            loop {
                match http_get(&m.client, "/health").await {
                    Ok(body) if body.contains("\"health\":\"true\"") => break,
                    _ if start.elapsed() > timeout => bail!(
                        "etcd member {} not healthy after {timeout:?}; log {}",
                        m.client,
                        m.log.display()
                    ),
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        Ok(etcd)
    }

    /// `etcd://` and every member's client address.
    pub fn url(&self) -> String {
        let all: Vec<&str> = self.members.iter().map(|m| m.client.as_str()).collect();
        format!("etcd://{}", all.join(","))
    }

    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.child.id()).collect()
    }

    /// Reads every member's `/metrics`.
    pub async fn counters(&self) -> Result<EtcdCounters> {
        let mut c = EtcdCounters::default();
        for (i, m) in self.members.iter().enumerate() {
            let page = http_get(&m.client, "/metrics").await?;
            if i == 0 {
                c.puts = metric(&page, "etcd_mvcc_put_total");
                c.deletes = metric(&page, "etcd_mvcc_delete_total");
                c.txns = metric(&page, "etcd_mvcc_txn_total");
                c.put_bytes = metric(&page, "etcd_debugging_mvcc_total_put_size_in_bytes");
                c.db_size = metric(&page, "etcd_mvcc_db_total_size_in_bytes");
            }
            c.client_bytes += metric(&page, "etcd_network_client_grpc_received_bytes_total");
            c.peer_bytes += metric(&page, "etcd_network_peer_sent_bytes_total");
        }
        Ok(c)
    }
}

/// The sum of every sample of `name` (over its labels) in a Prometheus text page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            rest.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// A bounded HTTP/1.0 GET on loopback (etcd's `/health` and `/metrics`): the body.
async fn http_get(addr: &str, path: &str) -> Result<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        (&mut s)
            .take(MAX_METRICS_BYTES as u64)
            .read_to_end(&mut buf)
            .await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .with_context(|| format!("GET http://{addr}{path}: no answer within 10 s"))?
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("GET http://{addr}{path}: no HTTP header in the answer");
    };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "GET http://{addr}{path}: {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_string())
}

fn default_etcd() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/flotilla-tools/bin/etcd")
}

/// The index of the replica that logged "elected leader" since `since`, if any.
fn leader_since(hubs: &[Option<HubProcess>], since: SystemTime) -> Option<(usize, SystemTime)> {
    hubs.iter().enumerate().find_map(|(i, h)| {
        let t = h.as_ref()?.message_at("elected leader")?;
        (t >= since).then_some((i, t))
    })
}

/// Runs the whole scenario once.
pub async fn run(cfg: &HaConfig) -> Result<HaResult> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    machine::raise_nofile_limit();
    let tmp = tempfile::Builder::new()
        .prefix("flotilla-bench-ha")
        .tempdir()?;
    let work = match &cfg.fleet.work_dir {
        Some(d) => {
            let d = d.join(format!("ha-{}", std::process::id()));
            std::fs::create_dir_all(&d)?;
            d
        }
        None => tmp.path().to_path_buf(),
    };
    let mut result = ha_phases(cfg, &work).await?;
    if cfg.redb {
        log(&cfg.fleet, "single redb hub, same spokes, same fan-outs");
        let redb = fleet::run_once(&cfg.fleet).await?;
        result.redb = redb.fanouts;
    }
    Ok(result)
}

async fn ha_phases(cfg: &HaConfig, work: &Path) -> Result<HaResult> {
    let f = &cfg.fleet;
    let n = f.spokes;
    let etcd_bin = cfg.etcd.clone().unwrap_or_else(default_etcd);
    let etcd = Etcd::start(&etcd_bin, &work.join("etcd"), 3, Duration::from_secs(60)).await?;
    log(f, format!("etcd up: {}", etcd.url()));
    let start_wall = SystemTime::now();
    let lease = format!("{}ms", cfg.leader_lease.as_millis());
    let hubs = HubProcess::start_replicas(
        f.bin_dir.as_deref(),
        work,
        &etcd.url(),
        cfg.replicas.max(1),
        &["--leader-lease".to_string(), lease],
    )
    .await?;
    let mut hubs: Vec<Option<HubProcess>> = hubs.into_iter().map(Some).collect();
    let r = hubs.len();
    let mut leader = None;
    wait_for(
        "a replica to be elected leader",
        f.phase_timeout,
        Duration::from_millis(20),
        || {
            leader = leader_since(&hubs, start_wall).map(|(i, _)| i);
            (leader.is_some(), "no replica leads yet".into())
        },
    )
    .await?;
    let leader = leader.unwrap_or(0);
    let lead = hubs[leader].as_ref().context("the leader")?;
    log(f, format!("leader: replica {leader} ({})", lead.addr));

    let addrs = hubs
        .iter()
        .flatten()
        .map(|h| h.addr.parse::<SocketAddr>().context("replica address"))
        .collect::<Result<Vec<_>>>()?;
    let join: JoinString = lead
        .token(u32::try_from(n).unwrap_or(u32::MAX).max(1))
        .await?
        .parse()?;
    let settings = Arc::new(SimSettings {
        join,
        labels: [("bench".to_string(), "true".to_string())].into(),
        heartbeat: f.heartbeat,
        wait_report_after: f.wait_report_after,
        write_dir: None,
        ready_reports: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let stats: Vec<Arc<SpokeStats>> = (0..n).map(|_| Arc::new(SpokeStats::default())).collect();
    let start = Instant::now();
    spawn_spokes(f.concurrency, &settings, &stats, &stop_rx, |i| Dial {
        hub: addrs[i % r],
        others: (1..r).map(|j| addrs[(i + j) % r]).collect(),
        source: None,
    });
    wait_for(
        "every spoke to register and connect",
        f.phase_timeout,
        Duration::from_millis(10),
        || {
            let connected = stats
                .iter()
                .filter(|s| s.first_connected.get().is_some())
                .count();
            let failed = stats.iter().filter(|s| s.failed.get().is_some()).count();
            (
                connected + failed >= n,
                format!("{connected} connected, {failed} failed of {n}"),
            )
        },
    )
    .await?;
    let register = stats
        .iter()
        .filter_map(|s| s.first_connected.get().copied())
        .max()
        .map_or(Duration::ZERO, |t| t.duration_since(start));
    let live: Vec<(usize, Arc<SpokeStats>)> = stats
        .iter()
        .enumerate()
        .filter(|(_, s)| s.first_connected.get().is_some() && s.failed.get().is_none())
        .map(|(i, s)| (i, s.clone()))
        .collect();
    let live_stats: Vec<Arc<SpokeStats>> = live.iter().map(|(_, s)| s.clone()).collect();
    log(
        f,
        format!(
            "{}/{n} spokes registered and connected over {r} replicas in {register:.2?}",
            live.len()
        ),
    );
    let connected = wait_hub_connected(lead, live.len(), f.phase_timeout).await?;

    // One bundle to every spoke.
    let repo = FleetRepo::create(&work.join("repo"), 1, f.bundle_bytes)?;
    lead.add_source(SOURCE, &repo.url(), f.interval_secs)
        .await?;
    wait_for(
        "every spoke to report the bundle Ready",
        f.phase_timeout,
        Duration::from_millis(20),
        || {
            let done = live_stats.iter().filter(|s| s.ready_count().0 >= 1).count();
            (done == live.len(), format!("{done}/{} Ready", live.len()))
        },
    )
    .await?;
    wait_hub_ready(lead, 1, live.len(), f.phase_timeout).await?;
    tokio::time::sleep(f.idle_settle).await;
    let replica_rss = hubs
        .iter()
        .flatten()
        .map(|h| machine::rss_bytes(h.pid()).unwrap_or(0))
        .collect();

    // etcd's background writes with every spoke idle, to read the fan-out figures against.
    let idle_window = Duration::from_secs(10);
    let c0 = etcd.counters().await?;
    tokio::time::sleep(idle_window).await;
    let idle = etcd.counters().await?.since(&c0);
    log(
        f,
        format!(
            "idle {idle_window:?}: etcd {} puts, {} txns",
            idle.puts, idle.txns
        ),
    );

    let target = bundle_name(0);
    let mut fanouts = Vec::new();
    for g in 0..f.fanouts {
        let c0 = etcd.counters().await?;
        let fan = fanout(
            f,
            lead,
            &repo,
            &live_stats,
            &settings,
            &target,
            g as u64 + 1,
        )
        .await?;
        let writes = etcd.counters().await?.since(&c0);
        log(
            f,
            format!(
                "fan-out {}: published +{:.2?}, Ready p50 {:.2?} p99 {:.2?} max {:.2?} after the commit; etcd {} puts, {} txns, {:.0} B put",
                g + 1,
                fan.published.unwrap_or_default(),
                fan.p50,
                fan.p99,
                fan.max,
                writes.puts,
                writes.txns,
                writes.put_bytes
            ),
        );
        let follower_lag_ms = follower_lag_ms(&live, &target, leader, r);
        fanouts.push(HaFanout {
            fan,
            writes,
            follower_lag_ms,
        });
    }

    // Failover: kill -9 the leader, change the bundle at once.
    let victims: Vec<usize> = (0..live.len())
        .filter(|&k| live[k].0 % r == leader)
        .collect();
    let before: Vec<Option<String>> = live_stats
        .iter()
        .map(|s| s.ready_of(&target).map(|(d, _)| d))
        .collect();
    let connects0: Vec<u64> = live_stats
        .iter()
        .map(|s| s.connects.load(Ordering::Relaxed))
        .collect();
    let kill_wall = SystemTime::now();
    let kill_at = Instant::now();
    if let Some(h) = hubs[leader].as_mut() {
        h.kill();
    }
    hubs[leader] = None;
    let commit = repo.change_bundle(0, f.fanouts as u64 + 1)?;
    log(
        f,
        format!(
            "killed the leader (replica {leader}, {} spokes); committed {}",
            victims.len(),
            commit.id
        ),
    );
    let is_new = |k: usize| live_stats[k].ready_on_new(&target, before[k].as_deref());
    let mut victims_connected = None;
    wait_for(
        "every spoke Ready on the commit made at the kill",
        f.phase_timeout,
        Duration::from_millis(5),
        || {
            if victims_connected.is_none()
                && victims.iter().all(|&k| {
                    let s = &live_stats[k];
                    s.connected.load(Ordering::Relaxed)
                        && s.connects.load(Ordering::Relaxed) > connects0[k]
                })
            {
                victims_connected = Some(kill_at.elapsed());
            }
            let done = (0..live.len()).filter(|&k| is_new(k).is_some()).count();
            (
                done == live.len() && victims_connected.is_some(),
                format!(
                    "{done}/{} Ready on the new deployment; dead replica's spokes reconnected: {}",
                    live.len(),
                    victims_connected.is_some()
                ),
            )
        },
    )
    .await?;
    let ready_after = |ks: &mut dyn Iterator<Item = usize>| {
        ks.filter_map(&is_new)
            .max()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(kill_at))
    };
    let new_leader = leader_since(&hubs, kill_wall);
    let failover = FailoverResult {
        victims: victims.len(),
        elected: new_leader.and_then(|(_, t)| t.duration_since(kill_wall).ok()),
        published: new_leader
            .and_then(|(i, _)| hubs[i].as_ref()?.published_at(&commit.id))
            .and_then(|t| t.duration_since(kill_wall).ok()),
        victims_connected: victims_connected.unwrap_or_default(),
        victims_ready: ready_after(&mut victims.iter().copied()),
        all_ready: ready_after(&mut (0..live.len())),
    };
    log(f, format!("failover: {failover:?}"));
    let result = HaResult {
        connected,
        register,
        replica_rss,
        leader,
        idle,
        idle_window,
        fanouts,
        failover,
        failed_spokes: n - live.len(),
        errors: stats.iter().map(|s| s.errors.load(Ordering::Relaxed)).sum(),
        redb: Vec::new(),
    };
    let _ = stop_tx.send(true);
    log(f, format!("etcd pids {:?} stopping", etcd.pids()));
    Ok(result)
}

/// Median Ready time of `bundle` on the spokes that started on a follower, less the
/// median on those that started on the leader, in ms (0 when a group is empty).
fn follower_lag_ms(
    live: &[(usize, Arc<SpokeStats>)],
    bundle: &str,
    leader: usize,
    replicas: usize,
) -> f64 {
    let median = |on_leader: bool| {
        let mut t: Vec<Instant> = live
            .iter()
            .filter(|(i, _)| (i % replicas == leader) == on_leader)
            .filter_map(|(_, s)| s.ready_of(bundle).map(|(_, t)| t))
            .collect();
        t.sort();
        t.get(t.len() / 2).copied()
    };
    match (median(true), median(false)) {
        (Some(l), Some(f)) if f >= l => f.duration_since(l).as_secs_f64() * 1000.0,
        (Some(l), Some(f)) => -(l.duration_since(f).as_secs_f64() * 1000.0),
        _ => 0.0,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or("n/a".into(), ms)
}

/// Publish-to-Ready figures of a fan-out: the commit-to-Ready percentiles less the
/// commit-to-publish time (the same shift for every spoke).
fn from_publish(f: &FanoutResult) -> [String; 4] {
    let p = f.published.unwrap_or_default();
    [
        opt_ms(f.published),
        ms(f.p50.saturating_sub(p)),
        ms(f.p99.saturating_sub(p)),
        ms(f.max.saturating_sub(p)),
    ]
}

/// The scenario's table.
pub fn report(cfg: &HaConfig, machine: &Machine, r: &HaResult) -> String {
    let f = &cfg.fleet;
    let mut o = String::new();
    let _ = writeln!(o, "{machine}");
    let _ = writeln!(
        o,
        "ha: {} simulated spokes over {} replicas (leader: replica {}), 3-member etcd, \
         leader lease {:?}, 1 bundle of {} B payload, source poll every {} s",
        f.spokes, cfg.replicas, r.leader, cfg.leader_lease, f.bundle_bytes, f.interval_secs
    );
    let _ = writeln!(
        o,
        "registered and connected: {} (hub agrees: {}) in {}; failed spokes {}; spoke-side errors (retried) {}",
        f.spokes - r.failed_spokes,
        r.connected,
        ms(r.register),
        r.failed_spokes,
        r.errors
    );
    let rss: Vec<String> = r
        .replica_rss
        .iter()
        .map(|b| format!("{} MiB", b >> 20))
        .collect();
    let _ = writeln!(o, "replica RSS with the spokes idle: {}", rss.join(", "));
    let _ = writeln!(
        o,
        "etcd idle over {:?}: {} puts, {} deletes, {} txns, {:.0} B put, {:.0} B from the hubs\n",
        r.idle_window,
        r.idle.puts,
        r.idle.deletes,
        r.idle.txns,
        r.idle.put_bytes,
        r.idle.client_bytes
    );
    let _ = writeln!(
        o,
        "(a) fan-out of one changed bundle (times from the commit; publish-to-Ready is Ready less publish)\n"
    );
    let _ = writeln!(
        o,
        "| hub | commit→publish | publish→Ready p50 | p99 | max | commit→Ready max | followers' spokes later by (median) | spokes |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    let replicas = format!("{} replicas, etcd", cfg.replicas);
    let rows = r
        .fanouts
        .iter()
        .map(|h| {
            (
                replicas.as_str(),
                &h.fan,
                format!("{:.0} ms", h.follower_lag_ms),
            )
        })
        .chain(
            r.redb
                .iter()
                .map(|fan| ("1 hub, redb", fan, "-".to_string())),
        );
    for (what, fan, lag) in rows {
        let [p, p50, p99, max] = from_publish(fan);
        let _ = writeln!(
            o,
            "| {what} | {p} | {p50} | {p99} | {max} | {} | {lag} | {} |",
            ms(fan.max),
            fan.spokes
        );
    }
    let _ = writeln!(
        o,
        "\n(b) etcd writes per fan-out (commit until the hub saw every spoke Ready)\n"
    );
    let _ = writeln!(
        o,
        "| fan-out | puts | deletes | txns | value bytes put | bytes hubs→etcd | raft bytes between members | db size change |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for (i, w) in r.fanouts.iter().map(|h| &h.writes).enumerate() {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:+.0} |",
            i + 1,
            w.puts,
            w.deletes,
            w.txns,
            w.put_bytes,
            w.client_bytes,
            w.peer_bytes,
            w.db_size
        );
    }
    let fo = &r.failover;
    let _ = writeln!(
        o,
        "\n(d) failover: kill -9 of the leader ({} spokes on it), one bundle changed at the kill\n",
        fo.victims
    );
    let _ = writeln!(o, "| kill → | time |\n|---|---|");
    let _ = writeln!(o, "| another replica elected | {} |", opt_ms(fo.elected));
    let _ = writeln!(o, "| it published the commit | {} |", opt_ms(fo.published));
    let _ = writeln!(
        o,
        "| every spoke of the dead replica connected again | {} |",
        ms(fo.victims_connected)
    );
    let _ = writeln!(
        o,
        "| every spoke of the dead replica Ready on the commit | {} |",
        ms(fo.victims_ready)
    );
    let _ = writeln!(
        o,
        "| every spoke Ready on the commit | {} |",
        ms(fo.all_ready)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_metric_over_its_labels_and_ignores_longer_names() {
        let page = "# HELP etcd_mvcc_put_total x\n\
                    etcd_mvcc_put_total 12\n\
                    etcd_mvcc_put_total_other 99\n\
                    etcd_network_client_grpc_received_bytes_total{type=\"unary\"} 10\n\
                    etcd_network_client_grpc_received_bytes_total{type=\"stream\"} 5.5\n";
        assert_eq!(metric(page, "etcd_mvcc_put_total"), 12.0);
        assert_eq!(
            metric(page, "etcd_network_client_grpc_received_bytes_total"),
            15.5
        );
        assert_eq!(metric(page, "etcd_mvcc_txn_total"), 0.0);
    }
}
