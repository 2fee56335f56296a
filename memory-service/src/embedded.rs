//! The embedded store of `pinacle up`: the SQLite file ([`SqliteStore`])
//! and, in this process, one HNSW graph per project and embedder
//! ([`Indexes`]), built from the file on first use and kept current by
//! every write that goes through here.
//!
//! Invariants: the file is the truth (a graph is only a cache: kill -9
//! loses nothing a rebuild does not bring back); a write reaches the graph
//! only after it committed; a purge or restore drops the project's graphs,
//! rebuilt at the next use.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pinacle_memory::embed::cosine;
use pinacle_memory::layer::Layer;

use crate::backend::MemoryStore;
use crate::error::{MemoryError, Result};
use crate::index::{HnswParams, Indexes, ProjectIndex};
use crate::metrics::MemoryMetrics;
use crate::model::*;
use crate::service::limits;
use crate::store::{AddResult, NewRow, RestoreOutcome, SqliteStore, StaleRow, StoredRow};

/// SQLite and the in-process graphs.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: SqliteStore,
    indexes: Arc<Indexes>,
    metrics: Arc<MemoryMetrics>,
}

impl EmbeddedStore {
    pub fn new(db: SqliteStore, params: HnswParams, metrics: Arc<MemoryMetrics>) -> Self {
        Self { db, indexes: Arc::new(Indexes::new(params)), metrics }
    }

    /// Opens (creating) the SQLite file at `path`.
    pub async fn open(path: &std::path::Path, metrics: Arc<MemoryMetrics>) -> Result<Self> {
        Ok(Self::new(SqliteStore::open(path).await?, HnswParams::default(), metrics))
    }

    /// The SQLite store underneath (tests tamper with rows through it).
    pub fn sqlite(&self) -> &SqliteStore {
        &self.db
    }

    /// The project's graph for `embedder`, built from the file on first use
    /// (and again when stale). A caller arriving while it is being built
    /// waits for it, so a write committed meanwhile is inserted after.
    async fn index(&self, scope: &Scope, embedder: &str) -> Result<Arc<ProjectIndex>> {
        if let Some(i) = self.indexes.loaded(scope, embedder) {
            if !i.is_stale() {
                return Ok(i);
            }
            self.indexes.forget(scope);
        }
        let cell = self.indexes.cell(scope, embedder);
        let params = self.indexes.params;
        let idx = cell
            .get_or_try_init(|| async {
                let started = Instant::now();
                let rows = self.db.index_rows(scope, embedder).await?;
                let n = rows.len();
                let idx = tokio::task::spawn_blocking(move || ProjectIndex::build(rows, params))
                    .await
                    .map_err(|e| MemoryError::Internal(format!("index build: {e}")))?;
                tracing::info!(tenant = %scope.tenant, project = %scope.project, vectors = n, ms = started.elapsed().as_millis() as u64, "memory index built");
                self.metrics.index_builds.inc();
                Ok::<_, MemoryError>(Arc::new(idx))
            })
            .await?;
        Ok(idx.clone())
    }

    async fn inserted(&self, scope: &Scope, rows: &[StoredRow]) -> Result<()> {
        for r in rows {
            self.index(scope, &r.memory.embedder).await?.insert(r.rid, r.memory.layer, &r.vector);
        }
        Ok(())
    }

    fn removed(&self, scope: &Scope, embedder: &str, rids: &[i64]) {
        if let Some(i) = self.indexes.loaded(scope, embedder) {
            for rid in rids {
                i.remove(*rid);
            }
        }
    }
}

fn has_sql_filters(f: &Filters) -> bool {
    !f.metadata.is_empty() || f.since.is_some() || f.until.is_some() || f.session_id.is_some()
}

