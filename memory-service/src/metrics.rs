//! The memory service's Prometheus metrics (registered into the server's
//! registry under `pinacle_memory_…`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
    pub layer: String,
}

pub struct MemoryMetrics {
    /// Seconds per operation (`add`, `search`, `embed`…) and layer.
    pub op_seconds: Family<OpLabels, Histogram>,
    /// Writes by layer and kind.
    pub writes: Family<OpLabels, Counter>,
    /// Current memories per layer (set when scraped).
    pub memories: Family<OpLabels, Gauge>,
    /// Vector graphs built (at first use, and when stale).
    pub index_builds: Counter,
    /// Graphs in memory, and the live vectors they hold.
    pub index_graphs: Gauge,
    pub index_vectors: Gauge,
    /// Chain verifications that found a break.
    pub chain_breaks: Counter,
}

fn buckets() -> impl Iterator<Item = f64> {
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0].into_iter()
}

impl Default for MemoryMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryMetrics {
    pub fn new() -> Self {
        Self {
            op_seconds: Family::new_with_constructor(|| Histogram::new(buckets())),
            writes: Default::default(),
            memories: Default::default(),
            index_builds: Default::default(),
            index_graphs: Default::default(),
            index_vectors: Default::default(),
            chain_breaks: Default::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("memory");
        r.register("operation_seconds", "Memory operations' latency by operation and layer", self.op_seconds.clone());
        r.register("writes", "Memory writes by operation and layer", self.writes.clone());
        r.register("memories", "Current memories by layer", self.memories.clone());
        r.register("index_builds", "Vector indexes built from the store", self.index_builds.clone());
        r.register("index_graphs", "Vector graphs in memory", self.index_graphs.clone());
        r.register("index_vectors", "Live vectors in the graphs in memory", self.index_vectors.clone());
        r.register("chain_breaks", "Log verifications that found a broken chain", self.chain_breaks.clone());
    }

    pub fn observe(&self, op: &str, layer: &str, secs: f64) {
        self.op_seconds.get_or_create(&OpLabels { op: op.into(), layer: layer.into() }).observe(secs);
    }

    pub fn writes(&self, layer: &str, op: &str) {
        self.writes.get_or_create(&OpLabels { op: op.into(), layer: layer.into() }).inc();
    }
}
