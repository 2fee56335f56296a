//! The memory service: validation, embedding, duplicate checks, hybrid
//! search and the access log, over the store and the vector indexes. The
//! REST API, the MCP tools and the CLI all go through it with a verified
//! [`Caller`], whose scope is the only scope they can touch.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use pinacle_memory::chunk::chunk;
use pinacle_memory::dedup::{content_hash, NEAR_DUPLICATE};
use pinacle_memory::embed::cosine;
use pinacle_memory::fusion::{reciprocal_rank_fusion, RRF_K};
use pinacle_memory::layer::{Layer, LayerKind};

use crate::backend::MemoryStore;
use crate::embedding::Embedding;
use crate::error::{MemoryError, Result};
use crate::metrics::MemoryMetrics;
use crate::model::*;
use crate::store::{now_ms, AddResult, NewRow, StoredRow};

/// Limits on what one request may carry.
pub mod limits {
    /// Bytes of one memory's content.
    pub const CONTENT_BYTES: usize = 32 * 1024;
    /// Bytes of one ingested document.
    pub const DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
    /// Items in one batch add.
    pub const BATCH: usize = 1000;
    /// Metadata keys per memory, and bytes of its JSON.
    pub const METADATA_KEYS: usize = 32;
    pub const METADATA_BYTES: usize = 8 * 1024;
    pub const QUERY_BYTES: usize = 4 * 1024;
    pub const TOP_K: usize = 100;
    pub const PAGE: usize = 200;
    /// Rows an exact (filtered) search may scan before it uses the graph.
    pub const EXACT_SCAN: usize = 20_000;
    /// Memories one export may hold.
    pub const EXPORT: usize = 200_000;
    /// Longest `working` expiry: 30 days.
    pub const TTL_SECS: i64 = 30 * 86_400;
}

/// The layers agents write (not the two logs).
pub const MEMORY_LAYERS: [Layer; 6] = [Layer::Semantic, Layer::Episodic, Layer::Procedural, Layer::Rag, Layer::Session, Layer::Working];

/// Parses layer names, refusing unknown ones and the logs.
pub fn parse_layers(names: &[String]) -> Result<Vec<Layer>> {
    names
        .iter()
        .map(|n| {
            let l = Layer::from_str(n).map_err(|e| MemoryError::invalid("invalid_layer", e.to_string()))?;
            if l.kind() == LayerKind::Log {
                return Err(MemoryError::invalid(
                    "invalid_layer",
                    format!("{n} is a log: read it with GET /api/v1/memory/logs/{n}, not as memories"),
                ));
            }
            Ok(l)
        })
        .collect()
}

/// The memory service.
#[derive(Clone)]
pub struct MemoryService {
    store: Arc<dyn MemoryStore>,
    embedding: Arc<Embedding>,
    events: tokio::sync::mpsc::Sender<(Scope, Record)>,
    metrics: Arc<MemoryMetrics>,
    /// The last re-embedding of each project (since the server started).
    reembeddings: Arc<std::sync::Mutex<HashMap<Scope, Reembedding>>>,
}

/// Memories embedded per batch of a re-embedding.
const REEMBED_BATCH: usize = 128;

