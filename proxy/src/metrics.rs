//! The proxy's Prometheus metrics (served with the API's at `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// Counters and latencies of the proxy. Cheap to clone (shared inside).
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// Answers by status, the proxy's own refusals included.
    pub requests: Family<StatusLabels, Counter>,
    /// Time to the answer's head (for upgrades: to the switch).
    pub duration: Histogram,
    /// TLS handshakes by outcome (`ok`, `failed`, `acme_validation`).
    pub handshakes: Family<OutcomeLabels, Counter>,
    /// Certificate orders by outcome (`issued`, `failed`), and on-demand
    /// requests that ordered nothing: `no_route` (the host name routes to
    /// nothing), `rate_limited` (per-pod or global order limit).
    pub certificates: Family<OutcomeLabels, Counter>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        Self {
            requests: Family::default(),
            duration: Histogram::new(buckets),
            handshakes: Family::default(),
            certificates: Family::default(),
        }
    }
}

impl ProxyMetrics {
    /// Adds them to `registry` (under its prefix, as `proxy_...`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("proxy_requests", "Pod proxy answers by status", self.requests.clone());
        registry.register("proxy_request_duration_seconds", "Pod proxy time to the answer's head", self.duration.clone());
        registry.register("proxy_tls_handshakes", "Pod proxy TLS handshakes by outcome", self.handshakes.clone());
        registry.register("proxy_certificates", "ACME certificate orders by outcome, and on-demand requests not ordered (no_route, rate_limited)", self.certificates.clone());
    }

    pub(crate) fn outcome(family: &Family<OutcomeLabels, Counter>, outcome: &str) {
        family.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }
}
