//! The embedded store: one SQLite file holding every version of every
//! memory (with its vector), a contentless FTS5 index of the current ones
//! for BM25, and the hash-chained logs.
//!
//! Invariants:
//! - every write (rows, FTS, changelog entry) is one transaction, committed
//!   before the caller is answered: an acknowledged write survives kill -9
//!   (WAL; `synchronous=NORMAL` loses nothing on a process crash);
//! - exactly one version of a memory is `current`, unless it is deleted;
//! - the FTS index holds exactly the current, undeleted versions, each
//!   tagged with its scope's token and its layer's, so a match never
//!   crosses projects and never needs the `memories` table;
//! - log entries hold ids and hashes, never content.

use std::path::Path;
use std::str::FromStr;

use pinacle_memory::chain::{self, Link};
use pinacle_memory::layer::Layer;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row as _, Sqlite, SqliteConnection, SqlitePool};

use crate::error::{MemoryError, Result};
use crate::model::*;
use crate::records;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS memories (
        rid INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        project TEXT NOT NULL,
        layer TEXT NOT NULL,
        content TEXT NOT NULL,
        metadata TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        embedder TEXT NOT NULL,
        vector BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        occurred_at INTEGER NOT NULL,
        session_id TEXT,
        expires_at INTEGER,
        source TEXT,
        src_start INTEGER,
        src_end INTEGER,
        current INTEGER NOT NULL,
        deleted_at INTEGER,
        UNIQUE (id, version)
    )",
    "CREATE INDEX IF NOT EXISTS memories_scope ON memories (tenant, project, current, rid)",
    "CREATE INDEX IF NOT EXISTS memories_hash ON memories (tenant, project, content_hash) WHERE current = 1",
    "CREATE INDEX IF NOT EXISTS memories_source ON memories (tenant, project, source) WHERE current = 1",
    "CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5 (scope, content, content = '', contentless_delete = 1, tokenize = 'porter unicode61 remove_diacritics 2')",
    "CREATE TABLE IF NOT EXISTS chain (
        tenant TEXT NOT NULL,
        project TEXT NOT NULL,
        log TEXT NOT NULL,
        seq INTEGER NOT NULL,
        record TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (tenant, project, log, seq)
    ) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS positions (
        tenant TEXT NOT NULL,
        project TEXT NOT NULL,
        label TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (tenant, project, label)
    ) WITHOUT ROWID",
];

/// Columns of a memory row, in the order [`stored_from_row`] reads them
/// (a macro, so queries stay `&'static str`).
macro_rules! columns {
    () => {
        "rid, id, version, layer, content, metadata, content_hash, embedder, vector, created_at, occurred_at, \
         session_id, expires_at, source, src_start, src_end, current, deleted_at"
    };
}
const COLUMNS: &str = columns!();

/// A version about to be written (its vector already computed).
#[derive(Debug, Clone)]
pub struct NewRow {
    pub id: String,
    pub version: i64,
    pub layer: Layer,
    pub content: String,
    pub metadata: Metadata,
    pub content_hash: String,
    pub embedder: String,
    pub vector: Vec<f32>,
    pub created_at: i64,
    pub occurred_at: i64,
    pub session_id: Option<String>,
    pub expires_at: Option<i64>,
    pub source: Option<Source>,
}

/// A stored version with its row id (the vector index's key) and vector.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub rid: i64,
    pub memory: Memory,
    pub vector: Vec<f32>,
}

impl StoredRow {
    /// `row` as written under row id `rid` (current, not deleted).
    pub fn written(rid: i64, row: &NewRow) -> Self {
        let memory = Memory {
            id: row.id.clone(),
            version: row.version,
            layer: row.layer,
            content: row.content.clone(),
            metadata: row.metadata.clone(),
            content_hash: row.content_hash.clone(),
            embedder: row.embedder.clone(),
            created_at: row.created_at,
            occurred_at: row.occurred_at,
            session_id: row.session_id.clone(),
            expires_at: row.expires_at,
            source: row.source.clone(),
            current: true,
            deleted_at: None,
        };
        StoredRow { rid, memory, vector: row.vector.clone() }
    }

