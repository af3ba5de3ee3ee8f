//! Reads of the history: entries by cluster, bundle, age and commit, and "where is
//! commit X running" (`History::where_running`). Memory only; no store access.

use std::fmt;
use std::ops::Bound;

use flotilla_model::ClusterName;

use super::{Deployment, Entry, History, Inner, Pair};
use crate::record_id::RecordId;

/// One pair's entries with their ids, oldest first.
type PairEntries = std::collections::VecDeque<(RecordId, Entry)>;

/// Which entries `History::query` returns; unset fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub cluster: Option<ClusterName>,
    pub bundle: Option<String>,
    /// Only entries at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only deployments made at this commit (a prefix of at least 7 characters matches).
    pub commit: Option<String>,
    /// At most this many rows, the newest; 0 for all.
    pub limit: usize,
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

impl Inner {
    /// The commits (full ids) that `wanted` names.
    fn commits_named(&self, wanted: &str) -> Vec<String> {
        self.by_commit
            .range::<str, _>((Bound::Included(wanted), Bound::Unbounded))
            .take_while(|(c, _)| c.starts_with(wanted))
            .filter(|(c, _)| commit_matches(c, wanted))
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// The pairs in scope of `cluster`: one range of the ordered map.
    fn pairs_of<'a>(
        &'a self,
        cluster: Option<&'a ClusterName>,
    ) -> Box<dyn Iterator<Item = (&'a Pair, &'a PairEntries)> + 'a> {
        match cluster {
            Some(c) => Box::new(
                self.pairs
                    .range((c.clone(), std::sync::Arc::<str>::from(""))..)
                    .take_while(move |((pc, _), _)| pc == c),
            ),
            None => Box::new(self.pairs.iter()),
        }
    }
}

impl History {
    /// Entries matching `filter`, oldest first.
    pub fn query(&self, filter: &Filter) -> Vec<Row> {
        let inner = self.lock();
        let bundle_ok = |b: &str| filter.bundle.as_deref().is_none_or(|w| w == b);
        let since_ok = |e: &Entry| filter.since.is_none_or(|s| e.at() >= s);
        let mut rows: Vec<(RecordId, Row)> = Vec::new();
        if let Some(wanted) = &filter.commit {
            for commit in inner.commits_named(wanted) {
                for (pair, seq) in inner.by_commit.get(&commit).into_iter().flatten() {
                    if filter.cluster.as_ref().is_some_and(|c| c != &pair.0) || !bundle_ok(&pair.1)
                    {
                        continue;
                    }
                    let found = inner
                        .pairs
                        .get(pair)
                        .and_then(|es| es.iter().find(|(s, _)| s == seq));
                    if let Some((seq, e)) = found
                        && since_ok(e)
                    {
                        rows.push((*seq, row(pair, e)));
                    }
                }
            }
        } else {
            for (pair, entries) in inner.pairs_of(filter.cluster.as_ref()) {
                if !bundle_ok(&pair.1) {
                    continue;
                }
                rows.extend(
                    entries
                        .iter()
                        .filter(|(_, e)| since_ok(e))
                        .map(|(seq, e)| (*seq, row(pair, e))),
                );
            }
        }
        rows.sort_by_key(|(seq, r)| (r.entry.at(), *seq));
        if filter.limit > 0 && rows.len() > filter.limit {
            rows.drain(..rows.len() - filter.limit);
        }
        rows.into_iter().map(|(_, r)| r).collect()
    }

    /// Where `commit` runs: for every pair of a bundle that the commit changed (one that
    /// got a deployment at it somewhere), whether the pair runs it, failed it, is still
    /// on an older deployment, or has moved past it. `None` when no deployment was made
    /// at a commit of that name (or the prefix names several). Returns the full commit id.
    pub fn where_running(&self, commit: &str) -> Option<(String, Vec<WhereRow>)> {
        let inner = self.lock();
        let commits = inner.commits_named(commit);
        let [commit] = commits.as_slice() else {
            return None;
        };
        let at_commit = inner.by_commit.get(commit)?;
        let bundles: std::collections::BTreeSet<&str> =
            at_commit.iter().map(|((_, b), _)| &**b).collect();
        let first_seen = at_commit
            .iter()
            .filter_map(|(pair, seq)| {
                inner
                    .pairs
                    .get(pair)?
                    .iter()
                    .find(|(s, _)| s == seq)
                    .map(|(_, e)| e.at())
            })
            .min()?;
        let mut rows = Vec::new();
        for (pair, entries) in inner.pairs.iter().filter(|(p, _)| bundles.contains(&*p.1)) {
            let Some(current) = entries.iter().rev().find_map(|(_, e)| match e {
                Entry::Deployment(d) => Some(d),
                Entry::StateChange(_) => None,
            }) else {
                continue;
            };
            let verdict = if &current.commit == commit {
                if current.failed() {
                    WhereVerdict::Failed
                } else if current.ready_at.is_some() {
                    WhereVerdict::Running
                } else {
                    WhereVerdict::Pending
                }
            } else if at_commit.iter().any(|(p, _)| p == pair) || current.assigned_at > first_seen {
                WhereVerdict::Newer
            } else {
                WhereVerdict::Older
            };
            rows.push(WhereRow {
                cluster: pair.0.clone(),
                bundle: pair.1.to_string(),
                verdict,
                current: current.clone(),
            });
        }
        Some((commit.clone(), rows))
    }
}

fn row(pair: &Pair, e: &Entry) -> Row {
    Row {
        cluster: pair.0.clone(),
        bundle: pair.1.to_string(),
        entry: e.clone(),
    }
}
