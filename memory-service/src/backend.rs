//! The one contract between the service and where memories live. Two
//! stores keep it: [`crate::embedded::EmbeddedStore`] (SQLite with FTS5
//! and in-process HNSW graphs, for `pinacle up`) and
//! [`crate::postgres::PgStore`] (PostgreSQL with pgvector and row-level
//! security, which several API servers share).
//!
//! What every store guarantees:
//! - every write (rows, index entries, changelog entries) is committed
//!   before it returns, and a project's writes are serialised, so its
//!   hash chains never fork;
//! - every read and write is confined to the `scope` it is given: rows of
//!   another tenant or project are never returned, and their ids answer
//!   [`MemoryError::NotFound`](crate::MemoryError::NotFound);
//! - vector searches only compare vectors of the embedder they are given;
//! - `nearest` returns the `k` best rows that match the filters whenever
//!   `k` exist (exact when approximate search could return fewer).

use async_trait::async_trait;
use pinacle_memory::layer::Layer;

use crate::error::Result;
use crate::model::*;
use crate::store::{AddResult, NewRow, RestoreOutcome, StaleRow, StoredRow};

#[async_trait]
pub trait MemoryStore: Send + Sync {
    /// `sqlite` or `postgres` (logs and readiness).
    fn kind(&self) -> &'static str;

    /// Adds `rows`; a row with its flag set is not written when a current
    /// memory of its layer (and session) has the same content hash, in the
    /// store or earlier in the batch. One transaction.
    async fn add(&self, scope: &Scope, actor: &str, rows: Vec<(NewRow, bool)>) -> Result<Vec<AddResult>>;
    /// Writes `row` as the next version of its memory; the version before
    /// it must still be current (else `conflict`).
    async fn supersede(&self, scope: &Scope, actor: &str, row: NewRow) -> Result<StoredRow>;
    /// Deletes a memory (its versions stay, for history).
    async fn delete(&self, scope: &Scope, actor: &str, id: &str) -> Result<Memory>;
    /// Replaces the chunks of document `source`: how many left, and the new
    /// rows.
    async fn replace_source(&self, scope: &Scope, actor: &str, source: &str, rows: Vec<NewRow>) -> Result<(usize, Vec<StoredRow>)>;
    /// Removes every version of the project; a tombstone goes into both
    /// logs. Returns how many versions were removed.
    async fn purge(&self, scope: &Scope, actor: &str) -> Result<u64>;
    /// Brings the project back to changelog entry `seq` (new versions and
    /// `restore` entries; nothing is erased).
    async fn restore(&self, scope: &Scope, actor: &str, seq: i64) -> Result<RestoreOutcome>;
    /// Appends access records to the `events` logs.
    async fn append_events(&self, batch: &[(Scope, Record)]) -> Result<()>;

    /// The current version of `id`.
    async fn get(&self, scope: &Scope, id: &str) -> Result<StoredRow>;
    /// Current rows by row id (any order), restricted to `filters`.
    async fn rows(&self, scope: &Scope, rids: &[i64], filters: &Filters) -> Result<Vec<StoredRow>>;
    /// Current memories newest first: `limit` after `cursor`, and the next
    /// cursor.
    async fn list(&self, scope: &Scope, filters: &Filters, limit: usize, cursor: Option<i64>) -> Result<(Vec<Memory>, Option<i64>)>;
    /// Row ids of the best full-text matches of `query` in `layers` (all
    /// when empty), best first.
    async fn keyword(&self, scope: &Scope, query: &str, layers: &[Layer], limit: usize) -> Result<Vec<i64>>;
    /// The `k` rows of `embedder` nearest to `query` that match `filters`
    /// (whose layers are `layers`): row id and cosine similarity, best
    /// first.
    async fn nearest(&self, scope: &Scope, embedder: &str, query: &[f32], k: usize, filters: &Filters, layers: &[Layer]) -> Result<Vec<(i64, f32)>>;
    /// The current row of `layer` most like `vector`, approximately (the
    /// near-duplicate check, once per added memory).
    async fn most_similar(&self, scope: &Scope, embedder: &str, vector: &[f32], layer: Layer) -> Result<Option<(i64, f32)>>;

    /// Every version of `id`, oldest first, with its changelog entries.
    async fn history(&self, scope: &Scope, id: &str) -> Result<History>;
    /// Entries of a log after `after`, at most `limit`.
    async fn log(&self, scope: &Scope, log: LogName, after: i64, limit: usize) -> Result<Vec<LogEntry>>;
    /// Checks a log's chain (and, for the changelog, every stored
    /// version's content against its recorded hash).
    async fn verify(&self, scope: &Scope, log: LogName) -> Result<Verification>;
    /// The changelog position and how many memories are current.
    async fn position(&self, scope: &Scope) -> Result<Position>;
    /// Records the position under `label` (a pod snapshot's).
    async fn mark_position(&self, scope: &Scope, label: &str) -> Result<Position>;
    /// The position recorded under `label`.
    async fn marked_position(&self, scope: &Scope, label: &str) -> Result<Option<i64>>;
    /// The versions that were current after changelog entry `seq` (what a
    /// fork copies), by memory id; `TooLarge` when more than `cap`, found
    /// out before any is read.
    async fn rows_at(&self, scope: &Scope, seq: i64, cap: usize) -> Result<Vec<StoredRow>>;
    /// How many current memories have vectors of another embedder.
    async fn stale_count(&self, scope: &Scope, embedder: &str) -> Result<i64>;
    /// Up to `limit` of them, oldest first.
    async fn stale_rows(&self, scope: &Scope, embedder: &str, limit: usize) -> Result<Vec<StaleRow>>;
    /// Replaces their vectors with `embedder`'s (rows no longer current
    /// are left alone); how many changed. Not a change of content: no
    /// changelog entry.
    async fn set_vectors(&self, scope: &Scope, embedder: &str, rows: &[(StaleRow, Vec<f32>)]) -> Result<usize>;
    /// Current memories per layer over every project (the metrics).
    async fn layer_counts(&self) -> Result<Vec<(String, i64)>>;
    /// Vector graphs held in this process and the live vectors in them.
    fn index_stats(&self) -> (usize, usize) {
        (0, 0)
    }
}
