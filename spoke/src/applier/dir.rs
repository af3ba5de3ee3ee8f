//! The directory target: each bundle becomes `PATH/<bundle>.yaml`, written atomically
//! (temp file + rename), so a reader such as k3s's auto-deploy never sees half a file.
//! A header line marks the file as flotilla's and names the deployment; only files
//! carrying it are ever pruned.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use flotilla_model::State;
use futures::future::BoxFuture;

use super::{Applier, Desired, Outcome, check_bundle_name};

const HEADER_PREFIX: &str = "# managed by flotilla: bundle=";

pub struct DirApplier {
    root: PathBuf,
}

impl DirApplier {
    pub fn new(root: &Path) -> Result<Self> {
        fs::create_dir_all(root)
            .with_context(|| format!("creating target dir {}", root.display()))?;
        Ok(DirApplier {
            root: root.to_path_buf(),
        })
    }

    fn file(&self, bundle: &str) -> Result<PathBuf> {
        check_bundle_name(bundle)?;
        Ok(self.root.join(format!("{bundle}.yaml")))
    }

    fn render(bundle: &str, deployment_id: &str, content: &[u8]) -> Vec<u8> {
        let mut out = format!("{HEADER_PREFIX}{bundle} deployment={deployment_id}\n").into_bytes();
        out.extend_from_slice(content);
        out
    }
}

impl DirApplier {
    fn write(&self, bundle: &str, deployment_id: &str, content: &[u8]) -> Result<()> {
        let path = self.file(bundle)?;
        let tmp = self.root.join(format!(".{bundle}.yaml.tmp"));
        // Manifests may carry Secrets: owner-only. create_new (O_EXCL) never follows a
        // link someone left at the temp path; a stale temp file from a crash goes first.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", tmp.display()));
            }
            _ => {}
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&Self::render(bundle, deployment_id, content))
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming into {}", path.display()))
    }

    fn delete(&self, bundle: &str) -> Result<()> {
        let path = self.file(bundle)?;
        match fs::read_to_string(&path) {
            Ok(text) if !text.starts_with(HEADER_PREFIX) => {
                tracing::warn!(file = %path.display(), "not removing a file flotilla did not write");
                Ok(())
            }
            Ok(_) => fs::remove_file(&path).with_context(|| format!("removing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn in_sync(&self, bundle: &str, deployment_id: &str, content: &[u8]) -> bool {
        let Ok(path) = self.file(bundle) else {
            return false;
        };
        fs::read(path).is_ok_and(|b| b == Self::render(bundle, deployment_id, content))
    }

    /// Runs `f` on a blocking thread: file writes stay off the async runtime.
    fn blocking<'a, T: Send + 'static>(
        &'a self,
        f: impl FnOnce(&DirApplier) -> Result<T> + Send + 'static,
    ) -> BoxFuture<'a, Result<T>> {
        let me = DirApplier {
            root: self.root.clone(),
        };
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&me))
                .await
                .context("directory target task")?
        })
    }
}

impl Applier for DirApplier {
    fn apply<'a>(&'a self, d: &'a Desired) -> BoxFuture<'a, Result<Outcome>> {
        let d = d.clone();
        self.blocking(move |t| {
            t.write(&d.bundle, &d.deployment_id, &d.content)?;
            Ok(Outcome::ready())
        })
    }

    fn remove<'a>(&'a self, bundle: &'a str, keep_resources: bool) -> BoxFuture<'a, Result<()>> {
        let bundle = bundle.to_string();
        self.blocking(move |t| {
            if keep_resources {
                return Ok(());
            }
            t.delete(&bundle)
        })
    }

    fn check<'a>(&'a self, d: &'a Desired) -> BoxFuture<'a, Result<Outcome>> {
        let d = d.clone();
        self.blocking(move |t| {
            Ok(if t.in_sync(&d.bundle, &d.deployment_id, &d.content) {
                Outcome::ready()
            } else {
                Outcome {
                    state: State::Modified,
                    message: "target differs from the applied deployment".to_string(),
                    resources: Vec::new(),
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_detect_drift_and_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = DirApplier::new(dir.path()).expect("target");
        t.write("web", "d-1", b"kind: ConfigMap\n").expect("apply");
        assert!(t.in_sync("web", "d-1", b"kind: ConfigMap\n"));
        fs::write(dir.path().join("web.yaml"), "tampered").expect("tamper");
        assert!(!t.in_sync("web", "d-1", b"kind: ConfigMap\n"));
        t.write("web", "d-1", b"kind: ConfigMap\n")
            .expect("re-apply");
        t.delete("web").expect("remove");
        assert!(!dir.path().join("web.yaml").exists());
        t.delete("web").expect("removing twice is fine");
    }

    #[test]
    fn bundle_files_are_owner_only_and_a_link_at_the_temp_path_is_not_followed() {
        let dir = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        let victim = outside.path().join("victim");
        fs::write(&victim, "untouched").expect("write");
        std::os::unix::fs::symlink(&victim, dir.path().join(".web.yaml.tmp")).expect("link");
        let t = DirApplier::new(dir.path()).expect("target");
        t.write("web", "d-1", b"kind: Secret\n").expect("apply");
        let mode = fs::metadata(dir.path().join("web.yaml"))
            .expect("written")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_to_string(&victim).expect("read"), "untouched");
    }

    #[test]
    fn files_flotilla_did_not_write_are_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = DirApplier::new(dir.path()).expect("target");
        fs::write(dir.path().join("mine.yaml"), "hand written").expect("write");
        t.delete("mine").expect("no error");
        assert!(dir.path().join("mine.yaml").exists());
        assert!(t.write("../escape", "d", b"x").is_err());
    }
}
