//! The hub's durable state: the [`Store`] handle over a [`Backend`], either the embedded
//! ACID file store (`redb`, the default, in `--data-dir`) or etcd (`etcd`, for HA replicas).
//!
//! **Architecture Invariant:** the store is the source of truth after a restart; memory
//! (`fleet::Fleet`) is a cache of it. Every plain write goes through one writer thread that
//! group-commits whatever is queued, so many status updates cost one fsync (or one etcd
//! round trip), and async tasks never block on disk. Writes that publish (assignments,
//! content) go first; on etcd a few transactions over disjoint keys are in flight at
//! once; each key's writes land in the order they were queued. Within a group commit
//! only the last write to a (table, key) is applied (docs/benchmarks.md, finding F3).
//! Callers that must not answer before data is durable (a registration, a token use)
//! await [`Store::commit`].
//!
//! What a backend must offer (checked once for all of them by `contract`):
//! - a batch of [`Op`]s is one transaction: all of it or none, durable once it returns;
//! - content ([`Table::Content`]) is addressed by its digest and written once: a put of a
//!   digest that is stored changes nothing;
//! - every committed transaction gets a [`Revision`], strictly increasing; each key
//!   remembers the revision that last wrote it;
//! - a consistent [`Snapshot`] of every table, and a [`Range`] of one table (by key prefix);
//! - [`Store::watch`]: the [`Change`]s to a table (by key prefix) after a revision, in
//!   order, resumable from the revision of the last change seen, or a clear
//!   [`StoreError::Compacted`] when that history is gone (then: range, and watch from the
//!   range's revision);
//! - [`Store::compare_and_swap`]: put-if-revision, create-if-absent and delete-if as one
//!   transaction, refused (with what is there now) when a condition does not hold. Leader
//!   election records and assignment publication need it.
//!
//! **Why `dyn Backend` and not a generic `Store<B>`:** the backend is chosen at run time
//! from `--store`, and a generic would reach every type that holds a store (`Fleet` and
//! every handler) for no gain: a boxed future per transaction costs nothing next to an
//! fsync or a network round trip. The hot path (`submit`) does not touch the trait at all;
//! it is a channel send.
//!
//! Limits are the same for every backend where they are the hub's own (a record is at most
//! [`MAX_RECORD_BYTES`], content at most [`MAX_CONTENT_BYTES`]); a backend adds its own
//! per-transaction limits ([`Limits`]: etcd's 128 operations and 1.5 MiB per request), and
//! a batch over them is refused whole, never split.

mod priority;
mod redb;
pub use self::redb::RedbBackend;
mod etcd;
pub use self::etcd::{EtcdBackend, EtcdConfig};
#[cfg(test)]
mod contract;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread;

use futures::future::BoxFuture;
use futures::stream::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

/// The revision of a committed transaction: strictly increasing per store. Each key also
/// carries the revision of the transaction that last wrote it (etcd's `mod_revision`).
pub type Revision = u64;

/// A record (any table but [`Table::Content`]) is at most this big, on every backend, so
/// that a fleet that runs on redb also runs on etcd.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Rendered content is at most this big; etcd stores it in chunks.
pub const MAX_CONTENT_BYTES: usize = 64 << 20;

/// The tables. Keys are strings; values are JSON (records) or raw bytes (content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Clusters,
    Tokens,
    Sources,
    Status,
    Desired,
    /// Rendered manifests, content-addressed: the key is the digest, written once.
    Content,
    Groups,
    Rollouts,
    /// Bundles of removed sources whose objects spokes must leave in place when they
    /// forget them (`source remove --keep-resources`).
    KeptBundles,
    /// Deployment history (`history`): `CLUSTER/BUNDLE/ID` (a `record_id::RecordId`) → `history::Entry`.
    History,
    /// The audit trail (`audit`), append-only: `RecordId` (Unix nanoseconds, writer id) → `audit::AuditRecord`.
    Audit,
    /// How hub replicas on etcd coordinate (`crate::ha`): `leader` (the elected replica)
    /// and `presence/<cluster>/<replica>` (which replica serves a spoke), each bound to
    /// its replica's etcd lease. Not state: not in [`Table::ALL`], so never in a
    /// snapshot, and never in redb.
    Ha,
}

