//! A generated fleet repo: `B` bundles, each a folder with a `fleet.yaml` and one
//! ConfigMap padded to a chosen size, committed with the `git` CLI. The hub reads it
//! through a plain path (gix's file transport runs `git-upload-pack`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};

pub struct FleetRepo {
    pub dir: PathBuf,
    pub bundles: usize,
    pub bundle_bytes: usize,
}

/// A commit and when it was made.
pub struct Commit {
    pub id: String,
    pub at: Instant,
    pub wall: SystemTime,
}

/// Folder name of bundle `i`; the hub names the bundle `<source>-<folder>`.
pub fn bundle_folder(i: usize) -> String {
    format!("app-{i:04}")
}

fn configmap(i: usize, generation: u64, bytes: usize) -> String {
    // The padding is printable and stable, so a render is deterministic for a generation.
    let pad: String = (0..bytes)
        .map(|k| char::from(b'a' + ((k * 7 + i) % 26) as u8))
        .collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels:\n    app: {name}\ndata:\n  generation: \"{generation}\"\n  payload: {pad}\n",
        name = bundle_folder(i)
    )
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=flotilla-bench",
            "-c",
            "user.email=bench@flotilla.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl FleetRepo {
    /// Writes `bundles` bundles of about `bundle_bytes` each and commits them.
    pub fn create(dir: &Path, bundles: usize, bundle_bytes: usize) -> Result<FleetRepo> {
        std::fs::create_dir_all(dir)?;
        for i in 0..bundles {
            let b = dir.join(bundle_folder(i));
            std::fs::create_dir_all(&b)?;
            std::fs::write(b.join("fleet.yaml"), "defaultNamespace: bench\n")?;
            std::fs::write(b.join("configmap.yaml"), configmap(i, 0, bundle_bytes))?;
        }
        git(dir, &["init", "-q", "-b", "main"])?;
        git(dir, &["add", "-A"])?;
        git(dir, &["commit", "-q", "--allow-empty", "-m", "initial"])?;
        Ok(FleetRepo {
            dir: dir.to_path_buf(),
            bundles,
            bundle_bytes,
        })
    }

    pub fn url(&self) -> String {
        self.dir.display().to_string()
    }

    /// Commits a change to bundle `i` only (its ConfigMap's generation).
    pub fn change_bundle(&self, i: usize, generation: u64) -> Result<Commit> {
        let p = self.dir.join(bundle_folder(i)).join("configmap.yaml");
        std::fs::write(&p, configmap(i, generation, self.bundle_bytes))?;
        git(
            &self.dir,
            &[
                "commit",
                "-q",
                "-a",
                "-m",
                &format!("bump {i} to {generation}"),
            ],
        )?;
        let (at, wall) = (Instant::now(), SystemTime::now());
        let id = git(&self.dir, &["rev-parse", "HEAD"])?;
        Ok(Commit { id, at, wall })
    }
}
