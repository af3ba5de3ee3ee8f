//! Deployment history: what each (cluster, bundle) pair received and how its state
//! changed, kept on the hub with bounded retention (by age and by count per pair).
//!
//! It owns `Table::History` and nothing else. Two calls feed it, one line each, from the
//! places where the fleet's state changes: `History::deployed` where an assignment changes
//! (`Fleet::reconcile_cluster`) and `History::reported` where a spoke's status is recorded
//! (`Fleet::record_status`). Queries (`query`, `where_running`) read memory only.
//!
//! **Architecture Invariant:** memory mirrors `Table::History`; every entry added,
//! updated or dropped here is queued to the store in the same call. History never
//! changes what is deployed: it only watches.
//!
//! Store keys are `CLUSTER/BUNDLE/ID` (`entry_key`), ID a `crate::record_id::RecordId`:
//! Unix nanoseconds then this writer's random id, so one pair's entries are one
//! contiguous, time-ordered key range and replicas sharing an etcd store never overwrite
//! each other's entries (the module doc of `record_id` says why a stamp rather than a
//! counter allocated in the store). Keys of the single-hub format (`…/SEQ`, 16 hex
//! digits) still read, and sort first. The per-commit view is an index in memory
//! (`Inner::by_commit`) rebuilt from the snapshot at start rather than a second copy of
//! every entry on disk.
//!
//! With replicas, the sweeper runs on the leader only (`run_sweeper` waits on
//! `Leadership::leading`); each replica still prunes a pair by count when it writes to it.

mod query;

pub use query::{Filter, Row, WhereRow, WhereVerdict};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
use crate::store::{Op, Snapshot, Store, StoreError, Table};

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

struct Inner {
    stamper: Stamper,
    /// Each pair's entries, oldest first, with their ids. A BTreeMap so a cluster's
    /// pairs are one range.
    pairs: BTreeMap<Pair, VecDeque<(RecordId, Entry)>>,
    /// Commit → the deployments made at it.
    by_commit: BTreeMap<String, BTreeSet<(Pair, RecordId)>>,
}

/// The deployment history of the fleet. Written by `deployed` and `status` only.
pub struct History {
    store: Store,
    retention: Retention,
    inner: Mutex<Inner>,
}

impl History {
    /// Reads `Table::History` from the snapshot and drops what the retention no longer
    /// keeps (a lowered limit takes effect at start).
    pub fn restore(
        store: Store,
        retention: Retention,
        snapshot: &Snapshot,
        now: i64,
    ) -> Result<History, StoreError> {
        let mut pairs: BTreeMap<Pair, VecDeque<(RecordId, Entry)>> = BTreeMap::new();
        let mut by_commit: BTreeMap<String, BTreeSet<(Pair, RecordId)>> = BTreeMap::new();
        let mut ignored = Vec::new();
        for (key, entry) in snapshot.records::<Entry>(Table::History)? {
            let Some((c, b, seq)) = parse_key(&key) else {
                ignored.push(key);
                continue;
            };
            let Ok(cluster) = ClusterName::new(c) else {
                ignored.push(key);
                continue;
            };
            let pair: Pair = (cluster, Arc::from(b));
            if let Entry::Deployment(d) = &entry
                && !d.commit.is_empty()
            {
                by_commit
                    .entry(d.commit.clone())
                    .or_default()
                    .insert((pair.clone(), seq));
            }
            // Keys come sorted from the store, so each pair's entries are in order.
            pairs.entry(pair).or_default().push_back((seq, entry));
        }
        let inner = Inner {
            stamper: Stamper::after(pairs.values().flatten().map(|(id, _)| id)),
            pairs,
            by_commit,
        };
        let history = History {
            store,
            retention,
            inner: Mutex::new(inner),
        };
        let mut ops: Vec<Op> = ignored
            .into_iter()
            .map(|k| {
                tracing::warn!(key = %k, "dropping a history record with an unreadable key");
                Op::delete(Table::History, k)
            })
            .collect();
        ops.extend(history.sweep_ops(now));
        if !ops.is_empty() {
            history.store.submit(ops);
        }
        Ok(history)
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let prev = statuses.get(cluster, bundle);
        self.status(cluster, bundle, prev.as_ref(), new);
    }

