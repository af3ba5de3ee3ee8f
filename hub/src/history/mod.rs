//! Deployment history: what each (cluster, bundle) pair received and how its state
//! changed, kept on the hub with bounded retention (by age and by count per pair).
//!
//! It owns `Table::History` and nothing else. Two calls feed it, one line each, from the
//! places where the fleet's state changes: `History::deployed` where an assignment changes
//! (`Fleet::reconcile_cluster`) and `History::reported` where a spoke's status is recorded
//! (`Fleet::record_status`). Queries (`query`, `where_running`) read the store.
//!
//! **Architecture Invariant:** the store is the history. Memory keeps one `Head` per
//! pair (its current deployment, its id and an entry count), never the entries, so it
//! does not grow with the history's length; every entry added, updated or dropped is
//! queued to the store in the same call. History never changes what is deployed: it
//! only watches.
//!
//! Store keys are `CLUSTER/BUNDLE/ID` (`entry_key`), ID a `crate::record_id::RecordId`:
//! Unix nanoseconds then this writer's random id, so one pair's entries are one
//! contiguous, time-ordered key range and replicas sharing an etcd store never overwrite
//! each other's entries (the module doc of `record_id` says why a stamp rather than a
//! counter allocated in the store). Keys of the single-hub format (`…/SEQ`, 16 hex
//! digits) still read, and sort first. The per-commit view is an index in the same
//! table (`index_key`: `#commit/COMMIT/CLUSTER/BUNDLE/ID`, written with the deployment
//! and deleted with it); a store from before it gets it at start. Each pair's head is
//! also stored (`head_key`: `#head/CLUSTER/BUNDLE`, rewritten in every batch written for
//! the pair), and the start snapshot holds only those (`HEADS_PREFIX`), so a start reads
//! O(pairs) records, not the entries.
//!
//! With replicas, the sweeper runs on the leader only (`run_sweeper` waits on
//! `Leadership::leading`); each replica still prunes a pair by count when it writes to it.

mod query;

pub use query::{DEFAULT_LIMIT, Filter, MAX_LIMIT, Page, Row, SCAN_BUDGET, WhereRow, WhereVerdict};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dashmap::DashMap;
use flotilla_model::{ClusterName, State};
use serde::{Deserialize, Serialize};

use crate::fleet::SourceState;
use crate::ha::Leadership;
use crate::reconcile::Assignment;
use crate::record_id::{RecordId, Stamper};
use crate::records::StatusRecord;
use crate::store::{Op, Revision, Snapshot, Store, StoreError, Table};

/// How long and how much history is kept (`flotilla-hub run --history-max-age`,
/// `--history-max-per-bundle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Entries older than this are dropped (the newest deployment of a pair excepted).
    pub max_age: Duration,
    /// At most this many entries per (cluster, bundle); the oldest go first.
    pub max_per_pair: usize,
}

/// 90 days, as the issue asks; see `DEFAULT_MAX_PER_PAIR` for the count.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(90 * 86_400);
/// Room for 90 days of the churn `docs/operations.md#deployment-history` assumes (a
/// bundle changing about twice a week, 23 deployments, and a drift episode a month, 6
/// state changes) with a margin; the disk this costs at 10,000 × 50 pairs is measured by
/// `bench/src/bin/history_disk.rs`.
pub const DEFAULT_MAX_PER_PAIR: usize = 32;

/// `flotilla-hub run` flags for the history's retention.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Deployment history older than this is dropped (the newest deployment of each
    /// cluster and bundle stays whatever its age).
    #[arg(long, default_value = "90d", value_parser = flotilla_model::duration::parse_duration)]
    pub history_max_age: Duration,
    /// At most this many history entries (deployments and state changes) per cluster
    /// and bundle; the oldest go first.
    #[arg(long, default_value_t = DEFAULT_MAX_PER_PAIR as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub history_max_per_bundle: u32,
}

impl RetentionArgs {
    pub fn retention(&self) -> Retention {
        Retention {
            max_age: self.history_max_age,
            max_per_pair: self.history_max_per_bundle as usize,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: DEFAULT_MAX_AGE,
            max_per_pair: DEFAULT_MAX_PER_PAIR,
        }
    }
}