impl MemoryService {
    /// A service over `store`; spawns the task that appends access events.
    pub fn new(store: Arc<dyn MemoryStore>, embedding: Embedding, metrics: Arc<MemoryMetrics>) -> Self {
        let (events, mut rx) = tokio::sync::mpsc::channel::<(Scope, Record)>(4096);
        let writer = store.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(512);
            while rx.recv_many(&mut batch, 512).await > 0 {
                if let Err(e) = writer.append_events(&batch).await {
                    tracing::error!(error = %e, lost = batch.len(), "memory events not appended");
                }
                batch.clear();
            }
        });
        Self { store, embedding: Arc::new(embedding), events, metrics, reembeddings: Default::default() }
    }

    pub fn store(&self) -> &dyn MemoryStore {
        self.store.as_ref()
    }

    pub fn embedder_id(&self) -> &str {
        self.embedding.id()
    }

    pub fn metrics(&self) -> &Arc<MemoryMetrics> {
        &self.metrics
    }

    /// Loaded graphs and live vectors in them.
    pub fn index_stats(&self) -> (usize, usize) {
        self.store.index_stats()
    }

    /// Sets the gauges read at a scrape: current memories per layer, and
    /// the graphs in memory.
    pub async fn refresh_gauges(&self) {
        use crate::metrics::OpLabels;
        match self.store.layer_counts().await {
            Ok(counts) => {
                for l in MEMORY_LAYERS {
                    let n = counts.iter().find(|(name, _)| name == l.as_str()).map_or(0, |(_, n)| *n);
                    self.metrics.memories.get_or_create(&OpLabels { op: "current".into(), layer: l.as_str().into() }).set(n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "memory counts not read"),
        }
        let (graphs, vectors) = self.store.index_stats();
        self.metrics.index_graphs.set(graphs as i64);
        self.metrics.index_vectors.set(vectors as i64);
    }

    async fn event(&self, caller: &Caller, action: &str, memory_id: Option<&str>, detail: Option<String>) {
        let record = Record {
            at: now_ms(),
            actor: caller.subject.clone(),
            action: action.to_owned(),
            memory_id: memory_id.map(str::to_owned),
            version: None,
            layer: None,
            before: None,
            after: None,
            detail,
        };
        // backpressure, not loss: a full queue makes the reader wait
        let _ = self.events.send((caller.scope.clone(), record)).await;
    }

    fn require(&self, caller: &Caller, role: Role) -> Result<()> {
        if caller.role < role {
            return Err(MemoryError::Forbidden(format!("this token's role ({:?}) cannot do that; it needs {role:?}", caller.role).to_lowercase()));
        }
        Ok(())
    }

    fn timed(&self, op: &'static str, layer: &str, started: Instant) {
        self.metrics.observe(op, layer, started.elapsed().as_secs_f64());
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let started = Instant::now();
        let out = self.embedding.embed(texts).await?;
        self.metrics.observe("embed", "", started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Adds memories (one or a batch) in one transaction.
    pub async fn add(&self, caller: &Caller, items: Vec<NewMemory>) -> Result<Vec<Added>> {
        self.require(caller, Role::Editor)?;
        let started = Instant::now();
        if items.is_empty() {
            return Err(MemoryError::invalid("empty_batch", "nothing to add: give at least one memory"));
        }
        if items.len() > limits::BATCH {
            return Err(MemoryError::TooLarge(format!("{} memories in one batch; at most {} (split the batch)", items.len(), limits::BATCH)));
        }
        let now = now_ms();
        let mut rows = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            rows.push(self.new_row(item, now).map_err(|e| at_item(e, i, items.len()))?);
        }
        // a session's turns and a scratchpad's notes repeat on purpose:
        // not deduplicated unless asked
        let modes: Vec<DedupMode> = items
            .iter()
            .zip(&rows)
            .map(|(item, row)| item.dedup.unwrap_or(if matches!(row.layer, Layer::Session | Layer::Working) { DedupMode::Off } else { DedupMode::Near }))
            .collect();
        let vectors = self.embed(rows.iter().map(|r| r.content.clone()).collect()).await?;
        let mut near: HashMap<usize, (i64, f32)> = HashMap::new();
        for (i, (row, v)) in rows.iter_mut().zip(vectors).enumerate() {
            row.vector = v;
            if modes[i] == DedupMode::Near && row.layer != Layer::Session {
                if let Some((rid, sim)) = self.store.most_similar(&caller.scope, self.embedding.id(), &row.vector, row.layer).await? {
                    if sim >= NEAR_DUPLICATE {
                        near.insert(i, (rid, sim));
                    }
                }
            }
        }
        // near duplicates are answered with the memory they duplicate
        let near_rows: HashMap<i64, StoredRow> = {
            let rids: Vec<i64> = near.values().map(|(r, _)| *r).collect();
            self.store.rows(&caller.scope, &rids, &Filters::default()).await?.into_iter().map(|r| (r.rid, r)).collect()
        };
        let mut answers: Vec<Option<Added>> = vec![None; rows.len()];
        let mut to_write = Vec::new();
        let mut slots = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            if let Some((existing, sim)) = near.get(&i).and_then(|(rid, sim)| near_rows.get(rid).map(|r| (r, *sim))) {
                let exact = existing.memory.content_hash == row.content_hash;
                answers[i] = Some(Added {
                    created: false,
                    memory: existing.memory.clone(),
                    duplicate: Some(if exact { "exact" } else { "near" }.into()),
                    similarity: (!exact).then_some(sim),
                });
                continue;
            }
            let exact = modes[i] != DedupMode::Off;
            to_write.push((row, exact));
            slots.push(i);
        }
        let layer = to_write.first().map(|(r, _)| r.layer.as_str()).unwrap_or("");
        let layer = layer.to_owned();
        let results = self.store.add(&caller.scope, &caller.subject, to_write).await?;
        for (slot, result) in slots.into_iter().zip(results) {
            answers[slot] = Some(match result {
                AddResult::Written(stored) => {
                    self.metrics.writes(stored.memory.layer.as_str(), "add");
                    Added { created: true, memory: stored.memory, duplicate: None, similarity: None }
                }
                AddResult::Exists(memory) => Added { created: false, memory, duplicate: Some("exact".into()), similarity: None },
            });
        }
        self.timed("add", &layer, started);
        answers.into_iter().map(|a| a.ok_or_else(|| MemoryError::Internal("an add went unanswered".into()))).collect()
    }

    fn new_row(&self, item: &NewMemory, now: i64) -> Result<NewRow> {
        let layer = match &item.layer {
            None => Layer::Semantic,
            Some(name) => parse_layers(std::slice::from_ref(name))?.remove(0),
        };
        if layer == Layer::Rag {
            return Err(MemoryError::invalid("invalid_layer", "rag memories come from documents: POST /api/v1/memory/documents"));
        }
        check_content(&item.content)?;
        check_metadata(&item.metadata)?;
        let session_id = match (layer, &item.session_id) {
            (Layer::Session, None) => return Err(MemoryError::invalid("missing_session_id", "session memories need a session_id")),
            (_, Some(s)) if s.is_empty() || s.len() > 128 => {
                return Err(MemoryError::invalid("invalid_session_id", "session_id: 1-128 characters"))
            }
            (_, s) => s.clone(),
        };
        let expires_at = match (layer, item.ttl_secs) {
            (Layer::Working, ttl) => {
                let ttl = ttl.unwrap_or(3600);
                if !(1..=limits::TTL_SECS).contains(&ttl) {
                    return Err(MemoryError::invalid("invalid_ttl", format!("ttl_secs: 1 to {}", limits::TTL_SECS)));
                }
                Some(now + ttl * 1000)
            }
            (_, Some(_)) => return Err(MemoryError::invalid("invalid_ttl", "only working memories expire; drop ttl_secs or use layer \"working\"")),
            (_, None) => None,
        };
        Ok(NewRow {
            id: uuid::Uuid::now_v7().to_string(),
            version: 1,
            layer,
            content: item.content.clone(),
            metadata: item.metadata.clone(),
            content_hash: content_hash(&item.content),
            embedder: self.embedding.id().to_owned(),
            vector: Vec::new(),
            created_at: now,
            occurred_at: item.occurred_at.unwrap_or(now),
            session_id,
            expires_at,
            source: None,
        })
    }

    /// The current version of `id`.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Memory> {
        let started = Instant::now();
        let m = self.store.get(&caller.scope, id).await?.memory;
        self.event(caller, "get", Some(id), None).await;
        self.timed("get", m.layer.as_str(), started);
        Ok(m)
    }

    /// A page of current memories, newest first.
    pub async fn list(&self, caller: &Caller, filters: &Filters, limit: Option<usize>, cursor: Option<&str>) -> Result<Page> {
        let started = Instant::now();
        let limit = limit.unwrap_or(50);
        if !(1..=limits::PAGE).contains(&limit) {
            return Err(MemoryError::invalid("invalid_limit", format!("limit: 1 to {}", limits::PAGE)));
        }
        let cursor = cursor
            .map(|c| c.parse::<i64>().map_err(|_| MemoryError::invalid("invalid_cursor", "cursor: pass next_cursor from the previous page")))
            .transpose()?;
        let (memories, next) = self.store.list(&caller.scope, filters, limit, cursor).await?;
        self.event(caller, "list", None, Some(format!("{} returned", memories.len()))).await;
        self.timed("list", "", started);
        Ok(Page { memories, next_cursor: next.map(|n| n.to_string()) })
    }

    /// Updates `id`: a new version supersedes the current one.
    pub async fn update(&self, caller: &Caller, id: &str, patch: Patch) -> Result<Memory> {
        self.require(caller, Role::Editor)?;
        let started = Instant::now();
        if patch.content.is_none() && patch.metadata.is_none() {
            return Err(MemoryError::invalid("empty_update", "give content, metadata or both"));
        }
        let old = self.store.get(&caller.scope, id).await?;
        if old.memory.layer == Layer::Rag {
            return Err(MemoryError::invalid("invalid_layer", "rag chunks change with their document: ingest it again"));
        }
        let content = patch.content.unwrap_or_else(|| old.memory.content.clone());
        check_content(&content)?;
        let metadata = patch.metadata.unwrap_or_else(|| old.memory.metadata.clone());
        check_metadata(&metadata)?;
        let vector = if content == old.memory.content && old.memory.embedder == self.embedding.id() {
            old.vector.clone()
        } else {
            self.embed(vec![content.clone()]).await?.remove(0)
        };
        let row = NewRow {
            id: id.to_owned(),
            version: old.memory.version + 1,
            layer: old.memory.layer,
            content_hash: content_hash(&content),
            content,
            metadata,
            embedder: self.embedding.id().to_owned(),
            vector,
            created_at: now_ms(),
            occurred_at: old.memory.occurred_at,
            session_id: old.memory.session_id.clone(),
            expires_at: old.memory.expires_at,
            source: old.memory.source.clone(),
        };
        let stored = self.store.supersede(&caller.scope, &caller.subject, row).await?;
        self.metrics.writes(stored.memory.layer.as_str(), "update");
        self.timed("update", stored.memory.layer.as_str(), started);
        Ok(stored.memory)
    }

    /// Deletes `id` (its history stays).
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<Memory> {
        self.require(caller, Role::Editor)?;
        let started = Instant::now();
        let m = self.store.delete(&caller.scope, &caller.subject, id).await?;
        self.metrics.writes(m.layer.as_str(), "delete");
        self.timed("delete", m.layer.as_str(), started);
        Ok(m)
    }

    /// Hybrid search: the store's vector ranking and its full-text ranking,
    /// fused.
    pub async fn search(&self, caller: &Caller, req: &SearchRequest) -> Result<Vec<Hit>> {
        let started = Instant::now();
        if req.query.trim().is_empty() {
            return Err(MemoryError::invalid("empty_query", "query: give some text to search for"));
        }
        if req.query.len() > limits::QUERY_BYTES {
            return Err(MemoryError::TooLarge(format!("query: at most {} bytes", limits::QUERY_BYTES)));
        }
        let k = req.top_k.unwrap_or(10);
        if !(1..=limits::TOP_K).contains(&k) {
            return Err(MemoryError::invalid("invalid_top_k", format!("top_k: 1 to {}", limits::TOP_K)));
        }
        if let Some(t) = req.threshold {
            if !(-1.0..=1.0).contains(&t) {
                return Err(MemoryError::invalid("invalid_threshold", "threshold: a cosine similarity from -1 to 1"));
            }
        }
        let mut layers = parse_layers(&req.filters.layers)?;
        if layers.is_empty() {
            layers = MEMORY_LAYERS.to_vec();
        }
        let filters = Filters { layers: layers.iter().map(|l| l.as_str().to_owned()).collect(), ..req.filters.clone() };
        let mode = req.mode.unwrap_or_default();
        let wanted = (k * 4).max(40);
        let query_vec = self.embed(vec![req.query.clone()]).await?.remove(0);

        let mut rankings: Vec<Vec<i64>> = Vec::new();
        if mode != SearchMode::Keyword {
            let ranked = self.store.nearest(&caller.scope, self.embedding.id(), &query_vec, wanted, &filters, &layers).await?;
            rankings.push(ranked.into_iter().map(|(rid, _)| rid).collect());
        }
        if mode != SearchMode::Vector {
            rankings.push(self.store.keyword(&caller.scope, &req.query, &layers, wanted).await?);
        }
        let fused = reciprocal_rank_fusion(&rankings, RRF_K);
        let ids: Vec<i64> = fused.iter().map(|(rid, _)| *rid).collect();
        let mut rows: HashMap<i64, StoredRow> = self.store.rows(&caller.scope, &ids, &filters).await?.into_iter().map(|r| (r.rid, r)).collect();
        let mut hits = Vec::with_capacity(k);
        for (rid, score) in fused {
            let Some(row) = rows.remove(&rid) else { continue };
            let similarity = cosine(&query_vec, &row.vector);
            if req.threshold.is_some_and(|t| similarity < t) {
                continue;
            }
            hits.push(Hit { memory: row.memory, score, similarity });
            if hits.len() == k {
                break;
            }
        }
        self.event(caller, "search", None, Some(format!("query sha256 {}; {} results", &content_hash(&req.query)[..16], hits.len()))).await;
        self.timed("search", "", started);
        Ok(hits)
    }

    /// Cuts `doc` into `rag` chunks, replacing an earlier ingest of the
    /// same source.
    pub async fn ingest(&self, caller: &Caller, doc: Document) -> Result<Ingested> {
        self.require(caller, Role::Editor)?;
        let started = Instant::now();
        if doc.source.trim().is_empty() || doc.source.len() > 512 {
            return Err(MemoryError::invalid("invalid_source", "source: the document's name or path, 1-512 characters"));
        }
        if doc.content.trim().is_empty() {
            return Err(MemoryError::invalid("empty_document", "content: the document is empty"));
        }
        if doc.content.len() > limits::DOCUMENT_BYTES {
            return Err(MemoryError::TooLarge(format!("document: at most {} bytes; split it", limits::DOCUMENT_BYTES)));
        }
        check_metadata(&doc.metadata)?;
        let size = doc.chunk_chars.unwrap_or(1000);
        if !(64..=8000).contains(&size) {
            return Err(MemoryError::invalid("invalid_chunk_chars", "chunk_chars: 64 to 8000"));
        }
        let overlap = doc.overlap.unwrap_or(100);
        if overlap >= size.div_ceil(2) {
            return Err(MemoryError::invalid("invalid_overlap", "overlap: less than half of chunk_chars"));
        }
        let chunks = chunk(&doc.content, size, overlap);
        if chunks.len() >= pinacle_memory::chunk::MAX_CHUNKS && chunks.last().is_some_and(|c| c.end < doc.content.len()) {
            return Err(MemoryError::TooLarge(format!(
                "the document would need more than {} chunks: use larger chunk_chars or split it",
                pinacle_memory::chunk::MAX_CHUNKS
            )));
        }
        let vectors = self.embed(chunks.iter().map(|c| c.text.clone()).collect()).await?;
        let now = now_ms();
        let rows: Vec<NewRow> = chunks
            .into_iter()
            .zip(vectors)
            .map(|(c, v)| NewRow {
                id: uuid::Uuid::now_v7().to_string(),
                version: 1,
                layer: Layer::Rag,
                content_hash: content_hash(&c.text),
                content: c.text,
                metadata: doc.metadata.clone(),
                embedder: self.embedding.id().to_owned(),
                vector: v,
                created_at: now,
                occurred_at: now,
                session_id: None,
                expires_at: None,
                source: Some(Source { document: doc.source.clone(), start: c.start as i64, end: c.end as i64 }),
            })
            .collect();
        let (replaced, added) = self.store.replace_source(&caller.scope, &caller.subject, &doc.source, rows).await?;
        self.metrics.writes("rag", "ingest");
        self.timed("ingest", "rag", started);
        Ok(Ingested { source: doc.source, chunks: added.len(), replaced, ids: added.into_iter().map(|s| s.memory.id).collect() })
    }

    /// Every version of `id` and its changelog entries.
    pub async fn history(&self, caller: &Caller, id: &str) -> Result<History> {
        let h = self.store.history(&caller.scope, id).await?;
        self.event(caller, "history", Some(id), None).await;
        Ok(h)
    }

    /// A page of a log.
    pub async fn log(&self, caller: &Caller, log: LogName, after: i64, limit: usize) -> Result<LogPage> {
        if !(1..=1000).contains(&limit) {
            return Err(MemoryError::invalid("invalid_limit", "limit: 1 to 1000"));
        }
        let entries = self.store.log(&caller.scope, log, after, limit).await?;
        Ok(LogPage { log, entries })
    }

    /// Checks a log's chain.
    pub async fn verify(&self, caller: &Caller, log: LogName) -> Result<Verification> {
        let v = self.store.verify(&caller.scope, log).await?;
        if !v.ok {
            self.metrics.chain_breaks.inc();
            tracing::warn!(tenant = %caller.scope.tenant, project = %caller.scope.project, log = log.as_str(), at = ?v.broken_at, "memory log chain broken");
        }
        Ok(v)
    }

    /// The project's current memories.
    pub async fn export(&self, caller: &Caller) -> Result<Export> {
        let mut memories = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = self.store.list(&caller.scope, &Filters::default(), limits::PAGE, cursor).await?;
            memories.extend(page);
            if memories.len() > limits::EXPORT {
                return Err(MemoryError::TooLarge(format!("more than {} memories: export is not supported at this size yet", limits::EXPORT)));
            }
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        memories.reverse();
        self.event(caller, "export", None, Some(format!("{} memories", memories.len()))).await;
        Ok(Export { format: EXPORT_FORMAT.into(), project: caller.scope.project.clone(), exported_at: now_ms(), memories })
    }

    /// Adds an export's memories to the caller's project (new ids; exact
    /// duplicates skipped; documents' chunks keep their source).
    pub async fn import(&self, caller: &Caller, export: Export) -> Result<Imported> {
        self.require(caller, Role::Editor)?;
        if export.format != EXPORT_FORMAT {
            return Err(MemoryError::invalid("invalid_format", format!("format {:?}: this server reads {EXPORT_FORMAT}", export.format)));
        }
        if export.memories.len() > limits::EXPORT {
            return Err(MemoryError::TooLarge(format!("more than {} memories in one import", limits::EXPORT)));
        }
        let now = now_ms();
        // everything is checked before anything is written
        for (i, m) in export.memories.iter().enumerate() {
            check_imported(m, now).map_err(|e| at_item(e, i, export.memories.len()))?;
        }
        let (mut added, mut duplicates) = (0, 0);
        for batch in export.memories.chunks(limits::BATCH) {
            let mut rows = Vec::with_capacity(batch.len());
            for m in batch.iter().filter(|m| m.expires_at.is_none_or(|e| e > now)) {
                rows.push(NewRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    version: 1,
                    layer: m.layer,
                    content: m.content.clone(),
                    metadata: m.metadata.clone(),
                    content_hash: content_hash(&m.content),
                    embedder: self.embedding.id().to_owned(),
                    vector: Vec::new(),
                    created_at: now,
                    occurred_at: m.occurred_at,
                    session_id: m.session_id.clone(),
                    expires_at: m.expires_at,
                    source: m.source.clone(),
                });
            }
            let vectors = self.embed(rows.iter().map(|r| r.content.clone()).collect()).await?;
            let rows: Vec<(NewRow, bool)> = rows.into_iter().zip(vectors).map(|(mut r, v)| (r.vector = v, r).1).map(|r| (r, true)).collect();
            let written = self.store.add(&caller.scope, &caller.subject, rows).await?;
            for r in written {
                match r {
                    AddResult::Written(_) => {
                        added += 1;
                    }
                    AddResult::Exists(_) => duplicates += 1,
                }
            }
        }
        Ok(Imported { added, duplicates })
    }

    /// Removes the project's memories from the store and the graphs, with a
    /// tombstone in both logs.
    pub async fn purge(&self, caller: &Caller) -> Result<Purged> {
        self.require(caller, Role::Admin)?;
        let n = self.store.purge(&caller.scope, &caller.subject).await?;
        tracing::info!(tenant = %caller.scope.tenant, project = %caller.scope.project, versions = n, "memory project purged");
        Ok(Purged { memories: n })
    }

    /// Brings the project's memories back to changelog entry `seq` (see
    /// [`MemoryStore::restore`]).
    pub async fn restore(&self, caller: &Caller, seq: i64) -> Result<Restored> {
        self.require(caller, Role::Editor)?;
        let out = self.store.restore(&caller.scope, &caller.subject, seq).await?;
        tracing::info!(tenant = %caller.scope.tenant, project = %caller.scope.project, seq, restored = out.added.len(), deleted = out.deleted, missing = out.missing, "memory restored");
        Ok(Restored { changelog_seq: seq, restored: out.added.len(), deleted: out.deleted, missing: out.missing })
    }

    /// Records the project's position under `label` (a pod snapshot's).
    pub async fn mark_position(&self, scope: &Scope, label: &str) -> Result<Position> {
        self.store.mark_position(scope, label).await
    }

    /// Restores the project to the position recorded under `label`;
    /// `None` when none was.
    pub async fn restore_marked(&self, scope: &Scope, actor: &str, label: &str) -> Result<Option<Restored>> {
        let Some(seq) = self.store.marked_position(scope, label).await? else { return Ok(None) };
        let caller = Caller { scope: scope.clone(), role: Role::Admin, subject: actor.to_owned() };
        self.restore(&caller, seq).await.map(Some)
    }

    /// Copies the memories of another project of the caller's tenant, as
    /// they stood at a changelog position (default: now), into the
    /// caller's project: new ids, the content, metadata, times and vectors
    /// of then; exact duplicates of what the project holds are skipped.
    /// Nothing of the source changes. A pod's token cannot: it reaches its
    /// own project only.
    pub async fn fork(&self, caller: &Caller, req: ForkRequest) -> Result<Forked> {
        self.require(caller, Role::Editor)?;
        if caller.subject.starts_with("pod:") {
            return Err(MemoryError::Forbidden("a pod's memory token reaches its own project only; fork with a user's token".into()));
        }
        let from = pinacle_memory::project::from_repository_url(&req.from_project).unwrap_or_else(|| req.from_project.trim().to_owned());
        pinacle_memory::project::check(&from).map_err(|m| MemoryError::invalid("invalid_project", m))?;
        if from == caller.scope.project {
            return Err(MemoryError::invalid("same_project", "that is this project: POST /api/v1/memory/restore goes back to a position in it"));
        }
        let source = Scope { tenant: caller.scope.tenant.clone(), project: from.clone() };
        let seq = match req.changelog_seq {
            Some(s) => s,
            None => self.store.position(&source).await?.changelog_seq,
        };
        let then = self.store.rows_at(&source, seq, limits::EXPORT).await?;
        let now = now_ms();
        let rows: Vec<NewRow> = then
            .into_iter()
            .filter(|r| r.memory.expires_at.is_none_or(|e| e > now))
            .map(|r| NewRow { id: uuid::Uuid::now_v7().to_string(), ..StoredRow::again(&r.memory, r.vector, 1, now) })
            .collect();
        let (mut added, mut duplicates) = (0, 0);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            // a session's turns and a scratchpad's notes repeat on purpose:
            // copied as they are (a second fork copies them again)
            let batch: Vec<(NewRow, bool)> = rows.by_ref().take(limits::BATCH).map(|r| {
                let dedup = !matches!(r.layer, Layer::Session | Layer::Working);
                (r, dedup)
            }).collect();
            for r in self.store.add(&caller.scope, &caller.subject, batch).await? {
                match r {
                    AddResult::Written(_) => added += 1,
                    AddResult::Exists(_) => duplicates += 1,
                }
            }
        }
        let source_caller = Caller { scope: source, ..caller.clone() };
        self.event(&source_caller, "fork", None, Some(format!("changelog entry {seq} copied to {}", caller.scope.project))).await;
        self.event(caller, "fork", None, Some(format!("{added} memories from {from} at changelog entry {seq}"))).await;
        Ok(Forked { from_project: from, changelog_seq: seq, added, duplicates })
    }

    /// Starts re-embedding the project's memories that another embedder
    /// made (or answers the one running); see [`Reembedding`].
    pub async fn reembed(&self, caller: &Caller) -> Result<Reembedding> {
        self.require(caller, Role::Editor)?;
        let embedder = self.embedding.id().to_owned();
        let total = self.store.stale_count(&caller.scope, &embedder).await?;
        let job = {
            let mut jobs = self.reembeddings.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(j) = jobs.get(&caller.scope).filter(|j| j.state == JobState::Running) {
                return Ok(j.clone());
            }
            // finished jobs of other projects go first when the map grows
            if jobs.len() >= 10_000 {
                jobs.retain(|_, j| j.state == JobState::Running);
            }
            let job = Reembedding { state: JobState::Running, embedder: embedder.clone(), total, done: 0, started_at: Some(now_ms()), finished_at: None, error: None };
            jobs.insert(caller.scope.clone(), job.clone());
            job
        };
        self.event(caller, "reembed", None, Some(format!("{total} memories to embed with {embedder}"))).await;
        let (svc, caller) = (self.clone(), caller.clone());
        tokio::spawn(async move {
            // the work in a task of its own, so a panic in it still ends
            // the job (as failed) rather than leaving it running forever
            let work = {
                let (svc, scope, embedder) = (svc.clone(), caller.scope.clone(), embedder.clone());
                tokio::spawn(async move { svc.run_reembedding(&scope, &embedder, total).await })
            };
            let outcome = match work.await {
                Ok(r) => r,
                Err(e) => Err(MemoryError::Internal(format!("re-embedding task: {e}"))),
            };
            let mut jobs = svc.reembeddings.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(j) = jobs.get_mut(&caller.scope) {
                j.finished_at = Some(now_ms());
                match outcome {
                    Ok(()) => j.state = JobState::Done,
                    Err(e) => {
                        tracing::error!(tenant = %caller.scope.tenant, project = %caller.scope.project, error = %e, "memory re-embedding failed");
                        j.state = JobState::Failed;
                        j.error = Some(crate::http::public_message(&e));
                    }
                }
            }
        });
        Ok(job)
    }

    /// Embeds the stale memories batch by batch, counting the rows
    /// changed. A memory written meanwhile already has the new embedder;
    /// one retired meanwhile is skipped. Bounded: one pass over what was
    /// stale at the start, plus a little; whatever is still stale then (a
    /// restore brought back old vectors) fails the job, to be run again.
    async fn run_reembedding(&self, scope: &Scope, embedder: &str, total: i64) -> Result<()> {
        let rounds = (total.max(0) as usize).div_ceil(REEMBED_BATCH) + 4;
        for _ in 0..rounds {
            let rows = self.store.stale_rows(scope, embedder, REEMBED_BATCH).await?;
            if rows.is_empty() {
                return Ok(());
            }
            let vectors = self.embed(rows.iter().map(|r| r.content.clone()).collect()).await?;
            let n = self.store.set_vectors(scope, embedder, &rows.into_iter().zip(vectors).collect::<Vec<_>>()).await?;
            if let Some(j) = self.reembeddings.lock().unwrap_or_else(|p| p.into_inner()).get_mut(scope) {
                j.done += n as i64;
            }
        }
        match self.store.stale_count(scope, embedder).await? {
            0 => Ok(()),
            left => Err(MemoryError::invalid("reembed_incomplete", format!("{left} memories got another embedder's vectors meanwhile (a restore?): run it again"))),
        }
    }

    /// The project's last re-embedding, or how many memories wait for one.
    pub async fn reembedding(&self, caller: &Caller) -> Result<Reembedding> {
        if let Some(j) = self.reembeddings.lock().unwrap_or_else(|p| p.into_inner()).get(&caller.scope) {
            return Ok(j.clone());
        }
        let embedder = self.embedding.id().to_owned();
        let total = self.store.stale_count(&caller.scope, &embedder).await?;
        Ok(Reembedding { state: JobState::Idle, embedder, total, done: 0, started_at: None, finished_at: None, error: None })
    }

    /// The project's changelog position (a pod snapshot records it).
    pub async fn position(&self, caller: &Caller) -> Result<Position> {
        self.store.position(&caller.scope).await
    }
}

