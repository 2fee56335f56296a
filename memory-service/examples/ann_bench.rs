//! The vector index on real vectors, for `scripts/bench/memory.sh`:
//! builds the graph the service uses (same parameters), answers every
//! query one at a time and prints latency and recall@k as JSON.
//!
//! `ann_bench DIR`: DIR holds `base.f32` and `queries.f32` (little-endian
//! f32 rows of `dim` values, unit length), `gt.u32` (the exact top-k row
//! numbers per query), `gt_filtered.u32` (the same among the rows whose
//! number is a multiple of 100: the 1% "tenant") and `meta.json`
//! (`{"dim", "k"}`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/ann_data.rs"]
mod ann_data;

use std::time::Instant;

use ann_data::{percentile, read_f32, read_u32};

use pinacle_memory::layer::Layer;
use pinacle_memory_service::index::{HnswParams, ProjectIndex};


/// Latencies (ms) and recall of `search` over the queries.
fn run(queries: &[Vec<f32>], gt: &[Vec<u32>], k: usize, search: impl Fn(&[f32]) -> Vec<(i64, f32)>) -> serde_json::Value {
    let mut lat = Vec::with_capacity(queries.len());
    let (mut hit, mut returned) = (0usize, 0usize);
    for (q, truth) in queries.iter().zip(gt) {
        let t = Instant::now();
        let res = search(q);
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        returned += res.len().min(k);
        // row ids are stored +1 (the store's row ids start at 1)
        hit += res.iter().take(k).filter(|(rid, _)| truth.contains(&((*rid - 1) as u32))).count();
    }
    lat.sort_by(f64::total_cmp);
    serde_json::json!({
        "p50_ms": percentile(&lat, 0.5),
        "p95_ms": percentile(&lat, 0.95),
        "p99_ms": percentile(&lat, 0.99),
        "recall_at_k": hit as f64 / (queries.len() * k) as f64,
        "mean_returned": returned as f64 / queries.len() as f64,
    })
}

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: ann_bench DIR"));
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let (dim, k) = (meta["dim"].as_u64().unwrap() as usize, meta["k"].as_u64().unwrap() as usize);
    let base = read_f32(&dir.join("base.f32"), dim);
    let queries = read_f32(&dir.join("queries.f32"), dim);
    let gt = read_u32(&dir.join("gt.u32"), k);
    let gt_filtered = read_u32(&dir.join("gt_filtered.u32"), k);
    let params = HnswParams::default();
    // the 1% "tenant" is one layer of the project's graph here
    let layer_of = |i: usize| if i.is_multiple_of(100) { Layer::Episodic } else { Layer::Semantic };
    let rows: Vec<(i64, Layer, Vec<f32>)> = base.iter().enumerate().map(|(i, v)| (i as i64 + 1, layer_of(i), v.clone())).collect();
    let t = Instant::now();
    let index = ProjectIndex::build(rows, params);
    let build_s = t.elapsed().as_secs_f64();
    let all = run(&queries, &gt, k, |q| index.search(q, k, &[]));
    let filtered_graph = run(&queries, &gt_filtered, k, |q| index.search(q, k, &[Layer::Episodic]));
    // what the service does when the asked layers are under a tenth of the
    // graph: an exact scan of their rows (here from memory; the service
    // reads them from SQLite)
    let tenant: Vec<(i64, &Vec<f32>)> = base.iter().enumerate().filter(|(i, _)| i.is_multiple_of(100)).map(|(i, v)| (i as i64 + 1, v)).collect();
    assert!(index.count_in(&[Layer::Episodic]) * 10 < index.len(), "the service would not scan exactly");
    let filtered_service = run(&queries, &gt_filtered, k, |q| {
        let mut scored: Vec<(i64, f32)> = tenant.iter().map(|(rid, v)| (*rid, pinacle_memory::embed::cosine(q, v))).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored
    });
    // Pinacle's layout: one graph per project, so a tenant's search never
    // filters at all
    let own: Vec<(i64, Layer, Vec<f32>)> = tenant.iter().map(|(rid, v)| (*rid, Layer::Semantic, (*v).clone())).collect();
    let own_index = ProjectIndex::build(own, params);
    let per_project = run(&queries, &gt_filtered, k, |q| own_index.search(q, k, &[]));
    println!(
        "{}",
        serde_json::json!({
            "vectors": base.len(), "dim": dim, "queries": queries.len(), "k": k,
            "m": params.connections, "ef_construction": params.ef_construction, "ef_search": params.ef_search,
            "build_s": build_s,
            "all": all,
            "filtered_1pct_graph_only": filtered_graph,
            "filtered_1pct_service": filtered_service,
            "per_project_graph_1pct": per_project,
        })
    );
}