    /// The version `m` (with `vector`) written again as version `version`
    /// at `at`: what a restore writes.
    pub fn again(m: &Memory, vector: Vec<f32>, version: i64, at: i64) -> NewRow {
        NewRow {
            id: m.id.clone(),
            version,
            layer: m.layer,
            content: m.content.clone(),
            metadata: m.metadata.clone(),
            content_hash: m.content_hash.clone(),
            embedder: m.embedder.clone(),
            vector,
            created_at: at,
            occurred_at: m.occurred_at,
            session_id: m.session_id.clone(),
            expires_at: m.expires_at,
            source: m.source.clone(),
        }
    }
}

/// A current memory whose vector another embedder made.
#[derive(Debug, Clone)]
pub struct StaleRow {
    pub rid: i64,
    pub layer: Layer,
    /// The embedder that made its vector.
    pub embedder: String,
    pub content: String,
}

/// What a restore changed.
#[derive(Debug, Clone, Default)]
pub struct RestoreOutcome {
    /// Row ids that left the current set.
    pub gone: Vec<i64>,
    /// Versions written (memories set back).
    pub added: Vec<StoredRow>,
    /// Memories deleted (added after the position).
    pub deleted: usize,
    /// Versions a purge removed.
    pub missing: usize,
}

/// What one add in a batch came to.
#[derive(Debug, Clone)]
pub enum AddResult {
    Written(StoredRow),
    /// An existing current memory of the same content (exact duplicate).
    Exists(Memory),
}

