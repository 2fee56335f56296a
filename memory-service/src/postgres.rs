//! The store at scale: PostgreSQL with pgvector, shared by several API
//! servers. Its tables live in schema `pinak` (beside the control plane's,
//! in the same database or another).
//!
//! Invariants:
//! - **row-level security is a second wall.** Every table forces RLS with
//!   a policy that admits only the rows of the scope the transaction set
//!   (`pinak.tenant`, `pinak.project`, transaction-local); every query runs
//!   in such a transaction, so a query that forgot its scope filter still
//!   sees one project. Only the per-layer counts of the metrics read
//!   across scopes, through a separate read-only policy. (A superuser
//!   bypasses RLS: run the service as an ordinary role.)
//! - **a project's writes are serialised** by a transaction-scoped
//!   advisory lock on its scope, across every server, so its hash chains
//!   never fork;
//! - **vectors of different embedders never mix**: each embedder's rows get
//!   their own partial HNSW index (`vector::vector(DIM)`, cosine; up to
//!   2,000 dimensions, pgvector's limit), and every query names the
//!   embedder;
//! - **filters still return k results**: searches run with
//!   `hnsw.iterative_scan = relaxed_order` and fall back to an exact scan
//!   of the scope when the index returns fewer than asked;
//! - the full-text index (`tsvector`, English stemming, GIN) holds only
//!   current, undeleted rows; ranks are `ts_rank_cd`;
//! - log records are stored as the exact text that was hashed.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Mutex;

use async_trait::async_trait;
use pinacle_memory::chain::{self, Link};
use pinacle_memory::layer::Layer;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, QueryBuilder, Row as _, Transaction};

use crate::backend::MemoryStore;
use crate::error::{MemoryError, Result};
use crate::model::*;
use crate::records;
use crate::store::{fts_words, now_ms, valid_metadata_key, AddResult, NewRow, RestoreOutcome, StaleRow, StoredRow};

/// Serialises schema changes between servers starting together.
const SCHEMA_LOCK: i64 = 0x7069_6e61_6b00;
/// Serialises HNSW index builds between servers.
const INDEX_LOCK: i64 = 0x7069_6e61_6b01;
/// The longest a write waits for another server's index build.
const INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The schema, its indexes and its row-level security.
const SCHEMA: &[&str] = &[
    "CREATE EXTENSION IF NOT EXISTS vector",
    "CREATE SCHEMA IF NOT EXISTS pinak",
    "CREATE TABLE IF NOT EXISTS pinak.memories (
        rid BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL,
        version BIGINT NOT NULL,
        tenant TEXT NOT NULL,
        project TEXT NOT NULL,
        layer TEXT NOT NULL,
        content TEXT NOT NULL,
        metadata JSONB NOT NULL,
        content_hash TEXT NOT NULL,
        embedder TEXT NOT NULL,
        vector vector NOT NULL,
        created_at BIGINT NOT NULL,
        occurred_at BIGINT NOT NULL,
        session_id TEXT,
        expires_at BIGINT,
        source TEXT,
        src_start BIGINT,
        src_end BIGINT,
        current BOOLEAN NOT NULL,
        deleted_at BIGINT,
        fts tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
        UNIQUE (id, version)
    )",
    "CREATE INDEX IF NOT EXISTS memories_scope ON pinak.memories (tenant, project, current, rid)",
    "CREATE INDEX IF NOT EXISTS memories_hash ON pinak.memories (tenant, project, content_hash) WHERE current",
    "CREATE INDEX IF NOT EXISTS memories_source ON pinak.memories (tenant, project, source) WHERE current",
    "CREATE INDEX IF NOT EXISTS memories_fts ON pinak.memories USING gin (fts) WHERE current AND deleted_at IS NULL",
    "CREATE TABLE IF NOT EXISTS pinak.chain (
        tenant TEXT NOT NULL,
        project TEXT NOT NULL,
        log TEXT NOT NULL,
        seq BIGINT NOT NULL,
        record TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (tenant, project, log, seq)
    )",
    "CREATE TABLE IF NOT EXISTS pinak.positions (
        tenant TEXT NOT NULL,
        project TEXT NOT NULL,
        label TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        PRIMARY KEY (tenant, project, label)
    )",
];

/// The tables under row-level security.
const TABLES: [&str; 3] = ["memories", "chain", "positions"];

/// A memory row's columns, in the order [`stored_from_row`] reads them.
macro_rules! columns {
    () => {
        "rid, id, version, layer, content, metadata::text, content_hash, embedder, vector::real[], created_at, occurred_at, \
         session_id, expires_at, source, src_start, src_end, current, deleted_at"
    };
}

/// pgvector's HNSW limit for `vector`.
pub const MAX_INDEXED_DIM: usize = 2000;

/// The PostgreSQL memory store.
pub struct PgStore {
    pool: PgPool,
    /// Embedders whose HNSW index exists.
    indexed: Mutex<HashSet<String>>,
    /// `hnsw.ef_search` (candidates per search; at least k).
    ef_search: usize,
}

