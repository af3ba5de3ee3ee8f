//! The audit trail: who did what to the hub, when, from where, and with what result,
//! refusals included. It owns `Table::Audit` and the optional JSON-lines file sink
//! (`flotilla-hub run --audit-log FILE`).
//!
//! Records come from `layer::AuditLayer`, a tower layer around the whole gRPC server
//! that records every call of the Admin and Registration services except the reads named
//! in `layer::READ_ONLY`, so a new RPC is audited unless someone decides otherwise, and
//! from `Audit::webhook` (webhook-triggered polls on the HTTP listener).
//!
//! **Architecture Invariant:** append-only for everyone outside the hub. Nothing updates
//! an audit record, and no RPC can change or delete one: `Admin.Audit` only reads. The one
//! deletion is the hub's own retention job ([`run_retention`], `--audit-max-age`,
//! `--audit-max-records`), which drops the oldest records first and records that it did.
//! A record is queued to the store and to the file sink before the call's response
//! leaves the hub; the file sink is never pruned.
//!
//! Store keys are `crate::record_id::RecordId`s (Unix nanoseconds, then this writer's
//! random id), so hub replicas sharing an etcd store never overwrite each other's
//! records and a range read is in time order; keys of the single-hub format (a 16-hex
//! counter) still read, and sort first. With replicas, each records the calls it
//! served, and [`run_retention`] runs on the leader only.

mod fields;
pub mod layer;
mod sink;

pub use layer::{AuditLayer, READ_ONLY};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ha::Leadership;
use crate::record_id::{RecordId, Stamper};
use crate::store::{Op, Snapshot, Store, StoreError, Table};

/// `flotilla-hub run` flags for the audit trail.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Also append every audit record to this file as one JSON line (created 0600,
    /// never truncated; synced to disk after each batch of records). For a SIEM to tail.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<std::path::PathBuf>,
    /// Audit records older than this are dropped from the store (the file sink keeps
    /// them). Checked at start and every hour.
    #[arg(long, default_value = "365d", value_parser = flotilla_model::duration::parse_duration)]
    pub audit_max_age: Duration,
    /// At most this many audit records in the store; the oldest go first.
    #[arg(long, default_value_t = DEFAULT_MAX_RECORDS, value_parser = clap::value_parser!(u64).range(2..))]
    pub audit_max_records: u64,
}

impl AuditArgs {
    pub fn retention(&self) -> Retention {
        Retention {
            max_age: self.audit_max_age,
            max_records: usize::try_from(self.audit_max_records).unwrap_or(usize::MAX),
        }
    }
}

/// A year of records, as compliance regimes commonly ask.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(365 * 86_400);
/// About 250 MB of store at ~250 bytes a record: a year of 2,700 changes a day.
pub const DEFAULT_MAX_RECORDS: u64 = 1_000_000;
/// Deletes per store batch when pruning, so a first prune of a large trail does not
/// become one huge transaction.
const PRUNE_BATCH: usize = 10_000;
/// Who the retention job's own record names.
pub const RETENTION_WHO: &str = "hub/retention";