/// The SQLite memory store.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// SQLite has one writer; taking this first avoids busy upgrades.
    write: std::sync::Arc<tokio::sync::Mutex<()>>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl SqliteStore {
    /// Opens (creating) the store at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&pool).await?;
        }
        Ok(Self { pool, write: Default::default() })
    }

    /// Adds `rows`; a row with `exact_dedup` set is not written when a
    /// current memory of its layer has the same content hash (in the store
    /// or earlier in the batch). One transaction and one changelog entry
    /// per written row.
    pub async fn add(&self, scope: &Scope, actor: &str, rows: Vec<(NewRow, bool)>) -> Result<Vec<AddResult>> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(rows.len());
        // a duplicate is the same content in the same layer (and session)
        let mut seen: std::collections::HashMap<(Layer, Option<String>, String), Memory> = Default::default();
        for (row, dedup) in rows {
            let key = (row.layer, row.session_id.clone(), row.content_hash.clone());
            if dedup {
                if let Some(m) = seen.get(&key) {
                    out.push(AddResult::Exists(m.clone()));
                    continue;
                }
                let existing = sqlx::query(concat!("SELECT ", columns!(), " FROM memories WHERE tenant = ? AND project = ? AND content_hash = ? AND layer = ? AND current = 1 \
                     AND deleted_at IS NULL AND session_id IS ? AND (expires_at IS NULL OR expires_at > ?) LIMIT 1"))
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

    /// Writes `row` as the next version of its memory, superseding version
    /// `row.version - 1` (which must still be current: else someone else
    /// updated it first). Returns the old row id and embedder, and the new
    /// row.
    pub async fn supersede(&self, scope: &Scope, actor: &str, row: NewRow) -> Result<(i64, String, StoredRow)> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let old = current_row(&mut tx, scope, &row.id).await?;
        if old.memory.version + 1 != row.version {
            return Err(MemoryError::invalid("conflict", format!("memory {} changed meanwhile (now version {}); read it again", row.id, old.memory.version)));
        }
        retire(&mut tx, old.rid, None).await?;
        let stored = insert_row(&mut tx, scope, &row).await?;
        append(&mut tx, scope, LogName::Changelog, records::written(actor, "update", &row, Some(&old.memory.content), None)).await?;
        tx.commit().await?;
        Ok((old.rid, old.memory.embedder, stored))
    }

    /// Deletes memory `id` (its versions stay, for history). Returns the
    /// row id that left the index and the deleted version.
    pub async fn delete(&self, scope: &Scope, actor: &str, id: &str) -> Result<(i64, Memory)> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let old = current_row(&mut tx, scope, id).await?;
        let now = now_ms();
        retire(&mut tx, old.rid, Some(now)).await?;
        append(&mut tx, scope, LogName::Changelog, records::retired(actor, "delete", &old.memory, now, None)).await?;
        tx.commit().await?;
        let mut m = old.memory;
        m.current = false;
        m.deleted_at = Some(now);
        Ok((old.rid, m))
    }

    /// Replaces the chunks of document `source` with `rows` in one
    /// transaction. Returns the row ids (and embedders) that left and the
    /// new rows.
    pub async fn replace_source(&self, scope: &Scope, actor: &str, source: &str, rows: Vec<NewRow>) -> Result<(Vec<(i64, String)>, Vec<StoredRow>)> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let old = sqlx::query(concat!("SELECT ", columns!(), " FROM memories WHERE tenant = ? AND project = ? AND source = ? AND layer = 'rag' AND current = 1 AND deleted_at IS NULL"))
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(source)
        .fetch_all(&mut *tx)
        .await?;
        let now = now_ms();
        let mut gone = Vec::with_capacity(old.len());
        for r in &old {
            let old = stored_from_row(r)?;
            retire(&mut tx, old.rid, Some(now)).await?;
            append(&mut tx, scope, LogName::Changelog, records::retired(actor, "delete", &old.memory, now, None)).await?;
            gone.push((old.rid, old.memory.embedder));
        }
        let mut added = Vec::with_capacity(rows.len());
        for row in &rows {
            let stored = insert_row(&mut tx, scope, row).await?;
            let detail = row.source.as_ref().map(|s| records::chunk_detail(s.start, s.end));
            append(&mut tx, scope, LogName::Changelog, records::written(actor, "add", row, None, detail)).await?;
            added.push(stored);
        }
        tx.commit().await?;
        Ok((gone, added))
    }

    /// Removes every memory of the project (all versions, the FTS rows) and
    /// appends a `purge` tombstone to both logs, which stay whole (they
    /// hold no content). Returns how many versions were removed.
    pub async fn purge(&self, scope: &Scope, actor: &str) -> Result<u64> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM memories_fts WHERE rowid IN (SELECT rid FROM memories WHERE tenant = ? AND project = ? AND current = 1 AND deleted_at IS NULL)",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .execute(&mut *tx)
        .await?;
        let removed = sqlx::query("DELETE FROM memories WHERE tenant = ? AND project = ?")
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

    /// Appends access records to the `events` logs (one transaction).
    pub async fn append_events(&self, batch: &[(Scope, Record)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        for (scope, record) in batch {
            append(&mut tx, scope, LogName::Events, record.clone()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The current version of `id`, if it is in `scope` and alive.
    pub async fn get(&self, scope: &Scope, id: &str) -> Result<StoredRow> {
        let mut conn = self.pool.acquire().await?;
        current_row(&mut conn, scope, id).await
    }

    /// Current, alive rows by row id (in no particular order), restricted
    /// to `scope` and `filters`.
    pub async fn rows(&self, scope: &Scope, rids: &[i64], filters: &Filters) -> Result<Vec<StoredRow>> {
        if rids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM memories WHERE "));
        push_live_scope(&mut q, scope);
        push_filters(&mut q, filters)?;
        q.push(" AND rid IN (");
        let mut sep = q.separated(", ");
        for r in rids {
            sep.push_bind(*r);
        }
        q.push(")");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(stored_from_row).collect()
    }

    /// Current, alive memories, newest first, `limit` from after `cursor`.
    pub async fn list(&self, scope: &Scope, filters: &Filters, limit: usize, cursor: Option<i64>) -> Result<(Vec<Memory>, Option<i64>)> {
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM memories WHERE "));
        push_live_scope(&mut q, scope);
        push_filters(&mut q, filters)?;
        if let Some(c) = cursor {
            q.push(" AND rid < ").push_bind(c);
        }
        q.push(" ORDER BY rid DESC LIMIT ").push_bind((limit + 1) as i64);
        let rows = q.build().fetch_all(&self.pool).await?;
        let mut out: Vec<StoredRow> = rows.iter().map(stored_from_row).collect::<Result<_>>()?;
        let next = if out.len() > limit {
            out.truncate(limit);
            out.last().map(|r| r.rid)
        } else {
            None
        };
        Ok((out.into_iter().map(|r| r.memory).collect(), next))
    }

    /// Row ids and vectors of up to `cap + 1` current, alive rows matching
    /// `filters` (for exact search when filters are selective; only what
    /// the scoring needs is read).
    pub async fn candidates(&self, scope: &Scope, filters: &Filters, embedder: &str, cap: usize) -> Result<Vec<(i64, Vec<f32>)>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT rid, vector FROM memories WHERE ");
        push_live_scope(&mut q, scope);
        push_filters(&mut q, filters)?;
        q.push(" AND embedder = ").push_bind(embedder.to_owned());
        q.push(" LIMIT ").push_bind((cap + 1) as i64);
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| (r.get::<i64, _>(0), decode_vector(r.get::<&[u8], _>(1)))).collect())
    }

    /// Row ids of the best BM25 matches of `query` among the project's
    /// current memories in `layers` (all when empty), best first. The
    /// scope and layers are tokens of the FTS row itself, so the match
    /// never leaves the index (a join on `memories` would make SQLite run
    /// the match once per row); the caller drops expired rows.
    pub async fn keyword(&self, scope: &Scope, query: &str, layers: &[Layer], limit: usize) -> Result<Vec<i64>> {
        let Some(terms) = fts_terms(query) else { return Ok(Vec::new()) };
        let token = scope_token(scope);
        let tags: Vec<String> = if layers.is_empty() { vec![token] } else { layers.iter().map(|l| layer_tag(&token, *l)).collect() };
        let expr = format!("scope : ({}) AND ({terms})", tags.join(" OR "));
        let rows = sqlx::query("SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? ORDER BY bm25(memories_fts, 0.0, 1.0) LIMIT ?")
            .bind(expr)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<i64, _>(0)).collect())
    }

    /// Every current, alive row of the project made by `embedder`: what its
    /// vector index holds (rebuilt from here after a restart).
    pub async fn index_rows(&self, scope: &Scope, embedder: &str) -> Result<Vec<(i64, Layer, Vec<f32>)>> {
        let rows = sqlx::query(
            "SELECT rid, layer, vector FROM memories WHERE tenant = ? AND project = ? AND current = 1 AND deleted_at IS NULL AND embedder = ? \
             AND (expires_at IS NULL OR expires_at > ?)",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(embedder)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let layer: String = r.get(1);
                let layer = Layer::from_str(&layer).map_err(|e| MemoryError::Internal(e.to_string()))?;
                Ok((r.get::<i64, _>(0), layer, decode_vector(r.get::<&[u8], _>(2))))
            })
            .collect()
    }

    /// Every version of memory `id` in `scope`, oldest first, and its
    /// changelog entries.
    pub async fn history(&self, scope: &Scope, id: &str) -> Result<History> {
        let rows = sqlx::query(concat!("SELECT ", columns!(), " FROM memories WHERE tenant = ? AND project = ? AND id = ? ORDER BY version"))
            .bind(&scope.tenant)
            .bind(&scope.project)
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Err(MemoryError::NotFound(format!("no memory {id} in this project")));
        }
        let versions = rows.iter().map(|r| stored_from_row(r).map(|s| s.memory)).collect::<Result<Vec<_>>>()?;
        let entries = sqlx::query(
            "SELECT seq, record, prev_hash, hash FROM chain WHERE tenant = ? AND project = ? AND log = 'changelog' \
             AND json_extract(record, '$.memory_id') = ? ORDER BY seq",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let changes = entries.iter().map(entry_from_row).collect::<Result<Vec<_>>>()?;
        Ok(History { id: id.to_owned(), versions, changes })
    }

    /// Entries of `log` after `after`, at most `limit`.
    pub async fn log(&self, scope: &Scope, log: LogName, after: i64, limit: usize) -> Result<Vec<LogEntry>> {
        let rows = sqlx::query(
            "SELECT seq, record, prev_hash, hash FROM chain WHERE tenant = ? AND project = ? AND log = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(log.as_str())
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Checks `log`'s chain from its first entry; for the changelog, also
    /// that every stored version's content still has the hash its entry
    /// recorded.
    pub async fn verify(&self, scope: &Scope, log: LogName) -> Result<Verification> {
        let rows = sqlx::query("SELECT seq, record, prev_hash, hash FROM chain WHERE tenant = ? AND project = ? AND log = ? ORDER BY seq")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .bind(log.as_str())
            .fetch_all(&self.pool)
            .await?;
        let links: Vec<Link> = rows
            .iter()
            .map(|r| Link {
                seq: r.get::<i64, _>(0).max(0) as u64,
                payload: r.get::<String, _>(1).into_bytes(),
                prev_hash: r.get(2),
                hash: r.get(3),
            })
            .collect();
        let mut report = match chain::verify(&links) {
            Ok((n, head)) => Verification { log, ok: true, entries: n as i64, head: Some(head), broken_at: None, reason: None },
            Err(b) => Verification {
                log,
                ok: false,
                entries: links.len() as i64,
                head: None,
                broken_at: Some(b.seq as i64),
                reason: Some(b.reason.to_owned()),
            },
        };
        if report.ok && log == LogName::Changelog {
            // The content of each stored version against the hash its
            // changelog entry recorded.
            let recorded = records::recorded_hashes(links.iter().map(|l| (l.seq as i64, l.payload.as_slice())));
            let rows = sqlx::query("SELECT id, version, content FROM memories WHERE tenant = ? AND project = ? ORDER BY rid")
                .bind(&scope.tenant)
                .bind(&scope.project)
                .fetch_all(&self.pool)
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
        Ok(report)
    }

    /// Remembers the project's changelog position under `label` (a pod
    /// snapshot's), replacing an earlier one of that label.
    pub async fn mark_position(&self, scope: &Scope, label: &str) -> Result<Position> {
        let pos = self.position(scope).await?;
        let _w = self.write.lock().await;
        sqlx::query("INSERT OR REPLACE INTO positions (tenant, project, label, seq, at) VALUES (?, ?, ?, ?, ?)")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .bind(label)
            .bind(pos.changelog_seq)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(pos)
    }

    /// The position remembered under `label`.
    pub async fn marked_position(&self, scope: &Scope, label: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT seq FROM positions WHERE tenant = ? AND project = ? AND label = ?")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .bind(label)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Brings the project's memories back to where they stood after
    /// changelog entry `seq`: each memory's version of then becomes current
    /// again as a new version, memories added since are deleted, deleted
    /// ones come back. Nothing is erased: every change is a `restore`
    /// entry. Versions a purge removed cannot come back (`missing`).
    pub async fn restore(&self, scope: &Scope, actor: &str, seq: i64) -> Result<RestoreOutcome> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        // each memory's version then (None: deleted, or not yet added)
        let then = versions_at(&mut tx, scope, seq).await?;
        let now_rows = sqlx::query(concat!("SELECT ", columns!(), " FROM memories WHERE tenant = ? AND project = ? AND current = 1 AND deleted_at IS NULL"))
            .bind(&scope.tenant)
            .bind(&scope.project)
            .fetch_all(&mut *tx)
            .await?;
        let mut now: std::collections::HashMap<String, StoredRow> = Default::default();
        for r in &now_rows {
            let s = stored_from_row(r)?;
            now.insert(s.memory.id.clone(), s);
        }
        let at = now_ms();
        let detail = Some(format!("restore to changelog entry {seq}"));
        let mut out = RestoreOutcome::default();
        // alive now, not then: deleted
        let mut ids: Vec<&String> = now.keys().filter(|id| then.get(*id).copied().flatten().is_none()).collect();
        ids.sort();
        for id in ids {
            let old = &now[id];
            retire(&mut tx, old.rid, Some(at)).await?;
            append(&mut tx, scope, LogName::Changelog, records::retired(actor, "restore", &old.memory, at, detail.clone())).await?;
            out.gone.push(old.rid);
            out.deleted += 1;
        }
        // alive then in another version than now: that version again
        let mut wanted: Vec<(&String, i64)> = then.iter().filter_map(|(id, v)| v.map(|v| (id, v))).collect();
        wanted.sort();
        for (id, version) in wanted {
            let current = now.get(id);
            if current.is_some_and(|c| c.memory.version == version) {
                continue;
            }
            let old = sqlx::query(concat!("SELECT ", columns!(), " FROM memories WHERE tenant = ? AND project = ? AND id = ? AND version = ?"))
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
            // already as it was (restored before): nothing to write
            if current.is_some_and(|c| c.memory.content == old.memory.content && c.memory.metadata == old.memory.metadata) {
                continue;
            }
            let latest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM memories WHERE tenant = ? AND project = ? AND id = ?")
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

    /// The project's changelog position and how many memories it holds.
    pub async fn position(&self, scope: &Scope) -> Result<Position> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM chain WHERE tenant = ? AND project = ? AND log = 'changelog'")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memories WHERE tenant = ? AND project = ? AND current = 1 AND deleted_at IS NULL")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .fetch_one(&self.pool)
            .await?;
        Ok(Position { changelog_seq: seq.unwrap_or(0), memories: n })
    }

    /// How many current memories each layer holds, over every project (for
    /// the metrics).
    pub async fn layer_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT layer, COUNT(*) FROM memories WHERE current = 1 AND deleted_at IS NULL GROUP BY layer")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The versions that were current after changelog entry `seq` (what a
    /// fork copies; versions a purge removed are gone), oldest memory
    /// first.
    pub async fn rows_at(&self, scope: &Scope, seq: i64, cap: usize) -> Result<Vec<StoredRow>> {
        let mut conn = self.pool.acquire().await?;
        let then = versions_at(&mut conn, scope, seq).await?;
        let mut wanted: Vec<(&String, i64)> = then.iter().filter_map(|(id, v)| v.map(|v| (id, v))).collect();
        if wanted.len() > cap {
            return Err(too_many(wanted.len(), cap));
        }
        wanted.sort();
        let mut out = Vec::with_capacity(wanted.len());
        for (id, version) in wanted {
            let row = sqlx::query(concat!("SELECT ", columns!(), " FROM memories WHERE tenant = ? AND project = ? AND id = ? AND version = ?"))
                .bind(&scope.tenant)
                .bind(&scope.project)
                .bind(id)
                .bind(version)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(r) = row {
                out.push(stored_from_row(&r)?);
            }
        }
        Ok(out)
    }

    /// How many current memories have vectors of another embedder than
    /// `embedder`.
    pub async fn stale_count(&self, scope: &Scope, embedder: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM memories WHERE tenant = ? AND project = ? AND current = 1 AND deleted_at IS NULL AND embedder <> ? \
             AND (expires_at IS NULL OR expires_at > ?)",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(embedder)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?)
    }

    /// Up to `limit` of those, oldest first.
    pub async fn stale_rows(&self, scope: &Scope, embedder: &str, limit: usize) -> Result<Vec<StaleRow>> {
        let rows = sqlx::query(
            "SELECT rid, layer, embedder, content FROM memories WHERE tenant = ? AND project = ? AND current = 1 AND deleted_at IS NULL \
             AND embedder <> ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY rid LIMIT ?",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(embedder)
        .bind(now_ms())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let layer = Layer::from_str(r.get::<&str, _>(1)).map_err(|e| MemoryError::Internal(e.to_string()))?;
                Ok(StaleRow { rid: r.get(0), layer, embedder: r.get(2), content: r.get(3) })
            })
            .collect()
    }

    /// Gives rows new vectors by `embedder` (those still current): the
    /// row ids that changed. The content, and so the changelog, is
    /// untouched.
    pub async fn set_vectors(&self, scope: &Scope, embedder: &str, rows: &[(i64, Vec<f32>)]) -> Result<Vec<i64>> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut changed = Vec::with_capacity(rows.len());
        for (rid, v) in rows {
            let done: Option<i64> = sqlx::query_scalar(
                "UPDATE memories SET embedder = ?, vector = ? WHERE rid = ? AND tenant = ? AND project = ? AND current = 1 RETURNING rid",
            )
            .bind(embedder)
            .bind(encode_vector(v))
            .bind(rid)
            .bind(&scope.tenant)
            .bind(&scope.project)
            .fetch_optional(&mut *tx)
            .await?;
            changed.extend(done);
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// The raw pool (tests tamper with rows through it).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Each memory's version after changelog entry `seq` (see
/// [`records::versions_at`]); `invalid_position` past the changelog.
async fn versions_at(conn: &mut SqliteConnection, scope: &Scope, seq: i64) -> Result<std::collections::HashMap<String, Option<i64>>> {
    let head: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM chain WHERE tenant = ? AND project = ? AND log = 'changelog'")
        .bind(&scope.tenant)
        .bind(&scope.project)
        .fetch_one(&mut *conn)
        .await?;
    let head = head.unwrap_or(0);
    if seq < 0 || seq > head {
        return Err(records::invalid_position(head));
    }
    let entries = sqlx::query("SELECT record FROM chain WHERE tenant = ? AND project = ? AND log = 'changelog' AND seq <= ? ORDER BY seq")
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(seq)
        .fetch_all(&mut *conn)
        .await?;
    Ok(records::versions_at(entries.iter().map(|e| e.get::<&str, _>(0))))
}

async fn current_row(conn: &mut SqliteConnection, scope: &Scope, id: &str) -> Result<StoredRow> {
    let row = sqlx::query(concat!("SELECT ", columns!(), " FROM memories WHERE tenant = ? AND project = ? AND id = ? AND current = 1 AND deleted_at IS NULL \
         AND (expires_at IS NULL OR expires_at > ?)"))
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

/// Takes row `rid` out of the current set (and the FTS index); `deleted`
/// marks it deleted too.
async fn retire(conn: &mut SqliteConnection, rid: i64, deleted: Option<i64>) -> Result<()> {
    sqlx::query("UPDATE memories SET current = 0, deleted_at = COALESCE(?, deleted_at) WHERE rid = ?")
        .bind(deleted)
        .bind(rid)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM memories_fts WHERE rowid = ?").bind(rid).execute(&mut *conn).await?;
    Ok(())
}

async fn insert_row(conn: &mut SqliteConnection, scope: &Scope, row: &NewRow) -> Result<StoredRow> {
    let metadata = serde_json::to_string(&row.metadata).map_err(|e| MemoryError::Internal(e.to_string()))?;
    let rid: i64 = sqlx::query_scalar(
        "INSERT INTO memories (id, version, tenant, project, layer, content, metadata, content_hash, embedder, vector, created_at, \
         occurred_at, session_id, expires_at, source, src_start, src_end, current) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) RETURNING rid",
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
    .bind(encode_vector(&row.vector))
    .bind(row.created_at)
    .bind(row.occurred_at)
    .bind(&row.session_id)
    .bind(row.expires_at)
    .bind(row.source.as_ref().map(|s| s.document.clone()))
    .bind(row.source.as_ref().map(|s| s.start))
    .bind(row.source.as_ref().map(|s| s.end))
    .fetch_one(&mut *conn)
    .await?;
    let token = scope_token(scope);
    sqlx::query("INSERT INTO memories_fts (rowid, scope, content) VALUES (?, ?, ?)")
        .bind(rid)
        .bind(format!("{token} {}", layer_tag(&token, row.layer)))
        .bind(&row.content)
        .execute(&mut *conn)
        .await?;
    Ok(StoredRow::written(rid, row))
}

/// Appends `record` to `scope`'s `log` after its last entry.
async fn append(conn: &mut SqliteConnection, scope: &Scope, log: LogName, record: Record) -> Result<()> {
    let last = sqlx::query("SELECT seq, hash FROM chain WHERE tenant = ? AND project = ? AND log = ? ORDER BY seq DESC LIMIT 1")
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(log.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let prev = last.map(|r| Link { seq: r.get::<i64, _>(0).max(0) as u64, prev_hash: String::new(), payload: Vec::new(), hash: r.get(1) });
    let payload = serde_json::to_string(&record).map_err(|e| MemoryError::Internal(e.to_string()))?;
    let link = chain::next(prev.as_ref(), payload.into_bytes());
    sqlx::query("INSERT INTO chain (tenant, project, log, seq, record, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)")
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

fn entry_from_row(r: &SqliteRow) -> Result<LogEntry> {
    let record: String = r.get(1);
    let record = serde_json::from_str(&record).map_err(|e| MemoryError::Internal(format!("log entry: {e}")))?;
    Ok(LogEntry { seq: r.get(0), record, prev_hash: r.get(2), hash: r.get(3) })
}

fn stored_from_row(r: &SqliteRow) -> Result<StoredRow> {
    let layer: String = r.get(3);
    let layer = Layer::from_str(&layer).map_err(|e| MemoryError::Internal(e.to_string()))?;
    let metadata: String = r.get(5);
    let metadata = serde_json::from_str(&metadata).map_err(|e| MemoryError::Internal(format!("metadata: {e}")))?;
    let source: Option<String> = r.get(13);
    let memory = Memory {
        id: r.get(1),
        version: r.get(2),
        layer,
        content: r.get(4),
        metadata,
        content_hash: r.get(6),
        embedder: r.get(7),
        created_at: r.get(9),
        occurred_at: r.get(10),
        session_id: r.get(11),
        expires_at: r.get(12),
        source: source.map(|document| Source { document, start: r.get::<Option<i64>, _>(14).unwrap_or(0), end: r.get::<Option<i64>, _>(15).unwrap_or(0) }),
        current: r.get::<i64, _>(16) == 1,
        deleted_at: r.get(17),
    };
    Ok(StoredRow { rid: r.get(0), memory, vector: decode_vector(r.get::<&[u8], _>(8)) })
}

fn push_live_scope(q: &mut QueryBuilder<Sqlite>, scope: &Scope) {
    q.push("tenant = ").push_bind(scope.tenant.clone());
    q.push(" AND project = ").push_bind(scope.project.clone());
    q.push(" AND current = 1 AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > ").push_bind(now_ms()).push(")");
}

fn push_layers(q: &mut QueryBuilder<Sqlite>, column: &str, layers: &[Layer]) {
    if layers.is_empty() {
        return;
    }
    q.push(format!(" AND {column} IN ("));
    let mut sep = q.separated(", ");
    for l in layers {
        sep.push_bind(l.as_str());
    }
    q.push(")");
}

/// The metadata keys a filter may name.
pub fn valid_metadata_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 64 && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn push_filters(q: &mut QueryBuilder<Sqlite>, f: &Filters) -> Result<()> {
    let layers = crate::service::parse_layers(&f.layers)?;
    push_layers(q, "layer", &layers);
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
        let path = format!("$.\"{k}\"");
        // the JSON type too: `true` is not the number 1, nor "1" a number
        match v {
            serde_json::Value::String(s) => {
                q.push(" AND json_type(metadata, ").push_bind(path.clone()).push(") = 'text'");
                q.push(" AND json_extract(metadata, ").push_bind(path).push(") = ").push_bind(s.clone());
            }
            serde_json::Value::Bool(b) => {
                q.push(" AND json_type(metadata, ").push_bind(path).push(") = ").push_bind(if *b { "true" } else { "false" });
            }
            serde_json::Value::Number(n) => {
                q.push(" AND json_type(metadata, ").push_bind(path.clone()).push(") IN ('integer', 'real')");
                q.push(" AND json_extract(metadata, ").push_bind(path).push(") = ").push_bind(n.as_f64().unwrap_or(0.0));
            }
            _ => {
                return Err(MemoryError::invalid(
                    "invalid_filter",
                    format!("metadata filter {k:?}: compare with a string, number or boolean"),
                ))
            }
        }
    }
    Ok(())
}

/// The FTS5 expression for a free-text query: each word quoted, joined by
/// OR (BM25 ranks documents with more of them higher). `None` when the
/// query has no words.
pub fn fts_terms(query: &str) -> Option<String> {
    let words: Vec<String> = fts_words(query).into_iter().map(|w| format!("content : \"{w}\"")).collect();
    (!words.is_empty()).then(|| words.join(" OR "))
}

/// The words of a free-text query, lowercased: runs of letters and digits
/// only (so no query syntax gets through), at most 64.
pub fn fts_words(query: &str) -> Vec<String> {
    query.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).take(64).map(str::to_lowercase).collect()
}

pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn decode_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A fork of more memories than it may copy.
pub fn too_many(n: usize, cap: usize) -> MemoryError {
    MemoryError::TooLarge(format!("{n} memories at that position; at most {cap} are copied at once: forking is not supported at this size yet"))
}

/// SHA-256 (hex) of the content exactly as stored: what the changelog
/// records and verification checks (the memories' `content_hash` is
/// normalised for duplicates, so it would miss a change of case).
pub fn integrity_hash(content: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(content.as_bytes()))
}

/// The FTS token of one layer of a project (letters and digits only: one
/// token).
fn layer_tag(scope_token: &str, layer: Layer) -> String {
    format!("{scope_token}l{}", layer.as_str())
}

/// `s` and 32 hex digits of a hash of tenant and project: one FTS token
/// (letters and digits only) that tags a project's rows, so a MATCH only
/// ever sees that project's (the query also filters the columns).
pub fn scope_token(scope: &Scope) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((scope.tenant.len() as u64).to_be_bytes());
    h.update(scope.tenant.as_bytes());
    h.update(scope.project.as_bytes());
    format!("s{}", &hex::encode(h.finalize())[..32])
}
