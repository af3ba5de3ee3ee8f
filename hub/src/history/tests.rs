use super::*;

fn cluster(n: &str) -> ClusterName {
    ClusterName::new(n).expect("valid cluster name")
}

fn deployment(id: &str, commit: &str, at: i64) -> Deployment {
    Deployment {
        deployment_id: id.into(),
        commit: commit.into(),
        source: "src".into(),
        assigned_at: at,
        applied_at: None,
        ready_at: None,
        failed_at: None,
        failure: String::new(),
    }
}

fn status(id: &str, state: State, message: &str, at: i64) -> StatusRecord {
    StatusRecord {
        deployment_id: id.into(),
        state,
        message: message.into(),
        resources: Vec::new(),
        updated_at: at,
    }
}

fn open_store(dir: &std::path::Path) -> (Store, Snapshot) {
    // The writer thread of a previous handle may still hold the file for a moment.
    loop {
        match Store::open(&dir.join("state.redb")) {
            Ok(r) => break r,
            Err(_) => std::thread::yield_now(),
        }
    }
}

fn open(dir: &std::path::Path, retention: Retention, now: i64) -> (Store, History) {
    let (store, snap) = open_store(dir);
    let h = History::restore(store.clone(), retention, &snap, now).expect("history restores");
    (store, h)
}

/// Every entry matching `filter`, once the writes queued so far are in the store.
async fn rows(h: &History, filter: Filter) -> Vec<Row> {
    h.store.commit(Vec::new()).await.expect("flush");
    let page = h
        .query(&Filter {
            limit: MAX_LIMIT,
            ..filter
        })
        .await
        .expect("query");
    assert_eq!(page.next, None, "the test reads everything in one page");
    page.rows
}

async fn where_running(h: &History, commit: &str) -> Option<(String, Vec<WhereRow>)> {
    h.store.commit(Vec::new()).await.expect("flush");
    h.where_running(commit).await.expect("where")
}

fn deployment_ids(rows: Vec<Row>) -> Vec<String> {
    rows.into_iter()
        .filter_map(|r| match r.entry {
            Entry::Deployment(d) => Some(d.deployment_id),
            Entry::StateChange(_) => None,
        })
        .collect()
}

#[test]
fn keys_sort_by_pair_then_by_id_and_parse_back() {
    let mut stamps = crate::record_id::Stamper::after(&[]);
    let (first, second) = (stamps.stamp(), stamps.stamp());
    let mut keys = vec![
        entry_key("b", "app", first),
        entry_key("a", "web", second),
        entry_key("a", "web", first),
        entry_key("a", "web", RecordId::Legacy(0x10)),
        entry_key("a", "app", RecordId::Legacy(7)),
    ];
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "a/app/0000000000000007".to_string(),
            "a/web/0000000000000010".to_string(),
            entry_key("a", "web", first),
            entry_key("a", "web", second),
            entry_key("b", "app", first),
        ],
        "a pair's range, old-format keys first, then by time"
    );
    for k in &keys {
        let (c, b, _) = parse_key(k).expect("parses");
        assert!(k.starts_with(&pair_prefix(c, b)), "{k}");
    }
    assert_eq!(
        parse_key("a/x/y/0000000000000003"),
        Some(("a", "x/y", RecordId::Legacy(3)))
    );
    assert_eq!(
        parse_key(&entry_key("a", "x/y", second)),
        Some(("a", "x/y", second))
    );
    assert_eq!(parse_key("a/web/12"), None);
    assert_eq!(parse_key("nonsense"), None);
}