#[async_trait]
impl MemoryStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn add(&self, scope: &Scope, actor: &str, rows: Vec<(NewRow, bool)>) -> Result<Vec<AddResult>> {
        let out = self.db.add(scope, actor, rows).await?;
        let written: Vec<StoredRow> = out.iter().filter_map(|r| if let AddResult::Written(s) = r { Some(s.clone()) } else { None }).collect();
        self.inserted(scope, &written).await?;
        Ok(out)
    }

    async fn supersede(&self, scope: &Scope, actor: &str, row: NewRow) -> Result<StoredRow> {
        let (old_rid, old_embedder, stored) = self.db.supersede(scope, actor, row).await?;
        self.removed(scope, &old_embedder, &[old_rid]);
        self.inserted(scope, std::slice::from_ref(&stored)).await?;
        Ok(stored)
    }

    async fn delete(&self, scope: &Scope, actor: &str, id: &str) -> Result<Memory> {
        let (rid, m) = self.db.delete(scope, actor, id).await?;
        self.removed(scope, &m.embedder, &[rid]);
        Ok(m)
    }

    async fn replace_source(&self, scope: &Scope, actor: &str, source: &str, rows: Vec<NewRow>) -> Result<(usize, Vec<StoredRow>)> {
        let (gone, added) = self.db.replace_source(scope, actor, source, rows).await?;
        for (rid, embedder) in &gone {
            self.removed(scope, embedder, &[*rid]);
        }
        self.inserted(scope, &added).await?;
        Ok((gone.len(), added))
    }

    async fn purge(&self, scope: &Scope, actor: &str) -> Result<u64> {
        let n = self.db.purge(scope, actor).await?;
        self.indexes.forget(scope);
        Ok(n)
    }

    async fn restore(&self, scope: &Scope, actor: &str, seq: i64) -> Result<RestoreOutcome> {
        let out = self.db.restore(scope, actor, seq).await?;
        // rebuilt from the file at the next search
        self.indexes.forget(scope);
        Ok(out)
    }

    async fn append_events(&self, batch: &[(Scope, Record)]) -> Result<()> {
        self.db.append_events(batch).await
    }

    async fn get(&self, scope: &Scope, id: &str) -> Result<StoredRow> {
        self.db.get(scope, id).await
    }

    async fn rows(&self, scope: &Scope, rids: &[i64], filters: &Filters) -> Result<Vec<StoredRow>> {
        self.db.rows(scope, rids, filters).await
    }

    async fn list(&self, scope: &Scope, filters: &Filters, limit: usize, cursor: Option<i64>) -> Result<(Vec<Memory>, Option<i64>)> {
        self.db.list(scope, filters, limit, cursor).await
    }

    async fn keyword(&self, scope: &Scope, query: &str, layers: &[Layer], limit: usize) -> Result<Vec<i64>> {
        self.db.keyword(scope, query, layers, limit).await
    }

    /// The graph, unless filters the graph does not know apply or the asked
    /// layers are a small share of it: then an exact scan (bounded by
    /// [`limits::EXACT_SCAN`]; past it, a widened graph search).
    async fn nearest(&self, scope: &Scope, embedder: &str, query: &[f32], k: usize, filters: &Filters, layers: &[Layer]) -> Result<Vec<(i64, f32)>> {
        let index = self.index(scope, embedder).await?;
        let in_layers = index.count_in(layers);
        let selective = in_layers * 10 < index.len() && in_layers <= limits::EXACT_SCAN;
        if !has_sql_filters(filters) && !selective {
            let hits = index.search(query, k, layers);
            if hits.len() >= k.min(in_layers) {
                return Ok(hits);
            }
        }
        let rows = self.db.candidates(scope, filters, embedder, limits::EXACT_SCAN).await?;
        if rows.len() > limits::EXACT_SCAN {
            return Ok(index.search(query, k * 10, layers));
        }
        let mut scored: Vec<(i64, f32)> = rows.iter().map(|(rid, v)| (*rid, cosine(query, v))).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        Ok(scored)
    }

    async fn most_similar(&self, scope: &Scope, embedder: &str, vector: &[f32], layer: Layer) -> Result<Option<(i64, f32)>> {
        Ok(self.index(scope, embedder).await?.search(vector, 1, &[layer]).into_iter().next())
    }

    async fn history(&self, scope: &Scope, id: &str) -> Result<History> {
        self.db.history(scope, id).await
    }

    async fn log(&self, scope: &Scope, log: LogName, after: i64, limit: usize) -> Result<Vec<LogEntry>> {
        self.db.log(scope, log, after, limit).await
    }

    async fn verify(&self, scope: &Scope, log: LogName) -> Result<Verification> {
        self.db.verify(scope, log).await
    }

    async fn position(&self, scope: &Scope) -> Result<Position> {
        self.db.position(scope).await
    }

    async fn mark_position(&self, scope: &Scope, label: &str) -> Result<Position> {
        self.db.mark_position(scope, label).await
    }

    async fn marked_position(&self, scope: &Scope, label: &str) -> Result<Option<i64>> {
        self.db.marked_position(scope, label).await
    }

    async fn rows_at(&self, scope: &Scope, seq: i64, cap: usize) -> Result<Vec<StoredRow>> {
        self.db.rows_at(scope, seq, cap).await
    }

    async fn stale_count(&self, scope: &Scope, embedder: &str) -> Result<i64> {
        self.db.stale_count(scope, embedder).await
    }

    async fn stale_rows(&self, scope: &Scope, embedder: &str, limit: usize) -> Result<Vec<StaleRow>> {
        self.db.stale_rows(scope, embedder, limit).await
    }

    async fn set_vectors(&self, scope: &Scope, embedder: &str, rows: &[(StaleRow, Vec<f32>)]) -> Result<usize> {
        let plain: Vec<(i64, Vec<f32>)> = rows.iter().map(|(r, v)| (r.rid, v.clone())).collect();
        let changed: std::collections::HashSet<i64> = self.db.set_vectors(scope, embedder, &plain).await?.into_iter().collect();
        // out of the old embedder's graph, into the new one's: only the
        // rows that changed (not those retired meanwhile)
        let index = self.index(scope, embedder).await?;
        for (r, v) in rows.iter().filter(|(r, _)| changed.contains(&r.rid)) {
            self.removed(scope, &r.embedder, &[r.rid]);
            index.insert(r.rid, r.layer, v);
        }
        // a row retired between the update and the insert above was taken
        // out of this graph before it was put back: take it out again
        let ids: Vec<i64> = changed.iter().copied().collect();
        let still: std::collections::HashSet<i64> = self.db.rows(scope, &ids, &Filters::default()).await?.into_iter().map(|r| r.rid).collect();
        for rid in changed.iter().filter(|rid| !still.contains(rid)) {
            index.remove(*rid);
        }
        Ok(changed.len())
    }

    async fn layer_counts(&self) -> Result<Vec<(String, i64)>> {
        self.db.layer_counts().await
    }

    fn index_stats(&self) -> (usize, usize) {
        self.indexes.stats()
    }
}
