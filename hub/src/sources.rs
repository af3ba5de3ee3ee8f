//! Source pollers and the reconciler task.
//!
//! One poller task per source fetches its branch (and a pinned tag) at the source's
//! interval, or only when poked (a webhook, a forced poll, an edit) when polling is off,
//! and not at all while the source is paused. It reads the source's credentials and
//! trusted keys from its credential files for each poll, checks the commit's signature
//! when the source verifies commits, indexes a new commit's tree from the object database
//! (no checkout; a tree over its budgets, with a hostile entry name, or not signed by a
//! trusted key is a source error), loads every bundle with the renderer, and publishes the
//! revision whole. A bundle that fails to load keeps its last good version deployed and
//! carries the error. The reconciler task coalesces triggers and recomputes assignments
//! off the async runtime.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla_model::ClusterName;
use flotilla_render as render;
use tokio::sync::mpsc;

use crate::charts;
use crate::credentials::{Credentials, Kind};
use crate::fleet::{EventKind, Fleet, FleetEvent, SourceState, Trigger};
use crate::git;
use crate::reconcile::BundleEntry;
use crate::records::{SourceSpec, now_unix};

fn source_dir(fleet: &Fleet, name: &str) -> PathBuf {
    fleet.data_dir.join("sources").join(name)
}

/// Polls one source until it is removed from the fleet or replaced by an edit.
pub async fn run_poller(fleet: Arc<Fleet>, source: Arc<SourceState>) {
    let name = source.spec.name.clone();
    let dir = source_dir(&fleet, &name);
    let _ = tokio::task::spawn_blocking(move || remove_checkouts(&dir)).await;
    loop {
        // Only the leader polls (`ha`); a replica that follows waits here for its term,
        // and a term that ends stops the poll in flight.
        let term = fleet.leadership.leading().await;
        let current = fleet.sources.get(&name).map(|s| s.value().clone());
        match current {
            Some(s) if Arc::ptr_eq(&s, &source) => {}
            // An edit replaced this state; its own poller carries on with the mirror.
            Some(_) => return,
            None => {
                tracing::info!(source = %name, "source removed; poller stops");
                let _ = tokio::fs::remove_dir_all(source_dir(&fleet, &name)).await;
                return;
            }
        }
        if !source.spec.paused {
            tokio::select! {
                () = poll_once(&fleet, &source) => {}
                () = term.cancelled() => continue,
            }
        }
        if source.spec.interval_secs == 0 {
            // Webhook only.
            source.poke.notified().await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(source.spec.interval_secs)) => {}
                _ = source.poke.notified() => {}
            }
        }
    }
}

/// The source's access and commit trust, read from its credential files for one poll.
fn read_credentials(
    fleet: &Fleet,
    spec: &SourceSpec,
) -> Result<(git::Access, Option<git::verify::Trust>), String> {
    let creds = Credentials::of(&fleet.data_dir, &spec.name);
    let text = |k: Kind| -> Result<Option<String>, String> {
        Ok(creds.read(k).map_err(|e| e.to_string())?.map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches(['\r', '\n'])
                .to_string()
        }))
    };
    let access = git::Access {
        username: spec.username.clone(),
        password: text(Kind::Password)?,
        ssh_key: creds.path(Kind::SshKey),
        known_hosts: creds.path(Kind::KnownHosts),
        ca_pem: creds.read(Kind::Ca).map_err(|e| e.to_string())?,
    };
    let trust = if spec.verify_commits {
        let signers = creds
            .read(Kind::AllowedSigners)
            .map_err(|e| e.to_string())?;
        let keys = creds.read(Kind::GpgKeys).map_err(|e| e.to_string())?;
        let trust = git::verify::Trust::parse(signers.as_deref(), keys.as_deref())
            .map_err(|e| format!("commit verification: {e}"))?;
        if trust.is_empty() {
            return Err(
                "commit verification is on but the source trusts no key: set --allowed-signers or --gpg-keys".to_string(),
            );
        }
        Some(trust)
    } else {
        None
    };
    Ok((access, trust))
}

