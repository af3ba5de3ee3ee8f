//! `flotilla-hub`: parses arguments and hands over to `flotilla_hub::cli::run`.

use clap::Parser;

/// jemalloc instead of glibc malloc: it returns freed pages to the system (after a
/// decay), where glibc keeps them resident in its arenas. With thousands of idle spoke
/// connections the hub's RSS per spoke was 44.7 KiB on glibc and 35.2 KiB on jemalloc
/// (`docs/benchmarks.md`, memory per idle spoke).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    // gix's https client and tonic share rustls; pick the ring provider once, up front.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = flotilla_hub::cli::Args::parse();
    flotilla_hub::cli::init_tracing(&args.log);
    if let Err(e) = flotilla_hub::cli::run(args).await {
        // One line with the cause chain, never a backtrace (even with RUST_BACKTRACE set).
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
