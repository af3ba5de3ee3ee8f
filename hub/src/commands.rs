//! The state's commands: the only way the Admin API changes clusters, groups and
//! rollouts. Each command takes the fleet's order lock, validates, changes the state,
//! persists it, publishes and triggers the reconcile, so no other command interleaves
//! with it and no check is separated from its action by an await.
//!
//! A cluster record is changed in memory (under its map entry) before the snapshot of it
//! is persisted: other writers (a Hello, `Fleet::flush_last_seen`) persist snapshots of
//! the same record, so the store never receives a snapshot older than memory. Maps
//! that only commands write (groups, paused rollouts) are persisted first and changed
//! after, so a failed write leaves memory as it was.
//!
//! **Architecture Invariant:** no protobuf here; `server/admin.rs` translates.

use flotilla_model::{ClusterName, Labels, labels};

use crate::fleet::{Fleet, Trigger};
use crate::label_trust;
use crate::records::{ClusterRecord, status_key};
use crate::store::{Op, StoreError, Table};
use crate::targeting::GroupSpec;

/// Why a command was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The message names what was not found.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(e: impl std::fmt::Display) -> CommandError {
    CommandError::Invalid(e.to_string())
}

impl Fleet {
    /// `flotilla cluster label NAME k=v k-`: hub labels win over every other source; a
    /// removed key is hidden whatever set it.
    pub async fn label_cluster(
        &self,
        name: &ClusterName,
        set: &Labels,
        remove: &[String],
    ) -> Result<ClusterRecord, CommandError> {
        for (k, v) in set {
            labels::validate_key(k)
                .and_then(|_| labels::validate_value(v))
                .map_err(invalid)?;
        }
        for k in remove {
            labels::validate_key(k).map_err(invalid)?;
            if set.contains_key(k) {
                return Err(invalid(format!("label {k} is both set and removed")));
            }
        }
        let _order = self.order.lock().await;
        let rec = {
            let mut rec = self
                .clusters
                .get_mut(name)
                .ok_or_else(|| CommandError::NotFound(format!("cluster {name} not found")))?;
            label_trust::relabel(&mut rec, set, remove);
            rec.clone()
        };
        self.store
            .commit(vec![Op::put_json(Table::Clusters, name.as_str(), &rec)])
            .await?;
        self.trigger(Trigger::Cluster(name.clone()));
        Ok(rec)
    }

    /// Refuses every certificate of the cluster from now on and ends its stream.
    pub async fn revoke_cluster(&self, name: &ClusterName) -> Result<ClusterRecord, CommandError> {
        let _order = self.order.lock().await;
        let rec = {
            let mut rec = self
                .clusters
                .get_mut(name)
                .ok_or_else(|| CommandError::NotFound(format!("cluster {name} not found")))?;
            rec.revoked = true;
            rec.clone()
        };
        self.disconnect(name, &format!("cluster {name} has been revoked"));
        self.store
            .commit(vec![Op::put_json(Table::Clusters, name.as_str(), &rec)])
            .await?;
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
        let bundles: Vec<String> = self
            .status
            .iter()
            .filter(|e| e.key().0 == *name)
            .map(|e| e.key().1.clone())
            .collect();
        for b in bundles {
            self.status.remove(&(name.clone(), b.clone()));
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
        for (k, v) in &spec.labels {
            labels::validate_key(k)
                .and_then(|_| labels::validate_value(v))
                .map_err(invalid)?;
        }
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
}
