//! A real `flotilla-hub` process for a benchmark run: `init` in a fresh data dir, `run`
//! on a free loopback port, and an Admin client built from the `admin.conf` it wrote;
//! or several replicas sharing an etcd store (`start_replicas`).
//! The process is killed when the handle drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use flotilla_identity::ClientConfig;
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

/// Log filter the hub runs with: quiet, except the line that says a revision was
/// published (the fan-out scenario reads its timestamp) and the leader election's
/// lines (the HA scenario's failover times).
pub const HUB_LOG_FILTER: &str = "warn,flotilla_hub::sources=info,flotilla_hub::ha=info";

pub struct HubProcess {
    child: Child,
    pub dir: PathBuf,
    pub addr: String,
    pub log: PathBuf,
    /// Arguments `run` gets besides the data dir, address and logging (e.g. `--store`).
    extra: Vec<String>,
    admin: AdminClient<Channel>,
}

/// Finds a workspace binary: in `bin_dir` when given, else beside the running executable
/// (or its parent, for test executables under `deps/`).
pub fn find_bin(bin_dir: Option<&Path>, name: &str) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(d) = bin_dir {
        candidates.push(d.join(name));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join(name));
        if let Some(parent) = dir.parent() {
            candidates.push(parent.join(name));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "{name} not found (looked at {candidates:?}); build it first: \
             cargo build --release -p flotilla-hub -p flotilla-spoke -p flotilla-bench"
            )
        })
}

