//! Chart archives by digest, in memory and on disk (`DATA_DIR/charts/<hex>.tgz`, the
//! folder 0700 and each file 0600: a private chart is as private as its credentials).
//! A file is checked against its name's digest when it is read, so a corrupt or planted
//! file is never used, only fetched again.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use dashmap::DashMap;

pub struct ChartCache {
    dir: PathBuf,
    /// `sha256:<hex>` → archive. Written by `put` (after a verified download) and by
    /// `get` (a verified file).
    mem: DashMap<String, Bytes>,
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
        self.mem.insert(digest.to_string(), bytes.clone());
        Some(bytes)
    }

    /// Keeps a verified archive. A failed disk write only costs a later fetch.
    pub async fn put(&self, digest: &str, bytes: Bytes) {
        self.mem.insert(digest.to_string(), bytes.clone());
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