async fn poll_once(fleet: &Arc<Fleet>, source: &Arc<SourceState>) {
    let _fetching = source.fetch_lock.lock().await;
    let spec = source.spec.clone();
    let dir = source_dir(fleet, &spec.name);
    let (previous_commit, refused_commit) = source
        .runtime
        .read()
        // A revision whose remote charts could not all be fetched is loaded again at
        // the next poll, so the bundle recovers when the repository does.
        .map(|r| {
            (
                r.commit.clone().filter(|_| !r.stale && !r.charts_failed),
                r.refused_commit.clone(),
            )
        })
        .unwrap_or_default();
    let limits = fleet.limits.clone();
    let started = std::time::Instant::now();
    let f = fleet.clone();
    let polled = tokio::task::spawn_blocking(move || -> Result<Polled, String> {
        let (access, trust) = read_credentials(&f, &spec)?;
        let mirror = dir.join("mirror.git");
        let remote = git::Remote {
            url: &spec.repo,
            branch: &spec.branch,
            revision: spec.revision.as_deref(),
            access: &access,
        };
        let commit = git::fetch(&mirror, &remote, limits.max_tree_blob_bytes)
            .map_err(|e| access.redact(&e.to_string()))?;
        if previous_commit.as_deref() == Some(commit.as_str()) {
            return Ok(Polled::Unchanged);
        }
        if refused_commit.as_deref() == Some(commit.as_str()) {
            return Ok(Polled::StillRefused);
        }
        let signed_by = match &trust {
            None => None,
            Some(trust) => {
                let verified = git::read_commit(&mirror, &commit)
                    .map_err(|e| e.to_string())
                    .and_then(|data| {
                        trust
                            .verify_commit(&commit, &data)
                            .map_err(|e| format!("{e}; it is not deployed"))
                    });
                match verified {
                    Ok(who) => Some(who),
                    Err(error) => return Ok(Polled::Refused { commit, error }),
                }
            }
        };
        // Rendered straight from the object database: nothing of the repo is written to
        // disk, so no tree entry can point a write anywhere.
        match git::load_tree(&mirror, &commit, &spec.paths, &limits) {
            Ok((tree, blobs)) => {
                let bundles =
                    render::discover_tree(&tree, &blobs, &spec.name, &spec.paths, &limits);
                Ok(Polled::Loaded(Loaded {
                    commit,
                    bundles,
                    signed_by,
                }))
            }
            Err(e) => Ok(Polled::Refused {
                commit,
                error: e.to_string(),
            }),
        }
    })
    .await
    .unwrap_or_else(|e| Err(format!("poller task failed: {e}")));
    let mut polled = polled;
    let mut charts_failed = false;
    if let Ok(Polled::Loaded(loaded)) = &mut polled {
        charts_failed = !attach_remote_charts(fleet, source, &mut loaded.bundles).await;
    }
    // Errors from git and the network may quote the URL, credentials and all; nothing
    // past this point (status, the Admin API, logs) sees them.
    let redact = |e: &str| flotilla_model::redact_in(e, &source.spec.repo);

    fleet
        .metrics
        .git_poll_seconds
        .observe(started.elapsed().as_secs_f64());
    if matches!(
        polled,
        Err(_) | Ok(Polled::Refused { .. } | Polled::StillRefused)
    ) {
        fleet.metrics.git_poll_errors.inc();
    }
    let now = now_unix();
    let Ok(mut rt) = source.runtime.write() else {
        return;
    };
    rt.last_poll = now;
    let failed = |rt: &mut crate::fleet::SourceRuntime, e: String| {
        if rt.error.is_none() {
            rt.error_since = now;
        }
        tracing::warn!(source = %source.spec.name, error = %e, "git poll failed; keeping the last good revision");
        rt.error = Some(e);
    };
    match polled {
        Err(e) => failed(&mut rt, redact(&e)),
        Ok(Polled::Refused { commit, error }) => {
            failed(&mut rt, redact(&error));
            rt.refused_commit = Some(commit);
        }
        // The error it was refused with stands.
        Ok(Polled::StillRefused) => {}
        Ok(Polled::Unchanged) => {
            rt.error = None;
            rt.refused_commit = None;
        }
        Ok(Polled::Loaded(loaded)) => {
            let previous: HashMap<Arc<str>, Arc<BundleEntry>> = rt
                .bundles
                .iter()
                .flatten()
                .map(|b| (b.name.clone(), b.clone()))
                .collect();
            let entries = publish_entries(loaded.bundles, &previous, fleet.strict_fleet_yaml);
            let broken = entries.iter().filter(|e| !e.errors.is_empty()).count();
            tracing::info!(source = %source.spec.name, commit = %loaded.commit, bundles = entries.len(), broken, signed_by = loaded.signed_by.as_deref().unwrap_or(""), "published revision");
            // A name published again is deployed again: a later Unassign prunes as usual.
            let revived: Vec<String> = entries
                .iter()
                .filter(|e| fleet.kept_bundles.remove(&*e.name).is_some())
                .map(|e| e.name.to_string())
                .collect();
            if !revived.is_empty() {
                fleet.store.submit(
                    revived
                        .into_iter()
                        .map(|b| crate::store::Op::delete(crate::store::Table::KeptBundles, b))
                        .collect(),
                );
            }
            let _ = fleet.events.send(FleetEvent {
                source: source.spec.name.clone(),
                message: format!("commit {}", loaded.commit),
                ..FleetEvent::new(EventKind::RevisionPublished)
            });
            rt.commit = Some(loaded.commit);
            rt.signed_by = loaded.signed_by;
            rt.stale = false;
            rt.bundles = Some(entries);
            rt.charts_failed = charts_failed;
            rt.error = None;
            rt.refused_commit = None;
            drop(rt);
            fleet.trigger(Trigger::All);
        }
    }
}