#[tokio::test]
async fn two_replicas_recording_into_one_store_lose_nothing_and_read_back_in_time_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web: Arc<str> = Arc::from("web");
    let roomy = Retention {
        max_age: DEFAULT_MAX_AGE,
        max_per_pair: 1000,
    };
    const EACH: usize = 200;
    {
        // A single-hub entry from before replicas, under the old key format.
        let (store, _) = open(dir.path(), roomy, 0);
        store
            .commit(vec![Op::put_json(
                Table::History,
                "a/web/0000000000000005",
                &Entry::Deployment(deployment("old", "c", 0)),
            )])
            .await
            .expect("commit");
    }
    {
        let (store, snap) = loop {
            match Store::open(&dir.path().join("state.redb")) {
                Ok(r) => break r,
                Err(_) => std::thread::yield_now(),
            }
        };
        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|replica| {
                let h = History::restore(store.clone(), roomy, &snap, 0).expect("restores");
                let web = web.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        // One (cluster, bundle) pair, the same time: only the keys order them.
                        h.record_deployment(
                            &cluster("a"),
                            &web,
                            deployment(&format!("{replica}-{i}"), "c", 1),
                        );
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("a writer finishes");
        }
        store.commit(Vec::new()).await.expect("commit");
    }
    let (_store, h) = open(dir.path(), roomy, 0);
    let ids = deployment_ids(rows(&h, Filter::default()).await);
    assert_eq!(ids.len(), 2 * EACH + 1, "no entry overwrote another");
    assert_eq!(ids[0], "old", "the old-format entry reads, first");
    for replica in ["a", "b"] {
        let mine: Vec<&String> = ids
            .iter()
            .filter(|d| d.starts_with(&format!("{replica}-")))
            .collect();
        let want: Vec<String> = (0..EACH).map(|i| format!("{replica}-{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "in the order made");
    }
}

#[tokio::test]
async fn retention_by_count_drops_the_oldest_of_the_pair_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keep = Retention {
        max_age: DEFAULT_MAX_AGE,
        max_per_pair: 3,
    };
    let (_store, h) = open(dir.path(), keep, 1000);
    let web: Arc<str> = Arc::from("web");
    for i in 0..5 {
        h.record_deployment(
            &cluster("a"),
            &web,
            deployment(&format!("d-{i}"), "c1", 100 + i),
        );
    }
    h.record_deployment(&cluster("b"), &web, deployment("d-b", "c1", 100));
    // The pair is pruned after its write lands, by a task: wait for it.
    let of_a = Filter {
        cluster: Some(cluster("a")),
        ..Filter::default()
    };
    loop {
        if rows(&h, of_a.clone()).await.len() <= 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        deployment_ids(rows(&h, of_a).await),
        vec!["d-2", "d-3", "d-4"]
    );
    assert_eq!(
        rows(&h, Filter::default()).await.len(),
        4,
        "cluster b keeps its one entry"
    );
    assert!(
        where_running(&h, "c1").await.is_some(),
        "the index of what was dropped went with it, the rest stays"
    );
    let indexed = h
        .store
        .range(Table::History, INDEX_PREFIX)
        .await
        .expect("range")
        .entries
        .len();
    assert_eq!(indexed, 4, "one index key per deployment kept");
}

#[tokio::test]
async fn retention_by_age_keeps_the_newest_deployment_whatever_its_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keep = Retention {
        max_age: Duration::from_secs(100),
        max_per_pair: 10,
    };
    let (_store, h) = open(dir.path(), keep, 0);
    let web: Arc<str> = Arc::from("web");
    h.record_deployment(&cluster("a"), &web, deployment("d-1", "c1", 10));
    h.record_deployment(&cluster("a"), &web, deployment("d-2", "c2", 20));
    h.record_deployment(&cluster("a"), &web, deployment("d-3", "c3", 30));
    h.record_deployment(&cluster("b"), &web, deployment("d-1", "c1", 10));
    assert_eq!(
        h.sweep(125).await.expect("sweep"),
        2,
        "d-1 and d-2 of a; b's only deployment stays"
    );
    let left: Vec<(String, String)> = rows(&h, Filter::default())
        .await
        .into_iter()
        .map(|r| {
            let Entry::Deployment(d) = r.entry else {
                panic!("deployments only")
            };
            (r.cluster.to_string(), d.deployment_id)
        })
        .collect();
    assert_eq!(
        left,
        vec![
            ("a".to_string(), "d-3".to_string()),
            ("b".to_string(), "d-1".to_string())
        ],
        "in key order: by cluster"
    );
    assert!(where_running(&h, "c1").await.is_some(), "b still runs c1");
    assert!(
        where_running(&h, "c2").await.is_none(),
        "c2 is gone with its entry"
    );
}

