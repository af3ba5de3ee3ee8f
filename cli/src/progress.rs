//! Live progress in the terminal: `flotilla watch` (every bundle) and
//! `flotilla rollout status BUNDLE --watch` (one rollout). Both redraw only when
//! something changed and exit 0 when done or non-zero on failure, so CI can wait on them.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::admin::Client;
use crate::views::{BundleView, RolloutView};

/// `[#####-----]` for `done` of `total`.
pub fn bar(done: u32, total: u32, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        (done as usize * width).div_ceil(total as usize).min(width)
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

fn bundle_line(b: &BundleView) -> String {
    format!(
        "{:<32} {} {:>4}/{:<4} {}{}",
        b.name,
        bar(b.ready, b.clusters, 20),
        b.ready,
        b.clusters,
        if b.state.is_empty() { "-" } else { &b.state },
        if b.error.is_empty() {
            String::new()
        } else {
            format!("  {}", crate::output::short(&b.error, 60))
        }
    )
}

/// Watches every bundle until Ctrl-C, or with `until_ready` until all are Ready.
pub async fn watch_bundles(
    client: &mut Client,
    until_ready: bool,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    // Redraw when the hub reports an event; a slow tick covers anything missed.
    let mut events = client.watch().await?;
    loop {
        let bundles = client.bundles().await?;
        let frame: String = bundles.iter().map(|b| bundle_line(b) + "\n").collect();
        if frame != last {
            println!("--- {} bundle(s)\n{frame}", bundles.len());
            last = frame;
        }
        let all_ready = !bundles.is_empty()
            && bundles
                .iter()
                .all(|b| b.state == "Ready" || b.clusters == 0);
        if until_ready && all_ready {
            return Ok(());
        }
        if until_ready && start.elapsed() > timeout {
            bail!("not every bundle is Ready after {timeout:?}");
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            e = events.message() => {
                if !matches!(e, Ok(Some(_))) {
                    // The stream ended or failed: fall back to polling with a fresh one.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    events = client.watch().await?;
                }
                // Let a burst of events settle before redrawing.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

fn rollout_lines(r: &RolloutView) -> String {
    let mut out = format!(
        "{}: {}{}\n",
        r.bundle,
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

/// Follows one rollout: exit 0 when Done, an error when Halted or on timeout.
pub async fn watch_rollout(client: &mut Client, bundle: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let r = client.rollout(bundle).await?;
        let frame = rollout_lines(&r);
        if frame != last {
            print!("{frame}");
            last = frame;
        }
        match r.phase.as_str() {
            "Done" => return Ok(()),
            "Halted" => bail!("{}", r.message),
            _ if start.elapsed() > timeout => {
                bail!("rollout of {bundle} not done after {timeout:?}")
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0, 4, 4), "[----]");
        assert_eq!(bar(1, 4, 4), "[#---]");
        assert_eq!(bar(4, 4, 4), "[####]");
        assert_eq!(bar(0, 0, 2), "[##]");
    }
}
