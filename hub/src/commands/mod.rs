//! The state's commands: the only way anything changes what the hub persists about
//! clusters, tokens, groups, sources and rollouts (the reconcile driver, status reports
//! and history aside). Each owns lock → validate → persist → publish → trigger, so no
//! check is separated from its action by an await:
//! - fleet-wide commands (here: groups, sources, rollouts, and the cluster commands an
//!   admin runs) hold the fleet's order lock from their check to their trigger;
//! - a command on one cluster record changes it through `edit_cluster`, which queues the
//!   record's snapshot to the store while holding its map entry, so the store receives a
//!   cluster's snapshots in the order memory took them, whoever wrote them (a Hello, a
//!   renewal, `Fleet::flush_last_seen`, an admin);
//! - what several hub replicas could race on is decided by the store itself: `register`
//!   takes the token's use and the name in one compare-and-swap (`registration`).
//!
//! Maps that only commands write (groups, paused rollouts) are persisted first and
//! changed after, so a failed write leaves memory as it was.
//!
//! Files: this one (clusters, groups, rollouts, sources), `tokens` (join tokens),
//! `registration` (register, recover, renew, which certificates may connect), `hello`
//! (what a connecting spoke reports).
//!
//! **Architecture Invariant:** no protobuf here; `server/` translates (checked by
//! `invariants::the_server_translates_and_never_writes_the_store`).

mod hello;
mod registration;
mod tokens;

pub use hello::HelloReport;
pub(crate) use registration::RegistrationQueue;
pub use registration::{Recovery, Registered, Registration};
pub use tokens::NewToken;

use std::sync::Arc;

use flotilla_identity::Refusal;
use flotilla_model::{ClusterName, Labels, labels};

use crate::charts;
use crate::credentials::{Credentials, Kind};
use crate::fleet::{Fleet, SourceState, Trigger};
use crate::label_trust;
use crate::records::{ClusterRecord, SourceSpec, status_key};
use crate::sources;
use crate::store::{Op, Revision, StoreError, Table};
use crate::targeting::GroupSpec;

/// Why a command was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The message names what was not found.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The request is well formed but the state does not allow it now.
    #[error("{0}")]
    Precondition(String),
    /// A spoke refused for a reason it must act on rather than retry (`Refusal`).
    #[error("{1}")]
    Refused(Refusal, String),
    /// The message names what already exists and how to change it.
    #[error("{0}")]
    Exists(String),
    /// The hub failed to act (a file could not be written...); the message says where.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A queued store write; resolves once it is durable.
type Durable = futures::future::BoxFuture<'static, Result<Revision, StoreError>>;