/// The longest state-change message kept: a drift diff can be long, history is not the
/// place for all of it (`flotilla status` has the current one in full).
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// One thing that happened to a (cluster, bundle) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Entry {
    /// A deployment the pair was assigned, updated in place as the spoke reports on it.
    Deployment(Deployment),
    /// The state of the pair's current deployment changed after it was first applied
    /// (Ready → Modified → Ready, Ready → NotReady ...).
    StateChange(StateChange),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub deployment_id: String,
    /// The source's commit when the hub assigned it; empty when the source had none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    pub source: String,
    pub assigned_at: i64,
    /// The spoke's first report on it other than WaitApplied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<i64>,
    /// Why it failed (the spoke's ErrApplied message), the last time it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure: String,
}

impl Deployment {
    /// Takes what `other`, another copy of this deployment, knows and this one does not:
    /// the first applied time, and the latest Ready and failure.
    pub fn merge(&mut self, other: &Deployment) {
        self.applied_at = match (self.applied_at, other.applied_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.ready_at = self.ready_at.max(other.ready_at);
        if other.failed_at > self.failed_at {
            self.failed_at = other.failed_at;
            self.failure = other.failure.clone();
        }
    }

    /// Failed, and not Ready since.
    pub fn failed(&self) -> bool {
        self.failed_at
            .is_some_and(|f| self.ready_at.is_none_or(|r| r < f))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    pub at: i64,
    pub deployment_id: String,
    pub from: State,
    pub to: State,
    /// The spoke's message and non-ready resources (for Modified: the field diff as the
    /// spoke reports it), cut at `MAX_MESSAGE_BYTES`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Entry {
    /// When it happened: assignment or state change time.
    pub fn at(&self) -> i64 {
        match self {
            Entry::Deployment(d) => d.assigned_at,
            Entry::StateChange(s) => s.at,
        }
    }
}

/// The store key of one entry: the pair's range, then the entry's id, so keys sort in
/// the order entries were made.
pub fn entry_key(cluster: &str, bundle: &str, id: RecordId) -> String {
    format!("{cluster}/{bundle}/{}", id.key())
}

/// The first key of a pair's range (every entry key of the pair starts with it).
pub fn pair_prefix(cluster: &str, bundle: &str) -> String {
    format!("{cluster}/{bundle}/")
}

/// Splits an entry key into (cluster, bundle, id). Cluster names are DNS labels (no
/// `/`) and the id is the last part, so a `/` in a bundle name is harmless.
pub fn parse_key(key: &str) -> Option<(&str, &str, RecordId)> {
    let (cluster, rest) = key.split_once('/')?;
    let (bundle, id) = rest.rsplit_once('/')?;
    Some((cluster, bundle, RecordId::parse(id)?))
}

type Pair = (ClusterName, Arc<str>);

/// The first key of the commit index (`index_key`). `#` is not a cluster name's
/// character, so index keys never fall in a cluster's or a pair's range.
pub const INDEX_PREFIX: &str = "#commit/";

/// The commit index's key for the deployment `id` of a pair: `#commit/COMMIT/CLUSTER/
/// BUNDLE/ID`, so a commit (or a prefix of one) is one key range. `None` for a commit
/// that cannot be a key part (empty, or with a `/`): such a deployment is not indexed.
pub fn index_key(commit: &str, cluster: &str, bundle: &str, id: RecordId) -> Option<String> {
    (!commit.is_empty() && !commit.contains('/'))
        .then(|| format!("{INDEX_PREFIX}{commit}/{}", entry_key(cluster, bundle, id)))
}

/// Splits an index key into (commit, cluster, bundle, id).
pub fn parse_index_key(key: &str) -> Option<(&str, &str, &str, RecordId)> {
    let (commit, entry) = key.strip_prefix(INDEX_PREFIX)?.split_once('/')?;
    let (c, b, id) = parse_key(entry)?;
    Some((commit, c, b, id))
}

/// The first key of the head records (`head_key`): what a start snapshot reads of
/// `Table::History` (with `HEADS_MARKER`, which also starts with it), so the start costs
/// O(pairs), not O(entries).
pub const HEADS_PREFIX: &str = "#head";

/// Present once every pair with entries has a head record: written by the first start
/// that made them (`History::restore`), or by the first start of an empty history.
/// Without it the start snapshot holds the whole table, once.
pub const HEADS_MARKER: &str = "#heads";

/// The head record's key of a pair: `#head/CLUSTER/BUNDLE`.
pub fn head_key(cluster: &str, bundle: &str) -> String {
    format!("{HEADS_PREFIX}/{cluster}/{bundle}")
}

/// What the store keeps of a pair's head (`head_key`), rewritten in the batch of every
/// entry written for the pair: its current deployment, its id, the pair's entry count
/// (an upper bound: prunes do not rewrite it, the next write's prune corrects it) and
/// the newest id written for it (so a restarted writer stamps after it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredHead {
    id: String,
    newest: String,
    count: usize,
    deployment: Deployment,
}

/// The put of a pair's head record: `head`, whose newest entry is `newest`.
fn head_op(pair: &Pair, head: Head, newest: RecordId) -> Op {
    let stored = StoredHead {
        id: head.id.key(),
        newest: newest.key(),
        count: head.count,
        deployment: head.deployment,
    };
    Op::put_json(Table::History, head_key(pair.0.as_str(), &pair.1), &stored)
}

/// A put of one record of a pair's history, kept as the record until the store's writer
/// builds its key and encodes it (`Store::submit_with`): a status report or an
/// assignment formats no key and encodes no JSON on the session or reconcile thread,
/// nor under the history's lock.
enum Put {
    /// Entry `id` of the pair.
    Entry(RecordId, Entry),
    /// A new deployment's entry `id`, and its commit's index key (`index_key`).
    Indexed(RecordId, Deployment),
    /// The pair's head record (`StoredHead`), whose newest entry is `newest`.
    Head { head: Head, newest: RecordId },
}

impl Put {
    /// Appends the store's ops for this put of `pair`'s history to `ops`.
    fn ops(self, pair: &Pair, ops: &mut Vec<Op>) {
        let (cluster, bundle) = (pair.0.as_str(), &*pair.1);
        match self {
            Put::Entry(id, entry) => ops.push(Op::put_json(
                Table::History,
                entry_key(cluster, bundle, id),
                &entry,
            )),
            Put::Indexed(id, d) => {
                let index = index_key(&d.commit, cluster, bundle, id);
                let at = Indexed { at: d.assigned_at };
                let key = entry_key(cluster, bundle, id);
                ops.push(Op::put_json(Table::History, key, &Entry::Deployment(d)));
                ops.extend(index.map(|k| Op::put_json(Table::History, k, &at)));
            }
            Put::Head { head, newest } => ops.push(head_op(pair, head, newest)),
        }
    }

