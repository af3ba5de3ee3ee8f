//! A real etcd for tests: the pinned binary (`ETCD`, or `~/.cache/flotilla-tools/bin/etcd`
//! built by `tests/k8s/tools/build etcd`), one member on random loopback ports with a data
//! dir of its own, killed on drop. Used by the hub's store contract tests.

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
        let client = free_port();
        let peer = free_port();
        let endpoint = format!("127.0.0.1:{client}");
        let proc = Proc::spawn(
            Command::new(bin)
                .arg("--name")
                .arg("flotilla-test")
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--listen-client-urls")
                .arg(format!("http://{endpoint}"))
                .arg("--advertise-client-urls")
                .arg(format!("http://{endpoint}"))
                .arg("--listen-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-cluster")
                .arg(format!("flotilla-test=http://127.0.0.1:{peer}")),
            dir.join("etcd.log"),
        );
        let mut proc = proc;
        wait_until("etcd to be healthy", || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Err(format!("etcd exited ({status}): {}", proc.log_text()));
            }
            if std::net::TcpStream::connect(&endpoint).is_err() {
                return Err("not listening yet".into());
            }
            let (code, body) = http(&endpoint, "GET", "/health", &[], b"");
            if code == 200 && body.contains("\"health\":\"true\"") {
                Ok(())
            } else {
                Err(format!("{code} {body}"))
            }
        });
        Some(EtcdServer { endpoint, proc })
    }

    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}