#[tokio::test]
async fn a_deployment_records_applied_ready_and_failed_and_drift_is_a_state_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, h) = open(dir.path(), Retention::default(), 0);
    let web: Arc<str> = Arc::from("web");
    let a = cluster("a");
    h.record_deployment(&a, &web, deployment("d-1", "c1", 10));
    let wait = status("d-1", State::WaitApplied, "", 11);
    h.status(&a, "web", None, &wait);
    let ready = status("d-1", State::Ready, "", 12);
    h.status(&a, "web", Some(wait.state), &ready);
    let modified = status("d-1", State::Modified, "data.x: want 1, have 2", 20);
    h.status(&a, "web", Some(ready.state), &modified);
    let again = status("d-1", State::Ready, "", 21);
    h.status(&a, "web", Some(modified.state), &again);
    let rows = rows(&h, Filter::default()).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let Entry::Deployment(d) = &rows[0].entry else {
        panic!("first is the deployment")
    };
    assert_eq!(
        (d.applied_at, d.ready_at, d.failed()),
        (Some(12), Some(12), false)
    );
    assert_eq!(
        rows[1].entry,
        Entry::StateChange(StateChange {
            at: 20,
            deployment_id: "d-1".into(),
            from: State::Ready,
            to: State::Modified,
            message: "data.x: want 1, have 2".into(),
        })
    );
    assert!(matches!(&rows[2].entry, Entry::StateChange(s) if s.to == State::Ready));

    h.record_deployment(&a, &web, deployment("d-2", "c2", 30));
    h.status(
        &a,
        "web",
        // The previous report (`again`) was about d-1: no prior state for d-2.
        None,
        &status("d-2", State::ErrApplied, "bad apply", 31),
    );
    let (_, verdicts) = where_running(&h, "c2").await.expect("c2 was deployed");
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].verdict, WhereVerdict::Failed);
    assert_eq!(verdicts[0].current.failure, "bad apply");
    assert_eq!(
        where_running(&h, "c1").await.expect("c1 was deployed").1[0].verdict,
        WhereVerdict::Newer
    );
}

#[tokio::test]
async fn where_tells_running_pending_and_older_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, h) = open(dir.path(), Retention::default(), 0);
    let web: Arc<str> = Arc::from("web");
    let commit_a = "a".repeat(40);
    let commit_b = "b".repeat(40);
    for c in ["x", "y", "z"] {
        h.record_deployment(&cluster(c), &web, deployment("d-a", &commit_a, 10));
        h.status(
            &cluster(c),
            "web",
            None,
            &status("d-a", State::Ready, "", 11),
        );
    }
    h.record_deployment(&cluster("x"), &web, deployment("d-b", &commit_b, 20));
    h.status(
        &cluster("x"),
        "web",
        None,
        &status("d-b", State::Ready, "", 21),
    );
    h.record_deployment(&cluster("y"), &web, deployment("d-b", &commit_b, 20));
    let by_cluster = async |commit: &str| -> Vec<(String, WhereVerdict)> {
        where_running(&h, commit)
            .await
            .expect("deployed")
            .1
            .into_iter()
            .map(|r| (r.cluster.to_string(), r.verdict))
            .collect()
    };
    assert_eq!(
        by_cluster(&commit_b[..7]).await,
        vec![
            ("x".into(), WhereVerdict::Running),
            ("y".into(), WhereVerdict::Pending),
            ("z".into(), WhereVerdict::Older),
        ]
    );
    assert_eq!(
        by_cluster(&commit_a).await,
        vec![
            ("x".into(), WhereVerdict::Newer),
            ("y".into(), WhereVerdict::Newer),
            ("z".into(), WhereVerdict::Running),
        ]
    );
    assert!(
        where_running(&h, "bbb").await.is_none(),
        "a prefix under 7 characters names nothing"
    );
    let at_b = rows(
        &h,
        Filter {
            commit: Some(commit_b.clone()),
            ..Filter::default()
        },
    )
    .await;
    assert_eq!(at_b.len(), 2);
}