/// How long and how much of the audit trail the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    /// At least 2: the newest record and the one saying what was pruned.
    pub max_records: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: DEFAULT_MAX_AGE,
            max_records: usize::try_from(DEFAULT_MAX_RECORDS).unwrap_or(usize::MAX),
        }
    }
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Order of recording: Unix nanoseconds, strictly increasing per replica (the
    /// counter of the single-hub format for older records). The store key adds the
    /// writer's id (`crate::record_id`).
    pub seq: u64,
    /// Unix seconds.
    pub time: i64,
    /// The certificate identity (`admin/alice`, `viewer/auditor`, `cluster/web-1`), a
    /// join token (`token/ID`), `webhook/PROVIDER`, or `anonymous`.
    pub who: String,
    /// `Admin/AddSource`, `Registration/Register`, `Webhook/github` ...
    pub method: String,
    /// The request's key fields; never a secret.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// The peer's address, when known.
    #[serde(default)]
    pub peer: String,
    /// `Ok`, or the gRPC code (`PermissionDenied`, `InvalidArgument` ...), or the HTTP
    /// status for webhooks.
    pub result: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl AuditRecord {
    pub fn ok(&self) -> bool {
        self.result == "Ok"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit log {path}: {message}")]
    Sink { path: String, message: String },
}

struct Inner {
    stamper: Stamper,
    /// Every record, oldest first, with its id, for `Admin.Audit`.
    records: Vec<(RecordId, AuditRecord)>,
}

/// The hub's audit trail. Written by `record` only.
pub struct Audit {
    store: Store,
    sink: Option<sink::FileSink>,
    inner: Mutex<Inner>,
}

impl Audit {
    /// Reads `Table::Audit` and opens the file sink, if any.
    pub fn restore(
        store: Store,
        sink: Option<&Path>,
        snapshot: &Snapshot,
    ) -> Result<Audit, AuditError> {
        let mut records = Vec::new();
        for (key, r) in snapshot.records::<AuditRecord>(Table::Audit)? {
            match RecordId::parse(&key) {
                Some(id) => records.push((id, r)),
                // Not ours to delete: the trail is append-only.
                None => tracing::warn!(%key, "skipping an audit record with an unreadable key"),
            }
        }
        // Keys come sorted from the store; sorting again costs little and keeps
        // `since` right whatever the backend's order (a record's time is its id's).
        records.sort_by_key(|(id, _)| *id);
        let stamper = Stamper::after(records.iter().map(|(id, _)| id));
        Ok(Audit {
            store,
            sink: sink.map(sink::FileSink::open).transpose()?,
            inner: Mutex::new(Inner { stamper, records }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends a record; `seq` and `time` are set here.
    pub fn record(&self, mut rec: AuditRecord) {
        let mut inner = self.lock();
        let id = inner.stamper.stamp();
        rec.seq = id.seq();
        // The time is the stamp's, so time order and key order agree across replicas.
        rec.time = id.unix().unwrap_or_else(crate::records::now_unix);
        self.store
            .submit(vec![Op::put_json(Table::Audit, id.key(), &rec)]);
        if let Some(sink) = &self.sink {
            sink.append(&rec);
        }
        tracing::info!(who = %rec.who, method = %rec.method, result = %rec.result, "audit");
        inner.records.push((id, rec));
    }

    /// Takes a record another replica stored (`value`) or pruned (`None`) into memory,
    /// without a store write (`ha::mirror`); records never change, so a known one stays.
    pub fn take(&self, key: &str, value: Option<AuditRecord>) {
        let Some(id) = RecordId::parse(key) else {
            return;
        };
        let mut inner = self.lock();
        inner.stamper.observe(id);
        let at = inner.records.binary_search_by_key(&id, |(i, _)| *i);
        match (at, value) {
            (Err(at), Some(r)) => inner.records.insert(at, (id, r)),
            (Ok(at), None) => {
                inner.records.remove(at);
            }
            _ => {}
        }
    }

    /// The store keys of every record in memory (for `ha::mirror`'s reload).
    pub fn keys(&self) -> Vec<String> {
        self.lock().records.iter().map(|(id, _)| id.key()).collect()
    }

    /// A webhook delivery on the HTTP listener and what it triggered.
    pub fn webhook(&self, provider: &str, status: u16, response: &str) {
        let ok = (200..300).contains(&status);
        self.record(AuditRecord {
            seq: 0,
            time: 0,
            who: format!("webhook/{provider}"),
            method: format!("Webhook/{provider}"),
            fields: BTreeMap::from([("response".to_string(), fields::cut(response))]),
            peer: String::new(),
            result: if ok { "Ok".into() } else { status.to_string() },
            message: String::new(),
        });
    }

    /// The retention job: drops the records older than `retention.max_age` and the
    /// oldest beyond `retention.max_records` (leaving room for its own record), from
    /// memory and the store, then records one entry saying how many and up to when.
    /// Returns how many were dropped.
    pub fn prune(&self, retention: Retention, now: i64) -> usize {
        let cutoff =
            now.saturating_sub(i64::try_from(retention.max_age.as_secs()).unwrap_or(i64::MAX));
        let (dropped, first_kept) = {
            let mut inner = self.lock();
            let by_age = inner.records.partition_point(|(_, r)| r.time < cutoff);
            let keep = retention.max_records.max(2) - 1;
            let by_count = inner.records.len().saturating_sub(keep);
            let n = by_age.max(by_count);
            if n == 0 {
                return 0;
            }
            let dropped: Vec<Op> = inner
                .records
                .drain(..n)
                .map(|(id, _)| Op::delete(Table::Audit, id.key()))
                .collect();
            // Records from `before_seq` on are kept: the first kept, or this job's own.
            let first_kept = match inner.records.first() {
                Some((id, _)) => id.seq(),
                None => inner.stamper.stamp().seq(),
            };
            (dropped, first_kept)
        };
        let n = dropped.len();
        let mut ops = dropped.into_iter().peekable();
        while ops.peek().is_some() {
            self.store.submit(ops.by_ref().take(PRUNE_BATCH).collect());
        }
        let older_than = crate::records::rfc3339(cutoff);
        self.record(AuditRecord {
            seq: 0,
            time: 0,
            who: RETENTION_WHO.into(),
            method: "Hub/PruneAudit".into(),
            fields: BTreeMap::from([
                ("pruned".to_string(), n.to_string()),
                ("older_than".to_string(), older_than.clone()),
                ("max_records".to_string(), retention.max_records.to_string()),
                ("before_seq".to_string(), first_kept.to_string()),
            ]),
            peer: String::new(),
            result: "Ok".into(),
            message: format!(
                "pruned {n} records older than {older_than} or beyond the newest {}",
                retention.max_records
            ),
        });
        n
    }

    /// Records at or after `since` (Unix seconds), oldest first; at most `limit` of the
    /// newest when `limit` > 0.
    pub fn since(&self, since: i64, limit: usize) -> Vec<AuditRecord> {
        let inner = self.lock();
        let start = inner.records.partition_point(|(_, r)| r.time < since);
        let mut out = &inner.records[start..];
        if limit > 0 && out.len() > limit {
            out = &out[out.len() - limit..];
        }
        out.iter().map(|(_, r)| r.clone()).collect()
    }
}

/// Prunes the trail when this replica starts leading (at start, on redb) and then
/// every hour (`Audit::prune`); replicas that follow leave the shared trail alone.
pub async fn run_retention(audit: Arc<Audit>, retention: Retention, leadership: Leadership) {
    crate::ha::while_leading(&leadership, Duration::from_secs(3600), || {
        let pruned = audit.prune(retention, crate::records::now_unix());
        if pruned > 0 {
            tracing::info!(pruned, "audit records past retention dropped");
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(who: &str) -> AuditRecord {
        AuditRecord {
            seq: 0,
            time: 0,
            who: who.into(),
            method: "Admin/AddGroup".into(),
            fields: BTreeMap::new(),
            peer: String::new(),
            result: "Ok".into(),
            message: String::new(),
        }
    }

    #[tokio::test]
    async fn records_survive_a_reopen_in_order_and_go_to_the_file_sink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("audit.jsonl");
        {
            let (store, snap) = Store::open(&dir.path().join("state.redb")).expect("open");
            let audit = Audit::restore(store.clone(), Some(&log), &snap).expect("restore");
            audit.record(rec("admin/a"));
            audit.record(rec("admin/b"));
            store.commit(Vec::new()).await.expect("durable");
        }
        let (store, snap) = loop {
            match Store::open(&dir.path().join("state.redb")) {
                Ok(r) => break r,
                Err(_) => std::thread::yield_now(),
            }
        };
        let audit = Audit::restore(store, Some(&log), &snap).expect("restore");
        audit.record(rec("admin/c"));
        let all = audit.since(0, 0);
        let who: Vec<&str> = all.iter().map(|r| r.who.as_str()).collect();
        assert_eq!(who, ["admin/a", "admin/b", "admin/c"]);
        assert!(
            all.windows(2).all(|w| w[0].seq < w[1].seq),
            "seq keeps increasing across the reopen"
        );
        assert_eq!(audit.since(0, 1).len(), 1);
        drop(audit);
        // The sink's writer thread ends when the audit is dropped, after its last write.
        let lines = flotilla_e2e::wait_until("the audit log to hold 3 lines", || {
            let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
            let lines: Vec<AuditRecord> = text
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            if lines.len() == 3 {
                Ok(lines)
            } else {
                Err(format!("{} lines", lines.len()))
            }
        });
        assert_eq!(lines[2].who, "admin/c");
        assert_eq!(flotilla_e2e::file_mode(&log), 0o600);
    }

    fn reopen(path: &Path) -> (Store, Snapshot) {
        // The previous handle's writer thread lets go of the file shortly after a drop.
        loop {
            match Store::open(path) {
                Ok(r) => break r,
                Err(_) => std::thread::yield_now(),
            }
        }
    }

    #[tokio::test]
    async fn two_replicas_recording_into_one_store_lose_nothing_and_read_back_in_time_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        const EACH: usize = 200;
        {
            let (store, snap) = Store::open(&path).expect("open");
            let writers: Vec<_> = ["a", "b"]
                .into_iter()
                .map(|replica| {
                    let audit = Audit::restore(store.clone(), None, &snap).expect("restore");
                    std::thread::spawn(move || {
                        for i in 0..EACH {
                            audit.record(rec(&format!("admin/{replica}-{i}")));
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().expect("a writer finishes");
            }
            store.commit(Vec::new()).await.expect("durable");
        }
        let (store, snap) = reopen(&path);
        let all = Audit::restore(store, None, &snap)
            .expect("restore")
            .since(0, 0);
        assert_eq!(all.len(), 2 * EACH, "no record overwrote another");
        for replica in ["a", "b"] {
            let mine: Vec<&str> = all
                .iter()
                .map(|r| r.who.as_str())
                .filter(|w| w.starts_with(&format!("admin/{replica}-")))
                .collect();
            let want: Vec<String> = (0..EACH).map(|i| format!("admin/{replica}-{i}")).collect();
            assert_eq!(
                mine, want,
                "each replica's records in the order it made them"
            );
        }
        assert!(
            all.windows(2)
                .all(|w| (w[0].time, w[0].seq) <= (w[1].time, w[1].seq)),
            "the trail reads back in time order"
        );
    }

    #[tokio::test]
    async fn retention_drops_the_oldest_records_by_age_and_count_and_records_that_it_did() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        let now = crate::records::now_unix();
        let day = 86_400;
        {
            let (store, _) = Store::open(&path).expect("open");
            let old: Vec<Op> = (0..3u64)
                .map(|seq| {
                    let r = AuditRecord {
                        seq,
                        time: now - 400 * day + seq as i64,
                        ..rec("admin/old")
                    };
                    Op::put_json(Table::Audit, RecordId::Legacy(seq).key(), &r)
                })
                .collect();
            store.commit(old).await.expect("durable");
        }
        let (store, snap) = reopen(&path);
        let audit = Audit::restore(store.clone(), None, &snap).expect("restore");
        for who in ["admin/new-1", "admin/new-2", "admin/new-3"] {
            audit.record(rec(who));
        }
        let year = Retention {
            max_age: Duration::from_secs(365 * day as u64),
            max_records: 100,
        };
        let who = |a: &Audit| -> Vec<String> { a.since(0, 0).into_iter().map(|r| r.who).collect() };

        assert_eq!(audit.prune(year, now), 3, "the three records past a year");
        assert_eq!(
            who(&audit),
            ["admin/new-1", "admin/new-2", "admin/new-3", RETENTION_WHO]
        );
        let mut kept = audit.since(0, 0);
        let note = kept.pop().expect("the retention's record");
        assert_eq!(
            (
                note.method.as_str(),
                note.fields["pruned"].as_str(),
                note.fields["before_seq"].clone()
            ),
            ("Hub/PruneAudit", "3", kept[0].seq.to_string())
        );
        let cutoff = crate::records::rfc3339(now - 365 * day);
        assert_eq!(
            note.message,
            format!("pruned 3 records older than {cutoff} or beyond the newest 100")
        );
        assert_eq!(
            audit.prune(year, now),
            0,
            "nothing left to prune, nothing recorded"
        );
        assert_eq!(audit.since(0, 0).len(), 4);

        let three = Retention {
            max_records: 3,
            ..year
        };
        assert_eq!(audit.prune(three, now), 2, "the oldest beyond the newest 3");
        assert_eq!(who(&audit), ["admin/new-3", RETENTION_WHO, RETENTION_WHO]);

        // The store holds what memory holds.
        store.commit(Vec::new()).await.expect("durable");
        drop(audit);
        drop(store);
        let (store, snap) = reopen(&path);
        let audit = Audit::restore(store, None, &snap).expect("restore");
        assert_eq!(who(&audit), ["admin/new-3", RETENTION_WHO, RETENTION_WHO]);
    }
}
