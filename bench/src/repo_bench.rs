//! Repo-side figures of issue 6: (f) renderer throughput on a generated repo of many
//! bundles, and (g) the hub's gix fetch of a new commit against the `git fetch` CLI on
//! the same repo, in the same run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use flotilla_model::Labels;

use crate::repo::{FleetRepo, git};
use crate::stats::median;

pub struct RenderRun {
    pub bundles: usize,
    pub objects: usize,
    pub discover: Duration,
    pub render: Duration,
}

/// Discovers and renders every bundle of a `bundles`-bundle repo for one cluster.
pub fn render_throughput(
    work: &Path,
    bundles: usize,
    bundle_bytes: usize,
    runs: usize,
) -> Result<Vec<RenderRun>> {
    let repo = FleetRepo::create(&work.join("render-repo"), bundles, bundle_bytes)?;
    let limits = flotilla_render::Limits::default();
    let mut labels = Labels::new();
    labels.insert("env".into(), "prod".into());
    let info = flotilla_render::ClusterInfo {
        name: "bench".into(),
        labels,
        groups: Vec::new(),
        capabilities: None,
    };
    let mut out = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let loaded = flotilla_render::discover(&repo.dir, "bench", &[".".to_string()], &limits);
        let discover = t.elapsed();
        let t = Instant::now();
        let mut objects = 0;
        for lb in &loaded {
            let bundle = lb
                .result
                .as_ref()
                .map_err(|d| anyhow::anyhow!("bundle {} failed: {d:?}", lb.name))?;
            let r = bundle
                .render(&info)
                .map_err(|d| anyhow::anyhow!("render {}: {d:?}", lb.name))?;
            objects += r.objects.len();
        }
        out.push(RenderRun {
            bundles: loaded.len(),
            objects,
            discover,
            render: t.elapsed(),
        });
    }
    Ok(out)
}

pub struct FetchRun {
    pub gix: Duration,
    pub git_cli: Duration,
}

/// For each run: commit a change, then fetch it with the hub's gix code into one mirror
/// and with `git fetch` into another, timing each.
pub fn fetch_ratio(
    work: &Path,
    bundles: usize,
    bundle_bytes: usize,
    runs: usize,
) -> Result<Vec<FetchRun>> {
    let repo = FleetRepo::create(&work.join("fetch-repo"), bundles, bundle_bytes)?;
    let url = format!("file://{}", repo.dir.display());
    let gix_mirror = work.join("gix-mirror.git");
    let cli_mirror = work.join("cli-mirror.git");
    // Initial copies, not timed.
    flotilla_hub::git::fetch_branch(&gix_mirror, &url, "main", u64::MAX)?;
    git(work, &["clone", "-q", "--bare", &url, "cli-mirror.git"])?;
    let mut out = Vec::new();
    for run in 0..runs {
        repo.change_bundle(run % bundles.max(1), run as u64 + 1)?;
        let t = Instant::now();
        flotilla_hub::git::fetch_branch(&gix_mirror, &url, "main", u64::MAX)?;
        let gix = t.elapsed();
        let t = Instant::now();
        git(
            &cli_mirror,
            &["fetch", "-q", &url, "+refs/heads/main:refs/heads/main"],
        )?;
        out.push(FetchRun {
            gix,
            git_cli: t.elapsed(),
        });
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn report_render(runs: &[RenderRun]) -> String {
    let mut s = String::from(
        "(f) Renderer: discover and render every bundle of a generated repo for one cluster\n\n| run | bundles | objects | discover (load, render every customization) | render for the cluster | bundles/s (both) |\n|---|---|---|---|---|---|\n",
    );
    for (i, r) in runs.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} ms | {:.1} ms | {:.0} |\n",
            i + 1,
            r.bundles,
            r.objects,
            ms(r.discover),
            ms(r.render),
            r.bundles as f64 / (r.discover + r.render).as_secs_f64().max(1e-9)
        ));
    }
    let d = median(runs.iter().map(|r| ms(r.discover))).unwrap_or(0.0);
    let re = median(runs.iter().map(|r| ms(r.render))).unwrap_or(0.0);
    let n = runs.first().map_or(0, |r| r.bundles) as f64;
    s.push_str(&format!(
        "| median | | | {d:.1} ms | {re:.1} ms | {:.0} |\n",
        n / ((d + re) / 1000.0).max(1e-9)
    ));
    s
}

pub fn report_fetch(runs: &[FetchRun]) -> String {
    let mut s = String::from(
        "(g) Fetch of one new commit: the hub's gix code against `git fetch`, same repo, same run\n\n| run | gix | git fetch | gix / git |\n|---|---|---|---|\n",
    );
    for (i, r) in runs.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {:.1} ms | {:.1} ms | {:.2} |\n",
            i + 1,
            ms(r.gix),
            ms(r.git_cli),
            ms(r.gix) / ms(r.git_cli).max(1e-9)
        ));
    }
    let g = median(runs.iter().map(|r| ms(r.gix))).unwrap_or(0.0);
    let c = median(runs.iter().map(|r| ms(r.git_cli))).unwrap_or(0.0);
    s.push_str(&format!(
        "| median | {g:.1} ms | {c:.1} ms | {:.2} |\n",
        g / c.max(1e-9)
    ));
    s
}
