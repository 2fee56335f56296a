//! The PostgreSQL store's vector search on real vectors, for
//! `scripts/bench/memory.sh`: loads the 100,000 base vectors into project
//! `big` and the 1% "tenant" rows (numbers divisible by 100) again into
//! project `tenant`, through the store's own writes (so its HNSW index is
//! maintained as rows arrive), then answers every query through the
//! store's own search, one at a time, and prints latency and recall@k as
//! JSON. The tenant's rows are 1% of the table and of its one HNSW index:
//! pgvector's iterative scan (and the store's exact fallback) must still
//! return k of them.
//!
//! `pg_ann_bench DIR URL`: DIR as for `ann_bench`; URL a PostgreSQL
//! database with pgvector (the bench starts one on loopback).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/ann_data.rs"]
mod ann_data;

use std::collections::HashMap;
use std::time::Instant;

use ann_data::{percentile, read_f32, read_u32};

use pinacle_memory::layer::Layer;
use pinacle_memory_service::backend::MemoryStore;
use pinacle_memory_service::model::{Filters, Scope};
use pinacle_memory_service::postgres::PgStore;
use pinacle_memory_service::store::{AddResult, NewRow};


const EMBEDDER: &str = "glove-6b-projected-384";

async fn load(store: &PgStore, scope: &Scope, rows: &[(usize, &Vec<f32>)]) -> HashMap<i64, u32> {
    let mut by_rid = HashMap::new();
    for batch in rows.chunks(1000) {
        let new: Vec<(NewRow, bool)> = batch
            .iter()
            .map(|(i, v)| {
                let content = format!("vector {i}");
                (
                    NewRow {
                        id: uuid::Uuid::now_v7().to_string(),
                        version: 1,
                        layer: Layer::Semantic,
                        content_hash: pinacle_memory::dedup::content_hash(&content),
                        content,
                        metadata: Default::default(),
                        embedder: EMBEDDER.into(),
                        vector: (*v).clone(),
                        created_at: 0,
                        occurred_at: 0,
                        session_id: None,
                        expires_at: None,
                        source: None,
                    },
                    false,
                )
            })
            .collect();
        for (r, (i, _)) in store.add(scope, "bench", new).await.unwrap().into_iter().zip(batch) {
            if let AddResult::Written(s) = r {
                by_rid.insert(s.rid, *i as u32);
            }
        }
    }
    by_rid
}

async fn run(store: &PgStore, scope: &Scope, queries: &[Vec<f32>], gt: &[Vec<u32>], k: usize, rows: &HashMap<i64, u32>) -> serde_json::Value {
    let mut lat = Vec::with_capacity(queries.len());
    let (mut hit, mut returned) = (0usize, 0usize);
    for (q, truth) in queries.iter().zip(gt) {
        let t = Instant::now();
        let res = store.nearest(scope, EMBEDDER, q, k, &Filters::default(), &[]).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        returned += res.len().min(k);
        hit += res.iter().take(k).filter(|(rid, _)| rows.get(rid).is_some_and(|n| truth.contains(n))).count();
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

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (dir, url) = (std::path::PathBuf::from(args.next().expect("usage: pg_ann_bench DIR URL")), args.next().expect("usage: pg_ann_bench DIR URL"));
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let (dim, k) = (meta["dim"].as_u64().unwrap() as usize, meta["k"].as_u64().unwrap() as usize);
    let base = read_f32(&dir.join("base.f32"), dim);
    let queries = read_f32(&dir.join("queries.f32"), dim);
    let gt = read_u32(&dir.join("gt.u32"), k);
    let gt_filtered = read_u32(&dir.join("gt_filtered.u32"), k);
    let store = PgStore::connect(&url).await.unwrap();
    let big = Scope { tenant: "team:bench".into(), project: "big".into() };
    let tenant = Scope { tenant: "team:bench".into(), project: "tenant".into() };

    let started = Instant::now();
    let all: Vec<(usize, &Vec<f32>)> = base.iter().enumerate().collect();
    let big_rows = load(&store, &big, &all).await;
    let one_pct: Vec<(usize, &Vec<f32>)> = base.iter().enumerate().filter(|(i, _)| i.is_multiple_of(100)).collect();
    let tenant_rows = load(&store, &tenant, &one_pct).await;
    let build_s = started.elapsed().as_secs_f64();

    let all_res = run(&store, &big, &queries, &gt, k, &big_rows).await;
    let tenant_res = run(&store, &tenant, &queries, &gt_filtered, k, &tenant_rows).await;
    println!(
        "{}",
        serde_json::json!({
            "vectors": base.len() + one_pct.len(),
            "dim": dim,
            "k": k,
            "queries": queries.len(),
            "build_s": build_s,
            "all": all_res,
            "tenant_1pct": tenant_res,
        })
    );
}
