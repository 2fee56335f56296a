//! Prometheus metrics served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// An SSH sign-in's outcome: `accepted`, `refused` or `rate_limited`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// What an SSH channel runs: `shell`, `exec`, `sftp` or `forward`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// The server's metrics.
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub pods: Family<StateLabels, Gauge>,
    pub transitions: Family<StateLabels, Counter>,
    pub provision_seconds: Histogram,
    /// SSH gateway sign-ins by outcome.
    pub ssh_sign_ins: Family<OutcomeLabels, Counter>,
    /// SSH gateway channels started, by kind.
    pub ssh_sessions: Family<KindLabels, Counter>,
    /// The pod proxy's, when it runs in this process.
    pub proxy: pinacle_proxy::metrics::ProxyMetrics,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0].into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pinacle");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        let pods = Family::<StateLabels, Gauge>::default();
        let transitions = Family::<StateLabels, Counter>::default();
        let provision_seconds = Histogram::new(latency_buckets());
        registry.register("http_requests", "HTTP requests answered", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", http_duration.clone());
        registry.register("pods", "Pods by state", pods.clone());
        registry.register("pod_transitions", "Pod state changes by new state", transitions.clone());
        registry.register(
            "pod_ready_seconds",
            "Time from pod request to running",
            provision_seconds.clone(),
        );
        let ssh_sign_ins = Family::<OutcomeLabels, Counter>::default();
        let ssh_sessions = Family::<KindLabels, Counter>::default();
        registry.register("ssh_sign_ins", "SSH gateway sign-ins by outcome", ssh_sign_ins.clone());
        registry.register("ssh_sessions", "SSH gateway channels started, by kind", ssh_sessions.clone());
        let proxy = pinacle_proxy::metrics::ProxyMetrics::default();
        proxy.register(&mut registry);
        Self { registry, http_requests, http_duration, pods, transitions, provision_seconds, ssh_sign_ins, ssh_sessions, proxy }
    }
}

