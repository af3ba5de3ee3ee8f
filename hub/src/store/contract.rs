//! The contract every [`Backend`](super::Backend) keeps, written once and run through the
//! [`Store`] handle against each: redb always, and a real etcd (started by the test from
//! `ETCD` or `~/.cache/flotilla-tools/bin/etcd`, on random loopback ports, killed on drop).
//! Without the etcd binary the etcd runs skip with a message, except under `CI=true`, where
//! they fail.

use std::collections::BTreeMap;

use futures::StreamExt;
use tempfile::TempDir;

use super::{
    CasOutcome, Change, ChangeStream, Cond, EtcdConfig, MAX_CONTENT_BYTES, MAX_RECORD_BYTES, Op,
    Revision, Snapshot, Store, StoreError, StoreUrl, Table,
};
use flotilla_e2e::etcd::EtcdServer;

/// A backend under test, which can be closed and opened again.
pub(super) struct Subject {
    dir: TempDir,
    etcd: Option<EtcdServer>,
}

impl Subject {
    fn redb() -> Subject {
        Subject {
            dir: tempfile::tempdir().expect("tempdir"),
            etcd: None,
        }
    }

    /// None when there is no etcd binary (outside CI).
    fn etcd() -> Option<Subject> {
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = EtcdServer::start(dir.path())?;
        Some(Subject {
            dir,
            etcd: Some(etcd),
        })
    }

    fn url(&self) -> StoreUrl {
        match &self.etcd {
            None => StoreUrl::Redb,
            Some(e) => StoreUrl::Etcd(EtcdConfig::parse(&e.endpoint).expect("endpoint parses")),
        }
    }

    /// Opens the store. A redb file allows one process and one open database, so a
    /// reopen waits until the previous handle's writer thread has let go of it.
    async fn open(&self) -> (Store, Snapshot) {
        let url = self.url();
        let dir = self.dir.path().to_path_buf();
        if url == StoreUrl::Redb {
            return tokio::task::spawn_blocking(move || {
                flotilla_e2e::wait_until("the previous redb handle to close", || {
                    let path = crate::layout::DataDir::new(&dir).state();
                    Store::open(&path).map_err(|e| e.to_string())
                })
            })
            .await
            .expect("open task");
        }
        Store::connect(&url, &dir).await.unwrap_or_else(|e| {
            panic!(
                "connect: {e}; etcd log: {}",
                self.etcd
                    .as_ref()
                    .map(EtcdServer::log_text)
                    .unwrap_or_default()
            )
        })
    }
}

