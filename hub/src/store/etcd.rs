//! The etcd backend (`--store etcd://h1:2379,h2:2379`): the shared state of HA hub
//! replicas (issue 20), over the `etcd-client` crate.
//!
//! Key layout, laid out for range reads and watches by table and prefix:
//! - `/flotilla/<table>/<key>`: a record (JSON) of one [`Table`], e.g.
//!   `/flotilla/clusters/edge-1`, `/flotilla/status/edge-1/app`;
//! - `/flotilla/content/<digest>`: a manifest ([`Manifest`]: size, chunk count, sha256) of
//!   rendered content, written in the same transaction as the rest of its batch and after
//!   its chunks, so a reader that sees the manifest finds every chunk;
//! - `/flotilla/chunks/<digest>/<n>`: the content itself in chunks of [`CHUNK_BYTES`], one
//!   request each, below etcd's 1.5 MiB request limit. Content is addressed by its digest
//!   and written once: a put of a digest whose manifest exists writes nothing.
//!
//! A batch is one etcd `Txn` (at most [`MAX_TXN_OPS`] operations and [`MAX_TXN_BYTES`],
//! etcd's defaults); compare-and-swap is a `Txn` with `Compare`s on `version` (absent) and
//! `mod_revision`; a watch is an etcd watch from `after + 1`, and etcd's compaction shows
//! as [`StoreError::Compacted`]. Revisions are etcd's own.
//!
//! **Architecture Invariant:** nothing read from etcd is trusted to be well formed: keys
//! must be UTF-8 under the root, manifests must parse and their chunks must add up to the
//! size and sha256 they name, or the read fails naming the key. (One exception sits in
//! `etcd-client` itself: it panics on a watch event type that etcd does not define.)

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    KvClient, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Backend, CasOutcome, Change, ChangeStream, Cond, Cost, Entry, Expect, Limits, Op, Range,
    Revision, Snapshot, StoreError, Table,
};

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB), less room for the request's framing.
pub const MAX_TXN_BYTES: usize = 1_572_864 - 16 * 1024;
/// Content is written in chunks of this size, one request each.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Framing per operation counted against [`MAX_TXN_BYTES`].
const OP_OVERHEAD: usize = 32;
/// Keys per page of a range read (records are small; a page stays far below the decoding
/// limit below).
const PAGE_KEYS: i64 = 512;
/// Chunks per page of a content read.
const PAGE_CHUNKS: i64 = 8;
/// The largest response accepted from etcd: a page of records at their limit.
const MAX_RESPONSE_BYTES: usize = 1 << 30;
const MAX_ENDPOINTS: usize = 16;

/// Where the etcd cluster is and under which key the fleet lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://host:port` for each member.
    pub endpoints: Vec<String>,
    /// Every key starts with this (`/flotilla`).
    pub root: String,
}

impl EtcdConfig {
    /// Parses what follows `etcd://`: `host:port[,host:port...]`.
    pub fn parse(s: &str) -> Result<EtcdConfig, String> {
        let hosts: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if hosts.is_empty() {
            return Err(format!(
                "etcd://{s}: no endpoint (expected host:port[,host:port...])"
            ));
        }
        if hosts.len() > MAX_ENDPOINTS {
            return Err(format!(
                "etcd://: {} endpoints, at most {MAX_ENDPOINTS}",
                hosts.len()
            ));
        }
        if let Some(bad) = hosts.iter().find(|h| h.contains('/') || !h.contains(':')) {
            return Err(format!("etcd endpoint {bad:?}: expected host:port"));
        }
        let endpoints = hosts.iter().map(|h| format!("http://{h}")).collect();
        Ok(EtcdConfig {
            endpoints,
            root: "/flotilla".into(),
        })
    }
}

/// What `/flotilla/content/<digest>` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    size: usize,
    chunks: usize,
    sha256: String,
}

/// The etcd backend; see the module doc.
pub struct EtcdBackend {
    client: Client,
    root: String,
}

fn etcd_err(context: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Etcd { context, source }
}

fn corrupt(table: Table, key: &str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        key: key.to_string(),
        message: message.into(),
    }
}

/// The end of the range of keys that start with `prefix` (etcd's `range_end`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}

