//! The router's Prometheus metrics (registered into the server's registry
//! under `pinacle_aion_…`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `chat`, `task`, `embeddings`.
    pub api: String,
    /// `succeeded`, `failed`, `cancelled`, `refused`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Upstream {
    pub provider: String,
    /// `ok` or an error code (`rate_limited`, `upstream_5xx`, `cut`, ...).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Debug, Clone)]
pub struct AionMetrics {
    /// Requests by API and outcome (their rate is the RPS).
    pub requests: Family<Outcome, Counter>,
    /// Whole-request seconds by API and outcome.
    pub request_seconds: Family<Outcome, Histogram>,
    /// Upstream calls by provider and result.
    pub upstream_calls: Family<Upstream, Counter>,
    /// Time to the first chunk (streams) or the answer, by provider.
    pub upstream_first_seconds: Family<Upstream, Histogram>,
    /// Spend in micro-dollars by model.
    pub spend_micros: Family<ModelLabel, Counter>,
    /// Tokens by model.
    pub tokens: Family<ModelLabel, Counter>,
    /// Requests being served now.
    pub in_flight: Gauge,
    /// Reservations refused for a budget.
    pub budget_refusals: Counter,
    /// Registry reloads that were refused for errors.
    pub reload_failures: Counter,
}

fn buckets() -> impl Iterator<Item = f64> {
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0].into_iter()
}

impl Default for AionMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| Histogram::new(buckets())),
            upstream_calls: Family::default(),
            upstream_first_seconds: Family::new_with_constructor(|| Histogram::new(buckets())),
            spend_micros: Family::default(),
            tokens: Family::default(),
            in_flight: Gauge::default(),
            budget_refusals: Counter::default(),
            reload_failures: Counter::default(),
        }
    }
}

impl AionMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("aion");
        r.register("requests", "Router requests by API and outcome", self.requests.clone());
        r.register("request_seconds", "Router request latency by API and outcome", self.request_seconds.clone());
        r.register("upstream_calls", "Calls to providers by result", self.upstream_calls.clone());
        r.register("upstream_first_seconds", "Providers' time to first chunk (or answer)", self.upstream_first_seconds.clone());
        r.register("spend_micro_usd", "Spend by model in micro-dollars", self.spend_micros.clone());
        r.register("tokens", "Tokens by model (input and output)", self.tokens.clone());
        r.register("in_flight", "Router requests being served (queue depth)", self.in_flight.clone());
        r.register("budget_refusals", "Requests refused for a budget", self.budget_refusals.clone());
        r.register("registry_reload_failures", "Registry reloads refused for errors", self.reload_failures.clone());
    }

    pub fn upstream(&self, provider: &str, result: &str) {
        self.upstream_calls.get_or_create(&Upstream { provider: provider.to_owned(), result: result.to_owned() }).inc();
    }
}