impl PgStore {
    /// Connects and creates the schema (once per database, whichever
    /// server gets there first).
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SCHEMA_LOCK).execute(&mut *tx).await?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&mut *tx).await?;
        }
        for t in TABLES {
            // ALTER TABLE locks the table against everyone: only when needed
            let (on, forced): (bool, bool) = sqlx::query_as(
                "SELECT c.relrowsecurity, c.relforcerowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'pinak' AND c.relname = $1",
            )
            .bind(t)
            .fetch_one(&mut *tx)
            .await?;
            if !on {
                sqlx::query(AssertSqlSafe(format!("ALTER TABLE pinak.{t} ENABLE ROW LEVEL SECURITY"))).execute(&mut *tx).await?;
            }
            if !forced {
                sqlx::query(AssertSqlSafe(format!("ALTER TABLE pinak.{t} FORCE ROW LEVEL SECURITY"))).execute(&mut *tx).await?;
            }
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'pinak' AND tablename = $1 AND policyname = 'scope')")
                .bind(t)
                .fetch_one(&mut *tx)
                .await?;
            if !exists {
                // `t` is one of TABLES
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE POLICY scope ON pinak.{t} USING (tenant = current_setting('pinak.tenant', true) AND project = current_setting('pinak.project', true)) \
                     WITH CHECK (tenant = current_setting('pinak.tenant', true) AND project = current_setting('pinak.project', true))"
                )))
                .execute(&mut *tx)
                .await?;
            }
        }
        let counts: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'pinak' AND tablename = 'memories' AND policyname = 'counts')")
                .fetch_one(&mut *tx)
                .await?;
        if !counts {
            sqlx::query("CREATE POLICY counts ON pinak.memories FOR SELECT USING (current_setting('pinak.counts', true) = 'on')").execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Self { pool, indexed: Mutex::new(HashSet::new()), ef_search: 96 })
    }

    /// The pool (tests tamper with rows through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction that sees only `scope` (row-level security); with
    /// `write`, it also holds the project's write lock.
    async fn scoped(&self, scope: &Scope, write: bool) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('pinak.tenant', $1, true), set_config('pinak.project', $2, true)")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .execute(&mut *tx)
            .await?;
        if write {
            let key = format!("{}:{}{}", scope.tenant.len(), scope.tenant, scope.project);
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))").bind(key).execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// Creates `embedder`'s HNSW index the first time its vectors are
    /// written (nothing past [`MAX_INDEXED_DIM`]: those are scanned
    /// exactly). Concurrently, so other projects' writes go on meanwhile;
    /// one server builds it (a session advisory lock), the others wait.
    async fn ensure_index(&self, embedder: &str, dim: usize) -> Result<()> {
        if dim == 0 || dim > MAX_INDEXED_DIM || self.indexed.lock().unwrap_or_else(|p| p.into_inner()).contains(embedder) {
            return Ok(());
        }
        // in a task of its own: a caller that goes away must not leave the
        // session lock held on a pooled connection
        tokio::spawn(create_index(self.pool.clone(), embedder.to_owned(), dim))
            .await
            .map_err(|e| MemoryError::Internal(format!("index build: {e}")))??;
        self.indexed.lock().unwrap_or_else(|p| p.into_inner()).insert(embedder.to_owned());
        Ok(())
    }

    async fn ensure_indexes(&self, rows: &[&NewRow]) -> Result<()> {
        let mut seen = HashSet::new();
        for r in rows {
            if seen.insert(r.embedder.as_str()) {
                self.ensure_index(&r.embedder, r.vector.len()).await?;
            }
        }
        Ok(())
    }

    /// The approximate search through `embedder`'s index (iterative, so
    /// filters do not starve it), or `None` when it has no index.
    async fn approximate(&self, scope: &Scope, embedder: &str, query: &[f32], k: usize, filters: &Filters) -> Result<Option<Vec<(i64, f32)>>> {
        let dim = query.len();
        if dim == 0 || dim > MAX_INDEXED_DIM {
            return Ok(None);
        }
        let mut tx = self.scoped(scope, false).await?;
        sqlx::query("SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            .bind(self.ef_search.max(k).min(1000).to_string())
            .execute(&mut *tx)
            .await?;
        let mut q = QueryBuilder::<Postgres>::new(format!("SELECT rid, vector::vector({dim}) <=> "));
        q.push_bind(query.to_vec()).push(format!("::real[]::vector({dim}) AS distance FROM pinak.memories WHERE embedder = {} AND ", literal(embedder)));
        push_live_scope(&mut q, scope);
        push_filters(&mut q, filters)?;
        q.push(" ORDER BY distance LIMIT ").push_bind(k as i64);
        let rows = q.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut out: Vec<(i64, f32)> = rows.iter().map(|r| (r.get::<i64, _>(0), 1.0 - r.get::<f64, _>(1) as f32)).collect();
        // relaxed order: nearly sorted; sort exactly
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(Some(out))
    }

    /// The exact search: every matching row of the scope, compared.
    async fn exact(&self, scope: &Scope, embedder: &str, query: &[f32], k: usize, filters: &Filters) -> Result<Vec<(i64, f32)>> {
        let mut tx = self.scoped(scope, false).await?;
        // the bare `vector` (no dimension) matches no index: every row of
        // the scope that passes the filters is compared
        let mut q = QueryBuilder::<Postgres>::new("SELECT rid, vector <=> ");
        q.push_bind(query.to_vec()).push(format!("::real[]::vector AS distance FROM pinak.memories WHERE embedder = {} AND ", literal(embedder)));
        push_live_scope(&mut q, scope);
        push_filters(&mut q, filters)?;
        q.push(" ORDER BY distance LIMIT ").push_bind(k as i64);
        let rows = q.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows.iter().map(|r| (r.get::<i64, _>(0), 1.0 - r.get::<f64, _>(1) as f32)).collect())
    }
}

