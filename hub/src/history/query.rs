//! Reads of the history: entries by cluster, bundle, age and commit, and "where is
//! commit X running" (`History::where_running`). Entries are read from the store, one
//! key range at a time (a pair, a cluster, a commit's index keys), and an answer is
//! bounded: at most `Filter::limit` rows and `SCAN_BUDGET` entries read, with a
//! continue token when it was cut. Memory gives only each pair's current deployment.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use flotilla_model::ClusterName;

use super::{
    Deployment, Entry, History, INDEX_PREFIX, Indexed, Pair, decode_entry, entry_key, pair_prefix,
    parse_index_key,
};
use crate::record_id::RecordId;
use crate::store::{StoreError, Table};

/// Rows in an answer when the request names no limit (as `kubectl get --chunk-size`).
pub const DEFAULT_LIMIT: usize = 500;
/// The most rows an answer has, whatever the request asks.
pub const MAX_LIMIT: usize = 5000;
/// The most entries one answer reads from the store: a `--since` that matches little
/// of a large fleet is cut here rather than reading the whole history in one request.
pub const SCAN_BUDGET: usize = 100_000;

/// Which entries `History::query` returns; unset fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub cluster: Option<ClusterName>,
    pub bundle: Option<String>,
    /// Only entries at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only deployments made at this commit (a prefix of at least 7 characters matches).
    pub commit: Option<String>,
    /// At most this many rows (0: `DEFAULT_LIMIT`; at most `MAX_LIMIT`).
    pub limit: usize,
    /// Only entries after this key: the `next` of the previous answer.
    pub after: Option<String>,
}

/// One answer: rows in store key order (by cluster, bundle, then time; by commit first
/// for a commit query), and where to continue when it was cut.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub rows: Vec<Row>,
    /// Set when there may be more: pass it as `Filter::after` for the rest.
    pub next: Option<String>,
}

/// One entry with the pair it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub cluster: ClusterName,
    pub bundle: String,
    pub entry: Entry,
}

/// Where a pair stands relative to a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WhereVerdict {
    /// Runs the commit's deployment, Ready.
    Running,
    /// Was assigned the commit's deployment and has not reported Ready or failed yet.
    Pending,
    /// The commit's deployment failed there.
    Failed,
    /// Runs a deployment assigned before the commit was first deployed anywhere.
    Older,
    /// Has moved on to a later deployment.
    Newer,
}

impl fmt::Display for WhereVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WhereVerdict::Running => "Running",
            WhereVerdict::Pending => "Pending",
            WhereVerdict::Failed => "Failed",
            WhereVerdict::Older => "Older",
            WhereVerdict::Newer => "Newer",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhereRow {
    pub cluster: ClusterName,
    pub bundle: String,
    pub verdict: WhereVerdict,
    /// The deployment the pair runs now (its newest).
    pub current: Deployment,
}

/// Shortest commit prefix accepted for `--commit`, as `git` abbreviates.
const MIN_COMMIT_PREFIX: usize = 7;

fn commit_matches(full: &str, wanted: &str) -> bool {
    wanted.len() >= MIN_COMMIT_PREFIX.min(full.len()) && full.starts_with(wanted)
}

/// Builds a page: takes rows until the limit or the scan budget, and says where to go on.
struct Pager<'a> {
    filter: &'a Filter,
    limit: usize,
    scanned: usize,
    page: Page,
}

impl Pager<'_> {
    /// Whether the page is full (then `page.next` is set).
    fn full(&self) -> bool {
        self.page.next.is_some()
    }

    /// Whether `key` comes after the continue token.
    fn after_token(&self, key: &str) -> bool {
        self.filter.after.as_deref().is_none_or(|a| key > a)
    }

    /// Offers the entry stored at `key`; returns false once the page is full.
    fn offer(&mut self, key: &str, pair: &Pair, entry: Entry) -> bool {
        if self.full() {
            return false;
        }
        self.scanned += 1;
        let wanted = self.filter.since.is_none_or(|s| entry.at() >= s)
            && self.filter.bundle.as_deref().is_none_or(|b| b == &*pair.1)
            && self.filter.cluster.as_ref().is_none_or(|c| c == &pair.0);
        if wanted {
            self.page.rows.push(row(pair, entry));
        }
        if self.page.rows.len() >= self.limit || self.scanned >= SCAN_BUDGET {
            self.page.next = Some(key.to_string());
            return false;
        }
        true
    }
}

