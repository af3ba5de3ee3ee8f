//! The rollout-progress chart: from the deployment history of one bundle at one commit,
//! how many clusters had been assigned it, were Ready on it, and had failed it, over
//! time. The points are computed here on the hub (pure, no I/O) and drawn as an inline
//! SVG with presentation attributes only, so the page needs no script or inline style
//! to show it.

use std::fmt::Write;

use crate::history::Deployment;

/// The counts right after something changed at `at` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub at: i64,
    pub assigned: usize,
    pub ready: usize,
    pub failed: usize,
}

/// One point per distinct time at which a deployment was assigned, became Ready or
/// failed, oldest first. A cluster counts as failed while its latest outcome is a
/// failure (`Deployment::failed`), and as Ready once it has been Ready and not failed
/// since.
pub fn progress(deployments: &[Deployment]) -> Vec<Point> {
    let mut times: Vec<i64> = deployments
        .iter()
        .flat_map(|d| [Some(d.assigned_at), d.ready_at, d.failed_at])
        .flatten()
        .collect();
    times.sort_unstable();
    times.dedup();
    times
        .into_iter()
        .map(|at| {
            let mut p = Point {
                at,
                assigned: 0,
                ready: 0,
                failed: 0,
            };
            for d in deployments.iter().filter(|d| d.assigned_at <= at) {
                p.assigned += 1;
                let ready = d.ready_at.filter(|r| *r <= at);
                let failed = d.failed_at.filter(|f| *f <= at);
                match (ready, failed) {
                    (Some(r), Some(f)) if f > r => p.failed += 1,
                    (Some(_), _) => p.ready += 1,
                    (None, Some(_)) => p.failed += 1,
                    (None, None) => {}
                }
            }
            p
        })
        .collect()
}

const W: f64 = 640.0;
const H: f64 = 200.0;
const PAD: f64 = 32.0;

/// The points as an SVG step chart (assigned, Ready, failed), or a note when there is
/// nothing to draw.
pub fn svg(points: &[Point], now: i64) -> String {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return "<p class=\"muted\">No deployment of this bundle in the history yet.</p>"
            .to_string();
    };
    // The last counts hold until now; a chart of one instant still gets a width.
    let end = now.max(last.at).max(first.at + 1);
    let span = (end - first.at) as f64;
    let top = points.iter().map(|p| p.assigned).max().unwrap_or(1).max(1) as f64;
    let x = |t: i64| PAD + (t - first.at) as f64 / span * (W - 2.0 * PAD);
    let y = |n: usize| H - PAD - n as f64 / top * (H - 2.0 * PAD);
    let line = |count: fn(&Point) -> usize| {
        let mut d = String::new();
        let mut prev: Option<usize> = None;
        for p in points {
            if let Some(n) = prev {
                let _ = write!(d, " {:.1},{:.1}", x(p.at), y(n));
            }
            let _ = write!(d, " {:.1},{:.1}", x(p.at), y(count(p)));
            prev = Some(count(p));
        }
        let _ = write!(d, " {:.1},{:.1}", x(end), y(prev.unwrap_or(0)));
        d
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg id=\"rollout-chart\" class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"clusters assigned, Ready and failed over time\">\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/>\
         <line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"#888\"/>\
         <text x=\"4\" y=\"{t}\" font-size=\"11\">{top}</text>\
         <text x=\"4\" y=\"{b}\" font-size=\"11\">0</text>\
         <text x=\"{PAD}\" y=\"{H}\" font-size=\"11\">{start}</text>\
         <text x=\"{r}\" y=\"{H}\" font-size=\"11\" text-anchor=\"end\">{stop}</text>",
        b = H - PAD,
        r = W - PAD,
        t = PAD + 4.0,
        start = crate::records::rfc3339(first.at),
        stop = crate::records::rfc3339(end),
    );
    for (class, colour, count) in [
        (
            "assigned",
            "#6b7280",
            (|p: &Point| p.assigned) as fn(&Point) -> usize,
        ),
        ("ready", "#16a34a", |p: &Point| p.ready),
        ("failed", "#dc2626", |p: &Point| p.failed),
    ] {
        let _ = write!(
            out,
            "<polyline class=\"series-{class}\" fill=\"none\" stroke=\"{colour}\" \
             stroke-width=\"2\" points=\"{}\"/>",
            line(count).trim()
        );
    }
    let _ = write!(
        out,
        "</svg><p class=\"legend\"><span class=\"key-assigned\">assigned {}</span> \
         <span class=\"key-ready\">Ready {}</span> <span class=\"key-failed\">failed {}</span></p>",
        last.assigned, last.ready, last.failed
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(assigned: i64, ready: Option<i64>, failed: Option<i64>) -> Deployment {
        Deployment {
            deployment_id: "d-1".into(),
            commit: "c".into(),
            source: "s".into(),
            assigned_at: assigned,
            applied_at: None,
            ready_at: ready,
            failed_at: failed,
            failure: String::new(),
        }
    }

    #[test]
    fn progress_counts_each_cluster_once_at_every_change() {
        let points = progress(&[
            dep(10, Some(12), None),
            dep(10, None, Some(13)),
            dep(11, Some(15), Some(14)),
        ]);
        let counts: Vec<_> = points
            .iter()
            .map(|p| (p.at, p.assigned, p.ready, p.failed))
            .collect();
        assert_eq!(
            counts,
            vec![
                (10, 2, 0, 0),
                (11, 3, 0, 0),
                (12, 3, 1, 0),
                (13, 3, 1, 1),
                (14, 3, 1, 2),
                // Ready after its failure: recovered.
                (15, 3, 2, 1),
            ]
        );
    }

    #[test]
    fn an_empty_history_draws_a_note_not_a_chart() {
        assert!(!svg(&[], 0).contains("<svg"));
    }

    #[test]
    fn the_chart_ends_at_now_with_the_last_counts() {
        let points = progress(&[dep(100, Some(100), None)]);
        let out = svg(&points, 160);
        assert!(out.contains("id=\"rollout-chart\""), "{out}");
        assert!(out.contains("Ready 1"), "{out}");
        // The Ready line runs at full height to the right edge.
        assert!(out.contains(&format!("{:.1},{:.1}", W - PAD, PAD)), "{out}");
    }
}
