//! The embedded backend: one redb file (`state.redb` in `--data-dir`), the default.
//!
//! Each [`Table`] is a redb table of string keys and byte values, as before the `Backend`
//! trait existed, so older data dirs open unchanged. Two tables are added: `meta` holds the
//! store's current revision, and `revisions` the revision that last wrote each key. A key
//! written before revisions existed reads as revision 0.
//!
//! Watch is in process: the writer publishes each committed transaction's changes to a
//! broadcast channel and to a bounded history ([`WATCH_HISTORY`] changes,
//! [`WATCH_HISTORY_BYTES`] bytes), from which a watcher resumes. History does not survive a
//! restart: a watch from before the open revision is [`StoreError::Compacted`].
//!
//! **Architecture Invariant:** one lock (`Inner::revision`) is held from the start of a
//! write transaction until its changes are published, so revisions are handed out,
//! committed and seen in one order. Readers take no lock: each read transaction reads the
//! revision it sees from `meta`. Watchers only take the short `Feed` lock. redb's work is
//! blocking: called from async code it runs on the blocking pool; the group-commit writer
//! calls [`Backend::write`] on its own thread.

use crate::history::{HEADS_MARKER, HEADS_PREFIX};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use futures::future::BoxFuture;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use tokio::sync::broadcast;

use super::{
    Backend, CasOutcome, Change, ChangeStream, Cond, Cost, Entry, Expect, Limits, Op, Range,
    Revision, Snapshot, StoreError, Table, db_err,
};

/// Changes kept for watchers to resume from.
pub const WATCH_HISTORY: usize = 16 * 1024;
/// ... and at most this many bytes of their values.
pub const WATCH_HISTORY_BYTES: usize = 32 << 20;

/// redb page cache: enough for the whole state of a large fleet, far below the default.
const STORE_CACHE_BYTES: usize = 64 * 1024 * 1024;

const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");
const REVISIONS: TableDefinition<'static, (&'static str, &'static str), u64> =
    TableDefinition::new("revisions");
const META_REVISION: &str = "revision";

fn def(t: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(t.name())
}

/// The redb backend; see the module doc.
pub struct RedbBackend {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    /// The revision of the last committed transaction; held across each write.
    revision: Mutex<Revision>,
    feed: Mutex<Feed>,
}

struct Feed {
    /// Every change after `floor` is in `history`.
    floor: Revision,
    history: VecDeque<Arc<Change>>,
    history_bytes: usize,
    live: broadcast::Sender<Arc<Change>>,
}

impl Feed {
    fn publish(&mut self, changes: Vec<Change>) {
        for c in changes {
            let c = Arc::new(c);
            self.history_bytes += change_bytes(&c);
            self.history.push_back(c.clone());
            // No receiver is not an error: nobody watches.
            let _ = self.live.send(c);
        }
        while self.history.len() > WATCH_HISTORY || self.history_bytes > WATCH_HISTORY_BYTES {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= change_bytes(&old);
            self.floor = self.floor.max(old.revision);
        }
    }
}

fn change_bytes(c: &Change) -> usize {
    c.key.len() + c.value.as_ref().map_or(0, Vec::len)
}

/// Buffered live changes per watcher; a watcher that falls further behind is closed with
/// [`StoreError::Lagged`] and resumes from its last revision.
const LIVE_BUFFER: usize = 4096;