/// Whether index `name` exists and is valid.
async fn index_valid(conn: &mut PgConnection, name: &str) -> Result<Option<bool>> {
    Ok(sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'pinak' AND c.relname = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Builds `embedder`'s HNSW index unless a valid one exists.
async fn create_index(pool: PgPool, embedder: String, dim: usize) -> Result<()> {
    let name = index_name(&embedder);
    let mut conn = pool.acquire().await?;
    if index_valid(&mut conn, &name).await? == Some(true) {
        return Ok(());
    }
    // taken by trying, not by waiting: a statement waiting for the lock
    // holds a snapshot, which the concurrent build waits for in turn
    let started = std::time::Instant::now();
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(INDEX_LOCK).fetch_one(&mut *conn).await?;
        if got {
            break;
        }
        if index_valid(&mut conn, &name).await? == Some(true) {
            return Ok(());
        }
        if started.elapsed() > INDEX_WAIT {
            return Err(MemoryError::Internal(format!("the vector index {name} is still being built by another server")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let built = async {
        match index_valid(&mut conn, &name).await? {
            Some(true) => return Ok(()),
            // a build that failed halfway leaves an invalid index
            Some(false) => {
                sqlx::query(AssertSqlSafe(format!("DROP INDEX CONCURRENTLY IF EXISTS pinak.{name}"))).execute(&mut *conn).await?;
            }
            None => {}
        }
        // the embedder id goes in as a quoted literal; the name is hex
        sqlx::query(AssertSqlSafe(format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON pinak.memories USING hnsw ((vector::vector({dim})) vector_cosine_ops) \
             WITH (m = 16, ef_construction = 200) WHERE embedder = {} AND current AND deleted_at IS NULL",
            literal(&embedder)
        )))
        .execute(&mut *conn)
        .await?;
        Ok::<_, MemoryError>(())
    }
    .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)").bind(INDEX_LOCK).execute(&mut *conn).await;
    if unlocked.is_err() {
        // never hand back a connection that may still hold the lock
        conn.detach();
    }
    built?;
    unlocked?;
    Ok(())
}

/// A SQL string literal (quotes doubled): embedder ids are written into
/// index predicates and the queries that must match them.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The index of one embedder: a name made of a hash of its id.
fn index_name(embedder: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("memories_hnsw_{}", &hex::encode(Sha256::digest(embedder.as_bytes()))[..16])
}

fn push_live_scope(q: &mut QueryBuilder<Postgres>, scope: &Scope) {
    q.push("tenant = ").push_bind(scope.tenant.clone());
    q.push(" AND project = ").push_bind(scope.project.clone());
    q.push(" AND current AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > ").push_bind(now_ms()).push(")");
}

/// The filters as SQL.
fn push_filters(q: &mut QueryBuilder<Postgres>, f: &Filters) -> Result<()> {
    let layers = crate::service::parse_layers(&f.layers)?;
    if !layers.is_empty() {
        q.push(" AND layer = ANY(").push_bind(layers.iter().map(|l| l.as_str().to_owned()).collect::<Vec<_>>()).push(")");
    }
    if let Some(s) = f.since {
        q.push(" AND occurred_at >= ").push_bind(s);
    }
    if let Some(u) = f.until {
        q.push(" AND occurred_at < ").push_bind(u);
    }
    if let Some(s) = &f.session_id {
        q.push(" AND session_id = ").push_bind(s.clone());
    }
    for (k, v) in &f.metadata {
        if !valid_metadata_key(k) {
            return Err(MemoryError::invalid("invalid_filter", format!("metadata key {k:?}: use 1-64 letters, digits, '_', '-' or '.'")));
        }
        if !(v.is_string() || v.is_number() || v.is_boolean()) {
            return Err(MemoryError::invalid("invalid_filter", format!("metadata filter {k:?}: compare with a string, number or boolean")));
        }
        // jsonb equality: numbers compare as numbers, 1 = 1.0
        q.push(" AND metadata -> ").push_bind(k.clone()).push(" = ").push_bind(v.to_string()).push("::jsonb");
    }
    Ok(())
}

fn stored_from_row(r: &PgRow) -> Result<StoredRow> {
    let layer: String = r.try_get(3)?;
    let layer = Layer::from_str(&layer).map_err(|e| MemoryError::Internal(e.to_string()))?;
    let metadata: String = r.try_get(5)?;
    let metadata = serde_json::from_str(&metadata).map_err(|e| MemoryError::Internal(format!("metadata: {e}")))?;
    let source: Option<String> = r.try_get(13)?;
    let memory = Memory {
        id: r.try_get(1)?,
        version: r.try_get(2)?,
        layer,
        content: r.try_get(4)?,
        metadata,
        content_hash: r.try_get(6)?,
        embedder: r.try_get(7)?,
        created_at: r.try_get(9)?,
        occurred_at: r.try_get(10)?,
        session_id: r.try_get(11)?,
        expires_at: r.try_get(12)?,
        source: source.map(|document| Source { document, start: r.get::<Option<i64>, _>(14).unwrap_or(0), end: r.get::<Option<i64>, _>(15).unwrap_or(0) }),
        current: r.try_get(16)?,
        deleted_at: r.try_get(17)?,
    };
    Ok(StoredRow { rid: r.try_get(0)?, memory, vector: r.try_get(8)? })
}

fn entry_from_row(r: &PgRow) -> Result<LogEntry> {
    let record: String = r.try_get(1)?;
    let record = serde_json::from_str(&record).map_err(|e| MemoryError::Internal(format!("log entry: {e}")))?;
    Ok(LogEntry { seq: r.try_get(0)?, record, prev_hash: r.try_get(2)?, hash: r.try_get(3)? })
}

async fn current_row(conn: &mut PgConnection, scope: &Scope, id: &str) -> Result<StoredRow> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM pinak.memories WHERE tenant = $1 AND project = $2 AND id = $3 AND current AND deleted_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $4)"
    ))
    .bind(&scope.tenant)
    .bind(&scope.project)
    .bind(id)
    .bind(now_ms())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => stored_from_row(&r),
        None => Err(MemoryError::NotFound(format!("no memory {id} in this project"))),
    }
}

