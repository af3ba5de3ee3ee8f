//! The hub's Prometheus metrics. Counters and histograms are updated where things happen;
//! gauges that summarise fleet state (clusters and deployments by state, connected
//! spokes) are computed from `Fleet` at scrape time, so they can never drift.

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

/// Which port a connection came in on (`grpc`, `http`) and how far it has got
/// (`unauthenticated`: TCP or TLS without a client certificate; `authenticated`: a
/// verified client certificate; `open` on the HTTP port, which has no such distinction).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub listener: &'static str,
    pub state: &'static str,
}

/// Why the hub closed a connection before its peer did: `evicted` (a newer
/// unauthenticated connection took its place in a full pool) or `over_budget` (the
/// authenticated budget was full).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

/// One bundle of one source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BundleLabels {
    pub source: String,
    pub bundle: String,
}

pub struct HubMetrics {
    registry: Registry,
    pub connected_spokes: Gauge,
    /// 1 while this hub runs the leader-only work (always on redb; one replica on etcd).
    pub leader: Gauge,
    /// Distinct rendered contents held (current and last-good revisions only, after GC).
    pub contents: Gauge,
    pub clusters: Family<StateLabel, Gauge>,
    pub deployments: Family<StateLabel, Gauge>,
    /// fleet.yaml warnings (unknown keys and the like) of each bundle's current revision.
    pub bundle_warnings: Family<BundleLabels, Gauge>,
    /// Seconds from a new deployment being assigned to a cluster until it reports Ready.
    pub fanout_seconds: Histogram,
    pub git_poll_seconds: Histogram,
    pub git_poll_errors: Counter,
    pub assigns_sent: Counter,
    /// Rendered content bytes carried in Assign messages (zero when the spoke had it).
    pub assign_content_bytes: Counter,
    pub webhooks_accepted: Counter,
    pub webhooks_rejected: Counter,
    /// Open connections by listener and state (see `ConnectionLabels`).
    pub connections: Family<ConnectionLabels, Gauge>,
    /// Connections the hub closed to stay within its connection budgets.
    pub connections_dropped: Family<DroppedLabels, Counter>,
    /// Bundle renders (render cache misses): one per distinct customization, values and,
    /// for charts that read them, cluster capabilities.
    pub renders: Counter,
    /// Remote chart fetches that failed (the bundle keeps its last good revision).
    pub chart_fetch_errors: Counter,
}

impl Default for HubMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flotilla_hub");
        let m = HubMetrics {
            connected_spokes: Gauge::default(),
            leader: Gauge::default(),
            contents: Gauge::default(),
            clusters: Family::default(),
            deployments: Family::default(),
            bundle_warnings: Family::default(),
            fanout_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            git_poll_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            git_poll_errors: Counter::default(),
            assigns_sent: Counter::default(),
            assign_content_bytes: Counter::default(),
            webhooks_accepted: Counter::default(),
            webhooks_rejected: Counter::default(),
            connections: Family::default(),
            connections_dropped: Family::default(),
            renders: Counter::default(),
            chart_fetch_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connected_spokes",
            "Spokes with an open Sync stream",
            m.connected_spokes.clone(),
        );
        registry.register(
            "leader",
            "1 while this hub polls, renders and publishes (the elected replica on etcd)",
            m.leader.clone(),
        );
        registry.register(
            "rendered_contents",
            "Distinct rendered bundle contents held in memory and the store",
            m.contents.clone(),
        );
        registry.register(
            "clusters",
            "Registered clusters by worst bundle state",
            m.clusters.clone(),
        );
        registry.register(
            "bundle_deployments",
            "Bundle deployments by state",
            m.deployments.clone(),
        );
        registry.register(
            "bundle_warnings",
            "fleet.yaml warnings of each bundle's current revision",
            m.bundle_warnings.clone(),
        );
        registry.register(
            "fanout_seconds",
            "Time from assigning a deployment to the spoke reporting it Ready",
            m.fanout_seconds.clone(),
        );
        registry.register(
            "git_poll_seconds",
            "Duration of git polls (fetch, tree index, load)",
            m.git_poll_seconds.clone(),
        );
        registry.register(
            "renders",
            "Bundle renders: one per distinct render key, shared by every cluster with that key",
            m.renders.clone(),
        );
        registry.register(
            "chart_fetch_errors",
            "Remote Helm chart fetches that failed",
            m.chart_fetch_errors.clone(),
        );
        registry.register(
            "git_poll_errors",
            "Failed git polls",
            m.git_poll_errors.clone(),
        );
        registry.register(
            "assigns_sent",
            "Assign messages sent to spokes",
            m.assigns_sent.clone(),
        );
        registry.register(
            "assign_content_bytes",
            "Rendered content bytes sent in Assign messages",
            m.assign_content_bytes.clone(),
        );
        registry.register(
            "webhooks_accepted",
            "Webhook deliveries with a valid signature",
            m.webhooks_accepted.clone(),
        );
        registry.register(
            "webhooks_rejected",
            "Webhook deliveries refused",
            m.webhooks_rejected.clone(),
        );
        registry.register(
            "connections",
            "Open connections by listener and state",
            m.connections.clone(),
        );
        registry.register(
            "connections_dropped",
            "Connections closed by the hub to stay within its connection budgets",
            m.connections_dropped.clone(),
        );
        HubMetrics { registry, ..m }
    }
}

impl HubMetrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