impl RedbBackend {
    /// Opens (or creates) the store file, owner-only: it holds rendered manifests, Secrets
    /// among them (also for a store that an older version created 0644).
    pub fn open(path: &Path) -> Result<RedbBackend, StoreError> {
        flotilla_identity::files::private_file(path).map_err(db_err)?;
        // redb caches up to 1 GiB by default, and copy-on-write commits keep filling it:
        // under steady status writes the hub's memory would creep toward that. The
        // fleet's state is small; bound the cache.
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(path)
            .map_err(|e| db_err(format!("{}: {e}", path.display())))?;
        // Create every table so readers never meet a missing one.
        let txn = db.begin_write().map_err(db_err)?;
        for t in Table::ALL {
            txn.open_table(def(t)).map_err(db_err)?;
        }
        txn.open_table(REVISIONS).map_err(db_err)?;
        let revision = {
            let meta = txn.open_table(META).map_err(db_err)?;
            let r = meta.get(META_REVISION).map_err(db_err)?.map(|v| v.value());
            r.unwrap_or(0)
        };
        txn.commit().map_err(db_err)?;
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Ok(RedbBackend {
            inner: Arc::new(Inner {
                db,
                revision: Mutex::new(revision),
                feed: Mutex::new(Feed {
                    floor: revision,
                    history: VecDeque::new(),
                    history_bytes: 0,
                    live,
                }),
            }),
        })
    }

    /// Every table at one revision (blocking).
    pub fn read_all(&self) -> Result<Snapshot, StoreError> {
        self.inner.read_all()
    }

    /// Runs blocking redb work on the blocking pool when called from the runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(move || f(&inner))
                .await
                .map_err(db_err)?,
            Err(_) => f(&inner),
        }
    }
}