/// `flotilla-hub init` of `dir`, advertising `advertise`, with `extra` arguments.
fn init(hub_bin: &Path, dir: &Path, advertise: &str, extra: &[&str]) -> Result<()> {
    let out = Command::new(hub_bin)
        .args(["init", "--data-dir"])
        .arg(dir)
        .args(["--advertise", advertise])
        .args(extra)
        .output()
        .context("running flotilla-hub init")?;
    if !out.status.success() {
        bail!(
            "flotilla-hub init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Spawns `flotilla-hub run` with JSON logs at [`HUB_LOG_FILTER`] into `log`.
fn spawn_run(
    hub_bin: &Path,
    dir: &Path,
    addr: &str,
    extra: &[String],
    log: std::io::Result<std::fs::File>,
) -> Result<Child> {
    Command::new(hub_bin)
        .args(["run", "--data-dir"])
        .arg(dir)
        .args(["--listen", addr, "--log-format", "json"])
        .args(["--log-level", HUB_LOG_FILTER])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log.context("hub log file")?)
        .spawn()
        .context("starting flotilla-hub run")
}

/// Copies a hub data dir (a flat tree of small files) from `from` to `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl HubProcess {
    /// Initialises and starts a hub under `work`, and waits until its Admin API answers.
    pub async fn start(bin_dir: Option<&Path>, work: &Path) -> Result<HubProcess> {
        let hub_bin = find_bin(bin_dir, "flotilla-hub")?;
        let dir = work.join("hub");
        let addr = format!("127.0.0.1:{}", free_port()?);
        init(&hub_bin, &dir, &addr, &[])?;
        HubProcess::run(&hub_bin, dir, addr, work.join("hub.log"), Vec::new()).await
    }

    /// Starts `flotilla-hub run` on an initialised `dir`, listening on `addr`, with
    /// `extra` arguments; its Admin client talks to `addr` only (not to every address
    /// `admin.conf` lists), and it returns once that answers.
    async fn run(
        hub_bin: &Path,
        dir: PathBuf,
        addr: String,
        log: PathBuf,
        extra: Vec<String>,
    ) -> Result<HubProcess> {
        let child = spawn_run(hub_bin, &dir, &addr, &extra, std::fs::File::create(&log))?;
        let mut config = ClientConfig::load(&dir.join("admin.conf"))?;
        config.server = addr.clone();
        let creds = config.credentials()?;
        let started = Instant::now();
        let admin = loop {
            let attempt = async {
                let ch = flotilla_identity::connect(&config.server, &creds).await?;
                let mut c = AdminClient::new(ch).max_decoding_message_size(256 << 20);
                c.list_sources(pb::ListSourcesRequest {}).await?;
                anyhow::Ok(c)
            };
            match attempt.await {
                Ok(c) => break c,
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    return Err(e.context(format!("the hub at {addr} did not answer within 60 s")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Ok(HubProcess {
            child,
            dir,
            addr,
            log,
            extra,
            admin,
        })
    }

    /// Starts `replicas` hub replicas sharing the store `store` (`etcd://...`): `init`
    /// once with every replica's address, the data dir copied to each replica (they
    /// share its PKI, as docs/operations.md says), then `run` on each with `extra`.
    pub async fn start_replicas(
        bin_dir: Option<&Path>,
        work: &Path,
        store: &str,
        replicas: usize,
        extra: &[String],
    ) -> Result<Vec<HubProcess>> {
        let hub_bin = find_bin(bin_dir, "flotilla-hub")?;
        let addrs = (0..replicas)
            .map(|_| Ok(format!("127.0.0.1:{}", free_port()?)))
            .collect::<Result<Vec<_>>>()?;
        let first = work.join("hub-0");
        init(&hub_bin, &first, &addrs.join(","), &["--store", store])?;
        let mut extra = extra.to_vec();
        extra.extend(["--store".to_string(), store.to_string()]);
        let mut out = Vec::new();
        for (i, addr) in addrs.into_iter().enumerate() {
            let dir = work.join(format!("hub-{i}"));
            if i > 0 {
                copy_dir(&first, &dir)?;
            }
            let log = work.join(format!("hub-{i}.log"));
            out.push(HubProcess::run(&hub_bin, dir, addr, log, extra.clone()).await?);
        }
        Ok(out)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the hub (a crash, not a shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the hub again on the same data dir and address; returns once it listens.
    pub async fn restart(&mut self, bin_dir: Option<&Path>) -> Result<()> {
        self.kill();
        let hub_bin = find_bin(bin_dir, "flotilla-hub")?;
        self.child = spawn_run(
            &hub_bin,
            &self.dir,
            &self.addr,
            &self.extra,
            std::fs::OpenOptions::new().append(true).open(&self.log),
        )
        .context("restarting flotilla-hub")?;
        let mut config = ClientConfig::load(&self.dir.join("admin.conf"))?;
        config.server = self.addr.clone();
        let creds = config.credentials()?;
        let started = Instant::now();
        loop {
            match flotilla_identity::connect(&config.server, &creds).await {
                Ok(ch) => {
                    self.admin = AdminClient::new(ch).max_decoding_message_size(256 << 20);
                    return Ok(());
                }
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    return Err(anyhow::Error::from(e).context("the hub did not come back"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Creates a join token good for `max_uses` registrations; returns the join string.
    pub async fn token(&self, max_uses: u32) -> Result<String> {
        let resp = self
            .admin
            .clone()
            .create_token(pb::CreateTokenRequest {
                ttl_seconds: 3600,
                max_uses,
                description: "flotilla-bench".into(),
                // The label bench spokes report: fixed by the token, since targeting
                // trusts no label a spoke sets on itself.
                labels: [("bench".to_string(), "true".to_string())].into(),
                ..Default::default()
            })
            .await
            .context("creating a join token")?;
        Ok(resp.into_inner().join)
    }

    /// Adds a git source targeting every cluster, polled every `interval_secs`.
    pub async fn add_source(&self, name: &str, repo: &str, interval_secs: u64) -> Result<()> {
        self.admin
            .clone()
            .add_source(pb::AddSourceRequest {
                source: Some(pb::Source {
                    name: name.into(),
                    repo: repo.into(),
                    branch: "main".into(),
                    paths: vec![".".into()],
                    interval_seconds: interval_secs,
                    ..Default::default()
                }),
            })
            .await
            .context("adding the source")?;
        Ok(())
    }

    pub async fn bundles(&self) -> Result<Vec<pb::Bundle>> {
        Ok(self
            .admin
            .clone()
            .list_bundles(pb::ListBundlesRequest {})
            .await
            .context("listing bundles")?
            .into_inner()
            .bundles)
    }

    pub async fn clusters(&self) -> Result<Vec<pb::Cluster>> {
        Ok(self
            .admin
            .clone()
            .list_clusters(pb::ListClustersRequest {})
            .await
            .context("listing clusters")?
            .into_inner()
            .clusters)
    }

    /// When the hub logged "published revision" for `commit`, if it has.
    pub fn published_at(&self, commit: &str) -> Option<SystemTime> {
        self.logged_at(|fields| {
            fields.get("message").and_then(|m| m.as_str()) == Some("published revision")
                && fields.get("commit").and_then(|c| c.as_str()) == Some(commit)
        })
    }

    /// When the hub last logged a line whose message starts with `prefix`, if it has.
    pub fn message_at(&self, prefix: &str) -> Option<SystemTime> {
        self.logged_at(|fields| {
            fields
                .get("message")
                .and_then(|m| m.as_str())
                .is_some_and(|m| m.starts_with(prefix))
        })
    }

    /// The timestamp of the last JSON log line whose `fields` match.
    fn logged_at(&self, matches: impl Fn(&serde_json::Value) -> bool) -> Option<SystemTime> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines().rev().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            if !matches(v.get("fields")?) {
                return None;
            }
            parse_rfc3339(v.get("timestamp")?.as_str()?)
        })
    }

    /// The hub's log, for error reports.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = u64::try_from(t.unix_timestamp_nanos()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_hubs_json_log_timestamps() {
        let t = parse_rfc3339("2026-01-02T03:04:05.250000Z").expect("parses");
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs_f64();
        assert!((secs - 1_767_323_045.25).abs() < 1e-3, "{secs}");
    }
}
