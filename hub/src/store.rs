//! The hub's durable state: an embedded ACID file store (redb) in `--data-dir`.
//!
//! **Architecture Invariant:** the store is the source of truth after a restart; memory
//! (`fleet::Fleet`) is a cache of it. Every write goes through one writer thread that
//! group-commits whatever is queued, so many status updates cost one fsync, and async
//! tasks never block on disk. Callers that must not answer before data is durable (a
//! registration, a token use) await `commit`.

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::thread;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

/// The tables. Keys are strings; values are JSON (records) or raw bytes (content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Clusters,
    Tokens,
    Sources,
    Status,
    Desired,
    Content,
    Groups,
    Rollouts,
    /// Bundles of removed sources whose objects spokes must leave in place when they
    /// forget them (`source remove --keep-resources`).
    KeptBundles,
    /// Deployment history (`history`): `CLUSTER/BUNDLE/SEQ` → `history::Entry`.
    History,
    /// The audit trail (`audit`), append-only: `TIME-SEQ` → `audit::AuditRecord`.
    Audit,
}

impl Table {
    const ALL: [Table; 11] = [
        Table::Clusters,
        Table::Tokens,
        Table::Sources,
        Table::Status,
        Table::Desired,
        Table::Content,
        Table::Groups,
        Table::Rollouts,
        Table::KeptBundles,
        Table::History,
        Table::Audit,
    ];

    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(match self {
            Table::Clusters => "clusters",
            Table::Tokens => "tokens",
            Table::Sources => "sources",
            Table::Status => "status",
            Table::Desired => "desired",
            Table::Content => "content",
            Table::Groups => "groups",
            Table::Rollouts => "rollouts",
            Table::KeptBundles => "kept_bundles",
            Table::History => "history",
            Table::Audit => "audit",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {0}")]
    Db(String),
    #[error("state store record {table:?}/{key}: {message}")]
    Corrupt {
        table: Table,
        key: String,
        message: String,
    },
    #[error("state store writer has stopped")]
    WriterGone,
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

#[derive(Debug, Clone)]
pub enum Op {
    Put {
        table: Table,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: String,
    },
}

impl Op {
    pub fn put_json(table: Table, key: impl Into<String>, value: &impl Serialize) -> Op {
        Op::Put {
            table,
            key: key.into(),
            // Serialising our own plain records cannot fail.
            value: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    pub fn delete(table: Table, key: impl Into<String>) -> Op {
        Op::Delete {
            table,
            key: key.into(),
        }
    }
}

struct Batch {
    ops: Vec<Op>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: std_mpsc::Sender<Batch>,
}

/// Everything read from the store at start.
#[derive(Default)]
pub struct Snapshot {
    pub rows: Vec<(Table, String, Vec<u8>)>,
}

impl Snapshot {
    /// Decodes the JSON records of one table; a record that does not decode is an error
    /// naming it, never a silent drop.
    pub fn records<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.rows
            .iter()
            .filter(|(t, _, _)| *t == table)
            .map(|(_, k, v)| {
                serde_json::from_slice(v)
                    .map(|r| (k.clone(), r))
                    .map_err(|e| StoreError::Corrupt {
                        table,
                        key: k.clone(),
                        message: e.to_string(),
                    })
            })
            .collect()
    }

    pub fn raw(&self, table: Table) -> impl Iterator<Item = (&str, &[u8])> {
        self.rows
            .iter()
            .filter(move |(t, _, _)| *t == table)
            .map(|(_, k, v)| (k.as_str(), v.as_slice()))
    }
}

impl Store {
    /// Opens (or creates) the store and reads it whole. Starts the writer thread.
    pub fn open(path: &Path) -> Result<(Store, Snapshot), StoreError> {
        // redb caches up to 1 GiB by default, and copy-on-write commits keep filling it:
        // under steady status writes the hub's memory would creep toward that. The
        // fleet's state is small; bound the cache.
        // The store holds rendered manifests, Secrets among them: owner-only, also
        // for a store that an older version created 0644.
        flotilla_identity::files::private_file(path).map_err(db_err)?;
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(path)
            .map_err(db_err)?;
        // Create every table so readers never meet a missing one.
        let txn = db.begin_write().map_err(db_err)?;
        for t in Table::ALL {
            txn.open_table(t.def()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;

        let mut snapshot = Snapshot::default();
        let read = db.begin_read().map_err(db_err)?;
        for t in Table::ALL {
            let table = read.open_table(t.def()).map_err(db_err)?;
            for row in table.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                snapshot
                    .rows
                    .push((t, k.value().to_string(), v.value().to_vec()));
            }
        }
        drop(read);

        let (tx, rx) = std_mpsc::channel::<Batch>();
        thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(db, rx))
            .map_err(db_err)?;
        Ok((Store { tx }, snapshot))
    }

    /// Queues writes; they are committed with the next group commit.
    pub fn submit(&self, ops: Vec<Op>) {
        if self.tx.send(Batch { ops, done: None }).is_err() {
            tracing::error!("state store writer has stopped; a write was lost");
        }
    }

    /// Writes and waits until the writes are durable.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Batch {
                ops,
                done: Some(done),
            })
            .map_err(|_| StoreError::WriterGone)?;
        wait.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Db)
    }
}

