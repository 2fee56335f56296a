//! Approximate nearest neighbours: one HNSW graph (hnsw_rs) per project and
//! embedder, keyed by the store's row ids.
//!
//! Invariants:
//! - the store is the truth: an index is built from the project's current
//!   rows the first time the project is touched (after a restart too), and
//!   every committed write then updates it, so kill -9 loses nothing that
//!   a rebuild does not bring back;
//! - a graph never mixes embedders (the key includes the embedder id);
//! - retired rows stay in the graph but leave the `live` map and are
//!   filtered out of the results; once they outnumber the live ones the
//!   graph is dropped and rebuilt on next use;
//! - an index only ever holds one project's rows, so a tenant filter is
//!   never needed and always returns k results when k exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use hnsw_rs::prelude::{Distance, Hnsw};
use pinacle_memory::layer::Layer;

use crate::model::Scope;

/// 1 − dot product of unit vectors, never below 0 (rounding can push a
/// dot product of two equal unit vectors past 1).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - pinacle_memory::embed::dot(a, b)).max(0.0)
    }
}

/// The graph's shape.
#[derive(Debug, Clone, Copy)]
pub struct HnswParams {
    /// Neighbours per node (M).
    pub connections: usize,
    pub ef_construction: usize,
    /// Candidates examined per search (at least k).
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self { connections: 16, ef_construction: 200, ef_search: 96 }
    }
}

/// The rows a graph's results may include.
#[derive(Default)]
struct Live {
    rows: HashMap<usize, Layer>,
    per_layer: HashMap<Layer, usize>,
}