impl Table {
    pub const ALL: [Table; 11] = [
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

    /// The table's name on disk (redb) and in keys (etcd: `/flotilla/<name>/<key>`).
    pub fn name(self) -> &'static str {
        match self {
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
            Table::Ha => "ha",
        }
    }

    /// The largest value this table accepts.
    pub fn max_value_bytes(self) -> usize {
        match self {
            Table::Content => MAX_CONTENT_BYTES,
            _ => MAX_RECORD_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {0}")]
    Db(String),
    /// etcd's own words are in the message: a caller of the hub's API (the CLI) sees
    /// this error's text, not its source.
    #[error("state store (etcd) {context}: {}", source.message())]
    Etcd {
        context: String,
        #[source]
        source: tonic::Status,
    },
    #[error("state store record {table:?}/{key}: {message}")]
    Corrupt {
        table: Table,
        key: String,
        message: String,
    },
    #[error("state store: {what} is {size} bytes or operations, over the limit of {limit}")]
    TooLarge {
        what: String,
        size: usize,
        limit: usize,
    },
    #[error(
        "state store watch from revision {requested}: that history is gone (the oldest kept is {oldest}); read a range and watch from its revision"
    )]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error(
        "state store watch fell behind by {0} changes and was closed; resume from the last revision seen"
    )]
    Lagged(u64),
    #[error("state store writer has stopped")]
    WriterGone,
    /// A write of assignments or content by a hub that is no longer the leader
    /// (`Store::set_fence`).
    #[error(
        "state store refused a write of assignments: this hub replica is no longer the leader (the leader record changed since revision {0})"
    )]
    Fenced(Revision),
    /// The error of a group commit, shared by every batch in it.
    #[error(transparent)]
    Shared(Arc<StoreError>),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq)]
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

    pub fn table(&self) -> Table {
        match self {
            Op::Put { table, .. } | Op::Delete { table, .. } => *table,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    /// Refuses a value over its table's limit, or a key that is empty or not plain text
    /// (keys become etcd key paths and redb keys alike).
    fn check(&self) -> Result<(), StoreError> {
        let key = self.key();
        if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(StoreError::TooLarge {
                what: format!("key {:?} of {:?}", truncated(key), self.table()),
                size: key.len(),
                limit: MAX_KEY_BYTES,
            });
        }
        if let Op::Put { table, key, value } = self
            && value.len() > table.max_value_bytes()
        {
            return Err(StoreError::TooLarge {
                what: format!("value of {table:?}/{key}"),
                size: value.len(),
                limit: table.max_value_bytes(),
            });
        }
        Ok(())
    }
}

/// Keys are names and digests; this bounds one that came from outside.
const MAX_KEY_BYTES: usize = 1024;

fn truncated(s: &str) -> &str {
    s.get(..64).unwrap_or(s)
}

/// One key's value and the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub revision: Revision,
}

/// One table's entries (under a key prefix), read at one revision.
#[derive(Debug, Clone, Default)]
pub struct Range {
    pub revision: Revision,
    pub entries: Vec<Entry>,
}

/// One committed change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: Revision,
    pub table: Table,
    pub key: String,
    /// The new value; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// Changes in revision order; ends with an error when the watch cannot go on.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<Change, StoreError>> + Send>>;

/// What a compare-and-swap expects of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist (create-if-absent).
    Absent,
    /// The key exists and was last written at this revision (put-if-revision, delete-if).
    Revision(Revision),
}

/// A condition of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub table: Table,
    pub key: String,
    pub expect: Expect,
}

impl Cond {
    pub fn absent(table: Table, key: impl Into<String>) -> Cond {
        Cond {
            table,
            key: key.into(),
            expect: Expect::Absent,
        }
    }

    pub fn at_revision(table: Table, key: impl Into<String>, revision: Revision) -> Cond {
        Cond {
            table,
            key: key.into(),
            expect: Expect::Revision(revision),
        }
    }
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// Every condition held; the ops were committed at this revision.
    Applied(Revision),
    /// A condition did not hold; nothing was written. `current` holds, per condition in
    /// order, what is there now.
    Refused { current: Vec<Option<Entry>> },
}

