//! What callers send and get back: the service's vocabulary, shared by the
//! REST API, the MCP tools and the CLI (all JSON).

use std::collections::BTreeMap;

use pinacle_memory::layer::Layer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whose memory a request touches: always taken from the caller's token,
/// never from request parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// `user:<id>` or `team:<id>`.
    pub tenant: String,
    /// The repository (`github.com/owner/repo`) or `pod:<id>`.
    pub project: String,
}

/// What a caller may do in its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and searches.
    Viewer,
    /// Also adds, updates, deletes, ingests and imports.
    Editor,
    /// Also purges the project.
    Admin,
}

/// A verified caller: its scope, role and who it is (a user, or a pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub scope: Scope,
    pub role: Role,
    /// `user:<id>` or `pod:<id>`: recorded in the logs as the actor.
    pub subject: String,
}

/// A metadata filter or value: a flat object of strings, numbers and
/// booleans.
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// One memory as stored (its current version, or one from its history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Memory {
    /// Stable across versions.
    pub id: String,
    /// 1 for the first version; an update adds one.
    pub version: i64,
    #[schemars(with = "String")]
    pub layer: Layer,
    pub content: String,
    pub metadata: Metadata,
    /// SHA-256 of the normalised content (see `content_hash`).
    pub content_hash: String,
    /// Which embedder made the vector (`hash-v1-384`).
    pub embedder: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// When it happened (episodic), else when it was written; ms.
    pub occurred_at: i64,
    /// The session a `session`-layer turn belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// When a `working`-layer entry expires (ms); gone from reads after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// For `rag` chunks: the document and byte offsets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Whether this version is the current one (false once superseded or
    /// deleted).
    pub current: bool,
    /// Set when deleted (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
}

/// Where a `rag` chunk came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Source {
    pub document: String,
    pub start: i64,
    pub end: i64,
}

/// A memory to add.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMemory {
    /// `semantic` (the default), `episodic`, `procedural`, `rag`,
    /// `session` or `working`.
    #[serde(default)]
    pub layer: Option<String>,
    pub content: String,
    #[serde(default)]
    pub metadata: Metadata,
    /// When it happened (ms since the epoch; default: now).
    #[serde(default)]
    pub occurred_at: Option<i64>,
    /// Required for the `session` layer.
    #[serde(default)]
    pub session_id: Option<String>,
    /// For the `working` layer: seconds until it expires (default 3600).
    #[serde(default)]
    pub ttl_secs: Option<i64>,
    /// `near` (default): skip exact and near duplicates; `exact`: skip only
    /// exact ones; `off`: always add.
    #[serde(default)]
    pub dedup: Option<DedupMode>,
}

/// How duplicates are treated on add.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DedupMode {
    #[default]
    Near,
    Exact,
    Off,
}

/// What an add did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Added {
    /// False when a duplicate was found and nothing was written.
    pub created: bool,
    pub memory: Memory,
    /// `exact` or `near`, when `created` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<String>,
    /// The similarity of a near duplicate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
}

/// An update: a new version that supersedes the current one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    #[serde(default)]
    pub content: Option<String>,
    /// Replaces the metadata when given.
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

/// Filters shared by list and search.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Layers to look in (default: every memory layer).
    #[serde(default)]
    pub layers: Vec<String>,
    /// Top-level metadata keys that must equal these values.
    #[serde(default)]
    pub metadata: Metadata,
    /// `occurred_at` at or after (ms).
    #[serde(default)]
    pub since: Option<i64>,
    /// `occurred_at` before (ms).
    #[serde(default)]
    pub until: Option<i64>,
    #[serde(default)]
    pub session_id: Option<String>,
}

/// A search.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    /// How many results (1–100, default 10).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Drop results whose cosine similarity is below this (-1…1).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// `hybrid` (default: vector and BM25, fused), `vector` or `keyword`.
    #[serde(default)]
    pub mode: Option<SearchMode>,
    #[serde(default, flatten)]
    pub filters: Filters,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    #[default]
    Hybrid,
    Vector,
    Keyword,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Hit {
    pub memory: Memory,
    /// The fused score (reciprocal-rank fusion; higher is better).
    pub score: f32,
    /// Cosine similarity of the query and the memory.
    pub similarity: f32,
}