fn rev(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

impl EtcdBackend {
    pub async fn connect(config: EtcdConfig) -> Result<EtcdBackend, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(etcd_err(format!(
                "connecting to {}",
                config.endpoints.join(",")
            )))?;
        Ok(EtcdBackend {
            client,
            root: config.root,
        })
    }

    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    fn table_prefix(&self, table: Table) -> String {
        format!("{}/{}/", self.root, table.name())
    }

    fn key(&self, table: Table, key: &str) -> String {
        format!("{}/{}/{}", self.root, table.name(), key)
    }

    fn chunks_prefix(&self, digest: &str) -> String {
        format!("{}/chunks/{}/", self.root, digest)
    }

    /// Every key under `prefix` at `revision` (0: now), page by page; returns the revision
    /// read at.
    async fn range_all(
        &self,
        prefix: &str,
        revision: i64,
        page: i64,
    ) -> Result<(i64, Vec<KeyValue>), StoreError> {
        let mut kv = self.kv();
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut at = revision;
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
            if at > 0 {
                options = options.with_revision(at);
            }
            let mut resp = kv
                .get(from.clone(), Some(options))
                .await
                .map_err(etcd_err(format!("reading {prefix}")))?;
            if at == 0 {
                at = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else {
                break;
            };
            from = last.key().to_vec();
            from.push(0);
            out.extend(kvs);
            if !more {
                break;
            }
        }
        Ok((at, out))
    }

    /// The key's part after `/flotilla/<table>/`.
    fn strip<'a>(&self, table: Table, kv: &'a KeyValue) -> Result<&'a str, StoreError> {
        let raw = String::from_utf8_lossy(kv.key()).into_owned();
        let key = kv
            .key_str()
            .map_err(|_| corrupt(table, &raw, "key is not UTF-8"))?;
        key.strip_prefix(&self.table_prefix(table))
            .ok_or_else(|| corrupt(table, key, "key outside the table's prefix"))
    }

    /// A stored value as the hub wrote it: records as they are, content reassembled from
    /// its chunks (read at `revision`, so a later delete cannot tear it) and verified.
    async fn decode(
        &self,
        table: Table,
        key: &str,
        value: &[u8],
        revision: i64,
    ) -> Result<Vec<u8>, StoreError> {
        if table != Table::Content {
            return Ok(value.to_vec());
        }
        let manifest: Manifest = serde_json::from_slice(value)
            .map_err(|e| corrupt(table, key, format!("content manifest: {e}")))?;
        if manifest.size > super::MAX_CONTENT_BYTES {
            return Err(corrupt(
                table,
                key,
                format!("content manifest names {} bytes", manifest.size),
            ));
        }
        let (_, chunks) = self
            .range_all(&self.chunks_prefix(key), revision, PAGE_CHUNKS)
            .await?;
        if chunks.len() != manifest.chunks {
            return Err(corrupt(
                table,
                key,
                format!(
                    "{} of {} content chunks present",
                    chunks.len(),
                    manifest.chunks
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(manifest.size);
        for c in &chunks {
            if bytes.len() + c.value().len() > manifest.size {
                return Err(corrupt(
                    table,
                    key,
                    "content chunks exceed the manifest's size",
                ));
            }
            bytes.extend_from_slice(c.value());
        }
        if bytes.len() != manifest.size || hex::encode(Sha256::digest(&bytes)) != manifest.sha256 {
            return Err(corrupt(
                table,
                key,
                "content chunks do not match the manifest's size and sha256",
            ));
        }
        Ok(bytes)
    }

    async fn entry(&self, table: Table, kv: &KeyValue) -> Result<Entry, StoreError> {
        let key = self.strip(table, kv)?;
        Ok(Entry {
            key: key.to_string(),
            value: self
                .decode(table, key, kv.value(), kv.mod_revision())
                .await?,
            revision: rev(kv.mod_revision()),
        })
    }

    async fn range_at(
        &self,
        table: Table,
        prefix: &str,
        revision: i64,
    ) -> Result<(i64, Vec<Entry>), StoreError> {
        let (at, kvs) = self
            .range_all(
                &format!("{}{prefix}", self.table_prefix(table)),
                revision,
                PAGE_KEYS,
            )
            .await?;
        let mut entries = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            entries.push(self.entry(table, kv).await?);
        }
        Ok((at, entries))
    }

    /// Turns ops into `Txn` operations. Content is written here, chunks first (outside the
    /// transaction: they are invisible until the manifest in it lands), unless that digest
    /// is already stored.
    async fn prepare(&self, ops: Vec<Op>) -> Result<Vec<TxnOp>, StoreError> {
        let mut kv = self.kv();
        let mut txn = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put {
                    table: Table::Content,
                    key,
                    value,
                } => {
                    let manifest_key = self.key(Table::Content, &key);
                    let present = kv
                        .get(
                            manifest_key.clone(),
                            Some(GetOptions::new().with_count_only()),
                        )
                        .await
                        .map_err(etcd_err(format!("reading {manifest_key}")))?
                        .count()
                        > 0;
                    if present {
                        continue;
                    }
                    let chunks = value.chunks(CHUNK_BYTES);
                    let count = chunks.len();
                    for (n, chunk) in chunks.enumerate() {
                        let chunk_key = format!("{}{n:06}", self.chunks_prefix(&key));
                        kv.put(chunk_key.clone(), chunk, None)
                            .await
                            .map_err(etcd_err(format!("writing {chunk_key}")))?;
                    }
                    let manifest = Manifest {
                        size: value.len(),
                        chunks: count,
                        sha256: hex::encode(Sha256::digest(&value)),
                    };
                    // Serialising our own plain struct cannot fail.
                    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
                    txn.push(TxnOp::put(manifest_key, bytes, None));
                }
                Op::Delete {
                    table: Table::Content,
                    key,
                } => {
                    txn.push(TxnOp::delete(self.key(Table::Content, &key), None));
                    txn.push(TxnOp::delete(
                        self.chunks_prefix(&key),
                        Some(DeleteOptions::new().with_prefix()),
                    ));
                }
                Op::Put { table, key, value } => {
                    txn.push(TxnOp::put(self.key(table, &key), value, None));
                }
                Op::Delete { table, key } => {
                    txn.push(TxnOp::delete(self.key(table, &key), None));
                }
            }
        }
        Ok(txn)
    }

    async fn transact(&self, conds: Vec<Cond>, ops: Vec<Op>) -> Result<CasOutcome, StoreError> {
        let compares: Vec<Compare> = conds
            .iter()
            .map(|c| {
                let key = self.key(c.table, &c.key);
                match c.expect {
                    Expect::Absent => Compare::version(key, CompareOp::Equal, 0),
                    Expect::Revision(r) => Compare::mod_revision(
                        key,
                        CompareOp::Equal,
                        i64::try_from(r).unwrap_or(i64::MAX),
                    ),
                }
            })
            .collect();
        let reads: Vec<TxnOp> = conds
            .iter()
            .map(|c| TxnOp::get(self.key(c.table, &c.key), None))
            .collect();
        let txn_ops = self.prepare(ops).await?;
        let resp = self
            .kv()
            .txn(Txn::new().when(compares).and_then(txn_ops).or_else(reads))
            .await
            .map_err(etcd_err("committing a transaction"))?;
        let revision = rev(resp.header().map_or(0, |h| h.revision()));
        if resp.succeeded() {
            return Ok(CasOutcome::Applied(revision));
        }
        let mut current = Vec::with_capacity(conds.len());
        for (c, r) in conds.iter().zip(resp.op_responses()) {
            let TxnOpResponse::Get(get) = r else {
                return Err(corrupt(
                    c.table,
                    &c.key,
                    "etcd answered a read with a write",
                ));
            };
            current.push(match get.kvs().first() {
                Some(kv) => Some(self.entry(c.table, kv).await?),
                None => None,
            });
        }
        Ok(CasOutcome::Refused { current })
    }

    async fn watch_impl(
        &self,
        table: Table,
        prefix: &str,
        after: Revision,
    ) -> Result<ChangeStream, StoreError> {
        let key = format!("{}{prefix}", self.table_prefix(table));
        let start = i64::try_from(after.saturating_add(1)).unwrap_or(i64::MAX);
        let stream = self
            .client
            .watch_client()
            .watch(
                key.clone(),
                Some(WatchOptions::new().with_prefix().with_start_revision(start)),
            )
            .await
            .map_err(etcd_err(format!("watching {key}")))?;
        let backend = EtcdBackend {
            client: self.client.clone(),
            root: self.root.clone(),
        };
        let state = WatchState {
            backend,
            stream,
            pending: std::collections::VecDeque::new(),
            table,
            after,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::next)))
    }
}

