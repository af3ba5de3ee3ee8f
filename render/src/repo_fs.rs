//! Read-only file access confined to one repo root. Owns path normalisation (repo-relative
//! `/`-separated paths), the "escapes the repo" check (`..` or a symlink pointing outside),
//! size limits (checked before a file is read), and the snapshot a loaded bundle keeps so
//! rendering later never touches the repo again. A repo is a [`Backend`]: a folder on disk
//! ([`DiskFs`], the only code in the crate that opens files) or a git tree
//! (`repo_tree::TreeFs`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::Limits;
use crate::diagnostic::Diagnostic;

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: String,
    pub is_dir: bool,
    /// Symlinked directories are listed but never walked into (no loops).
    pub is_symlink: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Missing,
}

/// What the renderer needs from a file tree.
pub(crate) trait Fs {
    fn read(&self, rel: &str) -> Result<Arc<str>, Diagnostic>;
    /// The file's bytes, text or not (a chart's `.tgz` subcharts and `.Files`).
    fn read_bytes(&self, rel: &str) -> Result<Arc<[u8]>, Diagnostic>;
    fn list(&self, rel: &str) -> Result<Arc<Vec<Entry>>, Diagnostic>;
    fn kind(&self, rel: &str) -> Kind;
}

/// Joins `rel` onto the repo-relative directory `base`, resolving `.` and `..` lexically.
/// `Err` when the result would leave the repo root. Absolute paths are refused.
pub(crate) fn join(base: &str, rel: &str) -> Result<String, String> {
    if rel.starts_with('/') || rel.starts_with('\\') || rel.contains(":\\") {
        return Err(format!(
            "absolute path {rel:?} is not allowed; use a path inside the repo"
        ));
    }
    let mut parts: Vec<&str> = base
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("path {rel:?} escapes the repo"));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The last component of a repo-relative path.
pub(crate) fn file_name(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(_, n)| n).unwrap_or(rel)
}

#[derive(Default, Debug, Clone)]
pub(crate) struct Snapshot {
    files: BTreeMap<String, Result<Arc<str>, Diagnostic>>,
    blobs: BTreeMap<String, Result<Arc<[u8]>, Diagnostic>>,
    dirs: BTreeMap<String, Result<Arc<Vec<Entry>>, Diagnostic>>,
    kinds: BTreeMap<String, Kind>,
}

impl Snapshot {
    /// Every file read successfully, by repo-relative path.
    pub(crate) fn texts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files
            .iter()
            .filter_map(|(p, r)| r.as_ref().ok().map(|t| (p.as_str(), &**t)))
    }
}

impl Fs for Snapshot {
    fn read(&self, rel: &str) -> Result<Arc<str>, Diagnostic> {
        self.files
            .get(rel)
            .cloned()
            .unwrap_or_else(|| Err(Diagnostic::new(rel, "file was not loaded with the bundle")))
    }
    fn read_bytes(&self, rel: &str) -> Result<Arc<[u8]>, Diagnostic> {
        self.blobs
            .get(rel)
            .cloned()
            .unwrap_or_else(|| Err(Diagnostic::new(rel, "file was not loaded with the bundle")))
    }
    fn list(&self, rel: &str) -> Result<Arc<Vec<Entry>>, Diagnostic> {
        self.dirs.get(rel).cloned().unwrap_or_else(|| {
            Err(Diagnostic::new(
                rel,
                "directory was not loaded with the bundle",
            ))
        })
    }
    fn kind(&self, rel: &str) -> Kind {
        self.kinds.get(rel).copied().unwrap_or(Kind::Missing)
    }
}

/// Where a repo's files come from (a folder on disk, or a git tree): uncached and
/// unrecorded. Paths are repo-relative; symlinks are resolved inside the repo only.
pub(crate) trait Backend {
    /// The size of the regular file at `rel`, known before any byte of it is read.
    fn file_size(&self, rel: &str) -> Result<u64, Diagnostic>;
    /// The bytes of the file at `rel`; never more than `max` (an error instead).
    fn read_bytes(&self, rel: &str, max: u64) -> Result<Vec<u8>, Diagnostic>;
    fn list(&self, rel: &str) -> Result<Arc<Vec<Entry>>, Diagnostic>;
    fn kind(&self, rel: &str) -> Kind;
}

