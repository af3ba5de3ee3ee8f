//! `/events`: the fleet's event stream (`Fleet::events`, the one `Admin.Watch` serves)
//! as server-sent events. Each event is one `data:` line of JSON (serde_json escapes
//! every newline, so a hostile message cannot start an event of its own); the page
//! redraws itself from the server when one arrives (`app.js`). A watcher too slow for
//! the broadcast buffer gets a `Lagged` event and re-reads the page, as `Admin.Watch`
//! callers do. A comment line every `KEEPALIVE` keeps proxies from closing an idle
//! stream.

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::fleet::FleetEvent;
use crate::records::rfc3339;

const KEEPALIVE: Duration = Duration::from_secs(15);

fn frame(e: &FleetEvent) -> Bytes {
    let json = serde_json::json!({
        "kind": e.kind.as_str(),
        "cluster": e.cluster,
        "bundle": e.bundle,
        "source": e.source,
        "state": e.state,
        "message": e.message,
        "time": rfc3339(e.time),
    });
    Bytes::from(format!("data: {json}\n\n"))
}

fn lagged(n: u64) -> Bytes {
    let json = serde_json::json!({
        "kind": "Lagged",
        "message": format!("{n} events skipped; re-read the state"),
    });
    Bytes::from(format!("data: {json}\n\n"))
}

/// The SSE body for one watcher: a `Hello` first (so a page knows it is live), then
/// every fleet event, until the hub's sender goes away or the client disconnects (the
/// stream is dropped with the connection).
pub fn stream(rx: broadcast::Receiver<FleetEvent>) -> impl Stream<Item = Bytes> + Send {
    let hello = Bytes::from_static(b"retry: 2000\ndata: {\"kind\":\"Hello\"}\n\n");
    let state = (Some(hello), rx, tokio::time::interval(KEEPALIVE));
    futures::stream::unfold(state, |(first, mut rx, mut tick)| async move {
        if let Some(hello) = first {
            // The interval's first tick is immediate: use it up with the hello.
            tick.tick().await;
            return Some((hello, (None, rx, tick)));
        }
        let chunk = tokio::select! {
            r = rx.recv() => match r {
                Ok(e) => frame(&e),
                Err(RecvError::Lagged(n)) => lagged(n),
                Err(RecvError::Closed) => return None,
            },
            _ = tick.tick() => Bytes::from_static(b": keepalive\n\n"),
        };
        Some((chunk, (None, rx, tick)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::EventKind;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_hostile_message_stays_inside_one_event() {
        let (tx, rx) = broadcast::channel(4);
        let mut s = Box::pin(stream(rx));
        let hello = s.next().await.expect("hello");
        assert!(hello.starts_with(b"retry: 2000\n"));
        tx.send(FleetEvent {
            bundle: "b".into(),
            message: "line one\n\ndata: {\"kind\":\"Forged\"}\n".into(),
            ..FleetEvent::new(EventKind::StatusChanged)
        })
        .expect("send");
        let chunk = s.next().await.expect("event");
        let text = std::str::from_utf8(&chunk).expect("utf-8");
        assert_eq!(text.matches("\n\n").count(), 1, "{text}");
        assert!(
            text.starts_with("data: {") && text.ends_with("}\n\n"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(text.trim_start_matches("data: ").trim()).expect("json");
        assert_eq!(json["kind"], "StatusChanged");
    }
}
