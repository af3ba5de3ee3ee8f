//! Loads and renders one bundle folder N times (default 1) and prints the object count:
//! the flotilla side of `render_vs_helm`, alone, for `valgrind --tool=callgrind`.
//!
//! `cargo run --release -p flotilla-render --example render_once -- DIR [N]`

use flotilla_render::{ClusterInfo, Limits, load_bundle_dir};

/// The hub's allocator (`hub/src/main.rs`), so this profile is the hub's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: render_once DIR [N]");
        return std::process::ExitCode::FAILURE;
    };
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut objects = 0;
    for _ in 0..n {
        let bundle = match load_bundle_dir(std::path::Path::new(&dir), "bench", &Limits::default())
        {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{dir}: {e:?}");
                return std::process::ExitCode::FAILURE;
            }
        };
        match bundle.render(&ClusterInfo::default()) {
            Ok(r) => objects = r.objects.len(),
            Err(e) => {
                eprintln!("{dir}: {e:?}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    println!("{objects} objects");
    std::process::ExitCode::SUCCESS
}