/// What one backend transaction may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Operations per transaction (etcd: `--max-txn-ops`, 128 by default).
    pub max_ops: usize,
    /// Bytes per transaction request (etcd: `--max-request-bytes`, 1.5 MiB by default).
    pub max_bytes: usize,
    /// Transactions the writer keeps in flight at once (over disjoint keys).
    pub in_flight: usize,
}

/// What one [`Op`] costs in a transaction of a backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub ops: usize,
    pub bytes: usize,
}

/// A storage engine behind [`Store`]. Implementations: [`RedbBackend`], [`EtcdBackend`].
/// The `contract` tests say what each must do.
pub trait Backend: Send + Sync + 'static {
    /// Per-transaction limits.
    fn limits(&self) -> Limits;
    /// What `op` costs against [`Backend::limits`].
    fn cost(&self, op: &Op) -> Cost;
    /// Applies `ops` (at most one per (table, key)) as one durable transaction.
    fn write(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<Revision, StoreError>>;
    /// Applies `ops` only if every condition holds, in one transaction.
    fn compare_and_write(
        &self,
        conds: Vec<Cond>,
        ops: Vec<Op>,
    ) -> BoxFuture<'_, Result<CasOutcome, StoreError>>;
    /// The entries of `table` whose key starts with `prefix`, in key order.
    fn range<'a>(
        &'a self,
        table: Table,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Range, StoreError>>;
    /// Every table, read at one revision.
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>>;
    /// The changes to `table` under `prefix` committed after revision `after`.
    fn watch<'a>(
        &'a self,
        table: Table,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<ChangeStream, StoreError>>;
}

struct Batch {
    ops: Vec<Op>,
    /// Builds the ops on the writer's thread ([`Store::submit_with`]); `ops` is empty then.
    build: Option<BuildOps>,
    done: Option<oneshot::Sender<Result<Revision, Arc<StoreError>>>>,
}

/// Encodes a batch's records on the writer's thread.
type BuildOps = Box<dyn FnOnce() -> Vec<Op> + Send>;

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: std_mpsc::Sender<Batch>,
    backend: Arc<dyn Backend>,
    fence: Fence,
}

/// The condition under which batches that publish (write [`Table::Desired`] or
/// [`Table::Content`]) are committed; `None`: always. The elected replica sets it to
/// its leader record's revision (`crate::ha`), so a replica that lost the lead without
/// noticing yet cannot overwrite the new leader's assignments: never two writers.
type Fence = Arc<std::sync::RwLock<Option<Cond>>>;

/// Whether `ops` publish, and so are committed only under the store's fence.
fn publishes(ops: &[Op]) -> bool {
    ops.iter()
        .any(|op| matches!(op.table(), Table::Desired | Table::Content))
}

/// Everything read from the store at start, at one revision.
#[derive(Default)]
pub struct Snapshot {
    pub rows: Vec<(Table, String, Vec<u8>)>,
    /// The revision the snapshot was read at: watch from here to see what came after.
    pub revision: Revision,
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

/// Which backend to use: `--store redb` (the default: `state.redb` in the data dir) or
/// `--store etcd://host:2379,host2:2379`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Redb,
    Etcd(EtcdConfig),
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "redb" {
            return Ok(StoreUrl::Redb);
        }
        match s.strip_prefix("etcd://") {
            Some(rest) => EtcdConfig::parse(rest).map(StoreUrl::Etcd),
            None => Err(format!(
                "store {s:?}: expected `redb` or `etcd://host:port[,host:port...]`"
            )),
        }
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Redb => f.write_str("redb"),
            StoreUrl::Etcd(c) => {
                let hosts: Vec<&str> = c
                    .endpoints
                    .iter()
                    .map(|e| e.strip_prefix("http://").unwrap_or(e))
                    .collect();
                write!(f, "etcd://{}", hosts.join(","))
            }
        }
    }
}