fn put(table: Table, key: &str, value: &str) -> Op {
    Op::Put {
        table,
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

async fn values(store: &Store, table: Table, prefix: &str) -> BTreeMap<String, String> {
    store
        .range(table, prefix)
        .await
        .expect("range")
        .entries
        .into_iter()
        .map(|e| (e.key, String::from_utf8_lossy(&e.value).into_owned()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn next_change(stream: &mut ChangeStream) -> Change {
    stream
        .next()
        .await
        .expect("the watch goes on")
        .expect("a change")
}

fn short(c: &Change) -> (String, Option<String>) {
    (
        c.key.clone(),
        c.value
            .as_ref()
            .map(|v| String::from_utf8_lossy(v).into_owned()),
    )
}

async fn puts_gets_and_deletes(s: Subject) {
    let (store, snap) = s.open().await;
    assert!(snap.rows.is_empty());
    store
        .commit(vec![
            put(Table::Clusters, "a", "1"),
            put(Table::Clusters, "b", "2"),
        ])
        .await
        .expect("commit");
    assert_eq!(
        values(&store, Table::Clusters, "").await,
        map(&[("a", "1"), ("b", "2")])
    );
    store
        .commit(vec![
            Op::delete(Table::Clusters, "a"),
            put(Table::Clusters, "b", "3"),
        ])
        .await
        .expect("commit");
    assert_eq!(
        values(&store, Table::Clusters, "").await,
        map(&[("b", "3")])
    );
    // Deleting what is not there is not an error.
    store
        .commit(vec![Op::delete(Table::Clusters, "never")])
        .await
        .expect("commit");
}

async fn a_batch_lands_whole_or_not_at_all(s: Subject) {
    let (store, _) = s.open().await;
    // One op over the limit: the whole batch is refused, the valid op with it.
    let err = store
        .commit(vec![
            put(Table::Groups, "ok", "1"),
            Op::Put {
                table: Table::Groups,
                key: "big".into(),
                value: vec![b'x'; MAX_RECORD_BYTES + 1],
            },
        ])
        .await
        .expect_err("over the record limit");
    assert!(err.to_string().contains("over the limit"), "{err}");
    assert!(values(&store, Table::Groups, "").await.is_empty());
    // A refused compare-and-swap writes none of its ops.
    let out = store
        .compare_and_swap(
            vec![Cond::at_revision(Table::Groups, "missing", 7)],
            vec![put(Table::Groups, "x", "1"), put(Table::Sources, "y", "1")],
        )
        .await
        .expect("cas");
    assert_eq!(
        out,
        CasOutcome::Refused {
            current: vec![None]
        }
    );
    assert!(values(&store, Table::Groups, "").await.is_empty());
    assert!(values(&store, Table::Sources, "").await.is_empty());
    // A batch that lands shares one revision.
    let r = store
        .commit_at(vec![
            put(Table::Groups, "g1", "1"),
            put(Table::Sources, "s1", "1"),
        ])
        .await
        .expect("commit");
    let g = store.range(Table::Groups, "").await.expect("range");
    let src = store.range(Table::Sources, "").await.expect("range");
    assert_eq!(g.entries[0].revision, r);
    assert_eq!(src.entries[0].revision, r);
    assert!(g.revision >= r);
}

async fn ranges_are_per_table_and_prefix(s: Subject) {
    let (store, _) = s.open().await;
    store
        .commit(vec![
            put(Table::Status, "c1/app", "ready"),
            put(Table::Status, "c1/db", "pending"),
            put(Table::Status, "c10/app", "ready"),
            put(Table::Status, "c2/app", "modified"),
            put(Table::Desired, "c1/app", "other table"),
        ])
        .await
        .expect("commit");
    assert_eq!(
        values(&store, Table::Status, "c1/").await,
        map(&[("c1/app", "ready"), ("c1/db", "pending")])
    );
    assert_eq!(values(&store, Table::Status, "").await.len(), 4);
    assert_eq!(
        values(&store, Table::Desired, "").await,
        map(&[("c1/app", "other table")])
    );
    assert!(values(&store, Table::Tokens, "").await.is_empty());
}

async fn a_reopened_store_has_what_was_committed(s: Subject) {
    let content: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let committed = {
        let (store, _) = s.open().await;
        store
            .commit(vec![
                put(Table::Clusters, "a", "{\"x\":1}"),
                put(Table::Clusters, "b", "{\"x\":2}"),
                Op::Put {
                    table: Table::Content,
                    key: "sha256:abc".into(),
                    value: content.clone(),
                },
            ])
            .await
            .expect("commit");
        store
            .commit_at(vec![Op::delete(Table::Clusters, "a")])
            .await
            .expect("commit")
    };
    let (_, snap) = s.open().await;
    let recs: Vec<(String, serde_json::Value)> = snap.records(Table::Clusters).expect("decodes");
    assert_eq!(recs, vec![("b".to_string(), serde_json::json!({"x": 2}))]);
    let stored: Vec<(&str, &[u8])> = snap.raw(Table::Content).collect();
    assert_eq!(stored, vec![("sha256:abc", content.as_slice())]);
    assert!(
        snap.revision >= committed,
        "{} < {committed}",
        snap.revision
    );
}

async fn a_watch_sees_changes_in_order_and_resumes(s: Subject) {
    let (store, snap) = s.open().await;
    let mut watch = store
        .watch(Table::Status, "c1/", snap.revision)
        .await
        .expect("watch");
    store
        .commit(vec![put(Table::Status, "c1/app", "wait")])
        .await
        .expect("commit");
    // Not watched: another prefix, another table.
    store
        .commit(vec![
            put(Table::Status, "c2/app", "x"),
            put(Table::Desired, "c1/app", "x"),
        ])
        .await
        .expect("commit");
    store
        .commit(vec![put(Table::Status, "c1/app", "ready")])
        .await
        .expect("commit");
    store
        .commit(vec![Op::delete(Table::Status, "c1/app")])
        .await
        .expect("commit");
    let seen = [
        next_change(&mut watch).await,
        next_change(&mut watch).await,
        next_change(&mut watch).await,
    ];
    assert_eq!(
        seen.iter().map(short).collect::<Vec<_>>(),
        vec![
            ("c1/app".to_string(), Some("wait".to_string())),
            ("c1/app".to_string(), Some("ready".to_string())),
            ("c1/app".to_string(), None),
        ]
    );
    assert!(seen[0].revision < seen[1].revision && seen[1].revision < seen[2].revision);
    assert!(seen.iter().all(|c| c.table == Table::Status));
    drop(watch);

    // Resuming after the first change replays the rest, then goes on live.
    let mut resumed = store
        .watch(Table::Status, "c1/", seen[0].revision)
        .await
        .expect("watch");
    assert_eq!(next_change(&mut resumed).await, seen[1]);
    assert_eq!(next_change(&mut resumed).await, seen[2]);
    store
        .commit(vec![put(Table::Status, "c1/db", "ready")])
        .await
        .expect("commit");
    assert_eq!(
        short(&next_change(&mut resumed).await),
        ("c1/db".to_string(), Some("ready".to_string()))
    );
}

async fn a_watch_from_lost_history_says_so(s: Subject) {
    // A reopened redb keeps no history; etcd keeps it until compaction. Either way, a
    // watch from before what is kept fails clearly instead of skipping changes.
    let before: Revision = {
        let (store, snap) = s.open().await;
        store
            .commit(vec![put(Table::Groups, "g", "1")])
            .await
            .expect("commit");
        snap.revision
    };
    let (store, _) = s.open().await;
    let Some(etcd) = &s.etcd else {
        match store.watch(Table::Groups, "", before).await {
            Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, before),
            Err(e) => panic!("expected Compacted, got {e}"),
            Ok(_) => panic!("expected Compacted, got a watch"),
        }
        return;
    };
    let now = store
        .commit_at(vec![put(Table::Groups, "g", "2")])
        .await
        .expect("commit");
    let mut kv = flotilla_proto::etcd::etcdserverpb::kv_client::KvClient::connect(format!(
        "http://{}",
        etcd.endpoint
    ))
    .await
    .expect("connect");
    kv.compact(flotilla_proto::etcd::etcdserverpb::CompactionRequest {
        revision: i64::try_from(now).expect("revision"),
        physical: false,
    })
    .await
    .expect("compact");
    let mut watch = match store.watch(Table::Groups, "", before).await {
        Ok(w) => w,
        Err(e) => panic!("etcd reports compaction in the stream, got {e}"),
    };
    match watch.next().await {
        Some(Err(StoreError::Compacted { requested, oldest })) => {
            assert_eq!(requested, before);
            assert!(oldest > before);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
}

async fn compare_and_swap_applies_or_refuses(s: Subject) {
    let (store, _) = s.open().await;
    let leader = |who: &str| put(Table::Rollouts, "leader", who);
    // Create-if-absent: the first wins, the second is told who holds it.
    let CasOutcome::Applied(r1) = store
        .compare_and_swap(
            vec![Cond::absent(Table::Rollouts, "leader")],
            vec![leader("hub-1")],
        )
        .await
        .expect("cas")
    else {
        panic!("the first create applies");
    };
    let CasOutcome::Refused { current } = store
        .compare_and_swap(
            vec![Cond::absent(Table::Rollouts, "leader")],
            vec![leader("hub-2")],
        )
        .await
        .expect("cas")
    else {
        panic!("the second create is refused");
    };
    let held = current[0].clone().expect("the current holder");
    assert_eq!((held.value.as_slice(), held.revision), (&b"hub-1"[..], r1));
    // Put-if-revision: the current revision applies, a stale one is refused.
    let CasOutcome::Applied(r2) = store
        .compare_and_swap(
            vec![Cond::at_revision(Table::Rollouts, "leader", r1)],
            vec![leader("hub-1 renewed")],
        )
        .await
        .expect("cas")
    else {
        panic!("put at the current revision applies");
    };
    assert!(r2 > r1);
    assert!(matches!(
        store
            .compare_and_swap(
                vec![Cond::at_revision(Table::Rollouts, "leader", r1)],
                vec![leader("hub-2")],
            )
            .await
            .expect("cas"),
        CasOutcome::Refused { .. }
    ));
    // Delete-if.
    assert!(matches!(
        store
            .compare_and_swap(
                vec![Cond::at_revision(Table::Rollouts, "leader", r2)],
                vec![Op::delete(Table::Rollouts, "leader")],
            )
            .await
            .expect("cas"),
        CasOutcome::Applied(_)
    ));
    assert!(values(&store, Table::Rollouts, "").await.is_empty());
    // A plain write moves the revision too: a holder's CAS fails after someone else wrote.
    let r3 = store
        .commit_at(vec![put(Table::Rollouts, "leader", "hub-3")])
        .await
        .expect("commit");
    assert!(matches!(
        store
            .compare_and_swap(
                vec![Cond::at_revision(Table::Rollouts, "leader", r2)],
                vec![]
            )
            .await
            .expect("cas"),
        CasOutcome::Refused { .. }
    ));
    assert!(matches!(
        store
            .compare_and_swap(
                vec![Cond::at_revision(Table::Rollouts, "leader", r3)],
                vec![]
            )
            .await
            .expect("cas"),
        CasOutcome::Applied(_)
    ));
}

async fn large_content_round_trips(s: Subject) {
    let (store, _) = s.open().await;
    // Over etcd's request limit several times, and not a multiple of any chunk size.
    let big: Vec<u8> = (0..5 * 1024 * 1024 + 3)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    let mut watch = store
        .watch(
            Table::Content,
            "",
            store
                .range(Table::Content, "")
                .await
                .expect("range")
                .revision,
        )
        .await
        .expect("watch");
    store
        .commit(vec![
            Op::Put {
                table: Table::Content,
                key: "sha256:big".into(),
                value: big.clone(),
            },
            Op::Put {
                table: Table::Content,
                key: "sha256:empty".into(),
                value: Vec::new(),
            },
        ])
        .await
        .expect("commit");
    let range = store.range(Table::Content, "").await.expect("range");
    let got: BTreeMap<&str, &[u8]> = range
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_slice()))
        .collect();
    assert_eq!(got.len(), 2);
    assert!(
        got["sha256:big"] == big.as_slice(),
        "the content reads back whole"
    );
    assert!(got["sha256:empty"].is_empty());
    let mut watched = [next_change(&mut watch).await, next_change(&mut watch).await];
    watched.sort_by(|a, b| a.key.cmp(&b.key));
    assert!(
        watched[0].value.as_deref() == Some(big.as_slice()),
        "watch sees it whole"
    );
    store
        .commit(vec![Op::delete(Table::Content, "sha256:big")])
        .await
        .expect("commit");
    assert_eq!(values(&store, Table::Content, "").await.len(), 1);
    assert_eq!(
        short(&next_change(&mut watch).await),
        ("sha256:big".to_string(), None)
    );
}

async fn content_is_written_once(s: Subject) {
    let (store, _) = s.open().await;
    let content = |v: &str| Op::Put {
        table: Table::Content,
        key: "sha256:c".into(),
        value: v.as_bytes().to_vec(),
    };
    let first = store
        .commit_at(vec![content("manifests")])
        .await
        .expect("commit");
    store
        .commit(vec![content("manifests"), put(Table::Groups, "g", "1")])
        .await
        .expect("commit");
    let range = store.range(Table::Content, "").await.expect("range");
    assert_eq!(range.entries.len(), 1);
    assert_eq!(
        range.entries[0].revision, first,
        "the second put wrote nothing"
    );
    assert_eq!(range.entries[0].value, b"manifests");
}

async fn values_at_the_limits_are_kept_and_over_them_refused(s: Subject) {
    let (store, _) = s.open().await;
    let at = vec![b'r'; MAX_RECORD_BYTES];
    store
        .commit(vec![Op::Put {
            table: Table::Status,
            key: "at".into(),
            value: at.clone(),
        }])
        .await
        .expect("a record at the limit");
    let range = store.range(Table::Status, "at").await.expect("range");
    assert_eq!(range.entries[0].value.len(), MAX_RECORD_BYTES);
    let err = store
        .commit(vec![Op::Put {
            table: Table::Content,
            key: "sha256:over".into(),
            value: vec![0; MAX_CONTENT_BYTES + 1],
        }])
        .await
        .expect_err("content over the limit");
    assert!(err.to_string().contains("over the limit"), "{err}");
    for bad_key in ["", "a\nb"] {
        assert!(
            store
                .commit(vec![put(Table::Status, bad_key, "x")])
                .await
                .is_err(),
            "key {bad_key:?} refused"
        );
    }
    // A backend's own limit on operations per transaction: a batch at it lands, one over
    // it is refused whole (never split, which would break its atomicity).
    let max_ops = store.backend.limits().max_ops;
    if max_ops < 100_000 {
        let batch = |n: usize| -> Vec<Op> {
            (0..n)
                .map(|i| put(Table::Clusters, &format!("c{i:04}"), "x"))
                .collect()
        };
        store
            .commit(batch(max_ops))
            .await
            .expect("a batch at the limit");
        store
            .commit(vec![Op::delete(Table::Clusters, "c0000")])
            .await
            .expect("commit");
        let mut over = batch(max_ops + 1);
        over.push(put(Table::Groups, "marker", "x"));
        store
            .commit(over)
            .await
            .expect_err("a batch over the limit");
        assert!(values(&store, Table::Groups, "").await.is_empty());
        assert_eq!(values(&store, Table::Clusters, "").await.len(), max_ops - 1);
    }
}

async fn concurrent_writers_all_land(s: Subject) {
    let (store, _) = s.open().await;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut last = 0;
            for i in 0..20 {
                // `submit` and `commit` interleave in one group commit.
                store.submit(vec![put(Table::Status, &format!("w{w}/{i}"), "queued")]);
                let r = store
                    .commit_at(vec![
                        put(Table::Clusters, &format!("w{w}"), &i.to_string()),
                        put(Table::Status, &format!("w{w}/{i}"), "committed"),
                    ])
                    .await
                    .expect("commit");
                assert!(r > last, "revisions increase: {r} after {last}");
                last = r;
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.expect("writer task");
    }
    let clusters = values(&store, Table::Clusters, "").await;
    assert_eq!(clusters.len(), 8);
    assert!(clusters.values().all(|v| v == "19"), "{clusters:?}");
    let status = values(&store, Table::Status, "").await;
    assert_eq!(status.len(), 160);
    assert!(status.values().all(|v| v == "committed"));

    // Eight contenders for one record: exactly one creates it.
    let mut racers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let store = store.clone();
        racers.spawn(async move {
            store
                .compare_and_swap(
                    vec![Cond::absent(Table::Rollouts, "lock")],
                    vec![put(Table::Rollouts, "lock", &format!("w{w}"))],
                )
                .await
                .expect("cas")
        });
    }
    let mut applied = 0;
    while let Some(r) = racers.join_next().await {
        if matches!(r.expect("racer"), CasOutcome::Applied(_)) {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
}

/// `Store::set_fence` (HA): publishing writes (assignments, content) land only while the
/// fence record is unchanged; other writes are not affected.
async fn a_fenced_publishing_write_lands_only_while_its_fence_holds(s: Subject) {
    let (store, _) = s.open().await;
    let at = store
        .commit_at(vec![put(Table::Groups, "fence", "a")])
        .await
        .expect("fence record");
    store.set_fence(Some(Cond::at_revision(Table::Groups, "fence", at)));
    store
        .commit(vec![put(Table::Desired, "c1", "first")])
        .await
        .expect("the fence holds");
    store
        .commit(vec![put(Table::Groups, "fence", "b")])
        .await
        .expect("the fence record moves");
    let refused = store
        .commit(vec![put(Table::Desired, "c1", "second")])
        .await
        .expect_err("the fence no longer holds");
    assert!(
        refused.to_string().contains("no longer the leader"),
        "{refused}"
    );
    store
        .commit(vec![put(Table::Status, "c1/b", "Ready")])
        .await
        .expect("a status is not fenced");
    assert_eq!(
        values(&store, Table::Desired, "").await,
        map(&[("c1", "first")])
    );
}

/// One test per contract clause and backend. The etcd ones start their own etcd.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Subject::redb()).await;
                }
            )*
        }
        mod on_etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(subject) = super::Subject::etcd() else {
                        return;
                    };
                    super::$name(subject).await;
                }
            )*
        }
    };
}

contract!(
    puts_gets_and_deletes,
    a_batch_lands_whole_or_not_at_all,
    ranges_are_per_table_and_prefix,
    a_reopened_store_has_what_was_committed,
    a_watch_sees_changes_in_order_and_resumes,
    a_watch_from_lost_history_says_so,
    compare_and_swap_applies_or_refuses,
    large_content_round_trips,
    content_is_written_once,
    values_at_the_limits_are_kept_and_over_them_refused,
    concurrent_writers_all_land,
    a_fenced_publishing_write_lands_only_while_its_fence_holds,
);
