//! The audit trail: who did what to the hub, when, from where, and with what result,
//! refusals included. It owns `Table::Audit` and the optional JSON-lines file sink
//! (`flotilla-hub run --audit-log FILE`).
//!
//! Records come from `layer::AuditLayer`, a tower layer around the whole gRPC server
//! that records every call of the Admin and Registration services except the reads named
//! in `layer::READ_ONLY`, so a new RPC is audited unless someone decides otherwise, and
//! from `Audit::webhook` (webhook-triggered polls on the HTTP listener).
//!
//! **Architecture Invariant:** append-only. Nothing in the hub updates or deletes an
//! audit record, and no RPC can: `Admin.Audit` only reads. A record is queued to the
//! store and to the file sink before the call's response leaves the hub.

mod fields;
pub mod layer;
mod sink;

pub use layer::{AuditLayer, READ_ONLY};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::store::{Op, Snapshot, Store, StoreError, Table};

/// `flotilla-hub run` flags for the audit trail.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Also append every audit record to this file as one JSON line (created 0600,
    /// never truncated; synced to disk after each batch of records). For a SIEM to tail.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<std::path::PathBuf>,
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Order of recording; the store key (`record_key`).
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

/// The store key: the sequence number in fixed-width hex, so keys sort in order.
pub fn record_key(seq: u64) -> String {
    format!("{seq:016x}")
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit log {path}: {message}")]
    Sink { path: String, message: String },
}

struct Inner {
    next_seq: u64,
    /// Every record, oldest first, for `Admin.Audit`.
    records: Vec<AuditRecord>,
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
        let records: Vec<AuditRecord> = snapshot
            .records::<AuditRecord>(Table::Audit)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        let next_seq = records.last().map_or(0, |r| r.seq + 1);
        Ok(Audit {
            store,
            sink: sink.map(sink::FileSink::open).transpose()?,
            inner: Mutex::new(Inner { next_seq, records }),
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
        rec.seq = inner.next_seq;
        inner.next_seq += 1;
        rec.time = crate::records::now_unix();
        self.store
            .submit(vec![Op::put_json(Table::Audit, record_key(rec.seq), &rec)]);
        if let Some(sink) = &self.sink {
            sink.append(&rec);
        }
        tracing::info!(who = %rec.who, method = %rec.method, result = %rec.result, "audit");
        inner.records.push(rec);
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

    /// Records at or after `since` (Unix seconds), oldest first; at most `limit` of the
    /// newest when `limit` > 0.
    pub fn since(&self, since: i64, limit: usize) -> Vec<AuditRecord> {
        let inner = self.lock();
        let start = inner.records.partition_point(|r| r.time < since);
        let mut out = &inner.records[start..];
        if limit > 0 && out.len() > limit {
            out = &out[out.len() - limit..];
        }
        out.to_vec()
    }
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
        let who: Vec<(u64, String)> = audit
            .since(0, 0)
            .into_iter()
            .map(|r| (r.seq, r.who))
            .collect();
        assert_eq!(
            who,
            vec![
                (0, "admin/a".into()),
                (1, "admin/b".into()),
                (2, "admin/c".into())
            ]
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
}
