//! Live progress in the terminal: `flotilla watch` (every bundle) and
//! `flotilla rollout status BUNDLE --watch` (one rollout). Both redraw whenever a
//! deployment or a state changes (not only the counts), ride out a hub restart by
//! reconnecting with backoff, and exit 0 when done or 1 with what is not Ready and why,
//! so CI can wait on them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use flotilla_proto::v1 as pb;
use serde::Serialize;

use crate::admin::{Client, WatchArgs, is_unreachable};
use crate::output::{Format, Printer, emit};
use crate::views::{BundleView, RolloutView, StatusView};

/// `[#####-----]` for `done` of `total`.
pub fn bar(done: u32, total: u32, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        (done as usize * width).div_ceil(total as usize).min(width)
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// One bundle as `watch` shows it: the fleet-wide counts plus how many clusters are in
/// each state and on each deployment, so a commit that moves every cluster to a new
/// deployment redraws even when the counts stay the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleProgress {
    pub name: String,
    pub source: String,
    pub commit: String,
    pub clusters: u32,
    pub ready: u32,
    pub state: String,
    pub error: String,
    /// Clusters per state.
    pub states: BTreeMap<String, u32>,
    /// Clusters per deployment id.
    pub deployments: BTreeMap<String, u32>,
}

/// What `watch` draws; one JSON line per frame with `-o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    pub bundles: Vec<BundleProgress>,
}

impl Frame {
    fn build(bundles: Vec<BundleView>, rows: &[StatusView]) -> Frame {
        let bundles = bundles
            .into_iter()
            .map(|b| {
                let mut states = BTreeMap::new();
                let mut deployments = BTreeMap::new();
                for r in rows.iter().filter(|r| r.bundle == b.name) {
                    *states.entry(r.state.clone()).or_insert(0) += 1;
                    if !r.deployment_id.is_empty() {
                        *deployments.entry(r.deployment_id.clone()).or_insert(0) += 1;
                    }
                }
                BundleProgress {
                    name: b.name,
                    source: b.source,
                    commit: b.commit,
                    clusters: b.clusters,
                    ready: b.ready,
                    state: b.state,
                    error: b.error,
                    states,
                    deployments,
                }
            })
            .collect();
        Frame { bundles }
    }

    fn all_ready(&self) -> bool {
        !self.bundles.is_empty()
            && self
                .bundles
                .iter()
                .all(|b| b.state == "Ready" || b.clusters == 0)
    }

    fn render(&self, format: Format) -> Result<String> {
        Ok(match format {
            Format::Json => serde_json::to_string(self)? + "\n",
            Format::Yaml => format!("---\n{}", serde_saphyr::to_string(self)?),
            Format::Name => self
                .bundles
                .iter()
                .map(|b| format!("bundle/{}\n", b.name))
                .collect(),
            Format::Table | Format::Wide => {
                let lines: String = self.bundles.iter().map(|b| bundle_line(b) + "\n").collect();
                format!("--- {} bundle(s)\n{lines}\n", self.bundles.len())
            }
        })
    }
}

fn short_id(id: &str) -> &str {
    let id = id.split_once(':').map_or(id, |(_, h)| h);
    id.get(..8).unwrap_or(id)
}

fn bundle_line(b: &BundleProgress) -> String {
    let counts = |m: &BTreeMap<String, u32>, short: bool| {
        m.iter()
            .map(|(k, n)| format!("{} {n}", if short { short_id(k) } else { k }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut line = format!(
        "{:<32} {} {:>4}/{:<4} {}",
        b.name,
        bar(b.ready, b.clusters, 20),
        b.ready,
        b.clusters,
        if b.state.is_empty() { "-" } else { &b.state },
    );
    if !b.commit.is_empty() {
        line.push_str(&format!(
            "  commit {}",
            b.commit.get(..8).unwrap_or(&b.commit)
        ));
    }
    if !b.states.is_empty() {
        line.push_str(&format!("  [{}]", counts(&b.states, false)));
    }
    if !b.deployments.is_empty() {
        line.push_str(&format!("  deployments {}", counts(&b.deployments, true)));
    }
    if !b.error.is_empty() {
        line.push_str(&format!("  {}", crate::output::short(&b.error, 60)));
    }
    line
}

/// Waits after failed attempts to reach the hub: 0.5 s doubling to 8 s.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(8);

    fn new() -> Self {
        Backoff(Self::FIRST)
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }
}

/// After an error: `Ok` when the hub is only unreachable (we said so, waited, and
/// dialled again); the error itself when the hub refused.
async fn ride_out(client: &mut Client, e: anyhow::Error, backoff: &mut Backoff) -> Result<()> {
    if !is_unreachable(&e) {
        return Err(e);
    }
    let wait = backoff.next();
    eprintln!("hub unreachable ({e:#}); reconnecting in {wait:?}");
    tokio::time::sleep(wait).await;
    match client.reconnect().await {
        Ok(()) => eprintln!("reconnected to the hub"),
        Err(e) => eprintln!("reconnecting: {e:#}"),
    }
    Ok(())
}

/// Every deployment of `bundle` (or of every bundle) that is not Ready, and why: one
/// line per cluster, then each non-ready resource. Empty when nothing is listed.
async fn not_ready_report(client: &Client, bundle: Option<&str>) -> String {
    let query = pb::GetStatusRequest {
        bundle: bundle.unwrap_or_default().to_string(),
        not_ready: true,
        ..Default::default()
    };
    match client.status(query).await {
        Ok((rows, _)) => not_ready_lines(&rows),
        Err(e) => format!("  (could not list what is not Ready: {e:#})\n"),
    }
}

fn not_ready_lines(rows: &[StatusView]) -> String {
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!("  {}/{}: {}", r.cluster, r.bundle, r.state));
        if !r.message.is_empty() {
            out.push_str(&format!(": {}", crate::output::short(&r.message, 200)));
        }
        out.push('\n');
        for x in &r.resources {
            out.push_str(&format!("    {}\n", x.line()));
        }
    }
    out
}

