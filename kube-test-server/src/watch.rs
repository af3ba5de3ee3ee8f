//! Watch streams: one task per watch turns store events into newline-delimited
//! `{"type": ..., "object": ...}` JSON lines.
//!
//! Semantics follow <https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes>:
//! no resourceVersion (or `0`) starts with synthetic ADDED events for the current
//! state; a resourceVersion N replays the events after N; an N older than the
//! retained history yields one `ERROR` event with a 410 `Expired` Status; objects
//! that start or stop matching a selector arrive as ADDED or DELETED; BOOKMARK
//! events are sent when `allowWatchBookmarks=true`, and `sendInitialEvents=true`
//! ends the initial state with a bookmark annotated `k8s.io/initial-events-end`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::api::{Cluster, matches, present};
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Event, EventType};

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    /// Replay events after this resourceVersion.
    After(u64),
    /// Send the current state as ADDED events first; `end_bookmark` closes it with
    /// an `initial-events-end` bookmark (`sendInitialEvents=true`).
    InitialState { end_bookmark: bool },
}

/// What one watch request asked for.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub rt: ResourceType,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub start: Start,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub bookmark_interval: Duration,
}

/// Starts the watch task; the receiver yields the response body's lines and ends
/// when the watch times out, expires, the server shuts down or the client leaves.
pub fn spawn(
    cluster: Arc<Cluster>,
    spec: WatchSpec,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let mut notify = cluster.subscribe();
        notify.borrow_and_update();
        let mut last_rv = match spec.start {
            Start::After(rv) => rv,
            Start::InitialState { end_bookmark } => {
                let (items, rv) = {
                    let store = cluster.lock();
                    let items: Vec<Value> = store
                        .list(
                            spec.rt.storage_group(),
                            &spec.rt.plural,
                            spec.namespace.as_deref(),
                        )
                        .filter(|(_, v)| matches(v, &spec.labels, &spec.fields))
                        .map(|(_, v)| present(v, &spec.rt))
                        .collect();
                    (items, store.current_rv())
                };
                for obj in items {
                    if tx.send(line("ADDED", obj)).await.is_err() {
                        return;
                    }
                }
                if end_bookmark && tx.send(bookmark(&spec.rt, rv, true)).await.is_err() {
                    return;
                }
                rv
            }
        };
        let deadline = Instant::now() + spec.timeout.min(Duration::from_secs(86_400));
        let period = spec
            .bookmark_interval
            .clamp(Duration::from_millis(10), Duration::from_secs(86_400));
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        loop {
            notify.borrow_and_update();
            match cluster.events_since(last_rv) {
                Err(oldest) => {
                    let err = ApiError::expired(format!(
                        "too old resource version: {last_rv} ({oldest})"
                    ));
                    let _ = tx.send(line("ERROR", err.to_status())).await;
                    return;
                }
                Ok(events) => {
                    for e in events {
                        last_rv = e.rv;
                        if let Some(out) = translate(&spec, &e)
                            && tx.send(out).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                changed = notify.changed() => if changed.is_err() { return },
                _ = tick.tick(), if spec.bookmarks => {
                    if tx.send(bookmark(&spec.rt, last_rv, false)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if spec.bookmarks {
                        let _ = tx.send(bookmark(&spec.rt, last_rv, false)).await;
                    }
                    return;
                }
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

/// The line a watcher sees for a store event, if any (selector transitions
/// become ADDED/DELETED, as in the API server's watch cache).
fn translate(spec: &WatchSpec, e: &Event) -> Option<Bytes> {
    if e.key.group != spec.rt.storage_group()
        || e.key.resource != spec.rt.plural
        || spec
            .namespace
            .as_ref()
            .is_some_and(|ns| *ns != e.key.namespace)
    {
        return None;
    }
    let now = matches(&e.object, &spec.labels, &spec.fields);
    let before = e
        .prev
        .as_ref()
        .is_some_and(|p| matches(p, &spec.labels, &spec.fields));
    let with_rv = |v: &Value| {
        let mut v = present(v, &spec.rt);
        v["metadata"]["resourceVersion"] = json!(e.rv.to_string());
        v
    };
    match e.kind {
        EventType::Added if now => Some(line("ADDED", with_rv(&e.object))),
        EventType::Modified if now && before => Some(line("MODIFIED", with_rv(&e.object))),
        EventType::Modified if now => Some(line("ADDED", with_rv(&e.object))),
        EventType::Modified if before => Some(line(
            "DELETED",
            with_rv(e.prev.as_ref().unwrap_or(&e.object)),
        )),
        EventType::Deleted if before => Some(line("DELETED", with_rv(&e.object))),
        _ => None,
    }
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}),
    )
}