/// A page of memories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Page {
    pub memories: Vec<Memory>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A document to cut into `rag` chunks.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Its name or path (`docs/deploy.md`); re-ingesting a source replaces
    /// its chunks.
    pub source: String,
    pub content: String,
    /// Characters per chunk (64–8000, default 1000).
    #[serde(default)]
    pub chunk_chars: Option<usize>,
    /// Characters shared by neighbouring chunks (default 100).
    #[serde(default)]
    pub overlap: Option<usize>,
    #[serde(default)]
    pub metadata: Metadata,
}

/// What an ingest did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Ingested {
    pub source: String,
    pub chunks: usize,
    /// Chunks of an earlier ingest of the same source, now deleted.
    pub replaced: usize,
    pub ids: Vec<String>,
}

/// Which hash-chained log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogName {
    /// Every access and action.
    Events,
    /// Every add, update and delete, with the content hashes before and
    /// after.
    Changelog,
}

impl LogName {
    pub fn as_str(self) -> &'static str {
        match self {
            LogName::Events => "events",
            LogName::Changelog => "changelog",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "events" => Some(LogName::Events),
            "changelog" => Some(LogName::Changelog),
            _ => None,
        }
    }
}

/// What a log entry records (its canonical JSON is what the chain hashes).
/// Logs never hold memory content, only ids and hashes, so a purge keeps
/// them whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Record {
    /// ms since the epoch.
    pub at: i64,
    /// `user:<id>` or `pod:<id>`.
    pub actor: String,
    /// `add`, `update`, `delete`, `expire`, `purge`, `import`, `search`,
    /// `get`, `list`, `history`, `export`, `verify`…
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// SHA-256 of the content as stored, before (update, delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// SHA-256 of the content as stored, after (add, update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Anything else: a count, a query's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A log entry with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogEntry {
    pub seq: i64,
    pub record: Record,
    pub prev_hash: String,
    pub hash: String,
}

/// A page of a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogPage {
    pub log: LogName,
    pub entries: Vec<LogEntry>,
}

/// The result of checking a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Verification {
    pub log: LogName,
    pub ok: bool,
    pub entries: i64,
    /// The last entry's hash when whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// The first broken entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A memory's versions and its changelog entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct History {
    pub id: String,
    /// Oldest first.
    pub versions: Vec<Memory>,
    pub changes: Vec<LogEntry>,
}

/// A project's memory, moved between instances or projects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Export {
    /// `pinak-export-v1`.
    pub format: String,
    pub project: String,
    pub exported_at: i64,
    /// The current versions of the memory layers.
    pub memories: Vec<Memory>,
}

/// The export format this service writes and reads.
pub const EXPORT_FORMAT: &str = "pinak-export-v1";

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Imported {
    pub added: usize,
    pub duplicates: usize,
}

/// What a purge did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Purged {
    pub memories: u64,
}

/// Where a project's memory stands: its changelog position (a snapshot
/// records it; a restore goes back to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Position {
    pub changelog_seq: i64,
    pub memories: i64,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Restored {
    /// The changelog entry the memories stand at again.
    pub changelog_seq: i64,
    /// Memories set back to their version of then.
    pub restored: usize,
    /// Memories added since, now deleted.
    pub deleted: usize,
    /// Versions a purge removed, which could not come back.
    pub missing: usize,
}

/// `POST /api/v1/memory/restore`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub changelog_seq: i64,
}

/// Where a project's re-embedding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// None has run since the server started (`total` says how many
    /// memories another embedder made).
    Idle,
    Running,
    Done,
    Failed,
}

/// A re-embedding: the project's current memories whose vectors another
/// embedder made, embedded again by the server's embedder, in batches, in
/// the background. Until then, vector search does not see them (keywords
/// do): vectors of different embedders are never compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Reembedding {
    pub state: JobState,
    /// The embedder the vectors are being made with.
    pub embedder: String,
    /// Memories to embed when it started (or now, when idle).
    pub total: i64,
    pub done: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /api/v1/memory/fork`: copies another project's memories, as they
/// stood at a changelog position, into the token's project.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// The project to copy from: the same tenant's (any URL form of a
    /// repository names it).
    pub from_project: String,
    /// Its changelog position (default: now).
    #[serde(default)]
    pub changelog_seq: Option<i64>,
}

/// What a fork did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Forked {
    pub from_project: String,
    pub changelog_seq: i64,
    /// Memories written into this project (new ids, their content,
    /// metadata and vectors of then).
    pub added: usize,
    /// Memories this project already held (same content and layer).
    pub duplicates: usize,
}