/// Fetches the remote charts (Helm repositories, `oci://`) that the loaded bundles name
/// and hands each bundle its archives. A chart that cannot be fetched fails its bundle
/// alone, with the reason, so the bundle's last good revision stays deployed. Returns
/// whether every chart was fetched.
async fn attach_remote_charts(
    fleet: &Fleet,
    source: &SourceState,
    bundles: &mut [render::LoadedBundle],
) -> bool {
    let spec = &source.spec;
    let mut all_fetched = true;
    let mut auth = None;
    let mut session = fleet.charts.session();
    for lb in bundles.iter_mut() {
        let wanted = match &lb.result {
            Ok(b) => b.remote_charts(),
            Err(_) => continue,
        };
        if wanted.is_empty() {
            continue;
        }
        let file = if lb.path.is_empty() {
            "fleet.yaml".to_string()
        } else {
            format!("{}/fleet.yaml", lb.path)
        };
        let fail = |message: String| render::Diagnostic {
            file: file.clone(),
            line: None,
            column: None,
            message,
        };
        let auth = auth.get_or_insert_with(|| {
            charts::auth::SourceAuth::load(&fleet.data_dir, &spec.name, spec.helm_auth.as_ref())
        });
        let auth = match auth {
            Ok(a) => a,
            Err(e) => {
                all_fetched = false;
                lb.result = Err(vec![fail(format!("helm credentials: {e}"))]);
                continue;
            }
        };
        let mut archives = Vec::new();
        let mut errors = Vec::new();
        for request in &wanted {
            let chart = charts::ChartRef::from_remote(request);
            let url = chart.as_ref().map(|r| r.url()).unwrap_or_default();
            let shown = chart.map_or_else(|| "helm chart".to_string(), |r| r.to_string());
            match session.fetch(request, &auth.for_url(&url)).await {
                Ok(a) => {
                    tracing::debug!(source = %spec.name, bundle = %lb.name, chart = %a.name, version = %a.version, digest = %a.digest, "remote chart ready");
                    archives.push(a);
                }
                Err(e) => errors.push(fail(format!("{shown}: {e}"))),
            }
        }
        if !errors.is_empty() {
            all_fetched = false;
            fleet.metrics.chart_fetch_errors.inc_by(errors.len() as u64);
            for e in &errors {
                tracing::warn!(source = %spec.name, bundle = %lb.name, error = %e, "remote chart fetch failed; the bundle keeps its last good revision");
            }
            lb.result = Err(errors);
            continue;
        }
        // Placing the charts renders each variant once to check it: CPU work.
        let taken = std::mem::replace(&mut lb.result, Err(Vec::new()));
        lb.result = match taken {
            Ok(bundle) => tokio::task::spawn_blocking(move || bundle.with_charts(&archives))
                .await
                .unwrap_or_else(|e| Err(vec![fail(format!("rendering the chart failed: {e}"))])),
            Err(e) => Err(e),
        };
    }
    all_fetched
}

