//! A real etcd for tests: the pinned binary (`ETCD`, or `~/.cache/flotilla-tools/bin/etcd`
//! built by `tests/k8s/tools/build etcd`), on random loopback ports with data dirs of
//! their own, killed on drop. [`EtcdServer`] is one member (the hub's store contract
//! tests); [`EtcdCluster`] is three (or more) whose members can be stopped and started
//! again, for the HA fault tests (`tests/tests/ha.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Proc, free_port, http, wait_until};

/// The pinned `etcd`, or None (the test skips) outside `CI=true`.
pub fn etcd() -> Option<PathBuf> {
    let path = std::env::var_os("ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/flotilla-tools/bin/etcd")
        });
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs etcd: set ETCD or run tests/k8s/tools/build etcd"
    );
    eprintln!("skipped: no etcd (set ETCD, or run tests/k8s/tools/build etcd)");
    None
}

/// One member's name, ports and data dir; it can be started again after a stop.
struct Member {
    name: String,
    /// `127.0.0.1:PORT`, what `etcd://` takes.
    endpoint: String,
    peer: String,
    dir: PathBuf,
}

impl Member {
    fn new(name: &str, dir: &Path) -> Member {
        Member {
            name: name.to_string(),
            endpoint: format!("127.0.0.1:{}", free_port()),
            peer: format!("http://127.0.0.1:{}", free_port()),
            dir: dir.to_path_buf(),
        }
    }

    /// Starts the member; `initial_cluster` is etcd's `--initial-cluster` (read only on
    /// the first start: afterwards the data dir knows its cluster).
    fn spawn(&self, bin: &Path, initial_cluster: &str) -> Proc {
        Proc::spawn(
            Command::new(bin)
                .arg("--name")
                .arg(&self.name)
                .arg("--data-dir")
                .arg(self.dir.join("data"))
                .arg("--listen-client-urls")
                .arg(format!("http://{}", self.endpoint))
                .arg("--advertise-client-urls")
                .arg(format!("http://{}", self.endpoint))
                .arg("--listen-peer-urls")
                .arg(&self.peer)
                .arg("--initial-advertise-peer-urls")
                .arg(&self.peer)
                .arg("--initial-cluster")
                .arg(initial_cluster),
            self.dir
                .join(format!("etcd-{}-{}.log", self.name, free_port())),
        )
    }

    /// Waits until the member answers `/health` with true (it sees a leader).
    fn wait_healthy(&self, proc: &mut Proc) {
        wait_until(&format!("etcd member {} to be healthy", self.name), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Err(format!("etcd exited ({status}): {}", proc.log_text()));
            }
            if std::net::TcpStream::connect(&self.endpoint).is_err() {
                return Err("not listening yet".into());
            }
            let (code, body) = http(&self.endpoint, "GET", "/health", &[], b"");
            if code == 200 && body.contains("\"health\":\"true\"") {
                Ok(())
            } else {
                Err(format!("{code} {body}"))
            }
        });
    }
}

/// One running etcd member.
pub struct EtcdServer {
    /// `127.0.0.1:PORT`, what `etcd://` takes.
    pub endpoint: String,
    proc: Proc,
}

impl EtcdServer {
    /// Starts a single-member cluster with its data under `dir` and waits until it is
    /// healthy; None when there is no etcd binary (outside CI).
    pub fn start(dir: &Path) -> Option<EtcdServer> {
        let bin = etcd()?;
        let member = Member::new("flotilla-test", dir);
        let mut proc = member.spawn(&bin, &format!("{}={}", member.name, member.peer));
        member.wait_healthy(&mut proc);
        Some(EtcdServer {
            endpoint: member.endpoint,
            proc,
        })
    }

    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}

/// A cluster of etcd members on loopback, each with a data dir under the cluster's dir.
pub struct EtcdCluster {
    bin: PathBuf,
    initial_cluster: String,
    members: Vec<Member>,
    procs: Vec<Option<Proc>>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until each is healthy; None when there is no etcd
    /// binary (outside CI).
    pub fn start(dir: &Path, size: usize) -> Option<EtcdCluster> {
        let bin = etcd()?;
        let members: Vec<Member> = (0..size)
            .map(|i| Member::new(&format!("m{i}"), &dir.join(format!("m{i}"))))
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        // All at once: a member waits for its peers before it is healthy.
        let procs = members
            .iter()
            .map(|m| Some(m.spawn(&bin, &initial_cluster)))
            .collect();
        let mut cluster = EtcdCluster {
            bin,
            initial_cluster,
            members,
            procs,
        };
        for i in 0..size {
            cluster.wait_healthy(i);
        }
        Some(cluster)
    }

    /// `etcd://` followed by every member's endpoint.
    pub fn url(&self) -> String {
        let endpoints: Vec<&str> = self.members.iter().map(|m| m.endpoint.as_str()).collect();
        format!("etcd://{}", endpoints.join(","))
    }

    /// Kills member `i` (SIGKILL).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill();
        }
    }

    /// Starts member `i` again on its data dir; does not wait for it (without quorum it
    /// is not healthy until enough members are back): see [`EtcdCluster::wait_healthy`].
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        self.procs[i] = Some(self.members[i].spawn(&self.bin, &self.initial_cluster));
    }

    /// Waits until member `i` is running and healthy.
    pub fn wait_healthy(&mut self, i: usize) {
        let member = &self.members[i];
        match self.procs[i].as_mut() {
            Some(proc) => member.wait_healthy(proc),
            None => panic!("etcd member {} is stopped", member.name),
        }
    }

    /// Every running member's log, for a failure message.
    pub fn log_text(&self) -> String {
        self.procs
            .iter()
            .flatten()
            .map(Proc::log_text)
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}