impl Store {
    /// Opens (or creates) the redb store at `path` and reads it whole. Starts the writer
    /// thread.
    pub fn open(path: &Path) -> Result<(Store, Snapshot), StoreError> {
        let backend = RedbBackend::open(path)?;
        let snapshot = backend.read_all()?;
        // redb does its work inline on the calling thread: the writer needs no runtime.
        Ok((Store::start(Arc::new(backend), None)?, snapshot))
    }

    /// Opens the store `url` names (`redb` in `data_dir`, or etcd) and reads it whole.
    pub async fn connect(url: &StoreUrl, data_dir: &Path) -> Result<(Store, Snapshot), StoreError> {
        match url {
            StoreUrl::Redb => {
                let path = crate::layout::DataDir::new(data_dir).state();
                tokio::task::spawn_blocking(move || Store::open(&path))
                    .await
                    .map_err(db_err)?
            }
            StoreUrl::Etcd(config) => {
                let backend = Arc::new(EtcdBackend::connect(config.clone()).await?);
                let snapshot = backend.snapshot().await?;
                let handle = tokio::runtime::Handle::current();
                Ok((Store::start(backend, Some(handle))?, snapshot))
            }
        }
    }

    /// Starts the group-commit writer over `backend`. Backends whose futures need the tokio
    /// runtime (network I/O) pass its handle; the writer drives them from its own thread.
    fn start(
        backend: Arc<dyn Backend>,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Result<Store, StoreError> {
        let (tx, rx) = std_mpsc::channel::<Batch>();
        let writer = backend.clone();
        let fence = Fence::default();
        let writer_fence = fence.clone();
        thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                priority::lower_this_thread();
                writer_loop(&*writer, runtime, rx, &writer_fence)
            })
            .map_err(db_err)?;
        Ok(Store { tx, backend, fence })
    }

    /// From now on, batches that write assignments or content commit only while `cond`
    /// holds (the replica's leader record is unchanged); a refused one fails with
    /// [`StoreError::Fenced`]. `None` lifts the fence. Other batches are not affected.
    pub fn set_fence(&self, cond: Option<Cond>) {
        match self.fence.write() {
            Ok(mut f) => *f = cond,
            Err(poisoned) => *poisoned.into_inner() = cond,
        }
    }

    /// Queues writes; they are committed with the next group commit.
    pub fn submit(&self, ops: Vec<Op>) {
        self.send_unwaited(Batch {
            ops,
            build: None,
            done: None,
        });
    }

    /// Like [`Store::submit`], with the ops built (their records encoded) on the writer's
    /// thread when it takes the batch: the caller hands over owned records, and the JSON
    /// encoding leaves the session or reconcile thread that produced them for the writer,
    /// which runs at a lower CPU priority (`priority`). The batch keeps its place in the
    /// queue, so each key's writes still land in the order they were submitted.
    pub fn submit_with(&self, build: impl FnOnce() -> Vec<Op> + Send + 'static) {
        self.send_unwaited(Batch {
            ops: Vec::new(),
            build: Some(Box::new(build)),
            done: None,
        });
    }

    fn send_unwaited(&self, batch: Batch) {
        if self.tx.send(batch).is_err() {
            tracing::error!("state store writer has stopped; a write was lost");
        }
    }

    /// Writes and waits until the writes are durable.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.commit_at(ops).await.map(|_| ())
    }

    /// Like [`Store::commit`], and says at which revision the writes landed.
    pub async fn commit_at(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        self.queue_commit(ops).await
    }

    /// Queues `ops` now and returns a future that resolves once they are durable. Each
    /// key's writes land in the order they were queued (publishing batches may pass
    /// others, and transactions over other keys may land in between: `writer_loop`). A
    /// caller that holds a lock on the record it writes calls this under the lock and
    /// awaits after letting go, so the store receives that record's snapshots in the
    /// order memory took them.
    pub fn queue_commit(
        &self,
        ops: Vec<Op>,
    ) -> impl std::future::Future<Output = Result<Revision, StoreError>> + Send + use<> {
        let (done, wait) = oneshot::channel();
        let sent = self.tx.send(Batch {
            ops,
            build: None,
            done: Some(done),
        });
        async move {
            sent.map_err(|_| StoreError::WriterGone)?;
            wait.await
                .map_err(|_| StoreError::WriterGone)?
                .map_err(StoreError::Shared)
        }
    }

    /// Writes `ops` only if every condition holds, as one transaction of its own (not
    /// group-committed: a queued [`Store::submit`] may land before or after it).
    pub async fn compare_and_swap(
        &self,
        conds: Vec<Cond>,
        ops: Vec<Op>,
    ) -> Result<CasOutcome, StoreError> {
        check_batch(&*self.backend, &ops)?;
        self.backend.compare_and_write(conds, coalesce(ops)).await
    }

    /// The entries of `table` whose key starts with `prefix`, at one revision.
    pub async fn range(&self, table: Table, prefix: &str) -> Result<Range, StoreError> {
        self.backend.range(table, prefix).await
    }

    /// The changes to `table` under `prefix` committed after revision `after`, in order.
    pub async fn watch(
        &self,
        table: Table,
        prefix: &str,
        after: Revision,
    ) -> Result<ChangeStream, StoreError> {
        self.backend.watch(table, prefix, after).await
    }
}

