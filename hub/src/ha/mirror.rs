//! Keeps a replica's in-memory fleet in step with what the other replicas write to the
//! store: one watch per table, from the revision of the snapshot the fleet was built
//! from, each change applied to memory as its writer applied it there. A watch that
//! lost its history reloads its table whole (a range, then a watch from the range's
//! revision).
//!
//! What each change does here:
//! - assignments (`Desired`): replaced, and the cluster's session (if connected here)
//!   woken; not on the leader, which wrote them. Content an assignment names is read
//!   first if its own watch has not brought it yet (tables are watched apart).
//! - content: added (waking this replica's sessions, in case one lacked it); removed
//!   only on followers (the leader's GC removed it).
//! - clusters: replaced (keeping the later `last_seen`); the leader reconciles a cluster
//!   whose record changed beyond `last_seen`; a revoked or deleted cluster's stream here
//!   is closed.
//! - sources, groups, paused rollouts: replaced, and the leader reconciles every cluster.
//!   A new or edited source gets a poller here too, which polls only while this replica
//!   leads.
//! - statuses: taken into memory (`Fleet::note_status`) without a store write, so rollouts
//!   and dependsOn on the leader see reports that reached other replicas.
//! - presence: which clusters are connected to another replica (`Fleet::elsewhere`).
//!
//! - history and audit records: taken into memory (`History::take`, `Audit::take`), so
//!   every replica answers for the whole fleet; their keys are unique per replica
//!   (`crate::record_id`).
//!
//! Not mirrored: source credential files (they live in each replica's data dir).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flotilla_model::{ClusterName, ContentDigest};
use futures::StreamExt;

use super::Replica;
use super::election::PRESENCE_PREFIX;
use crate::fleet::{Fleet, Trigger};
use crate::reconcile::Assignments;
use crate::records::{ClusterRecord, SourceSpec, StatusRecord};
use crate::store::{Change, Revision, StoreError, Table};
use crate::targeting::GroupSpec;

/// The tables a replica follows, with the key prefix watched in each. Join tokens are
/// not among them: they live only in the store, and every check reads them there.
const FOLLOWED: [(Table, &str); 11] = [
    (Table::Clusters, ""),
    (Table::Sources, ""),
    (Table::Groups, ""),
    (Table::Rollouts, ""),
    (Table::KeptBundles, ""),
    (Table::Status, ""),
    (Table::Content, ""),
    (Table::Desired, ""),
    (Table::Ha, PRESENCE_PREFIX),
    (Table::History, ""),
    (Table::Audit, ""),
];

/// Follows every table from revision `from` until the hub stops.
pub async fn run(fleet: Arc<Fleet>, replica: Arc<Replica>, from: Revision) {
    let follows = FOLLOWED
        .iter()
        .map(|&(table, prefix)| follow(&fleet, &replica, table, prefix, from));
    futures::future::join_all(follows).await;
}