    /// Adds a deployment entry (the body of `deployed`, with the commit and time given).
    pub fn record_deployment(&self, cluster: &ClusterName, bundle: &Arc<str>, d: Deployment) {
        let mut inner = self.lock();
        let seq = inner.stamper.stamp();
        let pair: Pair = (cluster.clone(), bundle.clone());
        let mut ops = vec![Op::put_json(
            Table::History,
            entry_key(cluster.as_str(), bundle, seq),
            &Entry::Deployment(d.clone()),
        )];
        if !d.commit.is_empty() {
            inner
                .by_commit
                .entry(d.commit.clone())
                .or_default()
                .insert((pair.clone(), seq));
        }
        let now = d.assigned_at;
        inner
            .pairs
            .entry(pair.clone())
            .or_default()
            .push_back((seq, Entry::Deployment(d)));
        ops.extend(prune_pair(&mut inner, &pair, self.retention, now));
        drop(inner);
        self.store.submit(ops);
    }

    /// A status `new` is about to replace `prev` for the pair (the body of `reported`).
    pub fn status(
        &self,
        cluster: &ClusterName,
        bundle: &str,
        prev: Option<&StatusRecord>,
        new: &StatusRecord,
    ) {
        let at = new.updated_at;
        let mut inner = self.lock();
        let pair: Pair = (cluster.clone(), Arc::from(bundle));
        let Some(entries) = inner.pairs.get_mut(&pair) else {
            return;
        };
        let Some((seq, Entry::Deployment(d))) = entries.iter_mut().rev().find(
            |(_, e)| matches!(e, Entry::Deployment(d) if d.deployment_id == new.deployment_id),
        ) else {
            return;
        };
        let seq = *seq;
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
        if changed {
            ops.push(Op::put_json(
                Table::History,
                entry_key(cluster.as_str(), bundle, seq),
                &Entry::Deployment(d.clone()),
            ));
        }
        // The first outcome of a deployment is on the deployment itself; later moves of
        // the same deployment are state changes.
        let moved = prev.filter(|p| {
            p.deployment_id == new.deployment_id
                && p.state != new.state
                && p.state != State::WaitApplied
        });
        if let (Some(p), false) = (moved, first_outcome) {
            let seq = inner.stamper.stamp();
            let change = Entry::StateChange(StateChange {
                at,
                deployment_id: new.deployment_id.clone(),
                from: p.state,
                to: new.state,
                message: change_message(new),
            });
            ops.push(Op::put_json(
                Table::History,
                entry_key(cluster.as_str(), bundle, seq),
                &change,
            ));
            if let Some(entries) = inner.pairs.get_mut(&pair) {
                entries.push_back((seq, change));
            }
            ops.extend(prune_pair(&mut inner, &pair, self.retention, at));
        }
        drop(inner);
        if !ops.is_empty() {
            self.store.submit(ops);
        }
    }

    /// Drops every entry the retention no longer keeps; run at start and periodically
    /// (`run_sweeper`), since a pair that stops changing is never pruned on write.
    pub fn sweep(&self, now: i64) -> usize {
        let ops = self.sweep_ops(now);
        let n = ops.len();
        if n > 0 {
            self.store.submit(ops);
        }
        n
    }

    fn sweep_ops(&self, now: i64) -> Vec<Op> {
        let mut inner = self.lock();
        let pairs: Vec<Pair> = inner.pairs.keys().cloned().collect();
        pairs
            .iter()
            .flat_map(|p| prune_pair(&mut inner, p, self.retention, now))
            .collect()
    }