/// Serves a [`Backend`] under the size [`Limits`], caching and recording everything it
/// served into a `Snapshot`.
pub(crate) struct Recorder<B> {
    backend: B,
    limits: Limits,
    state: Mutex<(Snapshot, u64)>,
}

impl<B: Backend> Recorder<B> {
    pub(crate) fn new(backend: B, limits: &Limits) -> Self {
        Recorder {
            backend,
            limits: limits.clone(),
            state: Mutex::new((Snapshot::default(), 0)),
        }
    }

    pub(crate) fn into_snapshot(self) -> Snapshot {
        match self.state.into_inner() {
            Ok((snap, _)) => snap,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut (Snapshot, u64)) -> R) -> R {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn read_uncached(&self, rel: &str) -> Result<Arc<str>, Diagnostic> {
        let bytes = self.read_bytes_uncached(rel)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Diagnostic::new(rel, "file is not valid UTF-8 text"))?;
        Ok(Arc::from(text))
    }

    fn read_bytes_uncached(&self, rel: &str) -> Result<Vec<u8>, Diagnostic> {
        // The size is checked before a byte is read: a huge file costs nothing.
        let size = self.backend.file_size(rel)?;
        if size > self.limits.max_file_bytes {
            return Err(Diagnostic::new(
                rel,
                format!(
                    "file is {size} bytes, over the limit of {} bytes per file",
                    self.limits.max_file_bytes
                ),
            ));
        }
        let total = self.with_state(|s| s.1) + size;
        if total > self.limits.max_bundle_bytes {
            return Err(Diagnostic::new(
                rel,
                format!(
                    "bundle reads more than the limit of {} bytes",
                    self.limits.max_bundle_bytes
                ),
            ));
        }
        let bytes = self.backend.read_bytes(rel, size)?;
        self.with_state(|s| s.1 += bytes.len() as u64);
        Ok(bytes)
    }
}

impl<B: Backend> Fs for Recorder<B> {
    fn read(&self, rel: &str) -> Result<Arc<str>, Diagnostic> {
        if let Some(hit) = self.with_state(|s| s.0.files.get(rel).cloned()) {
            return hit;
        }
        let result = self.read_uncached(rel);
        self.with_state(|s| {
            s.0.files.insert(rel.to_string(), result.clone());
        });
        result
    }

    fn read_bytes(&self, rel: &str) -> Result<Arc<[u8]>, Diagnostic> {
        if let Some(hit) = self.with_state(|s| s.0.blobs.get(rel).cloned()) {
            return hit;
        }
        let result = self.read_bytes_uncached(rel).map(Arc::from);
        self.with_state(|s| {
            s.0.blobs.insert(rel.to_string(), result.clone());
        });
        result
    }

    fn list(&self, rel: &str) -> Result<Arc<Vec<Entry>>, Diagnostic> {
        if let Some(hit) = self.with_state(|s| s.0.dirs.get(rel).cloned()) {
            return hit;
        }
        let result = self.backend.list(rel);
        self.with_state(|s| {
            s.0.dirs.insert(rel.to_string(), result.clone());
        });
        result
    }

    fn kind(&self, rel: &str) -> Kind {
        if let Some(hit) = self.with_state(|s| s.0.kinds.get(rel).copied()) {
            return hit;
        }
        let kind = self.backend.kind(rel);
        self.with_state(|s| {
            s.0.kinds.insert(rel.to_string(), kind);
        });
        kind
    }
}

/// A repo checked out in a folder (`flotilla render DIR`).
#[derive(Debug, Clone)]
pub(crate) struct DiskFs {
    root: PathBuf,
    canonical_root: Option<PathBuf>,
    /// Paths already resolved, by repo-relative path: each folder is resolved once, and a
    /// file's size and bytes are read through one resolution. Shared by the clones that
    /// discovery makes of one folder.
    resolved: Arc<Mutex<HashMap<String, Resolved>>>,
}

impl DiskFs {
    pub(crate) fn new(root: &Path) -> Self {
        DiskFs {
            root: root.to_path_buf(),
            canonical_root: std::fs::canonicalize(root).ok(),
            resolved: Arc::default(),
        }
    }

    /// The on-disk path of `rel`, checked to stay under the root after symlinks.
    ///
    /// A path is resolved from its (cached) parent: when the last component is not a
    /// symlink, the parent's canonical path joined with it is canonical too, so one
    /// `lstat` replaces `realpath`'s `readlink` of every component (a tenth of a
    /// 200-template chart's load, docs/benchmarks.md). A symlink, or a component that
    /// is not a plain name, takes the full `canonicalize` and the under-the-root check.
    fn resolve(&self, rel: &str) -> Result<PathBuf, Diagnostic> {
        self.lookup(rel).map(|r| r.path)
    }

