// flotilla dashboard: live updates without a reload.
//
// The hub renders every page in full (escaped on the server). This script only listens
// to /events (server-sent events, the stream Admin.Watch serves) and, when the fleet
// changes, fetches the same page again and swaps its <main> in place. It never builds
// markup from event data: the event log below uses textContent only.
"use strict";

(function () {
  const live = document.getElementById("live");
  const log = document.getElementById("events");
  const MAX_LOG = 50;
  // Coalesce bursts (a fan-out to many clusters) into one redraw.
  const REDRAW_DELAY_MS = 250;
  let timer = null;
  let redraws = 0;

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }

  function logEvent(e) {
    if (!log) return;
    const li = document.createElement("li");
    const parts = [e.time || "", e.kind || ""];
    if (e.cluster) parts.push(e.cluster);
    if (e.bundle) parts.push(e.bundle);
    if (e.state) parts.push(e.state);
    li.textContent = parts.filter(Boolean).join(" · ");
    if (e.message) li.title = e.message;
    log.prepend(li);
    while (log.children.length > MAX_LOG) log.lastElementChild.remove();
  }

  async function redraw() {
    timer = null;
    try {
      const r = await fetch(window.location.pathname, {
        headers: { Accept: "text/html" },
        cache: "no-store",
        credentials: "same-origin",
      });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.querySelector("main");
      const main = document.querySelector("main");
      if (fresh && main) {
        main.replaceWith(document.adoptNode(fresh));
        redraws += 1;
        document.body.dataset.redraws = String(redraws);
      }
    } catch (err) {
      setLive("error", "redraw failed: " + err);
    }
  }

  function schedule() {
    if (timer === null) timer = window.setTimeout(redraw, REDRAW_DELAY_MS);
  }

  const source = new EventSource("/events");
  source.onopen = function () {
    setLive("live", "live");
  };
  source.onerror = function () {
    // EventSource reconnects by itself (retry: from the hub); redraw once it is back.
    setLive("reconnecting", "reconnecting…");
  };
  source.onmessage = function (m) {
    let e;
    try {
      e = JSON.parse(m.data);
    } catch (_) {
      return;
    }
    if (e.kind === "Hello") {
      setLive("live", "live");
      // Whatever changed while this page was connecting.
      schedule();
      return;
    }
    logEvent(e);
    schedule();
  };
})();