/// Every key and value of `set` is a valid label.
fn validate_labels(set: &Labels) -> Result<(), CommandError> {
    for (k, v) in set {
        labels::validate_key(k)
            .and_then(|_| labels::validate_value(v))
            .map_err(invalid)?;
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> CommandError {
    CommandError::Invalid(e.to_string())
}

/// The secret files a source command writes next to its spec.
#[derive(Debug, Clone, Default)]
pub struct SourceSecrets {
    /// Credential files to write; empty contents are skipped.
    pub credentials: Vec<(Kind, Vec<u8>)>,
    /// Chart repository secrets (only `add_source` stores them); empty ones are skipped.
    pub helm: Vec<(charts::auth::Secret, Vec<u8>)>,
}

impl SourceSecrets {
    fn given(&self, kind: Kind) -> bool {
        self.credentials
            .iter()
            .any(|(k, v)| *k == kind && !v.is_empty())
    }
}

/// A branch or tag name that is safe in a refspec: no `..`, no leading `-` or `/`, no
/// whitespace, and none of the characters git forbids in ref names.
fn check_ref_name(what: &str, name: &str) -> Result<(), CommandError> {
    let bad = name.is_empty()
        || name.contains("..")
        || name.starts_with(['-', '/'])
        || name.ends_with(['/', '.'])
        || name.ends_with(".lock")
        || name.contains("@{")
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        return Err(invalid(format!("invalid {what} {name:?}")));
    }
    Ok(())
}

/// The rules every source spec meets, whether added or edited; fills the defaults.
pub fn check_source(mut spec: SourceSpec) -> Result<SourceSpec, CommandError> {
    if !flotilla_model::names::is_dns_label(&spec.name) {
        return Err(invalid(format!(
            "source name {:?} must be a DNS label (lowercase letters, digits, '-')",
            spec.name
        )));
    }
    if spec.repo.is_empty() {
        return Err(invalid("--repo is required"));
    }
    check_ref_name("branch", &spec.branch)?;
    if let Some(r) = &spec.revision {
        check_ref_name("revision", r)?;
    }
    if spec.paths.is_empty() {
        spec.paths = vec![".".to_string()];
    }
    Ok(spec)
}

/// Refuses `--verify-commits` on a source that would trust no key once `secrets` are
/// written and `clear` removed.
fn check_trust(
    spec: &SourceSpec,
    creds: &Credentials,
    secrets: &SourceSecrets,
    clear: &[Kind],
) -> Result<(), CommandError> {
    let kept = |k: Kind| creds.path(k).is_some() && !clear.contains(&k);
    let has_keys = kept(Kind::AllowedSigners)
        || kept(Kind::GpgKeys)
        || secrets.given(Kind::AllowedSigners)
        || secrets.given(Kind::GpgKeys);
    if spec.verify_commits && !has_keys {
        return Err(invalid(
            "--verify-commits needs --allowed-signers or --gpg-keys",
        ));
    }
    Ok(())
}

/// Writes the credentials that are set into the source's files, after removing `clear`.
async fn write_credentials(
    creds: Credentials,
    secrets: &SourceSecrets,
    clear: Vec<Kind>,
) -> Result<(), CommandError> {
    if let Some((_, ca)) = secrets
        .credentials
        .iter()
        .find(|(k, v)| *k == Kind::Ca && !v.is_empty())
        && reqwest::Certificate::from_pem_bundle(ca).map_or(true, |c| c.is_empty())
    {
        return Err(invalid("--ca-file holds no PEM certificate"));
    }
    let parts = secrets.credentials.clone();
    tokio::task::spawn_blocking(move || {
        for kind in clear {
            creds.remove(kind)?;
        }
        for (kind, data) in parts {
            if !data.is_empty() {
                creds.write(kind, &data)?;
            }
        }
        Ok::<_, crate::credentials::CredentialError>(())
    })
    .await
    .map_err(|e| CommandError::Internal(format!("writing credentials: {e}")))?
    .map_err(|e| CommandError::Internal(e.to_string()))
}

/// Checks and writes a new source's chart repository secrets (0600 files) before the
/// source is stored, so a poll never runs without them.
async fn store_helm_secrets(
    data_dir: &std::path::Path,
    spec: &SourceSpec,
    secrets: &SourceSecrets,
) -> Result<(), CommandError> {
    let Some(h) = &spec.helm_auth else {
        return Ok(());
    };
    use charts::auth::Secret;
    let given: Vec<(Secret, Vec<u8>)> = secrets
        .helm
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .cloned()
        .collect();
    let borrowed: Vec<(Secret, &[u8])> = given.iter().map(|(k, v)| (*k, &v[..])).collect();
    charts::auth::validate(h, &borrowed).map_err(invalid)?;
    let (dir, name) = (data_dir.to_path_buf(), spec.name.clone());
    tokio::task::spawn_blocking(move || {
        let borrowed: Vec<(Secret, &[u8])> = given.iter().map(|(k, v)| (*k, &v[..])).collect();
        charts::auth::store(&dir, &name, &borrowed)
    })
    .await
    .map_err(|e| CommandError::Internal(format!("storing the helm credentials: {e}")))?
    .map_err(|e| CommandError::Internal(format!("storing the helm credentials: {e}")))
}

impl Fleet {
    /// In Kubernetes mode the configuration is the namespace's objects: the Admin API's
    /// commands that would change it are refused (the namespace's own controllers call
    /// the same commands).
    pub fn refuse_in_kube_mode(&self) -> Result<(), CommandError> {
        match self.kube_namespace.get() {
            Some(ns) => Err(CommandError::Precondition(format!(
                "this hub takes its configuration from Kubernetes (namespace {ns}); use kubectl"
            ))),
            None => Ok(()),
        }
    }

    /// `flotilla cluster label NAME k=v k-`: hub labels win over every other source; a
    /// removed key is hidden whatever set it.
    pub async fn label_cluster(
        &self,
        name: &ClusterName,
        set: &Labels,
        remove: &[String],
    ) -> Result<ClusterRecord, CommandError> {
        validate_labels(set)?;
        for k in remove {
            labels::validate_key(k).map_err(invalid)?;
            if set.contains_key(k) {
                return Err(invalid(format!("label {k} is both set and removed")));
            }
        }
        let _order = self.order.lock().await;
        self.save_cluster(name, |rec| {
            label_trust::relabel(rec, set, remove);
            Ok(())
        })
        .await
    }

    /// `flotilla cluster accept-labels NAME [KEY...]`: trusts the spoke's reported values
    /// of `keys` (every pending one when empty); returns the keys accepted.
    pub async fn accept_cluster_labels(
        &self,
        name: &ClusterName,
        keys: &[String],
    ) -> Result<(ClusterRecord, Vec<String>), CommandError> {
        for k in keys {
            labels::validate_key(k).map_err(invalid)?;
        }
        let _order = self.order.lock().await;
        let mut accepted = Vec::new();
        let rec = self
            .save_cluster(name, |rec| {
                // `accept` refuses before it changes anything.
                accepted = label_trust::accept(rec, keys)
                    .map_err(|e| CommandError::Precondition(e.to_string()))?;
                Ok(())
            })
            .await?;
        tracing::info!(cluster = %name, keys = ?accepted, "reported labels accepted");
        Ok((rec, accepted))
    }

    /// Edits a cluster record (`edit_cluster`), waits until it is durable and reconciles
    /// that cluster.
    async fn save_cluster(
        &self,
        name: &ClusterName,
        edit: impl FnOnce(&mut ClusterRecord) -> Result<(), CommandError>,
    ) -> Result<ClusterRecord, CommandError> {
        let (rec, durable) = self.edit_cluster(name, edit)?;
        durable.await?;
        self.trigger(Trigger::Cluster(name.clone()));
        Ok(rec)
    }

    /// Applies `edit` to the cluster's record in memory, whole or not at all, and queues
    /// the new record to the store while still holding the record's map entry: a Hello,
    /// a renewal and a command may edit one cluster at once, and the store must receive
    /// its snapshots in the order memory took them. Returns the new record and the
    /// write's durability, to await once the entry is let go.
    pub(crate) fn edit_cluster(
        &self,
        name: &ClusterName,
        edit: impl FnOnce(&mut ClusterRecord) -> Result<(), CommandError>,
    ) -> Result<(ClusterRecord, Durable), CommandError> {
        let mut rec = self
            .clusters
            .get_mut(name)
            .ok_or_else(|| CommandError::NotFound(format!("cluster {name} not found")))?;
        let mut next = rec.clone();
        edit(&mut next)?;
        *rec = next;
        let durable =
            self.store
                .queue_commit(vec![Op::put_json(Table::Clusters, name.as_str(), &*rec)]);
        Ok((rec.clone(), Box::pin(durable)))
    }

    /// Kubernetes mode's `Cluster` object: its labels replace the hub labels, and the
    /// spoke's reported values of `accept` are trusted.
    pub async fn set_cluster_labels(
        &self,
        name: &ClusterName,
        hub_labels: &Labels,
        accept: &[String],
    ) -> Result<ClusterRecord, CommandError> {
        validate_labels(hub_labels)?;
        for k in accept {
            labels::validate_key(k).map_err(invalid)?;
        }
        let _order = self.order.lock().await;
        self.save_cluster(name, |next| {
            next.hub_labels = hub_labels.clone();
            // `accept` with no keys means every pending one: not what an empty list says.
            if !accept.is_empty() {
                label_trust::accept(next, accept).map_err(invalid)?;
            }
            Ok(())
        })
        .await
    }

    /// Refuses every certificate of the cluster from now on and ends its stream.
    pub async fn revoke_cluster(&self, name: &ClusterName) -> Result<ClusterRecord, CommandError> {
        let _order = self.order.lock().await;
        let (rec, durable) = self.edit_cluster(name, |rec| {
            rec.revoked = true;
            Ok(())
        })?;
        // At once, not after the write: memory already refuses its reconnects.
        self.disconnect(name, &format!("cluster {name} has been revoked"));
        durable.await?;
        tracing::warn!(cluster = %name, "cluster revoked");
        Ok(rec)
    }

    /// Forgets the cluster and its reports; the reconcile then drops its assignments.
    pub async fn delete_cluster(&self, name: &ClusterName) -> Result<(), CommandError> {
        let _order = self.order.lock().await;
        // Out of memory first: a later snapshot of the record (last_seen) cannot be
        // written after the deletion.
        if self.clusters.remove(name).is_none() {
            return Err(CommandError::NotFound(format!("cluster {name} not found")));
        }
        self.disconnect(name, &format!("cluster {name} has been deleted"));
        let mut ops = vec![Op::delete(Table::Clusters, name.as_str())];
        for b in self.status.remove_cluster(name) {
            ops.push(Op::delete(Table::Status, status_key(name, &b)));
        }
        self.store.commit(ops).await?;
        self.trigger(Trigger::Cluster(name.clone()));
        tracing::warn!(cluster = %name, "cluster deleted");
        Ok(())
    }

    /// Adds or replaces a cluster group.
    pub async fn add_group(&self, spec: GroupSpec) -> Result<(), CommandError> {
        if !flotilla_model::names::is_dns_label(&spec.name) {
            return Err(invalid(format!(
                "group name {:?} must be a DNS label",
                spec.name
            )));
        }
        validate_labels(&spec.labels)?;
        let _order = self.order.lock().await;
        self.store
            .commit(vec![Op::put_json(Table::Groups, spec.name.clone(), &spec)])
            .await?;
        self.groups.insert(spec.name.clone(), spec);
        self.trigger(Trigger::All);
        Ok(())
    }

    pub async fn remove_group(&self, name: &str) -> Result<(), CommandError> {
        let _order = self.order.lock().await;
        if !self.groups.contains_key(name) {
            return Err(CommandError::NotFound(format!("group {name} not found")));
        }
        self.store
            .commit(vec![Op::delete(Table::Groups, name)])
            .await?;
        self.groups.remove(name);
        self.trigger(Trigger::All);
        Ok(())
    }

    /// Pauses (or resumes) a bundle's rollout: clusters not on its new deployment yet
    /// wait. The bundle must have a good revision.
    pub async fn pause_rollout(&self, bundle: &str, paused: bool) -> Result<(), CommandError> {
        let _order = self.order.lock().await;
        if self.plan_rollout(bundle).is_none() {
            return Err(CommandError::NotFound(format!(
                "bundle {bundle} not found (or it has no good revision)"
            )));
        }
        let op = if paused {
            Op::put_json(
                Table::Rollouts,
                bundle.to_string(),
                &serde_json::json!({"paused": true}),
            )
        } else {
            Op::delete(Table::Rollouts, bundle.to_string())
        };
        self.store.commit(vec![op]).await?;
        if paused {
            self.paused_rollouts.insert(bundle.to_string(), ());
        } else {
            self.paused_rollouts.remove(bundle);
        }
        self.trigger(Trigger::All);
        Ok(())
    }

    /// `flotilla source add`: writes the source's secrets, stores its spec and starts
    /// its poller.
    pub async fn add_source(
        self: &Arc<Self>,
        spec: SourceSpec,
        secrets: SourceSecrets,
    ) -> Result<Arc<SourceState>, CommandError> {
        let spec = check_source(spec)?;
        let _order = self.order.lock().await;
        if self.sources.contains_key(&spec.name) {
            return Err(CommandError::Exists(format!(
                "source {0} already exists; change it in place with `flotilla source set {0}`",
                spec.name
            )));
        }
        let creds = Credentials::of(&self.data_dir, &spec.name);
        // Left over from a source of the same name that was removed.
        creds.remove_all();
        check_trust(&spec, &creds, &secrets, &[])?;
        write_credentials(creds, &secrets, Vec::new()).await?;
        store_helm_secrets(&self.data_dir, &spec, &secrets).await?;
        self.store
            .commit(vec![Op::put_json(Table::Sources, spec.name.clone(), &spec)])
            .await?;
        let state = self.insert_source(spec).map_err(invalid)?;
        tokio::spawn(sources::run_poller(self.clone(), state.clone()));
        Ok(state)
    }

    /// `flotilla source set`: `edit` changes the current spec; credentials in `clear`
    /// are removed and those in `secrets` written. The published commit is verified
    /// again when the trusted keys change.
    pub async fn set_source(
        self: &Arc<Self>,
        name: &str,
        edit: impl FnOnce(&mut SourceSpec),
        secrets: SourceSecrets,
        clear: Vec<Kind>,
    ) -> Result<Arc<SourceState>, CommandError> {
        let _order = self.order.lock().await;
        let old = self
            .sources
            .get(name)
            .map(|s| s.value().clone())
            .ok_or_else(|| {
                CommandError::NotFound(format!(
                    "source {name} not found; add it with `flotilla source add`"
                ))
            })?;
        let mut spec = old.spec.clone();
        edit(&mut spec);
        // The name is the key: an edit cannot rename.
        spec.name = old.spec.name.clone();
        let spec = check_source(spec)?;
        let creds = Credentials::of(&self.data_dir, &spec.name);
        check_trust(&spec, &creds, &secrets, &clear)?;
        let trust_changed = clear
            .iter()
            .any(|k| matches!(k, Kind::AllowedSigners | Kind::GpgKeys))
            || secrets.given(Kind::AllowedSigners)
            || secrets.given(Kind::GpgKeys);
        write_credentials(creds, &secrets, clear).await?;
        if secrets.helm.iter().any(|(_, v)| !v.is_empty()) {
            store_helm_secrets(&self.data_dir, &spec, &secrets).await?;
        }
        self.store
            .commit(vec![Op::put_json(Table::Sources, spec.name.clone(), &spec)])
            .await?;
        let state = self.replace_source(spec, Some(&old)).map_err(invalid)?;
        if trust_changed && let Ok(mut rt) = state.runtime.write() {
            // The published commit is verified again against the new keys.
            rt.stale = true;
        }
        tracing::info!(source = %state.spec.name, "source changed");
        tokio::spawn(sources::run_poller(self.clone(), state.clone()));
        // Targets may have changed; nothing else moves unless a bundle's render does.
        self.trigger(Trigger::All);
        Ok(state)
    }

    /// `flotilla source remove`: forgets the source; its bundles are deleted from the
    /// clusters, or left in place (and no longer managed) with `keep_resources`.
    pub async fn remove_source(
        &self,
        name: &str,
        keep_resources: bool,
    ) -> Result<(), CommandError> {
        let _order = self.order.lock().await;
        let (_, state) = self
            .sources
            .remove(name)
            .ok_or_else(|| CommandError::NotFound(format!("source {name} not found")))?;
        // The source's bundles: those of its last revision and those still assigned.
        let mut bundles: std::collections::BTreeSet<String> = state
            .runtime
            .read()
            .ok()
            .and_then(|rt| {
                rt.bundles
                    .as_ref()
                    .map(|b| b.iter().map(|e| e.name.to_string()).collect())
            })
            .unwrap_or_default();
        for a in self.assignments.iter() {
            bundles.extend(
                a.value()
                    .iter()
                    .filter(|(_, a)| *a.source == *name)
                    .map(|(b, _)| b.to_string()),
            );
        }
        let mut ops = vec![Op::delete(Table::Sources, name)];
        for b in &bundles {
            ops.push(if keep_resources {
                Op::put_json(
                    Table::KeptBundles,
                    b.clone(),
                    &serde_json::json!({"source": name}),
                )
            } else {
                Op::delete(Table::KeptBundles, b.clone())
            });
        }
        self.store.commit(ops).await?;
        for b in bundles {
            if keep_resources {
                self.kept_bundles.insert(b, ());
            } else {
                self.kept_bundles.remove(&b);
            }
        }
        Credentials::of(&self.data_dir, name).remove_all();
        tracing::info!(source = %name, keep_resources, "source removed");
        state.poke.notify_one();
        charts::auth::remove(&self.data_dir, name);
        self.trigger(Trigger::All);
        Ok(())
    }
}
