//! Observability plumbing shared by `flotilla-hub` and `flotilla-spoke`: log setup
//! (`--log-level`, `--log-format text|json`) and a small plain-HTTP listener
//! (`http_listener`) with the connection budget and deadlines it shares with the hub's
//! gRPC port (`admission`).
//!
//! **Architecture Invariant:** nothing here knows about fleets, bundles or metrics
//! contents; callers bring their own routes and registries.
#![forbid(unsafe_code)]

pub mod admission;
mod http_listener;

pub use http_listener::{
    DEFAULT_MAX_CONNECTIONS, HttpLimits, HttpRequest, HttpResponse, METRICS_CONTENT_TYPE, reply,
    serve_http, serve_http_with,
};
pub use hyper;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr with an `EnvFilter` directive; colours only on a terminal.
pub fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