struct WatchState {
    backend: EtcdBackend,
    stream: etcd_client::WatchStream,
    pending: std::collections::VecDeque<Change>,
    table: Table,
    after: Revision,
    done: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<Change, StoreError>, WatchState)> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Some((Ok(c), self));
            }
            if self.done {
                return None;
            }
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some((Err(etcd_err("watch stream")(e)), self));
                }
            };
            if resp.compact_revision() > 0 {
                self.done = true;
                return Some((
                    Err(StoreError::Compacted {
                        requested: self.after,
                        oldest: rev(resp.compact_revision()),
                    }),
                    self,
                ));
            }
            if resp.canceled() {
                self.done = true;
                return Some((
                    Err(StoreError::Db(format!(
                        "etcd cancelled the watch: {}",
                        resp.cancel_reason()
                    ))),
                    self,
                ));
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let change = match ev.event_type() {
                    EventType::Put => self.backend.entry(self.table, kv).await.map(|e| Change {
                        revision: e.revision,
                        table: self.table,
                        key: e.key,
                        value: Some(e.value),
                    }),
                    EventType::Delete => self.backend.strip(self.table, kv).map(|k| Change {
                        revision: rev(kv.mod_revision()),
                        table: self.table,
                        key: k.to_string(),
                        value: None,
                    }),
                };
                match change {
                    Ok(c) => self.pending.push_back(c),
                    Err(e) => {
                        self.done = true;
                        return Some((Err(e), self));
                    }
                }
            }
        }
    }
}