    /// [`DiskFs::resolve`], with the metadata its `lstat` found.
    fn lookup(&self, rel: &str) -> Result<Resolved, Diagnostic> {
        let Some(root) = &self.canonical_root else {
            return Err(Diagnostic::new("", "repo root cannot be read"));
        };
        if rel.is_empty() {
            return Ok(Resolved {
                path: root.clone(),
                meta: None,
            });
        }
        if let Some(hit) = self.cached(rel) {
            return Ok(hit);
        }
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let plain = !matches!(name, "" | "." | "..");
        // A parent that cannot be resolved takes the slow path too, so the error names
        // `rel` as it always did.
        let candidate = plain
            .then(|| self.resolve(parent).ok())
            .flatten()
            .map(|p| p.join(name));
        let fast = match candidate {
            Some(c) => match c.symlink_metadata() {
                Ok(m) if !m.file_type().is_symlink() => Some(Resolved {
                    meta: Some(m),
                    path: c,
                }),
                Ok(_) => None,
                Err(e) => {
                    return Err(Diagnostic::new(
                        rel,
                        format!("cannot read: {}", io_reason(&e)),
                    ));
                }
            },
            None => None,
        };
        let resolved = match fast {
            Some(r) => r,
            None => {
                let canonical = std::fs::canonicalize(self.root.join(rel))
                    .map_err(|e| Diagnostic::new(rel, format!("cannot read: {}", io_reason(&e))))?;
                if !canonical.starts_with(root) {
                    return Err(Diagnostic::new(rel, ESCAPES_THROUGH_SYMLINK));
                }
                Resolved {
                    path: canonical,
                    meta: None,
                }
            }
        };
        if let Ok(mut m) = self.resolved.lock() {
            m.insert(rel.to_string(), resolved.clone());
        }
        Ok(resolved)
    }

    fn cached(&self, rel: &str) -> Option<Resolved> {
        self.resolved.lock().ok()?.get(rel).cloned()
    }
}

/// A resolved path, with what its `lstat` said when that was not a symlink: then it is
/// what `stat` would say, so the size check and `kind` need no second call.
#[derive(Debug, Clone)]
struct Resolved {
    path: PathBuf,
    meta: Option<std::fs::Metadata>,
}

impl Resolved {
    /// The path's metadata, following a symlink (from the `lstat` when there was none).
    fn metadata(&self) -> std::io::Result<std::fs::Metadata> {
        match &self.meta {
            Some(m) => Ok(m.clone()),
            None => std::fs::metadata(&self.path),
        }
    }
}

/// The message for a path that leaves the repo through a symlink.
pub(crate) const ESCAPES_THROUGH_SYMLINK: &str =
    "path escapes the repo through a symlink; only targets inside the repo are allowed";

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

impl Backend for DiskFs {
    fn file_size(&self, rel: &str) -> Result<u64, Diagnostic> {
        let meta = self
            .lookup(rel)?
            .metadata()
            .map_err(|e| Diagnostic::new(rel, format!("cannot read: {}", io_reason(&e))))?;
        if !meta.is_file() {
            return Err(Diagnostic::new(rel, "is not a regular file"));
        }
        Ok(meta.len())
    }

    fn read_bytes(&self, rel: &str, max: u64) -> Result<Vec<u8>, Diagnostic> {
        use std::io::Read;
        let path = self.resolve(rel)?;
        let cannot =
            |e: std::io::Error| Diagnostic::new(rel, format!("cannot read: {}", io_reason(&e)));
        // `max` is the size just checked (under the per-file limit): one allocation, and
        // one read past it to see the end.
        let mut bytes = Vec::with_capacity(usize::try_from(max).unwrap_or(0).saturating_add(1));
        // The file may have grown since its size was checked: never read past `max`.
        std::fs::File::open(&path)
            .map_err(cannot)?
            .take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        if bytes.len() as u64 > max {
            return Err(Diagnostic::new(rel, "file grew while it was read"));
        }
        Ok(bytes)
    }