#[tokio::test]
async fn history_survives_a_reopen_and_a_lowered_limit_applies_at_the_first_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web: Arc<str> = Arc::from("web");
    {
        let (store, h) = open(dir.path(), Retention::default(), 0);
        for i in 0..4 {
            h.record_deployment(&cluster("a"), &web, deployment(&format!("d-{i}"), "c", i));
        }
        // Wait until the queued writes are durable.
        store.commit(Vec::new()).await.expect("commit");
    }
    let two = Retention {
        max_age: DEFAULT_MAX_AGE,
        max_per_pair: 2,
    };
    let (store, h) = open(dir.path(), two, 10);
    // The start reads head records only; the sweeper, run when a term starts, prunes.
    assert_eq!(h.sweep(10).await.expect("sweep"), 2);
    assert_eq!(rows(&h, Filter::default()).await.len(), 2);
    store.commit(Vec::new()).await.expect("commit");
    drop((store, h));
    let (_store, h) = open(dir.path(), Retention::default(), 10);
    let ids = deployment_ids(rows(&h, Filter::default()).await);
    assert_eq!(ids, vec!["d-2", "d-3"], "the sweep reached the store");
    // New entries continue the sequence instead of overwriting old keys.
    h.record_deployment(&cluster("a"), &web, deployment("d-4", "c", 11));
    assert_eq!(rows(&h, Filter::default()).await.len(), 3);
}

#[tokio::test]
async fn a_fleet_wide_query_comes_in_pages_that_continue_where_the_last_one_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, h) = open(dir.path(), Retention::default(), 0);
    // `a-b/` sorts before `a/` as keys, after it as cluster names: pages follow the keys.
    for c in ["a", "a-b", "b"] {
        for b in ["api", "web"] {
            for i in 0..3 {
                h.record_deployment(
                    &cluster(c),
                    &Arc::from(b),
                    deployment(&format!("{c}-{b}-{i}"), &format!("commit{i}x"), i),
                );
            }
        }
    }
    h.store.commit(Vec::new()).await.expect("flush");
    let all = deployment_ids(rows(&h, Filter::default()).await);
    assert_eq!(all.len(), 18);
    assert_eq!(
        all[..4],
        ["a-b-api-0", "a-b-api-1", "a-b-api-2", "a-b-web-0"],
        "key order: `a-b/` before `a/`"
    );
    for filter in [
        Filter::default(),
        Filter {
            bundle: Some("web".into()),
            ..Filter::default()
        },
        Filter {
            commit: Some("commit1x".into()),
            ..Filter::default()
        },
    ] {
        let mut paged = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = h
                .query(&Filter {
                    limit: 4,
                    after: after.clone(),
                    ..filter.clone()
                })
                .await
                .expect("query");
            pages += 1;
            assert!(page.rows.len() <= 4);
            paged.extend(deployment_ids(page.rows));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let whole = deployment_ids(rows(&h, filter.clone()).await);
        assert_eq!(
            paged, whole,
            "pages of {filter:?} add up to the whole, once each"
        );
        assert!(
            pages >= whole.len().div_ceil(4),
            "{filter:?}: cut at the limit"
        );
    }
    let unlimited = h.query(&Filter::default()).await.expect("query");
    assert_eq!(
        (unlimited.rows.len(), unlimited.next),
        (18, None),
        "under the default limit, one page"
    );
}