async fn follow(fleet: &Arc<Fleet>, replica: &Replica, table: Table, prefix: &str, from: Revision) {
    let mut after = from;
    // Presence is not in the snapshot the fleet was built from (it is not state): read
    // what the other replicas hold now.
    if table == Table::Ha {
        match reload(fleet, replica, table).await {
            Ok(revision) => after = revision,
            Err(e) => tracing::warn!(error = %e, "reading the replicas' presence"),
        }
    }
    let mut retry = Duration::from_millis(200);
    loop {
        let ended = match fleet.store.watch(table, prefix, after).await {
            Ok(mut changes) => loop {
                match changes.next().await {
                    Some(Ok(change)) => {
                        after = change.revision;
                        retry = Duration::from_millis(200);
                        apply(fleet, replica, change).await;
                    }
                    Some(Err(e)) => break Some(e),
                    None => break None,
                }
            },
            Err(e) => Some(e),
        };
        if let Some(e) = &ended {
            tracing::warn!(table = table.name(), error = %e, "following the store");
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(Duration::from_secs(5));
        if matches!(
            ended,
            Some(StoreError::Compacted { .. } | StoreError::Lagged(_))
        ) {
            match reload(fleet, replica, table).await {
                Ok(revision) => after = revision,
                Err(e) => tracing::warn!(table = table.name(), error = %e, "reloading a table"),
            }
        }
    }
}

/// Reads `table` whole and makes memory match it; returns the revision read at.
pub async fn reload(
    fleet: &Arc<Fleet>,
    replica: &Replica,
    table: Table,
) -> Result<Revision, StoreError> {
    let prefix = if table == Table::Ha {
        PRESENCE_PREFIX
    } else {
        ""
    };
    if table == Table::History {
        // Not read whole: memory keeps each pair's current deployment only.
        let clusters: Vec<ClusterName> = fleet.clusters.iter().map(|c| c.key().clone()).collect();
        return fleet.history.reload(&clusters).await;
    }
    let range = fleet.store.range(table, prefix).await?;
    let stored: HashSet<String> = range.entries.iter().map(|e| e.key.clone()).collect();
    let gone: Vec<String> = keys_in_memory(fleet, replica, table)
        .into_iter()
        .filter(|k| !stored.contains(k))
        .collect();
    for key in gone {
        let change = Change {
            revision: range.revision,
            table,
            key,
            value: None,
        };
        apply(fleet, replica, change).await;
    }
    for e in range.entries {
        let change = Change {
            revision: e.revision,
            table,
            key: e.key,
            value: Some(e.value),
        };
        apply(fleet, replica, change).await;
    }
    Ok(range.revision)
}

/// The keys memory holds for `table`, as the store names them.
fn keys_in_memory(fleet: &Arc<Fleet>, replica: &Replica, table: Table) -> Vec<String> {
    match table {
        Table::Clusters => fleet.clusters.iter().map(|c| c.key().to_string()).collect(),
        Table::Sources => fleet.sources.iter().map(|s| s.key().clone()).collect(),
        Table::Groups => fleet.groups.iter().map(|g| g.key().clone()).collect(),
        Table::Rollouts => fleet
            .paused_rollouts
            .iter()
            .map(|r| r.key().clone())
            .collect(),
        Table::KeptBundles => fleet.kept_bundles.iter().map(|r| r.key().clone()).collect(),
        Table::Status => fleet.status.keys(),
        Table::Content => fleet.contents.iter().map(|c| c.key().to_string()).collect(),
        Table::Desired => fleet
            .assignments
            .iter()
            .map(|a| a.key().to_string())
            .collect(),
        Table::Ha => fleet
            .elsewhere
            .iter()
            .flat_map(|e| {
                let c = e.key().clone();
                e.value()
                    .iter()
                    .filter(|r| **r != replica.id)
                    .map(move |r| format!("{PRESENCE_PREFIX}{c}/{r}"))
                    .collect::<Vec<_>>()
            })
            .collect(),
        Table::Tokens => Vec::new(),
        // `reload` does not go through here for History.
        Table::History => Vec::new(),
        Table::Audit => fleet.audit.keys(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(table: Table, key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            // Memory keeps what it had; the hub that wrote this is the one to fix.
            tracing::error!(table = table.name(), %key, error = %e, "a record another replica wrote does not decode; ignored");
            None
        }
    }
}

/// A cluster record without what changes at every heartbeat flush.
fn targeting_view(c: &ClusterRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("last_seen");
    }
    v
}

async fn apply(fleet: &Arc<Fleet>, replica: &Replica, change: Change) {
    let leader = fleet.leadership.is_leader();
    let Change {
        table, key, value, ..
    } = change;
    match table {
        Table::Desired => {
            // The leader wrote these itself.
            if leader {
                return;
            }
            let Ok(cluster) = ClusterName::new(&key) else {
                return;
            };
            match value {
                Some(v) => {
                    let Some(new) = decode::<Assignments>(table, &key, &v) else {
                        return;
                    };
                    fetch_missing_content(fleet, &new).await;
                    if *fleet.assignments_of(&cluster) == new {
                        return;
                    }
                    fleet.assignments.insert(cluster.clone(), Arc::new(new));
                }
                None => {
                    if fleet.assignments.remove(&cluster).is_none() {
                        return;
                    }
                }
            }
            if let Some(s) = fleet.sessions.get(&cluster) {
                s.notify.notify_one();
            }
        }
        Table::Content => {
            let Some(digest) = ContentDigest::parse(&key) else {
                return;
            };
            match value {
                Some(v) => {
                    let mut added = false;
                    fleet.contents.entry(digest).or_insert_with(|| {
                        added = true;
                        Bytes::from(v)
                    });
                    // A session that found this content missing (its assignment came
                    // first and the read of the content failed) sends it now.
                    if added && !leader {
                        for s in fleet.sessions.iter() {
                            s.notify.notify_one();
                        }
                    }
                }
                None if !leader => {
                    fleet.contents.remove(&digest);
                }
                None => {}
            }
        }
        Table::Clusters => {
            let Ok(name) = ClusterName::new(&key) else {
                return;
            };
            match value.and_then(|v| decode::<ClusterRecord>(table, &key, &v)) {
                Some(mut record) => {
                    let old = fleet.clusters.get(&name).map(|c| c.clone());
                    // `last_seen` is stored coarsely (`Fleet::flush_last_seen`): the
                    // fresher one in memory (a spoke connected here) is kept, so a record
                    // another replica wrote does not make that spoke look silent.
                    if let Some(o) = &old {
                        record.last_seen = record.last_seen.max(o.last_seen);
                    }
                    let moved = old
                        .as_ref()
                        .is_none_or(|o| targeting_view(o) != targeting_view(&record));
                    let revoked = record.revoked && old.as_ref().is_none_or(|o| !o.revoked);
                    fleet.clusters.insert(name.clone(), record);
                    if revoked {
                        fleet.disconnect(&name, "the cluster's certificate was revoked");
                    }
                    if moved && leader {
                        fleet.trigger(Trigger::Cluster(name));
                    }
                }
                None => {
                    if fleet.clusters.remove(&name).is_some() {
                        fleet.disconnect(&name, "the cluster was deleted");
                        if leader {
                            fleet.trigger(Trigger::Cluster(name));
                        }
                    }
                }
            }
        }
        Table::Sources => apply_source(fleet, &key, value),
        Table::Groups => {
            let changed = match value.and_then(|v| decode::<GroupSpec>(table, &key, &v)) {
                Some(g) => fleet.groups.insert(key, g.clone()).is_none_or(|o| o != g),
                None => fleet.groups.remove(&key).is_some(),
            };
            if changed && leader {
                fleet.trigger(Trigger::All);
            }
        }
        Table::Rollouts => {
            let changed = match value {
                Some(_) => fleet.paused_rollouts.insert(key, ()).is_none(),
                None => fleet.paused_rollouts.remove(&key).is_some(),
            };
            if changed && leader {
                fleet.trigger(Trigger::All);
            }
        }
        Table::KeptBundles => match value {
            Some(_) => {
                fleet.kept_bundles.insert(key, ());
            }
            None => {
                fleet.kept_bundles.remove(&key);
            }
        },
        Table::Status => {
            let Some((c, bundle)) = key.split_once('/') else {
                return;
            };
            let Ok(cluster) = ClusterName::new(c) else {
                return;
            };
            match value.and_then(|v| decode::<StatusRecord>(table, &key, &v)) {
                Some(st) => {
                    let known = fleet.status.get(&cluster, bundle).is_some_and(|s| s == st);
                    // Our own reports come back too.
                    if !known {
                        fleet.note_status(&cluster, bundle, st);
                    }
                }
                None => {
                    fleet.status.remove(&cluster, bundle);
                }
            }
        }
        Table::Ha => {
            let Some((c, r)) = key
                .strip_prefix(PRESENCE_PREFIX)
                .and_then(|k| k.split_once('/'))
            else {
                return;
            };
            let Ok(cluster) = ClusterName::new(c) else {
                return;
            };
            if r == replica.id {
                return;
            }
            match value {
                Some(_) => {
                    fleet
                        .elsewhere
                        .entry(cluster)
                        .or_default()
                        .insert(r.to_string());
                }
                None => {
                    fleet.elsewhere.remove_if_mut(&cluster, |_, replicas| {
                        replicas.remove(r);
                        replicas.is_empty()
                    });
                }
            }
        }
        Table::Tokens => {}
        // Every replica's records, so any replica answers `history` and `audit` for the
        // fleet, a follower finds the deployment the leader recorded when its spoke
        // reports on it, and the leader's retention jobs see everything.
        Table::History => match value {
            // Head records and the commit index: the entries they follow come too.
            _ if key.starts_with('#') => {}
            Some(v) => {
                if let Some(entry) = decode::<crate::history::Entry>(table, &key, &v) {
                    fleet.history.take(&key, Some(entry));
                    catch_up_history(fleet, &key);
                }
            }
            None => fleet.history.take(&key, None),
        },
        Table::Audit => match value {
            Some(v) => {
                if let Some(rec) = decode::<crate::audit::AuditRecord>(table, &key, &v) {
                    fleet.audit.take(&key, Some(rec));
                }
            }
            None => fleet.audit.take(&key, None),
        },
    }
}

/// A spoke of this replica may have reported on a deployment before the entry the
/// leader made for it arrived here (tables are watched apart): its report is applied to
/// the entry now. Only where its session is, so one replica writes it; a report already
/// on the entry changes nothing (`History::status` is idempotent for the same report).
fn catch_up_history(fleet: &Arc<Fleet>, key: &str) {
    let Some((c, bundle, _)) = crate::history::parse_key(key) else {
        return;
    };
    let Ok(cluster) = ClusterName::new(c) else {
        return;
    };
    if !fleet.sessions.contains_key(&cluster) {
        return;
    }
    let reported = fleet.status.get(&cluster, bundle);
    if let Some(st) = reported {
        fleet.history.status(&cluster, bundle, None, &st);
    }
}

/// A source added, edited or removed on another replica: memory follows, with a poller
/// for a new or edited spec (it polls only while this replica leads).
fn apply_source(fleet: &Arc<Fleet>, key: &str, value: Option<Vec<u8>>) {
    let previous = fleet.sources.get(key).map(|s| s.value().clone());
    match value.and_then(|v| decode::<SourceSpec>(Table::Sources, key, &v)) {
        Some(spec) => {
            if previous.as_ref().is_some_and(|p| p.spec == spec) {
                return;
            }
            match fleet.replace_source(spec, previous.as_deref()) {
                Ok(state) => {
                    tokio::spawn(crate::sources::run_poller(fleet.clone(), state));
                }
                Err(e) => {
                    tracing::error!(source = %key, error = %e, "taking a source another replica wrote");
                    return;
                }
            }
        }
        None => {
            let Some((_, state)) = fleet.sources.remove(key) else {
                return;
            };
            state.poke.notify_one();
        }
    }
    if fleet.leadership.is_leader() {
        fleet.trigger(Trigger::All);
    }
}

/// Reads the content an assignment names that this replica does not hold yet.
async fn fetch_missing_content(fleet: &Arc<Fleet>, assignments: &Assignments) {
    let missing: HashSet<ContentDigest> = assignments
        .values()
        .filter_map(|a| a.desired.as_ref())
        .map(|d| d.digest.clone())
        .filter(|d| !fleet.contents.contains_key(d))
        .collect();
    for digest in missing {
        match fleet.store.range(Table::Content, digest.as_str()).await {
            Ok(range) => {
                for e in range
                    .entries
                    .into_iter()
                    .filter(|e| e.key == digest.as_str())
                {
                    fleet
                        .contents
                        .entry(digest.clone())
                        .or_insert_with(|| Bytes::from(e.value));
                }
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "reading content an assignment names")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::SessionHandle;
    use crate::records::Desired;
    use crate::store::Op;
    use flotilla_model::DeploymentId;
    use tokio::sync::Notify;

    fn assignments(digest: &ContentDigest, deployment: &str) -> Assignments {
        let desired = Desired {
            deployment_id: DeploymentId::parse(deployment).expect("deployment id"),
            digest: digest.clone(),
            options: Default::default(),
        };
        Assignments::from([(
            Arc::from("web"),
            crate::reconcile::Assignment {
                source: Arc::from("examples"),
                desired: Some(Arc::new(desired)),
                error: None,
                waiting: None,
                staged: None,
            },
        )])
    }

    /// A hub that follows another replica, over a fresh store of its own.
    struct Follower {
        fleet: Arc<Fleet>,
        replica: Replica,
        _dir: tempfile::TempDir,
        _triggers: tokio::sync::mpsc::UnboundedReceiver<crate::fleet::Trigger>,
    }

    fn follower() -> Follower {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fleet, triggers) = Fleet::for_tests(dir.path());
        fleet.leadership.follow(None);
        Follower {
            fleet,
            replica: Replica::new("127.0.0.1:1".into(), Duration::from_secs(10)),
            _dir: dir,
            _triggers: triggers,
        }
    }

    /// What the leader writes when it records `entry` at `key`: the entry and its index.
    async fn leader_wrote(
        fleet: &Arc<Fleet>,
        key: &str,
        id: crate::record_id::RecordId,
        entry: &crate::history::Entry,
    ) {
        let crate::history::Entry::Deployment(d) = entry else {
            panic!("a deployment")
        };
        let index = crate::history::index_key(&d.commit, "c1", "web", id).expect("indexed");
        fleet
            .store
            .commit(vec![
                crate::store::Op::put_json(Table::History, key, entry),
                crate::store::Op::put_json(
                    Table::History,
                    index,
                    &crate::history::Indexed { at: d.assigned_at },
                ),
            ])
            .await
            .expect("commit");
    }

    /// The whole history, once this replica's queued writes are in the store.
    async fn read_history(fleet: &Arc<Fleet>) -> Vec<crate::history::Row> {
        fleet.store.commit(Vec::new()).await.expect("flush");
        fleet
            .history
            .query(&crate::history::Filter::default())
            .await
            .expect("query")
            .rows
    }

    /// The leader's history entry for deployment `d-1`, assigned and nothing more yet.
    fn assigned_d1() -> crate::history::Entry {
        crate::history::Entry::Deployment(crate::history::Deployment {
            deployment_id: "d-1".into(),
            commit: "abc1234".into(),
            source: "examples".into(),
            assigned_at: 100,
            applied_at: None,
            ready_at: None,
            failed_at: None,
            failure: String::new(),
        })
    }

    fn desired_change(cluster: &str, a: &Assignments) -> Change {
        Change {
            revision: 7,
            table: Table::Desired,
            key: cluster.into(),
            value: Some(serde_json::to_vec(a).expect("json")),
        }
    }

    #[tokio::test]
    async fn a_cluster_record_from_another_replica_keeps_the_later_last_seen_here() {
        let Follower { fleet, replica, .. } = &follower();
        let c1 = ClusterName::new("c1").expect("name");
        let now = crate::records::now_unix();
        fleet
            .clusters
            .insert(c1.clone(), ClusterRecord::new(c1.clone(), now));
        // Another replica relabelled it; the last_seen it wrote is minutes old (stored
        // coarsely), while this replica heard the spoke just now.
        let mut theirs = ClusterRecord::new(c1.clone(), now - 600);
        theirs.hub_labels.insert("tier".into(), "gold".into());
        let change = Change {
            revision: 9,
            table: Table::Clusters,
            key: "c1".into(),
            value: Some(serde_json::to_vec(&theirs).expect("json")),
        };
        apply(fleet, replica, change).await;
        let ours = fleet.clusters.get(&c1).expect("c1").clone();
        assert_eq!(ours.hub_labels, theirs.hub_labels, "their edit is taken");
        assert_eq!(ours.last_seen, now, "the spoke does not look silent here");
    }

    #[tokio::test]
    async fn a_follower_takes_published_assignments_with_their_content_and_wakes_the_session() {
        let Follower { fleet, replica, .. } = &follower();
        let c1 = ClusterName::new("c1").expect("name");
        let notify = Arc::new(Notify::new());
        fleet.sessions.insert(
            c1.clone(),
            SessionHandle {
                id: 1,
                notify: notify.clone(),
                close: Arc::default(),
                close_reason: Arc::default(),
            },
        );
        // The leader stored the content; this replica has not seen its watch event yet.
        let content = b"kind: ConfigMap\n".to_vec();
        let digest = ContentDigest::of(&content);
        fleet
            .store
            .commit(vec![Op::Put {
                table: Table::Content,
                key: digest.to_string(),
                value: content.clone(),
            }])
            .await
            .expect("content stored");

        let published = assignments(&digest, "d-0123456789abcdef0123");
        apply(fleet, replica, desired_change("c1", &published)).await;
        assert_eq!(*fleet.assignments_of(&c1), published);
        assert_eq!(
            fleet.contents.get(&digest).map(|c| c.to_vec()),
            Some(content)
        );
        // The permit `notify_one` left: the session sends the difference now.
        tokio::time::timeout(Duration::from_secs(5), notify.notified())
            .await
            .expect("the session is woken");

        // The leader wrote its assignments itself: an echo changes nothing.
        fleet.leadership.lead();
        let other = assignments(&digest, "d-ffffffffffffffffffff");
        apply(fleet, replica, desired_change("c1", &other)).await;
        assert_eq!(*fleet.assignments_of(&c1), published);
    }

    #[tokio::test]
    async fn presence_of_a_spoke_on_another_replica_counts_as_connected_until_it_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fleet, _triggers) = Fleet::for_tests(dir.path());
        let replica = Replica::new("127.0.0.1:1".into(), Duration::from_secs(10));
        let c1 = ClusterName::new("c1").expect("name");
        let change = |key: String, value: Option<Vec<u8>>| Change {
            revision: 3,
            table: Table::Ha,
            key,
            value,
        };
        // Our own record is not "elsewhere".
        let own = format!("{PRESENCE_PREFIX}c1/{}", replica.id);
        apply(&fleet, &replica, change(own, Some(b"me".to_vec()))).await;
        assert!(!fleet.is_connected(&c1));

        let theirs = format!("{PRESENCE_PREFIX}c1/0000000000000042");
        apply(
            &fleet,
            &replica,
            change(theirs.clone(), Some(b"b".to_vec())),
        )
        .await;
        assert!(fleet.is_connected(&c1));
        apply(&fleet, &replica, change(theirs, None)).await;
        assert!(!fleet.is_connected(&c1));
        assert!(fleet.elsewhere.is_empty());
    }
    #[tokio::test]
    async fn history_and_audit_records_of_other_replicas_are_taken_and_never_regressed() {
        use crate::history::{Entry, entry_key};
        use crate::record_id::RecordId;
        let Follower { fleet, replica, .. } = &follower();
        let c1 = ClusterName::new("c1").expect("name");
        let change = |table: Table, key: &str, value: Option<Vec<u8>>| Change {
            revision: 9,
            table,
            key: key.into(),
            value,
        };
        // The leader recorded a deployment (its clock well ahead of this replica's).
        let ahead = RecordId::Stamped {
            nanos: u64::MAX / 2,
            writer: 7,
        };
        let key = entry_key("c1", "web", ahead);
        let assigned = assigned_d1();
        let json = |e: &Entry| Some(serde_json::to_vec(e).expect("json"));
        leader_wrote(fleet, &key, ahead, &assigned).await;
        apply(
            fleet,
            replica,
            change(Table::History, &key, json(&assigned)),
        )
        .await;
        // This replica's spoke reports on it (here after the entry came; the entry
        // arriving after the report: `a_report_that_came_before_its_entry_is_applied_when_the_entry_comes`).
        let ready = StatusRecord {
            deployment_id: "d-1".into(),
            state: flotilla_model::State::Ready,
            message: String::new(),
            resources: Vec::new(),
            updated_at: 110,
        };
        fleet.history.status(&c1, "web", None, &ready);
        // A late echo of the first version changes nothing.
        apply(
            fleet,
            replica,
            change(Table::History, &key, json(&assigned)),
        )
        .await;
        let rows = read_history(fleet).await;
        let [row] = rows.as_slice() else {
            panic!("one entry, got {rows:?}")
        };
        let Entry::Deployment(d) = &row.entry else {
            panic!("a deployment")
        };
        assert_eq!((d.applied_at, d.ready_at), (Some(110), Some(110)));
        assert_eq!(
            fleet
                .history
                .where_running("abc1234")
                .await
                .expect("where")
                .map(|(_, r)| r.len()),
            Some(1)
        );
        // The pair's history was removed.
        apply(fleet, replica, change(Table::History, &key, None)).await;
        assert!(fleet.history.is_empty());

        // Audit: another replica's record is taken, and this replica's next one sorts
        // after it even though that replica's clock is ahead.
        let theirs = crate::audit::AuditRecord {
            seq: ahead.seq(),
            time: ahead.unix().expect("stamped"),
            who: "admin/b".into(),
            method: "Admin/AddGroup".into(),
            fields: Default::default(),
            peer: String::new(),
            result: "Ok".into(),
            message: String::new(),
        };
        let audit_key = ahead.key();
        let value = Some(serde_json::to_vec(&theirs).expect("json"));
        apply(
            fleet,
            replica,
            change(Table::Audit, &audit_key, value.clone()),
        )
        .await;
        apply(fleet, replica, change(Table::Audit, &audit_key, value)).await;
        fleet.audit.record(crate::audit::AuditRecord {
            who: "admin/a".into(),
            ..theirs.clone()
        });
        let who: Vec<String> = fleet.audit.since(0, 0).into_iter().map(|r| r.who).collect();
        assert_eq!(who, ["admin/b", "admin/a"]);
        apply(fleet, replica, change(Table::Audit, &audit_key, None)).await;
        assert_eq!(fleet.audit.since(0, 0).len(), 1, "the leader pruned it");
    }
    #[tokio::test]
    async fn a_report_that_came_before_its_entry_is_applied_when_the_entry_comes() {
        use crate::history::{Entry, entry_key};
        use crate::record_id::RecordId;
        let Follower { fleet, replica, .. } = &follower();
        let c1 = ClusterName::new("c1").expect("name");
        fleet.sessions.insert(
            c1.clone(),
            SessionHandle {
                id: 1,
                notify: Arc::default(),
                close: Arc::default(),
                close_reason: Arc::default(),
            },
        );
        // The spoke served here reported Ready before the leader's entry reached us.
        fleet.record_status(
            &c1,
            "web",
            StatusRecord {
                deployment_id: "d-1".into(),
                state: flotilla_model::State::Ready,
                message: String::new(),
                resources: Vec::new(),
                updated_at: 110,
            },
        );
        let id = RecordId::Stamped {
            nanos: 1,
            writer: 7,
        };
        let assigned = assigned_d1();
        leader_wrote(fleet, &entry_key("c1", "web", id), id, &assigned).await;
        let change = Change {
            revision: 9,
            table: Table::History,
            key: entry_key("c1", "web", id),
            value: Some(serde_json::to_vec(&assigned).expect("json")),
        };
        apply(fleet, replica, change).await;
        let rows = read_history(fleet).await;
        let [row] = rows.as_slice() else {
            panic!("one entry, got {rows:?}")
        };
        let Entry::Deployment(d) = &row.entry else {
            panic!("a deployment")
        };
        assert_eq!(d.ready_at, Some(110));
    }
}
