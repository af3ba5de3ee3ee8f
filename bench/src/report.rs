//! Tables for the terminal and for `docs/benchmarks.md`: one per measurement, each run a
//! row, the median last, the target beside it.

use std::fmt::Write as _;
use std::time::Duration;

use crate::fleet::{FanoutResult, FleetConfig, RunResult};
use crate::machine::Machine;
use crate::stats::median;

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), secs)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn med_dur(v: impl IntoIterator<Item = Duration>) -> String {
    median(v).map_or("-".into(), secs)
}

/// The whole fleet report: registration, idle memory, initial rollout, fan-outs, bytes.
pub fn fleet(cfg: &FleetConfig, machine: &Machine, runs: &[RunResult]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{machine}");
    let _ = writeln!(
        o,
        "fleet: {} simulated spokes, {} bundles of {} B payload, {} run(s) × {} fan-out(s), \
         {} enrollments in flight, source poll every {} s, heartbeat every {} s",
        cfg.spokes,
        cfg.bundles,
        cfg.bundle_bytes,
        runs.len(),
        cfg.fanouts,
        cfg.concurrency,
        cfg.interval_secs,
        cfg.heartbeat.as_secs()
    );
    let failed: usize = runs.iter().map(|r| r.failed_spokes).sum();
    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    let _ = writeln!(
        o,
        "failed spokes: {failed}; spoke-side errors (retried): {errors}{}",
        runs.iter()
            .find_map(|r| r.first_failure.clone())
            .map(|e| format!("; first: {e}"))
            .unwrap_or_default()
    );

    let _ = writeln!(
        o,
        "\n(a) Registration: enroll (pin CA, key, CSR, Register) and open Sync\n"
    );
    let _ = writeln!(
        o,
        "| run | spokes connected | all connected after | spokes/s | hub CPU |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        let g = &r.register;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.0} | {:.1} s |",
            i + 1,
            g.connected,
            secs(g.duration),
            g.connected as f64 / g.duration.as_secs_f64().max(1e-9),
            g.hub_cpu_secs
        );
    }
    let _ = writeln!(
        o,
        "| median | | {} | | {:.1} s |",
        med_dur(runs.iter().map(|r| r.register.duration)),
        median(runs.iter().map(|r| r.register.hub_cpu_secs)).unwrap_or(0.0)
    );

    let _ = writeln!(
        o,
        "\n(d) Hub memory with idle connected spokes (target: ≤ 64 KiB per spoke)\n"
    );
    let _ = writeln!(
        o,
        "| run | hub RSS, no spokes | hub RSS, N idle | per spoke | hub fds | bench RSS |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        let g = &r.register;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.1} KiB | {} | {} |",
            i + 1,
            mib(g.hub_rss_before),
            mib(g.hub_rss_idle),
            g.hub_bytes_per_spoke() / 1024.0,
            g.hub_fds_idle,
            mib(g.client_rss_idle)
        );
    }
    let _ = writeln!(
        o,
        "| median | | | {:.1} KiB | | |",
        median(runs.iter().map(|r| r.register.hub_bytes_per_spoke())).unwrap_or(0.0) / 1024.0
    );

    if runs.iter().any(|r| r.initial.is_some()) {
        let _ = writeln!(
            o,
            "\n(c) {} bundles × {} spokes from an empty hub until all Ready (target at 10,000 × 50: ≤ 60 s)\n",
            cfg.bundles, cfg.spokes
        );
        let _ = writeln!(
            o,
            "| run | pairs Ready | all Ready (spokes) | hub agrees | hub CPU | hub RSS after |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for (i, r) in runs.iter().enumerate() {
            if let Some(x) = &r.initial {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {:.1} s | {} |",
                    i + 1,
                    x.pairs,
                    secs(x.duration),
                    opt_secs(x.hub_confirmed),
                    x.hub_cpu_secs,
                    mib(x.hub_rss_after)
                );
            }
        }
        let _ = writeln!(
            o,
            "| median | | {} | {} | | |",
            med_dur(
                runs.iter()
                    .filter_map(|r| r.initial.as_ref().map(|x| x.duration))
            ),
            med_dur(
                runs.iter()
                    .filter_map(|r| r.initial.as_ref().and_then(|x| x.hub_confirmed))
            )
        );
    }

    let fans: Vec<(usize, usize, &FanoutResult)> = runs
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.fanouts
                .iter()
                .enumerate()
                .map(move |(j, f)| (i + 1, j + 1, f))
        })
        .collect();
    if !fans.is_empty() {
        let _ = writeln!(
            o,
            "\n(b) Fan-out: commit changing 1 bundle → every spoke Ready, per-spoke latency from the commit \
             (target at 10,000: ≤ 5 s; the source is polled every {} s, so up to that much is poll wait)\n",
            cfg.interval_secs
        );
        let _ = writeln!(
            o,
            "| run.commit | hub published | first Assign | p50 | p99 | max | hub agrees | hub CPU |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
        for (i, j, f) in &fans {
            let _ = writeln!(
                o,
                "| {i}.{j} | {} | {} | {} | {} | {} | {} | {:.2} s |",
                opt_secs(f.published),
                secs(f.first_assign),
                secs(f.p50),
                secs(f.p99),
                secs(f.max),
                opt_secs(f.hub_confirmed),
                f.hub_cpu_secs
            );
        }
        let _ = writeln!(
            o,
            "| median | {} | {} | {} | {} | {} | {} | |",
            med_dur(fans.iter().filter_map(|f| f.2.published)),
            med_dur(fans.iter().map(|f| f.2.first_assign)),
            med_dur(fans.iter().map(|f| f.2.p50)),
            med_dur(fans.iter().map(|f| f.2.p99)),
            med_dur(fans.iter().map(|f| f.2.max)),
            med_dur(fans.iter().filter_map(|f| f.2.hub_confirmed)),
        );
        let _ = writeln!(
            o,
            "| median from publish | | | {} | {} | {} | | |",
            med_dur(
                fans.iter()
                    .filter_map(|f| f.2.published.map(|p| f.2.p50.saturating_sub(p)))
            ),
            med_dur(
                fans.iter()
                    .filter_map(|f| f.2.published.map(|p| f.2.p99.saturating_sub(p)))
            ),
            med_dur(
                fans.iter()
                    .filter_map(|f| f.2.published.map(|p| f.2.max.saturating_sub(p)))
            ),
        );

        let _ = writeln!(
            o,
            "\n(h) Bytes the hub sent per fan-out vs the minimum (rendered bundle × spokes; target ≤ 1.05×)\n"
        );
        let _ = writeln!(
            o,
            "| run.commit | minimum | Assign messages | on the wire (TCP payload) | Assign / min | wire / min |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for (i, j, f) in &fans {
            let m = f.min_bytes.max(1) as f64;
            let _ = writeln!(
                o,
                "| {i}.{j} | {} | {} | {} | {:.3} | {:.3} |",
                f.min_bytes,
                f.assign_bytes,
                f.wire_bytes,
                f.assign_bytes as f64 / m,
                f.wire_bytes as f64 / m
            );
        }
        let _ = writeln!(
            o,
            "| median | | | | {:.3} | {:.3} |",
            median(
                fans.iter()
                    .map(|f| f.2.assign_bytes as f64 / f.2.min_bytes.max(1) as f64)
            )
            .unwrap_or(0.0),
            median(
                fans.iter()
                    .map(|f| f.2.wire_bytes as f64 / f.2.min_bytes.max(1) as f64)
            )
            .unwrap_or(0.0)
        );
    }
    o
}