    /// The store's ops for `puts` of `pair`'s history, in order.
    fn all_ops(pair: &Pair, puts: Vec<Put>) -> Vec<Op> {
        let mut ops = Vec::with_capacity(puts.len() + 1);
        for p in puts {
            p.ops(pair, &mut ops);
        }
        ops
    }
}

/// A head record from the start snapshot: (pair, head, newest id), or `None` when its
/// key or value is not one.
fn decode_head(key: &str, value: &[u8]) -> Option<(Pair, Head, RecordId)> {
    let rest = key.strip_prefix(HEADS_PREFIX)?.strip_prefix('/')?;
    let (c, b) = rest.split_once('/')?;
    let cluster = ClusterName::new(c).ok()?;
    let stored: StoredHead = serde_json::from_slice(value).ok()?;
    let id = RecordId::parse(&stored.id)?;
    let newest = RecordId::parse(&stored.newest).unwrap_or(id);
    let head = Head {
        id,
        deployment: stored.deployment,
        count: stored.count,
    };
    Some(((cluster, Arc::from(b)), head, newest))
}

/// The value of an index key: when the deployment was assigned, so "where is X
/// running" finds when the commit was first deployed without reading the entries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Indexed {
    pub at: i64,
}

/// What memory keeps of a pair: its current deployment and how many entries it has.
#[derive(Debug, Clone)]
struct Head {
    id: RecordId,
    deployment: Deployment,
    /// Entries of the pair in the store, as far as this replica knows: when it passes
    /// the retention's count, the pair is pruned (`prune_in_store`).
    count: usize,
}

struct Inner {
    stamper: Stamper,
    /// Each pair's current deployment. A BTreeMap so a cluster's pairs are one range.
    heads: BTreeMap<Pair, Head>,
}