fn at_item(e: MemoryError, i: usize, n: usize) -> MemoryError {
    match e {
        MemoryError::Invalid { code, message } if n > 1 => MemoryError::Invalid { code, message: format!("item {i}: {message}") },
        other => other,
    }
}

/// What `add` and `ingest` would refuse, for a memory of an export.
fn check_imported(m: &Memory, now: i64) -> Result<()> {
    check_content(&m.content)?;
    check_metadata(&m.metadata)?;
    if m.layer.kind() == LayerKind::Log {
        return Err(MemoryError::invalid("invalid_layer", "an export holds no log entries"));
    }
    match (&m.session_id, m.layer) {
        (None, Layer::Session) => return Err(MemoryError::invalid("missing_session_id", "session memories need a session_id")),
        (Some(s), _) if s.is_empty() || s.len() > 128 => return Err(MemoryError::invalid("invalid_session_id", "session_id: 1-128 characters")),
        _ => {}
    }
    match (m.expires_at, m.layer) {
        (Some(_), l) if l != Layer::Working => return Err(MemoryError::invalid("invalid_ttl", "only working memories expire")),
        (Some(e), _) if e > now + limits::TTL_SECS * 1000 => return Err(MemoryError::invalid("invalid_ttl", "expires_at: at most 30 days ahead")),
        _ => {}
    }
    match (&m.source, m.layer) {
        (Some(s), Layer::Rag) if !s.document.trim().is_empty() && s.document.len() <= 512 && 0 <= s.start && s.start <= s.end => Ok(()),
        (None, l) if l != Layer::Rag => Ok(()),
        _ => Err(MemoryError::invalid("invalid_source", "rag memories need a source (1-512 characters, start <= end); others have none")),
    }
}

