//! Micro-benchmarks of the pure hot paths (issue 6, point 5): selector matching over
//! 10,000 clusters, rendering a bundle, and summarising 500,000 states.
//! Run: `cargo bench -p flotilla-bench --bench micro`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use flotilla_model::{LabelSelector, Labels, State, Summary};

fn clusters(n: usize) -> Vec<Labels> {
    (0..n)
        .map(|i| {
            let mut l = Labels::new();
            l.insert("env".into(), ["dev", "test", "prod"][i % 3].into());
            l.insert("region".into(), ["eu", "us", "ap", "sa"][i % 4].into());
            l.insert("tier".into(), format!("t{}", i % 10));
            if i % 7 == 0 {
                l.insert("canary".into(), "true".into());
            }
            l
        })
        .collect()
}

fn selector_matching(c: &mut Criterion) {
    let fleet = clusters(10_000);
    let sel: LabelSelector = "env=prod,region in (eu,us),!canary"
        .parse()
        .unwrap_or_default();
    c.bench_function("selector: match 10,000 clusters", |b| {
        b.iter(|| black_box(&fleet).iter().filter(|l| sel.matches(l)).count())
    });
}

fn rendering(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet-repo/web");
    let limits = flotilla_render::Limits::default();
    let mut labels = Labels::new();
    labels.insert("env".into(), "prod".into());
    let info = flotilla_render::ClusterInfo {
        name: "p1".into(),
        labels,
        groups: Vec::new(),
        capabilities: None,
    };
    c.bench_function(
        "render: load and render examples/fleet-repo/web (prod overlay)",
        |b| {
            b.iter(|| {
                let bundle = flotilla_render::load_bundle_dir(&dir, "web", &limits).ok()?;
                bundle
                    .render(black_box(&info))
                    .ok()
                    .map(|r| r.digest.clone())
            })
        },
    );
}

fn summarising(c: &mut Criterion) {
    let states: Vec<State> = (0..500_000)
        .map(|i| State::ALL[if i % 97 == 0 { i % 8 } else { 0 }])
        .collect();
    c.bench_function(
        "status: summarise 500,000 states (10,000 clusters x 50 bundles)",
        |b| {
            b.iter(|| {
                let s: Summary = black_box(&states).iter().copied().collect();
                s.worst()
            })
        },
    );
}

criterion_group!(benches, selector_matching, rendering, summarising);
criterion_main!(benches);