impl History {
    /// Entries matching `filter`, read from the store: at most `limit` of them, after
    /// `filter.after`, in key order.
    pub async fn query(&self, filter: &Filter) -> Result<Page, StoreError> {
        let limit = match filter.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let mut pager = Pager {
            filter,
            limit,
            scanned: 0,
            page: Page::default(),
        };
        if let Some(wanted) = &filter.commit {
            self.query_commit(wanted, &mut pager).await?;
            return Ok(pager.page);
        }
        // The key ranges to read, in key order: one pair, one cluster, each pair of a
        // bundle, or each cluster.
        let prefixes: Vec<String> = match (&filter.cluster, &filter.bundle) {
            (Some(c), Some(b)) => vec![pair_prefix(c.as_str(), b)],
            (Some(c), None) => vec![format!("{c}/")],
            (None, Some(b)) => self
                .lock()
                .heads
                .keys()
                .filter(|(_, pb)| **pb == **b)
                .map(|(c, pb)| pair_prefix(c.as_str(), pb))
                .collect(),
            (None, None) => {
                let inner = self.lock();
                inner.heads.keys().map(|(c, _)| format!("{c}/")).collect()
            }
        };
        // In the store's (byte) order, which is not the order of (cluster, bundle) pairs:
        // `a-b/` sorts before `a/`. The continue token is a key, so the walk must be too.
        let mut prefixes = prefixes;
        prefixes.sort();
        prefixes.dedup();
        for prefix in prefixes {
            // A range wholly before the token is skipped without reading it.
            if let Some(a) = &filter.after
                && a.as_str() >= prefix.as_str()
                && !a.starts_with(prefix.as_str())
            {
                continue;
            }
            let range = self.store.range(Table::History, &prefix).await?;
            for e in &range.entries {
                if !pager.after_token(&e.key) {
                    continue;
                }
                let Some((pair, _, entry)) = decode_entry(&e.key, &e.value) else {
                    continue;
                };
                if !pager.offer(&e.key, &pair, entry) {
                    return Ok(pager.page);
                }
            }
        }
        Ok(pager.page)
    }

    /// The deployments at the commits `wanted` names, through the index.
    async fn query_commit(&self, wanted: &str, pager: &mut Pager<'_>) -> Result<(), StoreError> {
        let index = self
            .store
            .range(Table::History, &format!("{INDEX_PREFIX}{wanted}"))
            .await?;
        for e in &index.entries {
            let Some((commit, c, b, id)) = parse_index_key(&e.key) else {
                continue;
            };
            if !commit_matches(commit, wanted) || !pager.after_token(&e.key) {
                continue;
            }
            let Ok(cluster) = ClusterName::new(c) else {
                continue;
            };
            let pair: Pair = (cluster, Arc::from(b));
            if pager.filter.cluster.as_ref().is_some_and(|c| c != &pair.0)
                || pager.filter.bundle.as_deref().is_some_and(|w| w != b)
            {
                continue;
            }
            let Some(entry) = self.entry(&pair, id).await? else {
                continue;
            };
            if !pager.offer(&e.key, &pair, entry) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// One entry: the current deployment from memory, any other from the store.
    async fn entry(&self, pair: &Pair, id: RecordId) -> Result<Option<Entry>, StoreError> {
        if let Some(h) = self.lock().heads.get(pair)
            && h.id == id
        {
            return Ok(Some(Entry::Deployment(h.deployment.clone())));
        }
        let key = entry_key(pair.0.as_str(), &pair.1, id);
        let range = self.store.range(Table::History, &key).await?;
        Ok(range
            .entries
            .iter()
            .find(|e| e.key == key)
            .and_then(|e| decode_entry(&e.key, &e.value))
            .map(|(_, _, entry)| entry))
    }

    /// Where `commit` runs: for every pair of a bundle that the commit changed (one that
    /// got a deployment at it somewhere), whether the pair runs it, failed it, is still
    /// on an older deployment, or has moved past it. `None` when no deployment was made
    /// at a commit of that name (or the prefix names several). Returns the full commit id.
    ///
    /// Reads the commit's index keys from the store; the pairs' current deployments are
    /// in memory.
    pub async fn where_running(
        &self,
        commit: &str,
    ) -> Result<Option<(String, Vec<WhereRow>)>, StoreError> {
        let index = self
            .store
            .range(Table::History, &format!("{INDEX_PREFIX}{commit}"))
            .await?;
        let mut commits = BTreeSet::new();
        let mut at_commit: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut first_seen = i64::MAX;
        let parsed: Vec<_> = index
            .entries
            .iter()
            .filter_map(|e| {
                let (full, c, b, _) = parse_index_key(&e.key)?;
                commit_matches(full, commit).then_some((full, c, b, &e.value))
            })
            .collect();
        for (full, ..) in &parsed {
            commits.insert(*full);
        }
        let [full] = commits.into_iter().collect::<Vec<_>>()[..] else {
            return Ok(None);
        };
        for (_, c, b, value) in &parsed {
            at_commit.insert((c, b));
            if let Ok(i) = serde_json::from_slice::<Indexed>(value) {
                first_seen = first_seen.min(i.at);
            }
        }
        let bundles: BTreeSet<&str> = at_commit.iter().map(|(_, b)| *b).collect();
        let inner = self.lock();
        let mut rows = Vec::new();
        for ((cluster, bundle), head) in inner
            .heads
            .iter()
            .filter(|((_, b), _)| bundles.contains(&**b))
        {
            let current = &head.deployment;
            let verdict = if current.commit == full {
                if current.failed() {
                    WhereVerdict::Failed
                } else if current.ready_at.is_some() {
                    WhereVerdict::Running
                } else {
                    WhereVerdict::Pending
                }
            } else if at_commit.contains(&(cluster.as_str(), &**bundle))
                || current.assigned_at > first_seen
            {
                WhereVerdict::Newer
            } else {
                WhereVerdict::Older
            };
            rows.push(WhereRow {
                cluster: cluster.clone(),
                bundle: bundle.to_string(),
                verdict,
                current: current.clone(),
            });
        }
        Ok(Some((full.to_string(), rows)))
    }
}

fn row(pair: &Pair, entry: Entry) -> Row {
    Row {
        cluster: pair.0.clone(),
        bundle: pair.1.to_string(),
        entry,
    }
}
