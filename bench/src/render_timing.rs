//! Timing of flotilla's own in-process render of a bundle folder, shared by the
//! `render_vs_*` benchmarks that compare it with a reference tool run as a child process.

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_render::{ClusterInfo, Limits, load_bundle_dir};

use crate::stats::median;

/// Loads and renders `dir` as one bundle `runs` times (at least once): the median time
/// of a load plus a render, and how many objects the render made.
pub fn time_render(dir: &Path, runs: usize) -> Result<(Duration, usize), String> {
    let mut times = Vec::with_capacity(runs.max(1));
    let mut objects = 0;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let bundle = load_bundle_dir(dir, "bench", &Limits::default())
            .map_err(|e| format!("{}: {e:?}", dir.display()))?;
        let rendered = bundle
            .render(&ClusterInfo::default())
            .map_err(|e| format!("{}: {e:?}", dir.display()))?;
        times.push(start.elapsed());
        objects = rendered.objects.len();
    }
    Ok((median(times).unwrap_or_default(), objects))
}
