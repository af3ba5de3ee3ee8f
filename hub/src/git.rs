//! Git access with gix: fetch one branch of a remote into a bare mirror, and materialise
//! a commit's tree into a folder for the renderer.
//!
//! Everything here is blocking (gix has no tokio client); callers run it in
//! `spawn_blocking`. File writes stay inside the target folder: tree entry names are
//! checked so a hostile repo cannot write outside it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::bstr::ByteSlice;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {op} {url}: {message}")]
    Remote {
        op: &'static str,
        url: String,
        message: String,
    },
    #[error("branch {branch:?} not found in {url}")]
    BranchNotFound { url: String, branch: String },
    #[error("git checkout of {commit}: {message}")]
    Checkout { commit: String, message: String },
}

/// Fetches `branch` from `url` into the bare mirror at `mirror` and returns the commit
/// the branch points at. A force-push is followed (the refspec is forced).
pub fn fetch_branch(mirror: &Path, url: &str, branch: &str) -> Result<String, GitError> {
    let remote_err = |op, e: &dyn std::fmt::Display| GitError::Remote {
        op,
        url: url.to_string(),
        message: e.to_string(),
    };
    let repo = if mirror.join("HEAD").exists() {
        gix::open(mirror).map_err(|e| remote_err("open", &e))?
    } else {
        std::fs::create_dir_all(mirror).map_err(|e| remote_err("init", &e))?;
        gix::init_bare(mirror).map_err(|e| remote_err("init", &e))?
    };
    // gix reports a branch the remote does not have as a refspec that matched nothing;
    // say it in the user's terms.
    let fetch_err = |e: &dyn std::fmt::Display| {
        let text = e.to_string();
        if text.contains("matched any of") {
            GitError::BranchNotFound {
                url: url.to_string(),
                branch: branch.to_string(),
            }
        } else if text.contains("credentials") {
            // The server answered 401 and no credentials were configured or accepted.
            remote_err("fetch", &format!("authentication failed: {text}"))
        } else {
            remote_err("fetch", e)
        }
    };
    let local_ref = format!("refs/flotilla/{branch}");
    let spec = format!("+refs/heads/{branch}:{local_ref}");
    let remote = repo
        .remote_at(url)
        .map_err(|e| remote_err("remote", &e))?
        .with_refspecs([spec.as_str()], gix::remote::Direction::Fetch)
        .map_err(|e| remote_err("refspec", &e))?;
    let outcome = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| remote_err("connect", &e))?
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| fetch_err(&e))?
        .receive(gix::progress::Discard, &AtomicBool::new(false))
        .map_err(|e| fetch_err(&e))?;
    if outcome.ref_map.mappings.is_empty() {
        return Err(GitError::BranchNotFound {
            url: url.to_string(),
            branch: branch.to_string(),
        });
    }
    let id = repo
        .find_reference(local_ref.as_str())
        .map_err(|e| remote_err("resolve", &e))?
        .peel_to_id()
        .map_err(|e| remote_err("resolve", &e))?;
    Ok(id.to_string())
}

/// Writes the tree of `commit` into `dest` (which must not exist yet). Symlinks are
/// written as symlinks so the renderer can refuse ones that leave the repo; submodules
/// are skipped.
pub fn checkout(mirror: &Path, commit: &str, dest: &Path) -> Result<(), GitError> {
    let err = |e: &dyn std::fmt::Display| GitError::Checkout {
        commit: commit.to_string(),
        message: e.to_string(),
    };
    let repo = gix::open(mirror).map_err(|e| err(&e))?;
    let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| err(&e))?;
    let tree = repo
        .find_commit(id)
        .map_err(|e| err(&e))?
        .tree()
        .map_err(|e| err(&e))?;
    let mut recorder = gix::traverse::tree::Recorder::default();
    tree.traverse()
        .breadthfirst(&mut recorder)
        .map_err(|e| err(&e))?;
    let tmp = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| err(&e))?;
    for entry in recorder.records {
        let rel = entry.filepath.to_str().map_err(|e| err(&e))?;
        let path = safe_join(&tmp, rel).ok_or_else(|| err(&format!("unsafe path {rel:?}")))?;
        use gix::object::tree::EntryKind;
        match entry.mode.kind() {
            EntryKind::Tree => std::fs::create_dir_all(&path).map_err(|e| err(&e))?,
            EntryKind::Blob | EntryKind::BlobExecutable => {
                let blob = repo.find_object(entry.oid).map_err(|e| err(&e))?;
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| err(&e))?;
                }
                std::fs::write(&path, &blob.data).map_err(|e| err(&e))?;
            }
            EntryKind::Link => {
                let blob = repo.find_object(entry.oid).map_err(|e| err(&e))?;
                let target = blob.data.to_str().map_err(|e| err(&e))?.to_string();
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| err(&e))?;
                }
                std::os::unix::fs::symlink(target, &path).map_err(|e| err(&e))?;
            }
            EntryKind::Commit => {}
        }
    }
    std::fs::rename(&tmp, dest).map_err(|e| err(&e))
}

/// Joins a repo-relative path, refusing absolute paths and `..` components.
fn safe_join(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_paths_cannot_escape_the_checkout() {
        let base = Path::new("/tmp/x");
        assert_eq!(safe_join(base, "a/b.yaml"), Some(base.join("a/b.yaml")));
        assert_eq!(safe_join(base, "../etc/passwd"), None);
        assert_eq!(safe_join(base, "a//b"), None);
        assert_eq!(safe_join(base, "/abs"), None);
    }
}