async fn retire(conn: &mut PgConnection, rid: i64, deleted: Option<i64>) -> Result<()> {
    sqlx::query("UPDATE pinak.memories SET current = false, deleted_at = COALESCE($1, deleted_at) WHERE rid = $2")
        .bind(deleted)
        .bind(rid)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert_row(conn: &mut PgConnection, scope: &Scope, row: &NewRow) -> Result<StoredRow> {
    let metadata = serde_json::to_string(&row.metadata).map_err(|e| MemoryError::Internal(e.to_string()))?;
    let rid: i64 = sqlx::query_scalar(
        "INSERT INTO pinak.memories (id, version, tenant, project, layer, content, metadata, content_hash, embedder, vector, created_at, \
         occurred_at, session_id, expires_at, source, src_start, src_end, current) \
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10::real[]::vector, $11, $12, $13, $14, $15, $16, $17, true) RETURNING rid",
    )
    .bind(&row.id)
    .bind(row.version)
    .bind(&scope.tenant)
    .bind(&scope.project)
    .bind(row.layer.as_str())
    .bind(&row.content)
    .bind(&metadata)
    .bind(&row.content_hash)
    .bind(&row.embedder)
    .bind(&row.vector)
    .bind(row.created_at)
    .bind(row.occurred_at)
    .bind(&row.session_id)
    .bind(row.expires_at)
    .bind(row.source.as_ref().map(|s| s.document.clone()))
    .bind(row.source.as_ref().map(|s| s.start))
    .bind(row.source.as_ref().map(|s| s.end))
    .fetch_one(&mut *conn)
    .await?;
    Ok(StoredRow::written(rid, row))
}

/// Appends `record` to `scope`'s `log` (the caller holds the project's
/// write lock).
async fn append(conn: &mut PgConnection, scope: &Scope, log: LogName, record: Record) -> Result<()> {
    let last = sqlx::query("SELECT seq, hash FROM pinak.chain WHERE tenant = $1 AND project = $2 AND log = $3 ORDER BY seq DESC LIMIT 1")
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(log.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let prev = last.map(|r| Link { seq: r.get::<i64, _>(0).max(0) as u64, prev_hash: String::new(), payload: Vec::new(), hash: r.get(1) });
    let payload = serde_json::to_string(&record).map_err(|e| MemoryError::Internal(e.to_string()))?;
    let link = chain::next(prev.as_ref(), payload.into_bytes());
    sqlx::query("INSERT INTO pinak.chain (tenant, project, log, seq, record, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(log.as_str())
        .bind(link.seq as i64)
        .bind(String::from_utf8_lossy(&link.payload).into_owned())
        .bind(&link.prev_hash)
        .bind(&link.hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Each memory's version after changelog entry `seq` (see
/// [`records::versions_at`]); `invalid_position` past the changelog.
async fn versions_at(conn: &mut PgConnection, scope: &Scope, seq: i64) -> Result<HashMap<String, Option<i64>>> {
    let head = changelog_head(&mut *conn, scope).await?;
    if seq < 0 || seq > head {
        return Err(records::invalid_position(head));
    }
    let entries: Vec<String> =
        sqlx::query_scalar("SELECT record FROM pinak.chain WHERE tenant = $1 AND project = $2 AND log = 'changelog' AND seq <= $3 ORDER BY seq")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .bind(seq)
            .fetch_all(&mut *conn)
            .await?;
    Ok(records::versions_at(entries.iter().map(String::as_str)))
}

async fn changelog_head(conn: &mut PgConnection, scope: &Scope) -> Result<i64> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM pinak.chain WHERE tenant = $1 AND project = $2 AND log = 'changelog'")
        .bind(&scope.tenant)
        .bind(&scope.project)
        .fetch_one(&mut *conn)
        .await?;
    Ok(seq.unwrap_or(0))
}

#[async_trait]
impl MemoryStore for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn add(&self, scope: &Scope, actor: &str, rows: Vec<(NewRow, bool)>) -> Result<Vec<AddResult>> {
        self.ensure_indexes(&rows.iter().map(|(r, _)| r).collect::<Vec<_>>()).await?;
        let mut tx = self.scoped(scope, true).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut seen: HashMap<(Layer, Option<String>, String), Memory> = HashMap::new();
        for (row, dedup) in rows {
            let key = (row.layer, row.session_id.clone(), row.content_hash.clone());
            if dedup {
                if let Some(m) = seen.get(&key) {
                    out.push(AddResult::Exists(m.clone()));
                    continue;
                }
                let existing = sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM pinak.memories WHERE tenant = $1 AND project = $2 AND content_hash = $3 AND layer = $4 AND current \
                     AND deleted_at IS NULL AND session_id IS NOT DISTINCT FROM $5 AND (expires_at IS NULL OR expires_at > $6) LIMIT 1"
                ))
                .bind(&scope.tenant)
                .bind(&scope.project)
                .bind(&row.content_hash)
                .bind(row.layer.as_str())
                .bind(&row.session_id)
                .bind(now_ms())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(r) = existing {
                    out.push(AddResult::Exists(stored_from_row(&r)?.memory));
                    continue;
                }
            }
            let stored = insert_row(&mut tx, scope, &row).await?;
            append(&mut tx, scope, LogName::Changelog, records::written(actor, "add", &row, None, None)).await?;
            seen.insert(key, stored.memory.clone());
            out.push(AddResult::Written(stored));
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn supersede(&self, scope: &Scope, actor: &str, row: NewRow) -> Result<StoredRow> {
        self.ensure_indexes(&[&row]).await?;
        let mut tx = self.scoped(scope, true).await?;
        let old = current_row(&mut tx, scope, &row.id).await?;
        if old.memory.version + 1 != row.version {
            return Err(MemoryError::invalid("conflict", format!("memory {} changed meanwhile (now version {}); read it again", row.id, old.memory.version)));
        }
        retire(&mut tx, old.rid, None).await?;
        let stored = insert_row(&mut tx, scope, &row).await?;
        append(&mut tx, scope, LogName::Changelog, records::written(actor, "update", &row, Some(&old.memory.content), None)).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn delete(&self, scope: &Scope, actor: &str, id: &str) -> Result<Memory> {
        let mut tx = self.scoped(scope, true).await?;
        let old = current_row(&mut tx, scope, id).await?;
        let now = now_ms();
        retire(&mut tx, old.rid, Some(now)).await?;
        append(&mut tx, scope, LogName::Changelog, records::retired(actor, "delete", &old.memory, now, None)).await?;
        tx.commit().await?;
        let mut m = old.memory;
        m.current = false;
        m.deleted_at = Some(now);
        Ok(m)
    }

    async fn replace_source(&self, scope: &Scope, actor: &str, source: &str, rows: Vec<NewRow>) -> Result<(usize, Vec<StoredRow>)> {
        self.ensure_indexes(&rows.iter().collect::<Vec<_>>()).await?;
        let mut tx = self.scoped(scope, true).await?;
        let old = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM pinak.memories WHERE tenant = $1 AND project = $2 AND source = $3 AND layer = 'rag' AND current AND deleted_at IS NULL"
        ))
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(source)
        .fetch_all(&mut *tx)
        .await?;
        let now = now_ms();
        for r in &old {
            let old = stored_from_row(r)?;
            retire(&mut tx, old.rid, Some(now)).await?;
            append(&mut tx, scope, LogName::Changelog, records::retired(actor, "delete", &old.memory, now, None)).await?;
        }
        let mut added = Vec::with_capacity(rows.len());
        for row in &rows {
            let stored = insert_row(&mut tx, scope, row).await?;
            let detail = row.source.as_ref().map(|s| records::chunk_detail(s.start, s.end));
            append(&mut tx, scope, LogName::Changelog, records::written(actor, "add", row, None, detail)).await?;
            added.push(stored);
        }
        tx.commit().await?;
        Ok((old.len(), added))
    }

    async fn purge(&self, scope: &Scope, actor: &str) -> Result<u64> {
        let mut tx = self.scoped(scope, true).await?;
        let removed = sqlx::query("DELETE FROM pinak.memories WHERE tenant = $1 AND project = $2")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let at = now_ms();
        for log in [LogName::Changelog, LogName::Events] {
            append(&mut tx, scope, log, records::purge(actor, at, removed)).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn restore(&self, scope: &Scope, actor: &str, seq: i64) -> Result<RestoreOutcome> {
        let mut tx = self.scoped(scope, true).await?;
        let then = versions_at(&mut tx, scope, seq).await?;
        let now_rows = sqlx::query(concat!("SELECT ", columns!(), " FROM pinak.memories WHERE tenant = $1 AND project = $2 AND current AND deleted_at IS NULL"))
            .bind(&scope.tenant)
            .bind(&scope.project)
            .fetch_all(&mut *tx)
            .await?;
        let mut now: HashMap<String, StoredRow> = HashMap::new();
        for r in &now_rows {
            let s = stored_from_row(r)?;
            now.insert(s.memory.id.clone(), s);
        }
        let at = now_ms();
        let detail = Some(format!("restore to changelog entry {seq}"));
        let mut out = RestoreOutcome::default();
        let mut ids: Vec<&String> = now.keys().filter(|id| then.get(*id).copied().flatten().is_none()).collect();
        ids.sort();
        for id in ids {
            let old = &now[id];
            retire(&mut tx, old.rid, Some(at)).await?;
            append(&mut tx, scope, LogName::Changelog, records::retired(actor, "restore", &old.memory, at, detail.clone())).await?;
            out.gone.push(old.rid);
            out.deleted += 1;
        }
        let mut wanted: Vec<(&String, i64)> = then.iter().filter_map(|(id, v)| v.map(|v| (id, v))).collect();
        wanted.sort();
        for (id, version) in wanted {
            let current = now.get(id);
            if current.is_some_and(|c| c.memory.version == version) {
                continue;
            }
            let old = sqlx::query(concat!("SELECT ", columns!(), " FROM pinak.memories WHERE tenant = $1 AND project = $2 AND id = $3 AND version = $4"))
                .bind(&scope.tenant)
                .bind(&scope.project)
                .bind(id)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(old) = old else {
                out.missing += 1;
                continue;
            };
            let old = stored_from_row(&old)?;
            if current.is_some_and(|c| c.memory.content == old.memory.content && c.memory.metadata == old.memory.metadata) {
                continue;
            }
            let latest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM pinak.memories WHERE tenant = $1 AND project = $2 AND id = $3")
                .bind(&scope.tenant)
                .bind(&scope.project)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            if let Some(c) = current {
                retire(&mut tx, c.rid, None).await?;
                out.gone.push(c.rid);
            }
            let row = StoredRow::again(&old.memory, old.vector.clone(), latest + 1, at);
            let stored = insert_row(&mut tx, scope, &row).await?;
            let before = current.map(|c| c.memory.content.as_str());
            append(&mut tx, scope, LogName::Changelog, records::written(actor, "restore", &row, before, detail.clone())).await?;
            out.added.push(stored);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn append_events(&self, batch: &[(Scope, Record)]) -> Result<()> {
        // one transaction per project, in scope order (no lock cycles
        // between servers)
        let mut by_scope: std::collections::BTreeMap<&Scope, Vec<&Record>> = Default::default();
        for (scope, record) in batch {
            by_scope.entry(scope).or_default().push(record);
        }
        for (scope, records) in by_scope {
            let mut tx = self.scoped(scope, true).await?;
            for r in records {
                append(&mut tx, scope, LogName::Events, r.clone()).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    async fn get(&self, scope: &Scope, id: &str) -> Result<StoredRow> {
        let mut tx = self.scoped(scope, false).await?;
        let row = current_row(&mut tx, scope, id).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn rows(&self, scope: &Scope, rids: &[i64], filters: &Filters) -> Result<Vec<StoredRow>> {
        if rids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.scoped(scope, false).await?;
        let mut q = QueryBuilder::<Postgres>::new(concat!("SELECT ", columns!(), " FROM pinak.memories WHERE "));
        push_live_scope(&mut q, scope);
        push_filters(&mut q, filters)?;
        q.push(" AND rid = ANY(").push_bind(rids.to_vec()).push(")");
        let rows = q.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(stored_from_row).collect()
    }

    async fn list(&self, scope: &Scope, filters: &Filters, limit: usize, cursor: Option<i64>) -> Result<(Vec<Memory>, Option<i64>)> {
        let mut tx = self.scoped(scope, false).await?;
        let mut q = QueryBuilder::<Postgres>::new(concat!("SELECT ", columns!(), " FROM pinak.memories WHERE "));
        push_live_scope(&mut q, scope);
        push_filters(&mut q, filters)?;
        if let Some(c) = cursor {
            q.push(" AND rid < ").push_bind(c);
        }
        q.push(" ORDER BY rid DESC LIMIT ").push_bind((limit + 1) as i64);
        let rows = q.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut out: Vec<StoredRow> = rows.iter().map(stored_from_row).collect::<Result<_>>()?;
        let next = if out.len() > limit {
            out.truncate(limit);
            out.last().map(|r| r.rid)
        } else {
            None
        };
        Ok((out.into_iter().map(|r| r.memory).collect(), next))
    }

    async fn keyword(&self, scope: &Scope, query: &str, layers: &[Layer], limit: usize) -> Result<Vec<i64>> {
        let words = fts_words(query);
        if words.is_empty() {
            return Ok(Vec::new());
        }
        // each word on its own, ORed (the words are letters and digits only)
        let terms = words.join(" | ");
        let layers: Vec<String> = if layers.is_empty() { crate::service::MEMORY_LAYERS.iter().map(|l| l.as_str().to_owned()).collect() } else { layers.iter().map(|l| l.as_str().to_owned()).collect() };
        let mut tx = self.scoped(scope, false).await?;
        let rids: Vec<i64> = sqlx::query_scalar(
            "SELECT rid FROM pinak.memories, to_tsquery('english', $1) AS q WHERE tenant = $2 AND project = $3 AND current AND deleted_at IS NULL \
             AND layer = ANY($4) AND fts @@ q ORDER BY ts_rank_cd(fts, q) DESC, rid DESC LIMIT $5",
        )
        .bind(terms)
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(layers)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rids)
    }

    async fn nearest(&self, scope: &Scope, embedder: &str, query: &[f32], k: usize, filters: &Filters, _layers: &[Layer]) -> Result<Vec<(i64, f32)>> {
        if let Some(hits) = self.approximate(scope, embedder, query, k, filters).await? {
            if hits.len() >= k {
                return Ok(hits);
            }
        }
        // fewer than k through the index (or none): compare every match
        self.exact(scope, embedder, query, k, filters).await
    }

    async fn most_similar(&self, scope: &Scope, embedder: &str, vector: &[f32], layer: Layer) -> Result<Option<(i64, f32)>> {
        let filters = Filters { layers: vec![layer.as_str().to_owned()], ..Default::default() };
        // the shared index may give up before reaching a small project's
        // rows (hnsw.max_scan_tuples): then compare them all
        let hits = match self.approximate(scope, embedder, vector, 1, &filters).await? {
            Some(h) if !h.is_empty() => h,
            _ => self.exact(scope, embedder, vector, 1, &filters).await?,
        };
        Ok(hits.into_iter().next())
    }

    async fn history(&self, scope: &Scope, id: &str) -> Result<History> {
        let mut tx = self.scoped(scope, false).await?;
        let rows = sqlx::query(concat!("SELECT ", columns!(), " FROM pinak.memories WHERE tenant = $1 AND project = $2 AND id = $3 ORDER BY version"))
            .bind(&scope.tenant)
            .bind(&scope.project)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            return Err(MemoryError::NotFound(format!("no memory {id} in this project")));
        }
        let versions = rows.iter().map(|r| stored_from_row(r).map(|s| s.memory)).collect::<Result<Vec<_>>>()?;
        let entries = sqlx::query(
            "SELECT seq, record, prev_hash, hash FROM pinak.chain WHERE tenant = $1 AND project = $2 AND log = 'changelog' \
             AND record::jsonb ->> 'memory_id' = $3 ORDER BY seq",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let changes = entries.iter().map(entry_from_row).collect::<Result<Vec<_>>>()?;
        Ok(History { id: id.to_owned(), versions, changes })
    }

    async fn log(&self, scope: &Scope, log: LogName, after: i64, limit: usize) -> Result<Vec<LogEntry>> {
        let mut tx = self.scoped(scope, false).await?;
        let rows = sqlx::query(
            "SELECT seq, record, prev_hash, hash FROM pinak.chain WHERE tenant = $1 AND project = $2 AND log = $3 AND seq > $4 ORDER BY seq LIMIT $5",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(log.as_str())
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn verify(&self, scope: &Scope, log: LogName) -> Result<Verification> {
        let mut tx = self.scoped(scope, false).await?;
        let rows = sqlx::query("SELECT seq, record, prev_hash, hash FROM pinak.chain WHERE tenant = $1 AND project = $2 AND log = $3 ORDER BY seq")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .bind(log.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let links: Vec<Link> = rows
            .iter()
            .map(|r| Link { seq: r.get::<i64, _>(0).max(0) as u64, payload: r.get::<String, _>(1).into_bytes(), prev_hash: r.get(2), hash: r.get(3) })
            .collect();
        let mut report = match chain::verify(&links) {
            Ok((n, head)) => Verification { log, ok: true, entries: n as i64, head: Some(head), broken_at: None, reason: None },
            Err(b) => Verification { log, ok: false, entries: links.len() as i64, head: None, broken_at: Some(b.seq as i64), reason: Some(b.reason.to_owned()) },
        };
        if report.ok && log == LogName::Changelog {
            let recorded = records::recorded_hashes(links.iter().map(|l| (l.seq as i64, l.payload.as_slice())));
            let rows = sqlx::query("SELECT id, version, content FROM pinak.memories WHERE tenant = $1 AND project = $2 ORDER BY rid")
                .bind(&scope.tenant)
                .bind(&scope.project)
                .fetch_all(&mut *tx)
                .await?;
            for r in rows {
                let (id, version, content): (String, i64, String) = (r.get(0), r.get(1), r.get(2));
                if let Some((seq, why)) = records::content_fault(&recorded, &id, version, &content) {
                    report.ok = false;
                    report.head = None;
                    report.broken_at = seq;
                    report.reason = Some(why);
                    break;
                }
            }
        }
        tx.commit().await?;
        Ok(report)
    }

    async fn position(&self, scope: &Scope) -> Result<Position> {
        let mut tx = self.scoped(scope, false).await?;
        let seq = changelog_head(&mut tx, scope).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pinak.memories WHERE tenant = $1 AND project = $2 AND current AND deleted_at IS NULL")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Position { changelog_seq: seq, memories: n })
    }

    async fn mark_position(&self, scope: &Scope, label: &str) -> Result<Position> {
        let pos = self.position(scope).await?;
        let mut tx = self.scoped(scope, true).await?;
        sqlx::query(
            "INSERT INTO pinak.positions (tenant, project, label, seq, at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant, project, label) DO UPDATE SET seq = excluded.seq, at = excluded.at",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(label)
        .bind(pos.changelog_seq)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(pos)
    }

    async fn marked_position(&self, scope: &Scope, label: &str) -> Result<Option<i64>> {
        let mut tx = self.scoped(scope, false).await?;
        let seq = sqlx::query_scalar("SELECT seq FROM pinak.positions WHERE tenant = $1 AND project = $2 AND label = $3")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .bind(label)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn rows_at(&self, scope: &Scope, seq: i64, cap: usize) -> Result<Vec<StoredRow>> {
        let mut tx = self.scoped(scope, false).await?;
        let then = versions_at(&mut tx, scope, seq).await?;
        let mut wanted: Vec<(String, i64)> = then.into_iter().filter_map(|(id, v)| v.map(|v| (id, v))).collect();
        if wanted.len() > cap {
            return Err(crate::store::too_many(wanted.len(), cap));
        }
        wanted.sort();
        let (ids, versions): (Vec<String>, Vec<i64>) = wanted.into_iter().unzip();
        // one query for all of them
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM pinak.memories m JOIN unnest($3::text[], $4::bigint[]) AS w(id, version) USING (id, version) \
             WHERE m.tenant = $1 AND m.project = $2 ORDER BY m.id"
        ))
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(ids)
        .bind(versions)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(stored_from_row).collect()
    }

    async fn stale_count(&self, scope: &Scope, embedder: &str) -> Result<i64> {
        let mut tx = self.scoped(scope, false).await?;
        let n = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pinak.memories WHERE tenant = $1 AND project = $2 AND current AND deleted_at IS NULL AND embedder <> $3 \
             AND (expires_at IS NULL OR expires_at > $4)",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(embedder)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn stale_rows(&self, scope: &Scope, embedder: &str, limit: usize) -> Result<Vec<StaleRow>> {
        let mut tx = self.scoped(scope, false).await?;
        let rows = sqlx::query(
            "SELECT rid, layer, embedder, content FROM pinak.memories WHERE tenant = $1 AND project = $2 AND current AND deleted_at IS NULL \
             AND embedder <> $3 AND (expires_at IS NULL OR expires_at > $4) ORDER BY rid LIMIT $5",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(embedder)
        .bind(now_ms())
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                let layer: String = r.try_get(1)?;
                let layer = Layer::from_str(&layer).map_err(|e| MemoryError::Internal(e.to_string()))?;
                Ok(StaleRow { rid: r.try_get(0)?, layer, embedder: r.try_get(2)?, content: r.try_get(3)? })
            })
            .collect()
    }

    async fn set_vectors(&self, scope: &Scope, embedder: &str, rows: &[(StaleRow, Vec<f32>)]) -> Result<usize> {
        if let Some((_, v)) = rows.first() {
            self.ensure_index(embedder, v.len()).await?;
        }
        let mut tx = self.scoped(scope, true).await?;
        let mut n = 0;
        for (r, v) in rows {
            n += sqlx::query("UPDATE pinak.memories SET embedder = $1, vector = $2::real[]::vector WHERE rid = $3 AND tenant = $4 AND project = $5 AND current")
                .bind(embedder)
                .bind(v)
                .bind(r.rid)
                .bind(&scope.tenant)
                .bind(&scope.project)
                .execute(&mut *tx)
                .await?
                .rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn layer_counts(&self) -> Result<Vec<(String, i64)>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('pinak.counts', 'on', true)").execute(&mut *tx).await?;
        let rows = sqlx::query("SELECT layer, COUNT(*) FROM pinak.memories WHERE current AND deleted_at IS NULL GROUP BY layer").fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedder_ids_are_quoted_and_name_distinct_indexes() {
        assert_eq!(literal("openai:http://x/#it's:1536"), "'openai:http://x/#it''s:1536'");
        assert_ne!(index_name("hash-v1-384"), index_name("hash-v1-256"));
        assert!(index_name("a'; DROP TABLE x; --").chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
