//! Chart archives by digest, in memory and on disk (`DATA_DIR/charts/<hex>.tgz`, the
//! folder 0700 and each file 0600: a private chart is as private as its credentials).
//! A file is checked against its name's digest when it is read, so a corrupt or planted
//! file is never used, only fetched again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;

/// Most archive bytes kept in memory; past it, archives are dropped from memory (the
/// disk keeps them), so many chart versions over a hub's life cannot grow it unbounded.
pub const MAX_MEMORY_BYTES: u64 = 256 << 20;

pub struct ChartCache {
    dir: PathBuf,
    /// `sha256:<hex>` → archive. Written by `keep` (after a verified download or read).
    mem: DashMap<String, Bytes>,
    /// The bytes in `mem`.
    mem_bytes: AtomicU64,
}

impl ChartCache {
    pub fn open(dir: &Path) -> std::io::Result<ChartCache> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(ChartCache {
            dir: dir.to_path_buf(),
            mem: DashMap::new(),
            mem_bytes: AtomicU64::new(0),
        })
    }

    /// How many archives are held in memory.
    pub fn held(&self) -> usize {
        self.mem.len()
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(format!("{}.tgz", hex.to_ascii_lowercase())))
    }

    /// The archive with this digest, if held and intact.
    pub async fn get(&self, digest: &str) -> Option<Bytes> {
        if let Some(b) = self.mem.get(digest) {
            return Some(b.clone());
        }
        let path = self.path(digest)?;
        let bytes = tokio::fs::read(&path).await.ok()?;
        if super::sha256(&bytes) != digest {
            tracing::warn!(path = %path.display(), "a cached chart does not match its digest; fetching it again");
            let _ = tokio::fs::remove_file(&path).await;
            return None;
        }
        let bytes = Bytes::from(bytes);
        self.keep(digest, bytes.clone());
        Some(bytes)
    }

    /// Holds `bytes` in memory, dropping others while the total is over the bound.
    fn keep(&self, digest: &str, bytes: Bytes) {
        let len = bytes.len() as u64;
        if self.mem.insert(digest.to_string(), bytes).is_none() {
            self.mem_bytes.fetch_add(len, Ordering::Relaxed);
        }
        while self.mem_bytes.load(Ordering::Relaxed) > MAX_MEMORY_BYTES {
            let Some(victim) = self
                .mem
                .iter()
                .map(|e| e.key().clone())
                .find(|k| k != digest)
            else {
                break;
            };
            if let Some((_, b)) = self.mem.remove(&victim) {
                self.mem_bytes.fetch_sub(b.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Keeps a verified archive. A failed disk write only costs a later fetch.
    pub async fn put(&self, digest: &str, bytes: Bytes) {
        self.keep(digest, bytes.clone());
        let Some(path) = self.path(digest) else {
            return;
        };
        let written = tokio::task::spawn_blocking(move || {
            flotilla_identity::files::write_secret(&path, &bytes)
        })
        .await;
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %e, "writing a chart to the cache");
        }
    }
}