impl Live {
    fn insert(&mut self, rid: usize, layer: Layer) -> bool {
        if self.rows.insert(rid, layer).is_some() {
            return false;
        }
        *self.per_layer.entry(layer).or_default() += 1;
        true
    }
    fn remove(&mut self, rid: usize) {
        if let Some(l) = self.rows.remove(&rid) {
            if let Some(n) = self.per_layer.get_mut(&l) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// One project's graph.
pub struct ProjectIndex {
    graph: RwLock<Hnsw<'static, f32, UnitCosine>>,
    /// Row id → layer, for the rows still current, and how many per layer.
    live: RwLock<Live>,
    /// Points in the graph, live or not.
    points: std::sync::atomic::AtomicUsize,
    params: HnswParams,
}

impl ProjectIndex {
    /// A graph of `rows` (inserted in parallel).
    pub fn build(rows: Vec<(i64, Layer, Vec<f32>)>, params: HnswParams) -> Self {
        let capacity = rows.len().max(1024);
        let graph = Hnsw::new(params.connections, capacity, 16, params.ef_construction, UnitCosine);
        let data: Vec<(&[f32], usize)> = rows.iter().map(|(rid, _, v)| (v.as_slice(), *rid as usize)).collect();
        if !data.is_empty() {
            graph.parallel_insert_slice(&data);
        }
        let mut live = Live::default();
        for (rid, l, _) in &rows {
            live.insert(*rid as usize, *l);
        }
        Self { graph: RwLock::new(graph), points: rows.len().into(), live: RwLock::new(live), params }
    }

    /// Adds a current row (again is a no-op).
    pub fn insert(&self, rid: i64, layer: Layer, vector: &[f32]) {
        let rid = rid as usize;
        {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            if !live.insert(rid, layer) {
                return;
            }
        }
        let graph = self.graph.write().unwrap_or_else(|p| p.into_inner());
        graph.insert_slice((vector, rid));
        self.points.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes a row out of the results.
    pub fn remove(&self, rid: i64) {
        self.live.write().unwrap_or_else(|p| p.into_inner()).remove(rid as usize);
    }

    /// How many rows are live.
    pub fn len(&self) -> usize {
        self.live.read().unwrap_or_else(|p| p.into_inner()).rows.len()
    }

    /// How many live rows `layers` hold (all when empty).
    pub fn count_in(&self, layers: &[Layer]) -> usize {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        if layers.is_empty() {
            return live.rows.len();
        }
        layers.iter().map(|l| live.per_layer.get(l).copied().unwrap_or(0)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether retired rows outnumber live ones (time to rebuild).
    pub fn is_stale(&self) -> bool {
        let points = self.points.load(std::sync::atomic::Ordering::Relaxed);
        let live = self.len();
        points > 1024 && points > 2 * live
    }

    /// The `k` nearest live rows in `layers` (all when empty): row id and
    /// cosine similarity, best first. The graph is searched unfiltered
    /// (hnsw_rs's filtered search gives up its early exit and walks much of
    /// the graph) for more than `k`, and the results filtered after; when
    /// too few survive, again for more. Fewer than `k` come back when the
    /// asked layers are a small share of the graph: the caller then scans
    /// them exactly.
    pub fn search(&self, query: &[f32], k: usize, layers: &[Layer]) -> Vec<(i64, f32)> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        let keep = |id: &usize| live.rows.get(id).is_some_and(|l| layers.is_empty() || layers.contains(l));
        let graph = self.graph.read().unwrap_or_else(|p| p.into_inner());
        let points = self.points.load(std::sync::atomic::Ordering::Relaxed);
        let mut want = k + (points - live.rows.len().min(points)).min(k);
        loop {
            let ef = self.params.ef_search.max(want);
            let mut seen = std::collections::HashSet::new();
            let found: Vec<(i64, f32)> = graph
                .search_filter(query, want, ef, None)
                .into_iter()
                .filter(|n| keep(&n.d_id) && seen.insert(n.d_id))
                .map(|n| (n.d_id as i64, 1.0 - n.distance))
                .take(k)
                .collect();
            if found.len() >= k || want >= points || want >= MAX_WIDENED.max(k) {
                return found;
            }
            want = (want * 4).min(points);
        }
    }
}

/// The most results one graph search is widened to before the caller scans
/// exactly.
pub const MAX_WIDENED: usize = 1024;

/// A project's graph, built by the first caller that needs it.
pub type IndexCell = Arc<tokio::sync::OnceCell<Arc<ProjectIndex>>>;

/// The loaded graphs, by project and embedder.
#[derive(Default)]
pub struct Indexes {
    map: Mutex<HashMap<(Scope, String), IndexCell>>,
    pub params: HnswParams,
}

impl Indexes {
    pub fn new(params: HnswParams) -> Self {
        Self { map: Default::default(), params }
    }

    /// The cell for a project's graph (filled by the first caller).
    pub fn cell(&self, scope: &Scope, embedder: &str) -> IndexCell {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((scope.clone(), embedder.to_owned())).or_default().clone()
    }

    /// The graph if loaded.
    pub fn loaded(&self, scope: &Scope, embedder: &str) -> Option<Arc<ProjectIndex>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(scope.clone(), embedder.to_owned())).and_then(|c| c.get().cloned())
    }

    /// Forgets a project's graphs (after a purge, or when stale).
    pub fn forget(&self, scope: &Scope) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|(s, _), _| s != scope);
    }

    /// How many graphs and live vectors are loaded.
    pub fn stats(&self) -> (usize, usize) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let loaded: Vec<_> = map.values().filter_map(|c| c.get().cloned()).collect();
        (loaded.len(), loaded.iter().map(|i| i.len()).sum())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pinacle_memory::embed::normalize;

    fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..dim)
                    .map(|_| {
                        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                    })
                    .collect();
                normalize(&mut v);
                v
            })
            .collect()
    }

    #[test]
    fn finds_the_nearest_live_rows_of_the_asked_layers() {
        let vs = vectors(2000, 32, 7);
        let rows: Vec<_> = vs.iter().enumerate().map(|(i, v)| (i as i64 + 1, if i % 2 == 0 { Layer::Semantic } else { Layer::Episodic }, v.clone())).collect();
        let idx = ProjectIndex::build(rows, HnswParams::default());
        // the query is row 11's own vector: it comes first, with similarity 1
        let hits = idx.search(&vs[10], 5, &[]);
        assert_eq!(hits[0].0, 11);
        assert!((hits[0].1 - 1.0).abs() < 1e-4);
        // only episodic rows (even row ids) when asked
        let hits = idx.search(&vs[10], 10, &[Layer::Episodic]);
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(rid, _)| rid % 2 == 0));
        // a removed row is never returned; inserting it again brings it back once
        idx.remove(11);
        assert!(idx.search(&vs[10], 5, &[]).iter().all(|(rid, _)| *rid != 11));
        idx.insert(11, Layer::Semantic, &vs[10]);
        let hits = idx.search(&vs[10], 5, &[]);
        assert_eq!(hits.iter().filter(|(rid, _)| *rid == 11).count(), 1);
        assert_eq!(idx.len(), 2000);
    }

    #[test]
    fn distances_of_equal_unit_vectors_never_go_negative() {
        let v = vectors(1, 384, 3).remove(0);
        assert!(UnitCosine.eval(&v, &v) >= 0.0);
    }
}