fn check_content(content: &str) -> Result<()> {
    if content.trim().is_empty() {
        return Err(MemoryError::invalid("empty_content", "content: the memory is empty"));
    }
    if content.len() > limits::CONTENT_BYTES {
        return Err(MemoryError::TooLarge(format!(
            "content: at most {} bytes per memory; ingest long text as a document",
            limits::CONTENT_BYTES
        )));
    }
    Ok(())
}

fn check_metadata(m: &Metadata) -> Result<()> {
    if m.len() > limits::METADATA_KEYS {
        return Err(MemoryError::invalid("invalid_metadata", format!("metadata: at most {} keys", limits::METADATA_KEYS)));
    }
    for (k, v) in m {
        if !crate::store::valid_metadata_key(k) {
            return Err(MemoryError::invalid("invalid_metadata", format!("metadata key {k:?}: use 1-64 letters, digits, '_', '-' or '.'")));
        }
        if v.is_object() {
            return Err(MemoryError::invalid("invalid_metadata", format!("metadata {k:?}: values are strings, numbers, booleans or lists, not objects")));
        }
    }
    let bytes = serde_json::to_vec(m).map_or(usize::MAX, |b| b.len());
    if bytes > limits::METADATA_BYTES {
        return Err(MemoryError::invalid("invalid_metadata", format!("metadata: at most {} bytes of JSON", limits::METADATA_BYTES)));
    }
    Ok(())
}
