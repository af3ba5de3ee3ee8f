//! The spoke's Prometheus metrics (`--metrics-listen`): how long applies take, how often
//! drift is found, how often the stream to the hub is re-established, and the bundles it
//! enforces by state.

use std::net::SocketAddr;
use std::sync::Arc;

use flotilla_telemetry::hyper::{Method, StatusCode};
use flotilla_telemetry::{METRICS_CONTENT_TYPE, reply, serve_http};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

pub struct SpokeMetrics {
    registry: Registry,
    pub apply_seconds: Histogram,
    pub drift_events: Counter,
    pub reconnects: Counter,
    pub bundles: Family<StateLabel, Gauge>,
}

impl Default for SpokeMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flotilla_spoke");
        let apply_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let drift_events = Counter::default();
        let reconnects = Counter::default();
        let bundles = Family::<StateLabel, Gauge>::default();
        registry.register(
            "apply_seconds",
            "Duration of applying one bundle to the target",
            apply_seconds.clone(),
        );
        registry.register(
            "drift_events",
            "Times the target was found to differ from an applied bundle",
            drift_events.clone(),
        );
        registry.register(
            "reconnects",
            "Sync streams opened after the first",
            reconnects.clone(),
        );
        registry.register(
            "bundles",
            "Bundles this spoke enforces, by state",
            bundles.clone(),
        );
        SpokeMetrics {
            registry,
            apply_seconds,
            drift_events,
            reconnects,
            bundles,
        }
    }
}

impl SpokeMetrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` and `/healthz`; `scrape` refreshes gauges and encodes.
pub async fn serve(
    listen: SocketAddr,
    scrape: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<()> {
    serve_http(listen, 0, move |req| {
        let scrape = scrape.clone();
        async move {
            match (&req.method, req.path.as_str()) {
                (&Method::GET, "/metrics") => reply(StatusCode::OK, METRICS_CONTENT_TYPE, scrape()),
                (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
                _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
            }
        }
    })
    .await
}