/// redb page cache: enough for the whole state of a large fleet, far below the default.
const STORE_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Max batches folded into one transaction; bounds the latency of a waiting `commit`.
const GROUP_COMMIT_MAX: usize = 4096;

fn writer_loop(db: Database, rx: std_mpsc::Receiver<Batch>) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        while batches.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        let result = apply(&db, &batches).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "state store commit failed");
        }
        for b in batches {
            if let Some(done) = b.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn apply(db: &Database, batches: &[Batch]) -> Result<(), StoreError> {
    // Within one group commit only the last write to a key matters (a WaitApplied status
    // is often overwritten by Ready in the same batch): skip the ones it replaces.
    let ops: Vec<&Op> = batches.iter().flat_map(|b| &b.ops).collect();
    let mut last: std::collections::HashMap<(usize, &str), usize> =
        std::collections::HashMap::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let (table, key) = match op {
            Op::Put { table, key, .. } | Op::Delete { table, key } => (*table, key.as_str()),
        };
        last.insert((table as usize, key), i);
    }
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut tables = Table::ALL
            .iter()
            .map(|t| txn.open_table(t.def()).map(|tab| (*t, tab)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        for (i, op) in ops.iter().enumerate() {
            let (table, key) = match op {
                Op::Put { table, key, .. } | Op::Delete { table, key } => (*table, key),
            };
            if last.get(&(table as usize, key.as_str())) != Some(&i) {
                continue;
            }
            let Some((_, tab)) = tables.iter_mut().find(|(t, _)| *t == table) else {
                continue;
            };
            match op {
                Op::Put { value, .. } => {
                    tab.insert(key.as_str(), value.as_slice()).map_err(db_err)?;
                }
                Op::Delete { .. } => {
                    tab.remove(key.as_str()).map_err(db_err)?;
                }
            }
        }
    }
    txn.commit().map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn committed_writes_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        {
            let (store, snap) = Store::open(&path).expect("open");
            assert!(snap.rows.is_empty());
            store
                .commit(vec![
                    Op::put_json(Table::Clusters, "a", &serde_json::json!({"x": 1})),
                    Op::put_json(Table::Clusters, "b", &serde_json::json!({"x": 2})),
                ])
                .await
                .expect("commit");
            store
                .commit(vec![Op::delete(Table::Clusters, "a")])
                .await
                .expect("commit");
        }
        // The writer thread owns the database; wait for it to drop before reopening.
        let reopened = loop {
            match Store::open(&path) {
                Ok(r) => break r,
                Err(_) => std::thread::yield_now(),
            }
        };
        let recs: Vec<(String, serde_json::Value)> =
            reopened.1.records(Table::Clusters).expect("decodes");
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].0, "b");
    }

    #[test]
    fn a_corrupt_record_is_named_in_the_error() {
        let snap = Snapshot {
            rows: vec![(Table::Tokens, "t1".into(), b"{not json".to_vec())],
        };
        let err = snap
            .records::<serde_json::Value>(Table::Tokens)
            .expect_err("corrupt");
        assert!(err.to_string().contains("t1"), "{err}");
    }
}