impl Inner {
    fn feed(&self) -> Result<MutexGuard<'_, Feed>, StoreError> {
        self.feed
            .lock()
            .map_err(|_| db_err("watch feed lock poisoned"))
    }

    /// A read transaction and the revision it sees.
    fn begin_read(&self) -> Result<(ReadTransaction, Revision), StoreError> {
        let read = self.db.begin_read().map_err(db_err)?;
        let meta = read.open_table(META).map_err(db_err)?;
        let revision = meta
            .get(META_REVISION)
            .map_err(db_err)?
            .map_or(0, |v| v.value());
        drop(meta);
        Ok((read, revision))
    }

    fn read_all(&self) -> Result<Snapshot, StoreError> {
        let (read, revision) = self.begin_read()?;
        let mut snapshot = Snapshot {
            rows: Vec::new(),
            revision,
        };
        for t in Table::ALL {
            let table = read.open_table(def(t)).map_err(db_err)?;
            // The history's entries stay on disk: its head records are what a start
            // needs, once they exist (`crate::history::HEADS_MARKER`).
            let prefix = match t {
                Table::History if table.get(HEADS_MARKER).map_err(db_err)?.is_some() => {
                    HEADS_PREFIX
                }
                _ => "",
            };
            for row in table.range::<&str>(prefix..).map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                snapshot
                    .rows
                    .push((t, k.value().to_string(), v.value().to_vec()));
            }
        }
        Ok(snapshot)
    }

    fn range(&self, table: Table, prefix: &str) -> Result<Range, StoreError> {
        let (read, revision) = self.begin_read()?;
        let tab = read.open_table(def(table)).map_err(db_err)?;
        let revs = read.open_table(REVISIONS).map_err(db_err)?;
        let mut entries = Vec::new();
        for row in tab.range::<&str>(prefix..).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let rev = revs
                .get((table.name(), key))
                .map_err(db_err)?
                .map_or(0, |r| r.value());
            entries.push(Entry {
                key: key.to_string(),
                value: v.value().to_vec(),
                revision: rev,
            });
        }
        Ok(Range { revision, entries })
    }

    /// Commits `ops` at the next revision if `conds` hold (checked inside the same write
    /// transaction), and publishes the changes.
    fn transact(&self, conds: &[Cond], ops: Vec<Op>) -> Result<CasOutcome, StoreError> {
        let mut current_revision = self
            .revision
            .lock()
            .map_err(|_| db_err("revision lock poisoned"))?;
        let txn = self.db.begin_write().map_err(db_err)?;
        let current = read_conds(&txn, conds)?;
        let holds = conds.iter().zip(&current).all(|(c, cur)| match c.expect {
            Expect::Absent => cur.is_none(),
            Expect::Revision(r) => cur.as_ref().is_some_and(|e| e.revision == r),
        });
        if !holds {
            // Dropping the transaction aborts it.
            return Ok(CasOutcome::Refused { current });
        }
        if ops.is_empty() {
            return Ok(CasOutcome::Applied(*current_revision));
        }
        let revision = *current_revision + 1;
        let changes = apply(&txn, ops, revision)?;
        txn.commit().map_err(db_err)?;
        *current_revision = revision;
        self.feed()?.publish(changes);
        Ok(CasOutcome::Applied(revision))
    }

    fn watch(
        &self,
        table: Table,
        prefix: &str,
        after: Revision,
    ) -> Result<ChangeStream, StoreError> {
        let feed = self.feed()?;
        if after < feed.floor {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: feed.floor,
            });
        }
        let prefix = prefix.to_string();
        let wanted =
            move |c: &Change| c.revision > after && c.table == table && c.key.starts_with(&prefix);
        let backlog: Vec<Result<Change, StoreError>> = feed
            .history
            .iter()
            .filter(|c| wanted(c))
            .map(|c| Ok((**c).clone()))
            .collect();
        // Subscribed under the lock: no change falls between the backlog and the live feed.
        let live = feed.live.subscribe();
        drop(feed);
        let live = futures::stream::unfold(Some(live), move |rx| {
            let wanted = wanted.clone();
            async move {
                let mut rx = rx?;
                loop {
                    match rx.recv().await {
                        Ok(c) if wanted(&c) => return Some((Ok((*c).clone()), Some(rx))),
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            return Some((Err(StoreError::Lagged(n)), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(Box::pin(futures::stream::iter(backlog).chain(live)))
    }
}

fn read_conds(txn: &WriteTransaction, conds: &[Cond]) -> Result<Vec<Option<Entry>>, StoreError> {
    let revs = txn.open_table(REVISIONS).map_err(db_err)?;
    conds
        .iter()
        .map(|c| {
            let tab = txn.open_table(def(c.table)).map_err(db_err)?;
            let value = tab
                .get(c.key.as_str())
                .map_err(db_err)?
                .map(|v| v.value().to_vec());
            let Some(value) = value else {
                return Ok(None);
            };
            let revision = revs
                .get((c.table.name(), c.key.as_str()))
                .map_err(db_err)?
                .map_or(0, |r| r.value());
            Ok(Some(Entry {
                key: c.key.clone(),
                value,
                revision,
            }))
        })
        .collect()
}

/// Applies `ops` in `txn` at `revision`; returns the changes to publish once committed.
fn apply(
    txn: &WriteTransaction,
    ops: Vec<Op>,
    revision: Revision,
) -> Result<Vec<Change>, StoreError> {
    let mut revs = txn.open_table(REVISIONS).map_err(db_err)?;
    let mut changes = Vec::with_capacity(ops.len());
    for op in ops {
        let table = op.table();
        let mut tab = txn.open_table(def(table)).map_err(db_err)?;
        match op {
            Op::Put { key, .. }
                if table == Table::Content && tab.get(key.as_str()).map_err(db_err)?.is_some() =>
            {
                // Content is addressed by its digest: written once.
            }
            Op::Put { key, value, .. } => {
                tab.insert(key.as_str(), value.as_slice()).map_err(db_err)?;
                revs.insert((table.name(), key.as_str()), revision)
                    .map_err(db_err)?;
                changes.push(Change {
                    revision,
                    table,
                    key,
                    value: Some(value),
                });
            }
            Op::Delete { key, .. } => {
                // Deleting what is not there is no change, as in etcd.
                if tab.remove(key.as_str()).map_err(db_err)?.is_some() {
                    changes.push(Change {
                        revision,
                        table,
                        key: key.clone(),
                        value: None,
                    });
                }
                revs.remove((table.name(), key.as_str())).map_err(db_err)?;
            }
        }
    }
    let mut meta = txn.open_table(META).map_err(db_err)?;
    meta.insert(META_REVISION, revision).map_err(db_err)?;
    Ok(changes)
}

impl Backend for RedbBackend {
    fn limits(&self) -> Limits {
        // One process, one file: no per-transaction limit beyond the hub's own per value.
        Limits {
            max_ops: usize::MAX,
            max_bytes: usize::MAX,
            // One file, one writer: a second transaction would only wait for the first.
            in_flight: 1,
        }
    }

    fn cost(&self, op: &Op) -> Cost {
        Cost {
            ops: 1,
            bytes: match op {
                Op::Put { key, value, .. } => key.len() + value.len(),
                Op::Delete { key, .. } => key.len(),
            },
        }
    }

    fn write(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<Revision, StoreError>> {
        // Called by the group-commit writer on its own thread: do the work inline.
        Box::pin(async move {
            match self.inner.transact(&[], ops)? {
                CasOutcome::Applied(r) => Ok(r),
                CasOutcome::Refused { .. } => {
                    Err(db_err("internal: a write without conditions was refused"))
                }
            }
        })
    }

    fn compare_and_write(
        &self,
        conds: Vec<Cond>,
        ops: Vec<Op>,
    ) -> BoxFuture<'_, Result<CasOutcome, StoreError>> {
        Box::pin(self.blocking(move |inner| inner.transact(&conds, ops)))
    }

    fn range<'a>(
        &'a self,
        table: Table,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Range, StoreError>> {
        let prefix = prefix.to_string();
        Box::pin(self.blocking(move |inner| inner.range(table, &prefix)))
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(self.blocking(Inner::read_all))
    }

    fn watch<'a>(
        &'a self,
        table: Table,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<ChangeStream, StoreError>> {
        // Only a lock and a copy of the history: no disk, no need for the blocking pool.
        Box::pin(async move { self.inner.watch(table, prefix, after) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_from_before_revisions_opens_with_its_records_at_revision_0() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        {
            // What an older hub wrote: the tables, no `meta`, no `revisions`.
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(def(Table::Clusters))
                .expect("table")
                .insert("old", b"{}".as_slice())
                .expect("insert");
            txn.commit().expect("commit");
        }
        let backend = RedbBackend::open(&path).expect("opens");
        let snap = backend.read_all().expect("reads");
        assert_eq!(snap.revision, 0);
        assert_eq!(
            snap.rows,
            vec![(Table::Clusters, "old".into(), b"{}".to_vec())]
        );
        let range = backend.inner.range(Table::Clusters, "").expect("range");
        assert_eq!(range.entries[0].revision, 0);
    }

    fn many_puts(n: usize) -> Vec<Op> {
        (0..n)
            .map(|i| Op::Put {
                table: Table::Status,
                key: format!("c/{i:06}"),
                value: b"x".to_vec(),
            })
            .collect()
    }

    #[test]
    fn history_is_bounded_and_a_watch_from_before_it_is_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = RedbBackend::open(&dir.path().join("state.redb")).expect("opens");
        backend
            .inner
            .transact(&[], many_puts(WATCH_HISTORY + 1))
            .expect("commit");
        match backend.inner.watch(Table::Status, "", 0) {
            Err(StoreError::Compacted { requested, oldest }) => {
                assert_eq!((requested, oldest), (0, 1));
            }
            Err(e) => panic!("expected Compacted, got {e}"),
            Ok(_) => panic!("expected Compacted, got a watch"),
        }
        let served = backend.inner.watch(Table::Status, "", 1);
        assert!(served.is_ok(), "a watch from the floor is served");
    }

    #[test]
    fn a_watcher_that_falls_behind_is_told_so_and_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = RedbBackend::open(&dir.path().join("state.redb")).expect("opens");
        let mut watch = backend.inner.watch(Table::Status, "", 0).expect("watch");
        backend
            .inner
            .transact(&[], many_puts(LIVE_BUFFER + 1))
            .expect("commit");
        futures::executor::block_on(async {
            match watch.next().await {
                Some(Err(StoreError::Lagged(n))) => assert!(n > 0),
                other => panic!("expected Lagged, got {other:?}"),
            }
            assert!(watch.next().await.is_none(), "closed after Lagged");
        });
    }
}