/// Refuses a batch that its backend could never commit in one transaction.
fn check_batch(backend: &dyn Backend, ops: &[Op]) -> Result<(), StoreError> {
    let limits = backend.limits();
    let mut total = Cost::default();
    for op in ops {
        op.check()?;
        let c = backend.cost(op);
        total.ops += c.ops;
        total.bytes += c.bytes;
    }
    if total.ops > limits.max_ops {
        return Err(StoreError::TooLarge {
            what: format!("a batch of {} operations", ops.len()),
            size: total.ops,
            limit: limits.max_ops,
        });
    }
    if total.bytes > limits.max_bytes {
        return Err(StoreError::TooLarge {
            what: format!("a batch of {} operations", ops.len()),
            size: total.bytes,
            limit: limits.max_bytes,
        });
    }
    Ok(())
}

/// Keeps only the last op per (table, key), in the order of those last ops: within one
/// transaction only the last write to a key matters (a WaitApplied status is often
/// overwritten by Ready in the same group commit).
fn coalesce(ops: Vec<Op>) -> Vec<Op> {
    let mut last: HashMap<(Table, &str), usize> = HashMap::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        last.insert((op.table(), op.key()), i);
    }
    let keep: Vec<bool> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| last.get(&(op.table(), op.key())) == Some(&i))
        .collect();
    ops.into_iter()
        .zip(keep)
        .filter_map(|(op, k)| k.then_some(op))
        .collect()
}

/// Max batches folded into one transaction; bounds the latency of a waiting `commit`.
const GROUP_COMMIT_MAX: usize = 4096;