    fn list(&self, rel: &str) -> Result<Arc<Vec<Entry>>, Diagnostic> {
        let path = self.resolve(rel)?;
        let rd = std::fs::read_dir(&path)
            .map_err(|e| Diagnostic::new(rel, format!("cannot list: {}", io_reason(&e))))?;
        let mut entries = Vec::new();
        for entry in rd.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // The entry's type comes with the listing (d_type) on most file systems,
            // without an lstat per entry.
            let Ok(ltype) = entry.file_type() else {
                continue;
            };
            let is_symlink = ltype.is_symlink();
            let is_dir = if is_symlink {
                std::fs::metadata(entry.path())
                    .map(|m| m.is_dir())
                    .unwrap_or(false)
            } else {
                ltype.is_dir()
            };
            entries.push(Entry {
                name,
                is_dir,
                is_symlink,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Arc::new(entries))
    }

    fn kind(&self, rel: &str) -> Kind {
        match self.lookup(rel) {
            Ok(r) => match r.metadata() {
                Ok(m) if m.is_dir() => Kind::Dir,
                Ok(_) => Kind::File,
                Err(_) => Kind::Missing,
            },
            // An escaping path reports as a file so that reading it gives the error.
            Err(_) if self.root.join(rel).symlink_metadata().is_ok() => Kind::File,
            Err(_) => Kind::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_resolves_dots_and_refuses_escape() {
        assert_eq!(join("a/b", "../c/./d.yaml"), Ok("a/c/d.yaml".to_string()));
        assert_eq!(join("", "x"), Ok("x".to_string()));
        assert!(join("a", "../../x").is_err());
        assert!(join("a", "/etc/passwd").is_err());
    }

    #[test]
    fn symlink_out_of_the_repo_is_refused() {
        let outside = tempfile::tempdir().expect("tmp");
        std::fs::write(outside.path().join("secret.yaml"), "a: 1\n").expect("write");
        let repo = tempfile::tempdir().expect("tmp");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(
                outside.path().join("secret.yaml"),
                repo.path().join("link.yaml"),
            )
            .expect("symlink");
            let fs = Recorder::new(DiskFs::new(repo.path()), &Limits::default());
            let err = fs.read("link.yaml").expect_err("refused");
            assert!(err.message.contains("escapes the repo"), "{err}");
        }
    }

    /// A path resolves from its parent's cached resolution: a file under a symlinked
    /// folder is checked against where that folder really is, inside or out.
    #[cfg(unix)]
    #[test]
    fn a_file_under_a_symlinked_folder_is_read_only_when_the_folder_is_inside() {
        let outside = tempfile::tempdir().expect("tmp");
        std::fs::write(outside.path().join("secret.yaml"), "a: 1\n").expect("write");
        let repo = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(repo.path().join("real")).expect("mkdir");
        std::fs::write(repo.path().join("real/ok.yaml"), "b: 2\n").expect("write");
        std::os::unix::fs::symlink(outside.path(), repo.path().join("out")).expect("symlink");
        std::os::unix::fs::symlink(repo.path().join("real"), repo.path().join("in"))
            .expect("symlink");
        let fs = Recorder::new(DiskFs::new(repo.path()), &Limits::default());
        let err = fs.read("out/secret.yaml").expect_err("refused");
        assert!(err.message.contains("escapes the repo"), "{err}");
        assert_eq!(err.file, "out/secret.yaml", "the error names the file read");
        assert_eq!(&*fs.read("in/ok.yaml").expect("inside"), "b: 2\n");
        assert_eq!(&*fs.read("real/ok.yaml").expect("plain"), "b: 2\n");
        assert_eq!(
            fs.kind("out/secret.yaml"),
            Kind::File,
            "reading it gives the error"
        );
        assert_eq!(fs.kind("real"), Kind::Dir);
        let err = fs.read("real/missing.yaml").expect_err("missing");
        assert!(err.message.contains("no such file"), "{err}");
        let err = fs.read("real").expect_err("a folder");
        assert!(err.message.contains("not a regular file"), "{err}");
    }

    #[test]
    fn files_over_the_limit_are_refused() {
        let repo = tempfile::tempdir().expect("tmp");
        std::fs::write(repo.path().join("big.yaml"), "a: 12345678\n").expect("write");
        let limits = Limits {
            max_file_bytes: 4,
            ..Limits::default()
        };
        let fs = Recorder::new(DiskFs::new(repo.path()), &limits);
        let err = fs.read("big.yaml").expect_err("refused");
        assert!(err.message.contains("over the limit"), "{err}");
    }
}