/// The deployment history of the fleet. Written by `deployed` and `status` only.
///
/// Memory holds one `Head` per pair, whatever the history's length; the entries are in
/// the store only and queries read them there (`query`).
pub struct History {
    store: Store,
    retention: Retention,
    inner: Arc<Mutex<Inner>>,
}

/// One pair's entries with their ids, oldest first, as read from the store.
type PairEntries = Vec<(RecordId, Entry)>;

impl History {
    /// Takes each pair's current deployment from its head record in the snapshot (the
    /// snapshot holds only those once `HEADS_MARKER` is stored: O(pairs), no entry read;
    /// a lowered limit takes effect at the sweeper's first run, at the start of a term).
    /// A store without head records has the whole table in the snapshot, once: its
    /// entries are walked one pair at a time and the start queues what the store needs:
    /// the deletes of what the retention no longer keeps, the commit index of deployments
    /// written before there was one, the head records and the marker.
    pub fn restore(
        store: Store,
        retention: Retention,
        snapshot: &Snapshot,
        now: i64,
    ) -> Result<History, StoreError> {
        let migrated = snapshot
            .raw(Table::History)
            .any(|(key, _)| key == HEADS_MARKER);
        if migrated {
            return Ok(Self::from_heads(store, retention, snapshot));
        }
        let mut ops = Vec::new();
        let mut indexed = std::collections::HashSet::new();
        let mut heads = BTreeMap::new();
        let mut newest = None::<RecordId>;
        // Keys come sorted from the store: the index first (`#`), then each pair's
        // entries together, so one pair at a time is in memory here.
        let mut current: Option<(Pair, PairEntries)> = None;
        for (key, value) in snapshot.raw(Table::History) {
            if key.starts_with(HEADS_PREFIX) {
                continue;
            }
            if let Some((_, c, b, id)) = parse_index_key(key) {
                indexed.insert(entry_key(c, b, id));
                continue;
            }
            let parsed = parse_key(key).and_then(|(c, b, id)| {
                Some(((ClusterName::new(c).ok()?, Arc::<str>::from(b)), id))
            });
            let Some((pair, id)) = parsed else {
                tracing::warn!(%key, "dropping a history record with an unreadable key");
                ops.push(Op::delete(Table::History, key));
                continue;
            };
            let entry: Entry = serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
                table: Table::History,
                key: key.to_string(),
                message: e.to_string(),
            })?;
            newest = newest.max(Some(id));
            match &mut current {
                Some((p, entries)) if *p == pair => entries.push((id, entry)),
                _ => {
                    if let Some((p, entries)) = current.replace((pair, vec![(id, entry)])) {
                        finish_pair(p, entries, (retention, now), &indexed, &mut heads, &mut ops);
                    }
                }
            }
        }
        if let Some((p, entries)) = current.take() {
            finish_pair(p, entries, (retention, now), &indexed, &mut heads, &mut ops);
        }
        // This store's first start with head records: write them, then the marker, so
        // the next start reads only them.
        ops.extend(heads.iter().map(|(pair, h)| head_op(pair, h.clone(), h.id)));
        ops.push(Op::put_json(Table::History, HEADS_MARKER, &true));
        let inner = Inner {
            stamper: Stamper::after(newest.as_ref()),
            heads,
        };
        if !ops.is_empty() {
            store.submit(ops);
        }
        Ok(History {
            store,
            retention,
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// The start of a store with head records: one per pair, no entry read.
    fn from_heads(store: Store, retention: Retention, snapshot: &Snapshot) -> History {
        let mut heads = BTreeMap::new();
        let mut newest = None::<RecordId>;
        for (key, value) in snapshot.raw(Table::History) {
            if key == HEADS_MARKER || !key.starts_with(HEADS_PREFIX) {
                continue;
            }
            let Some((pair, head, last)) = decode_head(key, value) else {
                tracing::warn!(%key, "a history head record does not decode; skipped");
                continue;
            };
            newest = newest.max(Some(last)).max(Some(head.id));
            heads.insert(pair, head);
        }
        History {
            store,
            retention,
            inner: Arc::new(Mutex::new(Inner {
                stamper: Stamper::after(newest.as_ref()),
                heads,
            })),
        }
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// `cluster` was assigned `a`'s deployment of `bundle` (its commit read from the
    /// source in `sources`). Called where an assignment changes.
    pub fn deployed(
        &self,
        cluster: &ClusterName,
        bundle: &Arc<str>,
        a: &Assignment,
        sources: &DashMap<String, Arc<SourceState>>,
    ) {
        let Some(desired) = &a.desired else { return };
        let commit = sources
            .get(&*a.source)
            .and_then(|s| s.runtime.read().ok().and_then(|rt| rt.commit.clone()))
            .unwrap_or_default();
        self.record_deployment(
            cluster,
            bundle,
            Deployment {
                deployment_id: desired.deployment_id.to_string(),
                commit,
                source: a.source.to_string(),
                assigned_at: crate::records::now_unix(),
                applied_at: None,
                ready_at: None,
                failed_at: None,
                failure: String::new(),
            },
        );
    }

    /// A spoke reported `new` for the pair; `statuses` (the fleet's, not yet updated)
    /// holds the report it replaces. Called where a status is recorded.
    pub fn reported(
        &self,
        cluster: &ClusterName,
        bundle: &str,
        statuses: &crate::statuses::Statuses,
        new: &StatusRecord,
    ) {
        // Only the previous state matters, and only when it was about the same
        // deployment: read in place, without copying the report out.
        let prior = statuses
            .with(cluster, bundle, |p| {
                (p.deployment_id == new.deployment_id).then_some(p.state)
            })
            .flatten();
        self.status(cluster, bundle, prior, new);
    }

    /// Adds a deployment entry (the body of `deployed`, with the commit and time given):
    /// the entry and its commit index key, in one batch.
    pub fn record_deployment(&self, cluster: &ClusterName, bundle: &Arc<str>, d: Deployment) {
        let mut inner = self.lock();
        let id = inner.stamper.stamp();
        let pair: Pair = (cluster.clone(), bundle.clone());
        let mut ops = vec![Put::Indexed(id, d.clone())];
        let count = inner.heads.get(&pair).map_or(0, |h| h.count) + 1;
        let now = d.assigned_at;
        let head = Head {
            id,
            deployment: d,
            count,
        };
        ops.push(Put::Head {
            head: head.clone(),
            newest: id,
        });
        inner.heads.insert(pair.clone(), head);
        drop(inner);
        self.write(pair, count, now, ops);
    }

    /// Queues `ops` for `pair`, and prunes the pair once they are written if it now has
    /// more entries than the retention keeps (ages measured at `now`, the time of the
    /// entry written).
    fn write(&self, pair: Pair, count: usize, now: i64, puts: Vec<Put>) {
        if count <= self.retention.max_per_pair.max(1) {
            self.store.submit_with(move || Put::all_ops(&pair, puts));
            return;
        }
        let written = self.store.queue_commit(Put::all_ops(&pair, puts));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (a blocking caller): the sweeper prunes the pair.
            return;
        };
        let (store, retention) = (self.store.clone(), self.retention);
        let inner = self.inner.clone();
        runtime.spawn(async move {
            if let Err(e) = written.await {
                tracing::warn!(error = %e, "writing a history entry");
                return;
            }
            match prune_in_store(&store, retention, &pair, now).await {
                Ok(kept) => set_count(&inner, &pair, kept),
                Err(e) => tracing::warn!(error = %e, cluster = %pair.0, bundle = %pair.1, "pruning a history pair"),
            }
        });
    }

    /// A status `new` is about to replace the pair's previous report, whose state was
    /// `prior` when it was about the same deployment as `new` (the body of `reported`).
    /// Costs the store nothing when no time of the deployment moved and its state did
    /// not change; otherwise one put (the deployment's entry, or a state change), two
    /// when a failed deployment turns Ready again.
    pub fn status(
        &self,
        cluster: &ClusterName,
        bundle: &str,
        prior: Option<State>,
        new: &StatusRecord,
    ) {
        let at = new.updated_at;
        let mut inner = self.lock();
        let pair: Pair = (cluster.clone(), Arc::from(bundle));
        let Some(head) = inner.heads.get_mut(&pair) else {
            return;
        };
        if head.deployment.deployment_id != new.deployment_id {
            return;
        }
        let id = head.id;
        let d = &mut head.deployment;
        let first_outcome = d.applied_at.is_none();
        let mut changed = false;
        if new.state != State::WaitApplied && d.applied_at.is_none() {
            d.applied_at = Some(at);
            changed = true;
        }
        match new.state {
            State::Ready if d.ready_at.is_none() || d.failed() => {
                d.ready_at = Some(at);
                changed = true;
            }
            State::ErrApplied if !d.failed() || d.failure != new.message => {
                d.failed_at = Some(at);
                d.failure = cut(&new.message);
                changed = true;
            }
            _ => {}
        }
        let mut ops = Vec::new();
        let mut newest = id;
        if changed {
            ops.push(Put::Entry(id, Entry::Deployment(d.clone())));
        }
        // The first outcome of a deployment is on the deployment itself; later moves of
        // the same deployment are state changes.
        let moved = prior.filter(|p| *p != new.state && *p != State::WaitApplied);
        if let (Some(from), false) = (moved, first_outcome) {
            head.count += 1;
            let change = Entry::StateChange(StateChange {
                at,
                deployment_id: new.deployment_id.clone(),
                from,
                to: new.state,
                message: change_message(new),
            });
            let id = inner.stamper.stamp();
            newest = id;
            ops.push(Put::Entry(id, change));
        }
        let count = inner.heads.get(&pair).map_or(0, |h| h.count);
        if let (false, Some(h)) = (ops.is_empty(), inner.heads.get(&pair)) {
            ops.push(Put::Head {
                head: h.clone(),
                newest,
            });
        }
        drop(inner);
        if !ops.is_empty() {
            self.write(pair, count, at, ops);
        }
    }

    /// Drops every entry the retention no longer keeps, reading the store one cluster
    /// at a time; run periodically (`run_sweeper`), since a pair that stops changing is
    /// never pruned on write. Returns how many entries were dropped.
    pub async fn sweep(&self, now: i64) -> Result<usize, StoreError> {
        // What this replica queued before is in the store before the sweep reads it.
        self.store.commit(Vec::new()).await?;
        let clusters: Vec<ClusterName> = {
            let inner = self.lock();
            let mut cs: Vec<ClusterName> = inner.heads.keys().map(|(c, _)| c.clone()).collect();
            cs.dedup();
            cs
        };
        let mut dropped = 0;
        for cluster in clusters {
            let range = self
                .store
                .range(Table::History, &format!("{cluster}/"))
                .await?;
            let mut ops = Vec::new();
            for (pair, entries) in group_pairs(&range.entries) {
                let drops = pruned(&entries, self.retention, now);
                dropped += drops.len();
                for &i in &drops {
                    ops.extend(delete_ops(&pair, entries[i].0, &entries[i].1));
                }
                self.set_count(&pair, entries.len() - drops.len());
            }
            if !ops.is_empty() {
                self.store.commit(ops).await?;
            }
        }
        Ok(dropped)
    }

    fn set_count(&self, pair: &Pair, count: usize) {
        set_count(&self.inner, pair, count);
    }

    /// Takes an entry another replica stored (`value`) or deleted (`None`), without a
    /// store write (`ha::mirror`): only what moves a pair's current deployment (a newer
    /// deployment, or news of the current one) changes memory. A deployment's times
    /// only move forward (`Deployment::merge`), so a late echo never regresses it.
    pub fn take(&self, key: &str, value: Option<Entry>) {
        let Some((c, b, id)) = parse_key(key) else {
            return;
        };
        let Ok(cluster) = ClusterName::new(c) else {
            return;
        };
        let pair: Pair = (cluster, Arc::from(b));
        let mut inner = self.lock();
        inner.stamper.observe(id);
        match value {
            None => match inner.heads.get_mut(&pair) {
                // The current deployment itself is gone (only a removal of the pair's
                // history does that): nothing is known to run there.
                Some(h) if h.id == id => {
                    inner.heads.remove(&pair);
                }
                Some(h) => h.count = h.count.saturating_sub(1),
                None => {}
            },
            Some(Entry::Deployment(d)) => match inner.heads.get_mut(&pair) {
                Some(h) if h.id == id => h.deployment.merge(&d),
                Some(h) if h.id > id => {}
                Some(h) => {
                    h.id = id;
                    h.deployment = d;
                    h.count += 1;
                }
                None => {
                    inner.heads.insert(
                        pair,
                        Head {
                            id,
                            deployment: d,
                            count: 1,
                        },
                    );
                }
            },
            Some(Entry::StateChange(_)) => {
                if let Some(h) = inner.heads.get_mut(&pair) {
                    h.count += 1;
                }
            }
        }
    }

    /// Makes memory match the store for `clusters`, reading one cluster's range at a
    /// time (`ha::mirror`'s reload after its watch fell behind); returns the revision to
    /// watch from (the first read's, so nothing after it is missed).
    pub async fn reload(&self, clusters: &[ClusterName]) -> Result<Revision, StoreError> {
        let mut from = None;
        for cluster in clusters {
            let range = self
                .store
                .range(Table::History, &format!("{cluster}/"))
                .await?;
            from = from.or(Some(range.revision));
            let mut inner = self.lock();
            for (pair, entries) in group_pairs(&range.entries) {
                for (id, _) in &entries {
                    inner.stamper.observe(*id);
                }
                let count = entries.len();
                let Some((id, Entry::Deployment(d))) = entries
                    .into_iter()
                    .rfind(|(_, e)| matches!(e, Entry::Deployment(_)))
                else {
                    continue;
                };
                match inner.heads.get_mut(&pair) {
                    Some(h) if h.id == id => {
                        h.deployment.merge(&d);
                        h.count = count;
                    }
                    Some(h) if h.id > id => h.count = count,
                    _ => {
                        inner.heads.insert(
                            pair,
                            Head {
                                id,
                                deployment: d,
                                count,
                            },
                        );
                    }
                }
            }
        }
        match from {
            Some(r) => Ok(r),
            // No cluster: any read gives the store's revision.
            None => Ok(self
                .store
                .range(Table::History, INDEX_PREFIX)
                .await?
                .revision),
        }
    }

    /// How many pairs have a deployment in the history.
    pub fn pairs(&self) -> usize {
        self.lock().heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs() == 0
    }

    /// Each cluster's current deployment of `bundle` (memory only).
    pub fn current(&self, bundle: &str) -> Vec<(ClusterName, Deployment)> {
        self.lock()
            .heads
            .iter()
            .filter(|((_, b), _)| &**b == bundle)
            .map(|((c, _), h)| (c.clone(), h.deployment.clone()))
            .collect()
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn set_count(inner: &Mutex<Inner>, pair: &Pair, count: usize) {
    if let Some(h) = lock(inner).heads.get_mut(pair) {
        h.count = count;
    }
}

/// At start: prunes one pair's entries (oldest first), takes its current deployment
/// into `heads` and indexes its deployments that `indexed` (entry keys) lacks.
fn finish_pair(
    pair: Pair,
    entries: PairEntries,
    (retention, now): (Retention, i64),
    indexed: &std::collections::HashSet<String>,
    heads: &mut BTreeMap<Pair, Head>,
    ops: &mut Vec<Op>,
) {
    let drops = pruned(&entries, retention, now);
    for &i in &drops {
        ops.extend(delete_ops(&pair, entries[i].0, &entries[i].1));
    }
    let count = entries.len() - drops.len();
    for (i, (id, e)) in entries.into_iter().enumerate() {
        let Entry::Deployment(d) = e else { continue };
        if drops.contains(&i) {
            continue;
        }
        let key = entry_key(pair.0.as_str(), &pair.1, id);
        if let Some(ik) = index_key(&d.commit, pair.0.as_str(), &pair.1, id)
            && !indexed.contains(&key)
        {
            ops.push(Op::put_json(
                Table::History,
                ik,
                &Indexed { at: d.assigned_at },
            ));
        }
        heads.insert(
            pair.clone(),
            Head {
                id,
                deployment: d,
                count,
            },
        );
    }
}

/// Sweeps the history once an hour for entries past `max_age`, while this replica
/// leads (always, on redb): replicas sharing a store would otherwise all sweep it.
pub async fn run_sweeper(history: Arc<History>, leadership: Leadership) {
    crate::ha::while_leading(&leadership, Duration::from_secs(3600), || {
        let history = history.clone();
        tokio::spawn(async move {
            match history.sweep(crate::records::now_unix()).await {
                Ok(0) => {}
                Ok(dropped) => tracing::info!(dropped, "history entries past retention dropped"),
                Err(e) => tracing::warn!(error = %e, "sweeping the history"),
            }
        });
    })
    .await
}

/// Reads one pair's entries and deletes what `retention` drops; returns how many are
/// kept.
async fn prune_in_store(
    store: &Store,
    retention: Retention,
    pair: &Pair,
    now: i64,
) -> Result<usize, StoreError> {
    let range = store
        .range(Table::History, &pair_prefix(pair.0.as_str(), &pair.1))
        .await?;
    let mut kept = 0;
    for (p, entries) in group_pairs(&range.entries) {
        if p != *pair {
            // A bundle whose name extends this one's with a `/`: not this pair.
            continue;
        }
        let drops = pruned(&entries, retention, now);
        let ops: Vec<Op> = drops
            .iter()
            .flat_map(|&i| delete_ops(pair, entries[i].0, &entries[i].1))
            .collect();
        kept = entries.len() - drops.len();
        if !ops.is_empty() {
            store.commit(ops).await?;
        }
    }
    Ok(kept)
}

/// The entries of a range (of one cluster or one pair), decoded and grouped by pair,
/// oldest first. Keys that do not parse and values that do not decode are skipped with
/// a warning (the start drops them).
fn group_pairs(entries: &[crate::store::Entry]) -> Vec<(Pair, PairEntries)> {
    let mut out: Vec<(Pair, PairEntries)> = Vec::new();
    for e in entries {
        let Some((pair, id, entry)) = decode_entry(&e.key, &e.value) else {
            continue;
        };
        match out.last_mut() {
            Some((p, es)) if *p == pair => es.push((id, entry)),
            _ => out.push((pair, vec![(id, entry)])),
        }
    }
    out
}

/// One stored entry, or `None` (with a warning) when its key or value is not one.
fn decode_entry(key: &str, value: &[u8]) -> Option<(Pair, RecordId, Entry)> {
    let (c, b, id) = parse_key(key)?;
    let cluster = ClusterName::new(c).ok()?;
    match serde_json::from_slice::<Entry>(value) {
        Ok(entry) => Some(((cluster, Arc::from(b)), id, entry)),
        Err(e) => {
            tracing::warn!(%key, error = %e, "a history entry does not decode; skipped");
            None
        }
    }
}

/// Which of a pair's entries (oldest first) `retention` drops: the oldest over the
/// count, and those past the age. The newest deployment always stays: it says what the
/// pair runs.
fn pruned(entries: &[(RecordId, Entry)], retention: Retention, now: i64) -> Vec<usize> {
    let newest_deployment = entries
        .iter()
        .rposition(|(_, e)| matches!(e, Entry::Deployment(_)));
    let oldest_kept =
        now.saturating_sub(i64::try_from(retention.max_age.as_secs()).unwrap_or(i64::MAX));
    let mut over = entries.len().saturating_sub(retention.max_per_pair.max(1));
    let mut drops = Vec::new();
    for (i, (_, e)) in entries.iter().enumerate() {
        if Some(i) != newest_deployment && (over > 0 || e.at() < oldest_kept) {
            over = over.saturating_sub(1);
            drops.push(i);
        }
    }
    drops
}

/// The store deletes of one entry: the entry and, for a deployment, its index key.
fn delete_ops(pair: &Pair, id: RecordId, e: &Entry) -> Vec<Op> {
    let mut ops = vec![Op::delete(
        Table::History,
        entry_key(pair.0.as_str(), &pair.1, id),
    )];
    if let Entry::Deployment(d) = e
        && let Some(k) = index_key(&d.commit, pair.0.as_str(), &pair.1, id)
    {
        ops.push(Op::delete(Table::History, k));
    }
    ops
}

/// The spoke's message and its non-ready resources' messages, cut to size.
fn change_message(st: &StatusRecord) -> String {
    let mut parts = vec![st.message.clone()];
    parts.extend(
        st.resources
            .iter()
            .filter(|r| r.state != State::Ready || !r.message.is_empty())
            .map(|r| format!("{}/{}: {}", r.kind, r.name, r.message)),
    );
    cut(parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        .as_str())
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_MESSAGE_BYTES {
        return s.to_string();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests;