fn read_fence(fence: &Fence) -> Option<Cond> {
    match fence.read() {
        Ok(f) => f.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// Queued batches, in two queues: publishing ones (assignments, content) are committed
/// before the rest, so a follower replica, which serves a changed assignment only once
/// it has read it from the store, does not wait behind the statuses that the leader's
/// own spokes report during the same fan-out (issue 20). Order within each queue is
/// kept. No key is in both queues: a batch that publishes writes only
/// [`Table::Desired`] and [`Table::Content`] (`fleet.rs`), and a key belongs to one
/// table, so letting one queue pass the other changes no key's order of writes.
#[derive(Default)]
struct Queues {
    publishing: VecDeque<(Batch, Cost)>,
    others: VecDeque<(Batch, Cost)>,
}

impl Queues {
    fn is_empty(&self) -> bool {
        self.publishing.is_empty() && self.others.is_empty()
    }

    /// Queues `b`, or answers it at once when its backend could never commit it.
    fn push(&mut self, backend: &dyn Backend, mut b: Batch) {
        if let Some(build) = b.build.take() {
            b.ops = build();
        }
        if let Err(e) = check_batch(backend, &b.ops) {
            tracing::error!(error = %e, "state store refused a batch");
            if let Some(done) = b.done {
                let _ = done.send(Err(Arc::new(e)));
            }
            return;
        }
        let cost = b.ops.iter().fold(Cost::default(), |acc, op| {
            let c = backend.cost(op);
            Cost {
                ops: acc.ops + c.ops,
                bytes: acc.bytes + c.bytes,
            }
        });
        if publishes(&b.ops) {
            self.publishing.push_back((b, cost));
        } else {
            self.others.push_back((b, cost));
        }
    }
}

/// What the transactions formed so far in a round write, which a later one of the same
/// round must not: they land in any order.
#[derive(Default)]
struct InFlight {
    keys: HashSet<(Table, String)>,
    /// Some content is written: an assignment waits for it, so no replica (nor this one,
    /// restarted) ever reads an assignment whose content was never stored.
    content: bool,
}

impl InFlight {
    fn add(&mut self, group: &Group) {
        for op in group.batches.iter().flat_map(|b| &b.ops) {
            self.content |= op.table() == Table::Content;
            self.keys.insert((op.table(), op.key().to_string()));
        }
    }

    /// Whether `ops` must wait for the transactions in flight: they write one of their
    /// keys (each key's writes land in the order queued), or they publish assignments
    /// while content is being written (render writes content before the assignments
    /// that name it).
    fn blocks(&self, ops: &[Op]) -> bool {
        ops.iter().any(|op| {
            (self.content && op.table() == Table::Desired)
                || self.keys.contains(&(op.table(), op.key().to_string()))
        })
    }
}

/// One transaction's worth of batches.
struct Group {
    batches: Vec<Batch>,
    publishes: bool,
}

/// Takes the next group off `queues`: publishing batches first. Whole batches only: a
/// group that would go over the backend's limits is cut between batches, never inside
/// one, so every caller's batch stays atomic. Under a fence a group is all publishing
/// batches or none, so a fenced transaction never takes a spoke's status down with it;
/// without one (redb, a single hub) the rest fills the group up, one transaction for
/// everything queued. A batch that [`InFlight::blocks`] ends the group.
fn next_group(queues: &mut Queues, limits: Limits, fenced: bool, busy: &InFlight) -> Option<Group> {
    let mut group = Group {
        batches: Vec::new(),
        publishes: !queues.publishing.is_empty(),
    };
    let mut used = Cost::default();
    for publishing in [true, false] {
        if fenced && publishing != group.publishes {
            continue;
        }
        let queue = if publishing {
            &mut queues.publishing
        } else {
            &mut queues.others
        };
        while let Some((b, cost)) = queue.front() {
            let full = !group.batches.is_empty()
                && (used.ops + cost.ops > limits.max_ops
                    || used.bytes + cost.bytes > limits.max_bytes
                    || group.batches.len() >= GROUP_COMMIT_MAX);
            if full || busy.blocks(&b.ops) {
                return (!group.batches.is_empty()).then_some(group);
            }
            used.ops += cost.ops;
            used.bytes += cost.bytes;
            if let Some((b, _)) = queue.pop_front() {
                group.batches.push(b);
            }
        }
    }
    (!group.batches.is_empty()).then_some(group)
}

/// Commits one group as one transaction (under `fence` when it publishes) and answers
/// every batch in it.
async fn commit_group(backend: &dyn Backend, mut group: Group, fence: Option<Cond>) {
    let ops = coalesce(
        group
            .batches
            .iter_mut()
            .flat_map(|b| b.ops.drain(..))
            .collect(),
    );
    let result = match fence.filter(|_| group.publishes) {
        None => backend.write(ops).await,
        Some(cond) => {
            let at = match cond.expect {
                Expect::Revision(r) => r,
                Expect::Absent => 0,
            };
            match backend.compare_and_write(vec![cond], ops).await {
                Ok(CasOutcome::Applied(r)) => Ok(r),
                Ok(CasOutcome::Refused { .. }) => Err(StoreError::Fenced(at)),
                Err(e) => Err(e),
            }
        }
    }
    .map_err(Arc::new);
    if let Err(e) = &result {
        tracing::error!(error = %e, "state store commit failed");
    }
    for b in group.batches {
        if let Some(done) = b.done {
            let _ = done.send(result.clone());
        }
    }
}

/// Takes whatever is queued, forms up to [`Limits::in_flight`] transactions whose key
/// sets do not overlap (publishing ones first), commits them concurrently, and starts
/// over. etcd's raft folds concurrent proposals into one round of appends and fsyncs, so
/// a fan-out's thousands of writes cost a few rounds instead of hundreds in a row.
fn writer_loop(
    backend: &dyn Backend,
    runtime: Option<tokio::runtime::Handle>,
    rx: std_mpsc::Receiver<Batch>,
    fence: &Fence,
) {
    let limits = backend.limits();
    let mut queues = Queues::default();
    loop {
        if queues.is_empty() {
            match rx.recv() {
                Ok(b) => queues.push(backend, b),
                Err(_) => return,
            }
        }
        while let Ok(b) = rx.try_recv() {
            queues.push(backend, b);
        }
        let fence_now = read_fence(fence);
        let mut busy = InFlight::default();
        let mut groups = Vec::new();
        while groups.len() < limits.in_flight.max(1) {
            let Some(group) = next_group(&mut queues, limits, fence_now.is_some(), &busy) else {
                break;
            };
            if limits.in_flight > 1 {
                busy.add(&group);
            }
            groups.push(group);
        }
        let all = futures::future::join_all(
            groups
                .into_iter()
                .map(|g| commit_group(backend, g, fence_now.clone())),
        );
        match &runtime {
            Some(handle) => handle.block_on(all),
            None => futures::executor::block_on(all),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_record_is_named_in_the_error() {
        let snap = Snapshot {
            rows: vec![(Table::Tokens, "t1".into(), b"{not json".to_vec())],
            revision: 1,
        };
        let err = snap
            .records::<serde_json::Value>(Table::Tokens)
            .expect_err("corrupt");
        assert!(err.to_string().contains("t1"), "{err}");
    }

    #[test]
    fn coalescing_keeps_the_last_op_per_key_in_order() {
        let ops = vec![
            Op::put_json(Table::Status, "a", &1),
            Op::put_json(Table::Status, "b", &1),
            Op::put_json(Table::Clusters, "a", &1),
            Op::delete(Table::Status, "a"),
            Op::put_json(Table::Status, "b", &2),
        ];
        assert_eq!(
            coalesce(ops),
            vec![
                Op::put_json(Table::Clusters, "a", &1),
                Op::delete(Table::Status, "a"),
                Op::put_json(Table::Status, "b", &2),
            ]
        );
    }

    fn batch(ops: Vec<Op>) -> Batch {
        Batch {
            ops,
            build: None,
            done: None,
        }
    }

    /// A redb backend in a temporary folder (kept alive by the first value); `Queues`
    /// only asks it for costs.
    fn scratch_backend() -> (tempfile::TempDir, RedbBackend) {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = RedbBackend::open(&dir.path().join("s.redb")).expect("redb");
        (dir, backend)
    }

    /// Limits of `max_ops` per transaction and `in_flight` transactions, bytes unbounded.
    fn op_limits(max_ops: usize, in_flight: usize) -> Limits {
        Limits {
            max_ops,
            max_bytes: usize::MAX,
            in_flight,
        }
    }

    /// The keys of each group `next_group` takes from `queues`, until none is left or
    /// one is blocked.
    fn groups(
        queues: &mut Queues,
        limits: Limits,
        fenced: bool,
        busy: &InFlight,
    ) -> Vec<Vec<String>> {
        std::iter::from_fn(|| next_group(queues, limits, fenced, busy))
            .map(|g| {
                g.batches
                    .iter()
                    .flat_map(|b| &b.ops)
                    .map(|op| format!("{}/{}", op.table().name(), op.key()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn publishing_batches_go_first_and_alone_under_a_fence() {
        let (_dir, backend) = scratch_backend();
        let limits = op_limits(2, 1);
        let fill = |q: &mut Queues| {
            q.push(
                &backend,
                batch(vec![Op::put_json(Table::Status, "a/x", &1)]),
            );
            q.push(&backend, batch(vec![Op::put_json(Table::Desired, "a", &1)]));
            q.push(
                &backend,
                batch(vec![Op::put_json(Table::Status, "b/x", &1)]),
            );
            q.push(&backend, batch(vec![Op::put_json(Table::Desired, "b", &1)]));
            q.push(&backend, batch(vec![Op::put_json(Table::Desired, "c", &1)]));
        };
        let none = InFlight::default();
        let mut q = Queues::default();
        fill(&mut q);
        assert_eq!(
            groups(&mut q, limits, true, &none),
            vec![
                vec!["desired/a", "desired/b"],
                vec!["desired/c"],
                vec!["status/a/x", "status/b/x"],
            ],
            "under a fence: assignments first, never in a group with statuses"
        );
        let mut q = Queues::default();
        fill(&mut q);
        assert_eq!(
            groups(&mut q, limits, false, &none),
            vec![
                vec!["desired/a", "desired/b"],
                vec!["desired/c", "status/a/x"],
                vec!["status/b/x"],
            ],
            "without a fence the rest fills a group up"
        );
    }

    #[test]
    fn a_batch_over_a_key_in_flight_waits_and_so_does_what_follows_it() {
        let (_dir, backend) = scratch_backend();
        let limits = op_limits(100, 4);
        let mut q = Queues::default();
        q.push(
            &backend,
            batch(vec![Op::put_json(Table::Status, "a/x", &1)]),
        );
        q.push(
            &backend,
            batch(vec![Op::put_json(Table::Status, "b/x", &1)]),
        );
        q.push(
            &backend,
            batch(vec![Op::put_json(Table::Status, "c/x", &1)]),
        );
        let busy = InFlight {
            keys: [(Table::Status, "b/x".to_string())].into(),
            content: false,
        };
        assert_eq!(
            groups(&mut q, limits, true, &busy),
            vec![vec!["status/a/x"]],
            "b/x is being written: it and c/x after it wait for the next round"
        );
        assert_eq!(
            groups(&mut q, limits, true, &InFlight::default()),
            vec![vec!["status/b/x", "status/c/x"]]
        );
        q.push(&backend, batch(vec![Op::put_json(Table::Desired, "a", &1)]));
        let content = InFlight {
            content: true,
            ..InFlight::default()
        };
        assert!(
            groups(&mut q, limits, true, &content).is_empty(),
            "an assignment waits for the content being written"
        );
    }

    #[test]
    fn store_urls_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!("redb".parse::<StoreUrl>(), Ok(StoreUrl::Redb));
        let Ok(StoreUrl::Etcd(c)) = "etcd://h1:2379,h2:2379".parse::<StoreUrl>() else {
            panic!("etcd url parses");
        };
        assert_eq!(c.endpoints, vec!["http://h1:2379", "http://h2:2379"]);
        assert_eq!(
            StoreUrl::Etcd(c).to_string(),
            "etcd://h1:2379,h2:2379",
            "prints as it parses"
        );
        let err = "postgres://x".parse::<StoreUrl>().expect_err("refused");
        assert!(err.contains("etcd://"), "{err}");
        assert!("etcd://".parse::<StoreUrl>().is_err());
    }

    #[tokio::test]
    async fn batches_built_on_the_writer_keep_their_place_in_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(&dir.path().join("s.redb")).expect("open");
        let (thread_tx, thread_rx) = std::sync::mpsc::channel();
        store.submit(vec![Op::put_json(Table::Status, "a/x", &1)]);
        store.submit_with(move || {
            let _ = thread_tx.send(std::thread::current().name().map(str::to_string));
            vec![
                Op::put_json(Table::Status, "a/x", &2),
                Op::put_json(Table::Status, "b/x", &2),
            ]
        });
        store.submit(vec![Op::put_json(Table::Status, "b/x", &3)]);
        store.commit(Vec::new()).await.expect("commit");
        let stored: Vec<(String, Vec<u8>)> = store
            .range(Table::Status, "")
            .await
            .expect("range")
            .entries
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect();
        assert_eq!(
            stored,
            vec![
                ("a/x".to_string(), b"2".to_vec()),
                ("b/x".to_string(), b"3".to_vec())
            ],
            "each key's writes land in the order they were submitted"
        );
        assert_eq!(
            thread_rx.recv().expect("built"),
            Some("store-writer".to_string()),
            "the ops are built on the writer's thread"
        );
    }
}