/// The timeout error, after listing on stderr what is not Ready and why.
async fn timed_out(client: &Client, bundle: Option<&str>, what: String) -> anyhow::Error {
    let report = not_ready_report(client, bundle).await;
    if report.is_empty() {
        anyhow::anyhow!("{what}")
    } else {
        eprint!("not Ready:\n{report}");
        anyhow::anyhow!("{what} ({} not Ready, listed above)", report_count(&report))
    }
}

fn report_count(report: &str) -> String {
    let n = report.lines().filter(|l| !l.starts_with("    ")).count();
    format!("{n} deployment{}", if n == 1 { "" } else { "s" })
}

/// Resolves on the next hub event, or never when there is no stream; a failed or ended
/// stream is dropped so the next round opens a new one.
async fn next_event(events: &mut Option<tonic::Streaming<pb::Event>>) {
    match events {
        Some(s) => {
            if !matches!(s.message().await, Ok(Some(_))) {
                eprintln!("the hub's event stream ended; reconnecting");
                *events = None;
            }
        }
        None => std::future::pending().await,
    }
}

/// Watches every bundle until Ctrl-C, or with `--until-ready` until all are Ready.
pub async fn watch_bundles(mut client: Client, a: &WatchArgs, out: Printer) -> Result<()> {
    let deadline = tokio::time::Instant::now() + a.timeout;
    let format = out.read_format();
    let mut last: Option<Frame> = None;
    let mut events = None;
    let mut backoff = Backoff::new();
    loop {
        let snapshot = async {
            let bundles = client.bundles().await?;
            let rows = client.all_status().await?;
            Ok::<_, anyhow::Error>(Frame::build(bundles, &rows))
        }
        .await;
        match snapshot {
            Ok(frame) => {
                backoff.reset();
                if events.is_none() {
                    // Without a stream the slow tick below still redraws.
                    events = client.watch().await.ok();
                }
                if last.as_ref() != Some(&frame) {
                    emit(&frame.render(format)?)?;
                }
                if a.until_ready && frame.all_ready() {
                    return Ok(());
                }
                last = Some(frame);
            }
            Err(e) => {
                events = None;
                ride_out(&mut client, e, &mut backoff).await?;
            }
        }
        if a.until_ready && tokio::time::Instant::now() >= deadline {
            let what = format!("not every bundle is Ready after {:?}", a.timeout);
            return Err(timed_out(&client, None, what).await);
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = next_event(&mut events) => {
                // Let a burst of events settle before redrawing.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = tokio::time::sleep_until(deadline), if a.until_ready => {}
        }
    }
}

fn rollout_lines(r: &RolloutView, commit: &str) -> String {
    let mut out = format!(
        "{} @ {}: {}{}\n",
        r.bundle,
        commit.get(..8).unwrap_or(commit),
        r.phase,
        if r.message.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.message)
        }
    );
    for p in &r.partitions {
        out.push_str(&format!(
            "  {:<20} {} {:>3}/{:<3} ready, {} updating, {} waiting (maxUnavailable {})\n",
            p.name,
            bar(p.done, p.clusters, 20),
            p.done,
            p.clusters,
            p.updating,
            p.waiting,
            p.max_unavailable
        ));
    }
    out
}

async fn find_bundle(client: &Client, name: &str) -> Result<BundleView> {
    client
        .bundles()
        .await?
        .into_iter()
        .find(|b| b.name == name)
        .ok_or_else(|| anyhow::anyhow!("bundle {name:?} not found"))
}