/// What one poll found at the branch's head.
enum Polled {
    /// The published revision.
    Unchanged,
    /// A new revision, loaded.
    Loaded(Loaded),
    /// A new head whose tree is refused as a whole.
    Refused { commit: String, error: String },
    /// The head refused at an earlier poll: not indexed again.
    StillRefused,
}

struct Loaded {
    commit: String,
    bundles: Vec<render::LoadedBundle>,
    /// Who signed `commit`, when the source verifies commits.
    signed_by: Option<String>,
}

/// Turns a freshly loaded revision into entries; a broken bundle keeps the previous
/// revision's good bundle so it stays deployed. With `strict` (`--strict-fleet-yaml`), a
/// bundle with unknown fleet.yaml keys is broken.
fn publish_entries(
    loaded: Vec<render::LoadedBundle>,
    previous: &HashMap<Arc<str>, Arc<BundleEntry>>,
    strict: bool,
) -> Vec<Arc<BundleEntry>> {
    loaded
        .into_iter()
        .map(|mut lb| {
            if strict
                && let Ok(b) = &lb.result
                && !b.unknown_keys().is_empty()
            {
                let refused = b
                    .unknown_keys()
                    .iter()
                    .map(|d| render::Diagnostic {
                        message: format!("{} (the hub runs with --strict-fleet-yaml)", d.message),
                        ..d.clone()
                    })
                    .collect();
                lb.result = Err(refused);
            }
            let (bundle, errors, warnings) = match lb.result {
                Ok(b) => {
                    let warnings = b.warnings().iter().map(ToString::to_string).collect();
                    (Some(Arc::new(b)), Vec::new(), warnings)
                }
                Err(diags) => (
                    previous
                        .get(lb.name.as_str())
                        .and_then(|p| p.bundle.clone()),
                    diags.iter().map(ToString::to_string).collect(),
                    Vec::new(),
                ),
            };
            Arc::new(BundleEntry::new(lb.name, lb.path, bundle, errors, warnings))
        })
        .collect()
}

/// Removes the `checkout-<commit>` folders that earlier hubs wrote next to the mirror.
fn remove_checkouts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let is_checkout = e.file_name().to_string_lossy().starts_with("checkout-");
        // A symlink planted by an old checkout is removed, never followed.
        if is_checkout && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        } else if is_checkout {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Drains reconcile triggers, coalescing bursts, and recomputes assignments on a
/// blocking thread (rendering is CPU work).
pub async fn run_reconciler(fleet: Arc<Fleet>, mut rx: mpsc::UnboundedReceiver<Trigger>) {
    while let Some(first) = rx.recv().await {
        let mut all = false;
        let mut some = BTreeSet::new();
        let mut take = |t: Trigger| match t {
            Trigger::All => all = true,
            Trigger::Cluster(c) => {
                some.insert(c);
            }
        };
        take(first);
        while let Ok(t) = rx.try_recv() {
            take(t);
        }
        // Only the leader publishes assignments (`ha`); a replica that takes the lead
        // reconciles every cluster then.
        if !fleet.leadership.is_leader() {
            continue;
        }
        let targets: Option<Vec<ClusterName>> = (!all).then(|| some.into_iter().collect());
        // Rendering is CPU work: off the runtime. A panic in the reconcile is a bug that
        // must not be swallowed: it ends this task with the panic.
        let f = fleet.clone();
        let done = tokio::task::spawn_blocking(move || {
            f.reconcile(targets);
            if all {
                // A new revision (or targeting change) may have orphaned old renders.
                f.collect_content_garbage();
            }
        })
        .await;
        if let Err(e) = done {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            // Cancelled: the runtime is shutting down.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_checkouts_are_removed_without_following_their_symlinks() {
        let source = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        std::fs::write(outside.path().join("keep.pem"), "x").expect("write");
        let old = source.path().join("checkout-abc");
        std::fs::create_dir_all(&old).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), old.join("d")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), source.path().join("checkout-def"))
            .expect("symlink");
        std::fs::create_dir_all(source.path().join("mirror.git")).expect("mkdir");

        remove_checkouts(source.path());

        let left: Vec<_> = std::fs::read_dir(source.path())
            .expect("read")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec!["mirror.git"]);
        assert!(outside.path().join("keep.pem").exists());
    }
}