impl Backend for EtcdBackend {
    fn limits(&self) -> Limits {
        Limits {
            max_ops: MAX_TXN_OPS,
            max_bytes: MAX_TXN_BYTES,
        }
    }

    fn cost(&self, op: &Op) -> Cost {
        let key = self.root.len() + 2 + op.table().name().len() + op.key().len() + OP_OVERHEAD;
        match op {
            // The manifest; the chunks go in requests of their own.
            Op::Put {
                table: Table::Content,
                ..
            } => Cost {
                ops: 1,
                bytes: key + 128,
            },
            Op::Put { value, .. } => Cost {
                ops: 1,
                bytes: key + value.len(),
            },
            // The manifest and the range of its chunks.
            Op::Delete {
                table: Table::Content,
                ..
            } => Cost {
                ops: 2,
                bytes: 2 * key,
            },
            Op::Delete { .. } => Cost { ops: 1, bytes: key },
        }
    }

    fn write(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            match self.transact(Vec::new(), ops).await? {
                CasOutcome::Applied(r) => Ok(r),
                CasOutcome::Refused { .. } => Err(StoreError::Db(
                    "internal: a write without conditions was refused".into(),
                )),
            }
        })
    }

    fn compare_and_write(
        &self,
        conds: Vec<Cond>,
        ops: Vec<Op>,
    ) -> BoxFuture<'_, Result<CasOutcome, StoreError>> {
        Box::pin(self.transact(conds, ops))
    }

    fn range<'a>(
        &'a self,
        table: Table,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Range, StoreError>> {
        Box::pin(async move {
            let (at, entries) = self.range_at(table, prefix, 0).await?;
            Ok(Range {
                revision: rev(at),
                entries,
            })
        })
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(async move {
            // The first table's read fixes the revision; the others are read at it.
            let mut at = 0;
            let mut rows = Vec::new();
            for t in Table::ALL {
                let (r, entries) = self.range_at(t, "", at).await?;
                at = r;
                rows.extend(entries.into_iter().map(|e| (t, e.key, e.value)));
            }
            Ok(Snapshot {
                rows,
                revision: rev(at),
            })
        })
    }

    fn watch<'a>(
        &'a self,
        table: Table,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<ChangeStream, StoreError>> {
        Box::pin(self.watch_impl(table, prefix, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_the_next_key() {
        assert_eq!(prefix_end(b"/flotilla/status/"), b"/flotilla/status0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn endpoints_are_host_and_port() {
        let c = EtcdConfig::parse("10.0.0.1:2379, h2:2379").expect("parses");
        assert_eq!(c.endpoints, vec!["http://10.0.0.1:2379", "http://h2:2379"]);
        assert!(EtcdConfig::parse("h1").is_err());
        assert!(EtcdConfig::parse(",").is_err());
        assert!(EtcdConfig::parse("h1:1/x/y").is_err());
    }
}