#[tokio::test]
async fn memory_keeps_one_head_per_pair_and_old_stores_get_their_commit_index_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // A store written before the index and head records: entries only, one in the
        // old key format.
        let (store, _) = open(dir.path(), Retention::default(), 0);
        let mut ops = vec![
            Op::delete(Table::History, HEADS_MARKER),
            Op::put_json(
                Table::History,
                "a/web/0000000000000005",
                &Entry::Deployment(deployment("old", "feedface0", 1)),
            ),
        ];
        let mut stamps = crate::record_id::Stamper::after(&[]);
        for i in 0..20 {
            ops.push(Op::put_json(
                Table::History,
                entry_key("b", "web", stamps.stamp()),
                &Entry::Deployment(deployment(&format!("d-{i}"), &format!("c{i:06}"), 10 + i)),
            ));
        }
        store.commit(ops).await.expect("commit");
    }
    let (_store, h) = open(dir.path(), Retention::default(), 100);
    assert_eq!(h.pairs(), 2, "one head per pair, not one per entry");
    let (commit, rows) = where_running(&h, "feedface")
        .await
        .expect("indexed at start");
    assert_eq!(commit, "feedface0");
    let verdicts: Vec<(&str, WhereVerdict)> = rows
        .iter()
        .map(|r| (r.cluster.as_str(), r.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [("a", WhereVerdict::Pending), ("b", WhereVerdict::Newer)],
        "b's deployments all came after feedface0"
    );
    let (_, rows) = where_running(&h, "c000003")
        .await
        .expect("indexed at start");
    let verdicts: Vec<(&str, WhereVerdict, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.cluster.as_str(),
                r.verdict,
                r.current.deployment_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("a", WhereVerdict::Older, "old"),
            ("b", WhereVerdict::Newer, "d-19")
        ]
    );
    let at = rows_at(&h, "c000003").await;
    assert_eq!(
        deployment_ids(at),
        ["d-3"],
        "the commit query reads the entry from the store"
    );
}

async fn rows_at(h: &History, commit: &str) -> Vec<Row> {
    rows(
        h,
        Filter {
            commit: Some(commit.into()),
            ..Filter::default()
        },
    )
    .await
}

#[tokio::test]
async fn a_restart_reads_one_head_record_per_pair_not_the_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web: Arc<str> = Arc::from("web");
    {
        let (store, h) = open(dir.path(), Retention::default(), 0);
        for i in 0..5 {
            h.record_deployment(&cluster("a"), &web, deployment(&format!("d-{i}"), "c", i));
            h.status(
                &cluster("a"),
                &web,
                None,
                &status(&format!("d-{i}"), State::Ready, "", i),
            );
        }
        h.record_deployment(&cluster("b"), &web, deployment("e-0", "c", 9));
        store.commit(Vec::new()).await.expect("commit");
    }
    let (store, snap) = open_store(dir.path());
    let keys: Vec<&str> = snap.raw(Table::History).map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [&head_key("a", "web"), &head_key("b", "web"), HEADS_MARKER],
        "the snapshot holds the head records, not the entries"
    );
    let h = History::restore(store.clone(), Retention::default(), &snap, 10).expect("restores");
    let current = h.current("web");
    let ids: Vec<(&str, &str, Option<i64>)> = current
        .iter()
        .map(|(c, d)| (c.as_str(), d.deployment_id.as_str(), d.ready_at))
        .collect();
    assert_eq!(ids, [("a", "d-4", Some(4)), ("b", "e-0", None)]);
    // A later write stamps after every entry already stored.
    h.record_deployment(&cluster("a"), &web, deployment("d-5", "c", 11));
    let ids = deployment_ids(rows(&h, Filter::default()).await);
    assert_eq!(
        ids.iter()
            .rfind(|i| i.starts_with("d-"))
            .map(String::as_str),
        Some("d-5")
    );
}