    /// Takes an entry another replica stored (`value`) or deleted (`None`) into memory,
    /// without a store write (`ha::mirror`). Entries are never regressed by a late echo:
    /// a deployment's times only move forward (`Deployment::merge`), and a state change
    /// never changes once made.
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
        let Some(entry) = value else {
            let Some(entries) = inner.pairs.get_mut(&pair) else {
                return;
            };
            let Some(at) = entries.iter().position(|(i, _)| *i == id) else {
                return;
            };
            let gone = entries.remove(at);
            if entries.is_empty() {
                inner.pairs.remove(&pair);
            }
            if let Some((_, Entry::Deployment(d))) = gone
                && let Some(set) = inner.by_commit.get_mut(&d.commit)
            {
                set.remove(&(pair, id));
                if set.is_empty() {
                    inner.by_commit.remove(&d.commit);
                }
            }
            return;
        };
        if let Entry::Deployment(d) = &entry
            && !d.commit.is_empty()
        {
            inner
                .by_commit
                .entry(d.commit.clone())
                .or_default()
                .insert((pair.clone(), id));
        }
        let entries = inner.pairs.entry(pair).or_default();
        match entries.binary_search_by_key(&id, |(i, _)| *i) {
            Ok(at) => {
                if let (Entry::Deployment(mine), Entry::Deployment(theirs)) =
                    (&mut entries[at].1, &entry)
                {
                    mine.merge(theirs);
                }
            }
            Err(at) => entries.insert(at, (id, entry)),
        }
    }

    /// The store keys of every entry in memory (for `ha::mirror`'s reload).
    pub fn keys(&self) -> Vec<String> {
        let inner = self.lock();
        inner
            .pairs
            .iter()
            .flat_map(|((c, b), es)| es.iter().map(|(id, _)| entry_key(c.as_str(), b, *id)))
            .collect()
    }

    /// How many entries are kept (all pairs).
    pub fn len(&self) -> usize {
        self.lock().pairs.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sweeps the history once an hour for entries past `max_age`, while this replica
/// leads (always, on redb): replicas sharing a store would otherwise all sweep it.
pub async fn run_sweeper(history: Arc<History>, leadership: Leadership) {
    crate::ha::while_leading(&leadership, Duration::from_secs(3600), || {
        let dropped = history.sweep(crate::records::now_unix());
        if dropped > 0 {
            tracing::info!(dropped, "history entries past retention dropped");
        }
    })
    .await
}

/// The entries of `pair` that `retention` drops, removed from memory, as store deletes.
/// The pair's newest deployment always stays: it says what the pair runs.
fn prune_pair(inner: &mut Inner, pair: &Pair, retention: Retention, now: i64) -> Vec<Op> {
    let Some(entries) = inner.pairs.get_mut(pair) else {
        return Vec::new();
    };
    let newest_deployment = entries
        .iter()
        .rev()
        .find(|(_, e)| matches!(e, Entry::Deployment(_)))
        .map(|(s, _)| *s);
    let oldest_kept =
        now.saturating_sub(i64::try_from(retention.max_age.as_secs()).unwrap_or(i64::MAX));
    let mut over = entries.len().saturating_sub(retention.max_per_pair.max(1));
    let mut dropped = Vec::new();
    entries.retain(|(seq, e)| {
        let drop = Some(*seq) != newest_deployment && (over > 0 || e.at() < oldest_kept);
        if drop {
            over = over.saturating_sub(1);
            dropped.push((*seq, e.clone()));
        }
        !drop
    });
    if entries.is_empty() {
        inner.pairs.remove(pair);
    }
    dropped
        .into_iter()
        .map(|(seq, e)| {
            if let Entry::Deployment(d) = &e
                && let Some(set) = inner.by_commit.get_mut(&d.commit)
            {
                set.remove(&(pair.clone(), seq));
                if set.is_empty() {
                    inner.by_commit.remove(&d.commit);
                }
            }
            Op::delete(Table::History, entry_key(pair.0.as_str(), &pair.1, seq))
        })
        .collect()
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