/// The revision current now: the commit of the hub's first fetch of `source` that
/// started after this call. Polls run one after another, so that is the second one to
/// finish from here (the first may have started before).
async fn current_revision(
    client: &mut Client,
    source: &str,
    deadline: tokio::time::Instant,
) -> Result<String> {
    let mut backoff = Backoff::new();
    let mut polls = 0;
    let mut last_poll: Option<String> = None;
    let mut told = false;
    loop {
        match client.sources().await {
            Ok(sources) => {
                backoff.reset();
                let Some(s) = sources.into_iter().find(|s| s.name == source) else {
                    bail!("source {source:?} not found");
                };
                match &last_poll {
                    Some(l) if *l != s.last_poll => polls += 1,
                    _ => {}
                }
                if polls >= 2 {
                    if !s.error.is_empty() {
                        bail!("source {source} cannot be fetched: {}", s.error);
                    }
                    return Ok(s.commit);
                }
                if !told {
                    eprintln!(
                        "waiting for the hub's next fetch of source {source} (every {}s) to learn the current revision",
                        s.interval_seconds
                    );
                    told = true;
                }
                last_poll = Some(s.last_poll);
            }
            Err(e) => ride_out(client, e, &mut backoff).await?,
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the hub did not fetch source {source} before the timeout");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Follows one rollout until the wanted revision (the one current at the start, or
/// `revision`) is Done: exit 0; halted, broken or timed out: an error.
pub async fn watch_rollout(
    mut client: Client,
    bundle: &str,
    revision: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let source = find_bundle(&client, bundle).await?.source;
    let target = match revision {
        Some(r) => r.to_string(),
        None => current_revision(&mut client, &source, deadline).await?,
    };
    let mut last = String::new();
    let mut backoff = Backoff::new();
    loop {
        let step = async {
            let b = find_bundle(&client, bundle).await?;
            let r = client.rollout(bundle).await?;
            Ok::<_, anyhow::Error>((b, r))
        }
        .await;
        match step {
            Ok((b, r)) => {
                backoff.reset();
                let frame = rollout_lines(&r, &b.commit);
                if frame != last {
                    emit(&frame)?;
                    last = frame;
                }
                let on_target = !target.is_empty() && b.commit.starts_with(&target);
                if on_target && !b.error.is_empty() {
                    bail!(
                        "bundle {bundle} is broken at {}: {}",
                        short_id(&b.commit),
                        b.error.lines().next().unwrap_or_default()
                    );
                }
                match r.phase.as_str() {
                    "Done" if on_target || target.is_empty() => return Ok(()),
                    // A halt of an older revision may be what the wanted one fixes.
                    "Halted" if on_target || target.is_empty() => {
                        bail!("rollout of {bundle} halted: {}", r.message)
                    }
                    _ => {}
                }
            }
            Err(e) => ride_out(&mut client, e, &mut backoff).await?,
        }
        if tokio::time::Instant::now() >= deadline {
            let what = format!(
                "rollout of {bundle} at {} not done after {timeout:?}",
                if target.is_empty() {
                    "its current revision"
                } else {
                    short_id(&target)
                }
            );
            return Err(timed_out(&client, Some(bundle), what).await);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::ResourceView;

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0, 4, 4), "[----]");
        assert_eq!(bar(1, 4, 4), "[#---]");
        assert_eq!(bar(4, 4, 4), "[####]");
        assert_eq!(bar(0, 0, 2), "[##]");
    }

    fn row(cluster: &str, state: &str, deployment: &str) -> StatusView {
        StatusView {
            cluster: cluster.into(),
            bundle: "s-app".into(),
            state: state.into(),
            message: String::new(),
            deployment_id: deployment.into(),
            staged_deployment_id: String::new(),
            updated: String::new(),
            resources: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn bundle() -> BundleView {
        BundleView {
            name: "s-app".into(),
            source: "s".into(),
            path: "app".into(),
            commit: "c0ffee".into(),
            clusters: 2,
            ready: 2,
            state: "Ready".into(),
            error: String::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn a_new_deployment_with_the_same_counts_is_a_new_frame() {
        let before = Frame::build(
            vec![bundle()],
            &[row("a", "Ready", "sha256:1"), row("b", "Ready", "sha256:1")],
        );
        let after = Frame::build(
            vec![bundle()],
            &[row("a", "Ready", "sha256:2"), row("b", "Ready", "sha256:2")],
        );
        assert_ne!(before, after);
        let table = |f: &Frame| f.render(Format::Table).expect("renders");
        assert_ne!(table(&before), table(&after), "the redraw shows the change");
        let moved = Frame::build(
            vec![bundle()],
            &[
                row("a", "Modified", "sha256:1"),
                row("b", "Ready", "sha256:1"),
            ],
        );
        assert_ne!(before, moved, "a state change with unchanged bundle counts");
    }

    #[test]
    fn json_frames_are_one_line_each() {
        let f = Frame::build(vec![bundle()], &[row("a", "Ready", "sha256:1")]);
        let text = f.render(Format::Json).expect("renders");
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["bundles"][0]["deployments"]["sha256:1"], 1);
    }

    #[test]
    fn the_not_ready_listing_names_each_cluster_and_resource_with_its_reason() {
        let mut r = row("edge-1", "NotReady", "sha256:1");
        r.message = "1 of 2 resources not ready".into();
        r.resources.push(ResourceView {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "web".into(),
            name: "frontend".into(),
            state: "NotReady".into(),
            message: "0/3 replicas available".into(),
        });
        let text = not_ready_lines(&[r]);
        assert_eq!(
            text,
            "  edge-1/s-app: NotReady: 1 of 2 resources not ready\n    Deployment web/frontend: NotReady: 0/3 replicas available\n"
        );
        assert_eq!(report_count(&text), "1 deployment");
    }
}
