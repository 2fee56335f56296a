//! The router's own tables (`aion_*`), in a SQLite file or a PostgreSQL
//! database shared by several API servers: budgets with their holds
//! ([`SqlLedger`], the shared implementation of [`Ledger`]) and task
//! records (the usage records metering reads).
//!
//! The atomic step of a reservation is one conditional update per budget,
//! `reserved = reserved + amount WHERE spent + reserved + amount <= cap`,
//! all in one transaction (scopes locked in sorted order, so two
//! reservations never wait on each other in a circle). PostgreSQL
//! re-checks the condition on the newest row after a lock wait; SQLite has
//! one writer at a time. Either way no interleaving passes a cap.
//!
//! A server that owns a SQLite file alone uses [`WriteBehindLedger`]:
//! the same checks in memory, the same rows written behind.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;

use crate::budget::{Charge, Ledger, LedgerError, Spend};

/// The database.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS aion_budget (scope TEXT PRIMARY KEY, spent BIGINT NOT NULL DEFAULT 0, reserved BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS aion_holds (id TEXT PRIMARY KEY, scopes TEXT NOT NULL, amount BIGINT NOT NULL, expires_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS aion_tasks (
        id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        idempotency_key TEXT,
        request_hash TEXT,
        status TEXT NOT NULL,
        record TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        cost_micros BIGINT NOT NULL DEFAULT 0)",
    "CREATE UNIQUE INDEX IF NOT EXISTS aion_tasks_idempotency ON aion_tasks (subject, idempotency_key) WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS aion_tasks_recent ON aion_tasks (subject, created_at)",
    // one row per ended task, in the order tasks ended: the feed metering reads
    "CREATE TABLE IF NOT EXISTS aion_usage (
        task_id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        recorded_at BIGINT NOT NULL,
        status TEXT NOT NULL,
        model TEXT,
        provider TEXT,
        tokens_in BIGINT NOT NULL,
        tokens_out BIGINT NOT NULL,
        estimated BIGINT NOT NULL,
        cost_micros BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS aion_usage_feed ON aion_usage (recorded_at, task_id)",
    "CREATE INDEX IF NOT EXISTS aion_usage_subject ON aion_usage (subject, recorded_at, task_id)",
];

/// One ended task's usage, as metering reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub task: String,
    pub subject: String,
    /// When the task ended (milliseconds since the epoch).
    pub recorded_at: i64,
    pub status: String,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    /// The provider reported no usage (a cut stream): counted from the text.
    pub estimated: bool,
    pub cost_micros: i64,
}

impl UsageRecord {
    /// The usage of an ended task's row (`None` while it runs).
    pub fn of(t: &TaskRow, now_ms: i64) -> Option<UsageRecord> {
        if t.status == "running" || t.record.is_null() {
            return None;
        }
        let r = &t.record;
        let tokens = &r["usage"]["tokens"];
        Some(UsageRecord {
            task: t.id.clone(),
            subject: t.subject.clone(),
            recorded_at: now_ms,
            status: t.status.clone(),
            model: r["engine"]["route"]["model"].as_str().map(str::to_owned),
            provider: r["engine"]["route"]["provider"].as_str().map(str::to_owned),
            tokens_in: tokens["input"].as_i64().unwrap_or(0),
            tokens_out: tokens["output"].as_i64().unwrap_or(0),
            estimated: tokens["estimated"].as_bool().unwrap_or(false),
            cost_micros: t.cost_micros,
        })
    }
}

/// Where a usage feed reader stands: after `(recorded_at, task)`.
pub type UsageCursor = (i64, String);

/// A cursor's text form, `MILLIS:TASK`.
pub fn cursor_text(c: &UsageCursor) -> String {
    format!("{}:{}", c.0, c.1)
}

/// Reads `MILLIS:TASK` (or `MILLIS`).
pub fn parse_cursor(s: &str) -> Option<UsageCursor> {
    let (ms, task) = s.split_once(':').unwrap_or((s, ""));
    Some((ms.parse().ok()?, task.to_owned()))
}

fn db(e: sqlx::Error) -> LedgerError {
    LedgerError::Store(e.to_string())
}

/// `?` placeholders as PostgreSQL's `$n`.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// One statement with its arguments, run on either database.
macro_rules! run {
    ($exec:expr, $kind:ident, $sql:expr $(, $arg:expr)*) => {{
        match $kind {
            Kind::Sqlite => sqlx::query::<sqlx::Sqlite>($sql)$(.bind($arg))*.execute($exec.sqlite()).await.map(|r| r.rows_affected()),
            Kind::Postgres => sqlx::query::<sqlx::Postgres>(sqlx::AssertSqlSafe(numbered($sql)))$(.bind($arg))*.execute($exec.postgres()).await.map(|r| r.rows_affected()),
        }
    }};
}

#[derive(Clone, Copy)]
enum Kind {
    Sqlite,
    Postgres,
}

/// A transaction on either database.
enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    fn sqlite(&mut self) -> &mut sqlx::SqliteConnection {
        match self {
            Tx::Sqlite(t) => t,
            Tx::Postgres(_) => unreachable!("a SQLite statement on PostgreSQL"),
        }
    }

    fn postgres(&mut self) -> &mut sqlx::PgConnection {
        match self {
            Tx::Postgres(t) => t,
            Tx::Sqlite(_) => unreachable!("a PostgreSQL statement on SQLite"),
        }
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }
}

impl Store {
    /// Opens `url` (`sqlite://path` or a file path, or `postgres://…`) and
    /// creates the router's tables when missing.
    pub async fn open(url: &str) -> Result<Self, LedgerError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Store::Postgres(PgPoolOptions::new().max_connections(16).connect(url).await.map_err(db)?)
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            // one connection: SQLite has one writer at a time, and writers
            // that meet on several connections wait in SQLite's busy handler,
            // which sleeps in steps of milliseconds (the tail latency of every
            // reservation); one connection queues them in the pool instead.
            Store::Sqlite(SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.map_err(db)?)
        };
        for stmt in SCHEMA {
            match &store {
                Store::Sqlite(p) => sqlx::query(*stmt).execute(p).await.map(|_| ()),
                Store::Postgres(p) => sqlx::query(*stmt).execute(p).await.map(|_| ()),
            }
            .map_err(db)?;
        }
        Ok(store)
    }

    fn kind(&self) -> Kind {
        match self {
            Store::Sqlite(_) => Kind::Sqlite,
            Store::Postgres(_) => Kind::Postgres,
        }
    }

    async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Store::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Store::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// Records a task (new, or replacing its record by id).
    pub async fn put_task(&self, t: &TaskRow) -> Result<(), LedgerError> {
        let kind = self.kind();
        let record = serde_json::to_string(&t.record).map_err(|e| LedgerError::Store(e.to_string()))?;
        let sql = "INSERT INTO aion_tasks (id, subject, idempotency_key, request_hash, status, record, created_at, cost_micros) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record, cost_micros = excluded.cost_micros";
        let mut tx = self.begin().await.map_err(db)?;
        run!(tx, kind, sql, &t.id, &t.subject, &t.idempotency_key, &t.request_hash, &t.status, &record, t.created_at, t.cost_micros).map_err(db)?;
        record_usage(&mut tx, kind, t).await?;
        tx.commit().await.map_err(db)
    }

    /// Records tasks in one transaction (new, or replacing their records).
    pub async fn put_tasks(&self, rows: &[TaskRow]) -> Result<(), LedgerError> {
        let kind = self.kind();
        let sql = "INSERT INTO aion_tasks (id, subject, idempotency_key, request_hash, status, record, created_at, cost_micros) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record, cost_micros = excluded.cost_micros";
        let mut tx = self.begin().await.map_err(db)?;
        for t in rows {
            let record = serde_json::to_string(&t.record).map_err(|e| LedgerError::Store(e.to_string()))?;
            run!(tx, kind, sql, &t.id, &t.subject, &t.idempotency_key, &t.request_hash, &t.status, &record, t.created_at, t.cost_micros).map_err(db)?;
            record_usage(&mut tx, kind, t).await?;
        }
        tx.commit().await.map_err(db)
    }

    /// Usage records after `after` and stamped no later than `until`
    /// (ms), oldest first, at most `limit`; of `subject` only, or
    /// everyone's (`None`).
    pub async fn usage_records(&self, subject: Option<&str>, after: &UsageCursor, until: i64, limit: i64) -> Result<Vec<UsageRecord>, LedgerError> {
        let cols = "task_id, subject, recorded_at, status, model, provider, tokens_in, tokens_out, estimated, cost_micros";
        let filter = if subject.is_some() { "subject = ? AND " } else { "" };
        let sql = format!("SELECT {cols} FROM aion_usage WHERE {filter}(recorded_at > ? OR (recorded_at = ? AND task_id > ?)) AND recorded_at <= ? ORDER BY recorded_at, task_id LIMIT ?");
        type Row = (String, String, i64, String, Option<String>, Option<String>, i64, i64, i64, i64);
        let rows: Vec<Row> = match self {
            Store::Sqlite(p) => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                if let Some(s) = subject {
                    q = q.bind(s);
                }
                q.bind(after.0).bind(after.0).bind(&after.1).bind(until).bind(limit).fetch_all(p).await.map_err(db)?
            }
            Store::Postgres(p) => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(numbered(&sql)));
                if let Some(s) = subject {
                    q = q.bind(s);
                }
                q.bind(after.0).bind(after.0).bind(&after.1).bind(until).bind(limit).fetch_all(p).await.map_err(db)?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(task, subject, recorded_at, status, model, provider, tokens_in, tokens_out, estimated, cost_micros)| UsageRecord { task, subject, recorded_at, status, model, provider, tokens_in, tokens_out, estimated: estimated != 0, cost_micros })
            .collect())
    }

    /// Forgets a task (one whose submission was refused).
    pub async fn delete_task(&self, id: &str) -> Result<(), LedgerError> {
        let kind = self.kind();
        let mut tx = self.begin().await.map_err(db)?;
        run!(tx, kind, "DELETE FROM aion_tasks WHERE id = ?", id).map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Records a new task unless `subject` already used its idempotency
    /// key: then the earlier task's row.
    pub async fn insert_task_once(&self, t: &TaskRow) -> Result<Option<TaskRow>, LedgerError> {
        let kind = self.kind();
        let record = serde_json::to_string(&t.record).map_err(|e| LedgerError::Store(e.to_string()))?;
        let sql = "INSERT INTO aion_tasks (id, subject, idempotency_key, request_hash, status, record, created_at, cost_micros) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT DO NOTHING";
        let mut tx = self.begin().await.map_err(db)?;
        let n = run!(tx, kind, sql, &t.id, &t.subject, &t.idempotency_key, &t.request_hash, &t.status, &record, t.created_at, t.cost_micros).map_err(db)?;
        tx.commit().await.map_err(db)?;
        if n == 1 {
            return Ok(None);
        }
        let Some(key) = &t.idempotency_key else { return Err(LedgerError::Store(format!("task {} exists", t.id))) };
        self.task_by_key(&t.subject, key).await?.map(Some).ok_or_else(|| LedgerError::Store("the task of this idempotency key vanished".into()))
    }

    async fn task_by_key(&self, subject: &str, key: &str) -> Result<Option<TaskRow>, LedgerError> {
        let sql = "SELECT id, subject, idempotency_key, request_hash, status, record, created_at, cost_micros FROM aion_tasks WHERE subject = ? AND idempotency_key = ?";
        let row = match self {
            Store::Sqlite(p) => sqlx::query(sql).bind(subject).bind(key).fetch_optional(p).await.map_err(db)?.map(|r| task_row(&r)),
            Store::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(numbered(sql))).bind(subject).bind(key).fetch_optional(p).await.map_err(db)?.map(|r| task_row(&r)),
        };
        row.transpose()
    }

    /// Task `id` of `subject`.
    pub async fn task(&self, subject: &str, id: &str) -> Result<Option<TaskRow>, LedgerError> {
        let sql = "SELECT id, subject, idempotency_key, request_hash, status, record, created_at, cost_micros FROM aion_tasks WHERE id = ? AND subject = ?";
        let row = match self {
            Store::Sqlite(p) => sqlx::query(sql).bind(id).bind(subject).fetch_optional(p).await.map_err(db)?.map(|r| task_row(&r)),
            Store::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(numbered(sql))).bind(id).bind(subject).fetch_optional(p).await.map_err(db)?.map(|r| task_row(&r)),
        };
        row.transpose()
    }

    /// The newest `limit` tasks of `subject` (all subjects: `None`).
    pub async fn recent_tasks(&self, subject: Option<&str>, limit: i64) -> Result<Vec<TaskRow>, LedgerError> {
        let base = "SELECT id, subject, idempotency_key, request_hash, status, record, created_at, cost_micros FROM aion_tasks";
        let sql = match subject {
            Some(_) => format!("{base} WHERE subject = ? ORDER BY created_at DESC, id DESC LIMIT ?"),
            None => format!("{base} ORDER BY created_at DESC, id DESC LIMIT ?"),
        };
        let rows = match self {
            Store::Sqlite(p) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                if let Some(s) = subject {
                    q = q.bind(s);
                }
                q.bind(limit).fetch_all(p).await.map_err(db)?.iter().map(task_row).collect::<Vec<_>>()
            }
            Store::Postgres(p) => {
                let sql = numbered(&sql);
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                if let Some(s) = subject {
                    q = q.bind(s);
                }
                q.bind(limit).fetch_all(p).await.map_err(db)?.iter().map(task_row).collect::<Vec<_>>()
            }
        };
        rows.into_iter().collect()
    }
}

fn task_row<R: Row>(r: &R) -> Result<TaskRow, LedgerError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let record: String = r.try_get("record").map_err(db)?;
    Ok(TaskRow {
        id: r.try_get("id").map_err(db)?,
        subject: r.try_get("subject").map_err(db)?,
        idempotency_key: r.try_get("idempotency_key").map_err(db)?,
        request_hash: r.try_get("request_hash").map_err(db)?,
        status: r.try_get("status").map_err(db)?,
        record: serde_json::from_str(&record).map_err(|e| LedgerError::Store(e.to_string()))?,
        created_at: r.try_get("created_at").map_err(db)?,
        cost_micros: r.try_get("cost_micros").map_err(db)?,
    })
}

/// A task as stored: its envelope is `record`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRow {
    pub id: String,
    pub subject: String,
    pub idempotency_key: Option<String>,
    /// SHA-256 of the request, to refuse one idempotency key reused for another request.
    pub request_hash: Option<String>,
    pub status: String,
    pub record: serde_json::Value,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub cost_micros: i64,
}

/// Writes an ended task's usage record, once (the first end recorded wins).
async fn record_usage(tx: &mut Tx, kind: Kind, t: &TaskRow) -> Result<(), LedgerError> {
    let Some(u) = UsageRecord::of(t, chrono::Utc::now().timestamp_millis()) else { return Ok(()) };
    let sql = "INSERT INTO aion_usage (task_id, subject, recorded_at, status, model, provider, tokens_in, tokens_out, estimated, cost_micros) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO NOTHING";
    run!(tx, kind, sql, &u.task, &u.subject, u.recorded_at, &u.status, &u.model, &u.provider, u.tokens_in, u.tokens_out, i64::from(u.estimated), u.cost_micros).map_err(db)?;
    Ok(())
}

/// Budgets in the [`Store`].
#[derive(Clone, Debug)]
pub struct SqlLedger {
    store: Store,
}

impl SqlLedger {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[async_trait::async_trait]
impl Ledger for SqlLedger {
    async fn reserve(&self, charges: &[Charge], amount: i64, hold_secs: i64) -> Result<String, LedgerError> {
        let kind = self.store.kind();
        let mut sorted: Vec<&Charge> = charges.iter().collect();
        sorted.sort_by(|a, b| a.scope.cmp(&b.scope));
        let mut tx = self.store.begin().await.map_err(db)?;
        for c in &sorted {
            run!(tx, kind, "INSERT INTO aion_budget (scope) VALUES (?) ON CONFLICT (scope) DO NOTHING", &c.scope).map_err(db)?;
            let n = run!(
                tx,
                kind,
                "UPDATE aion_budget SET reserved = reserved + ? WHERE scope = ? AND spent + reserved + ? <= ?",
                amount,
                &c.scope,
                amount,
                c.cap_micros
            )
            .map_err(db)?;
            if n == 0 {
                let sql = "SELECT spent, reserved FROM aion_budget WHERE scope = ?";
                let (spent, reserved): (i64, i64) = match &mut tx {
                    Tx::Sqlite(t) => sqlx::query_as(sql).bind(&c.scope).fetch_one(&mut **t).await.map_err(db)?,
                    Tx::Postgres(t) => sqlx::query_as(sqlx::AssertSqlSafe(numbered(sql))).bind(&c.scope).fetch_one(&mut **t).await.map_err(db)?,
                };
                // dropping the transaction rolls back the others' holds
                return Err(LedgerError::Exceeded { scope: c.scope.clone(), spent, reserved, cap: c.cap_micros, asked: amount });
            }
        }
        let id = uuid::Uuid::now_v7().to_string();
        let scopes = serde_json::to_string(&sorted.iter().map(|c| c.scope.as_str()).collect::<Vec<_>>()).map_err(|e| LedgerError::Store(e.to_string()))?;
        let expires = chrono::Utc::now().timestamp() + hold_secs;
        run!(tx, kind, "INSERT INTO aion_holds (id, scopes, amount, expires_at) VALUES (?, ?, ?, ?)", &id, &scopes, amount, expires).map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(id)
    }

    async fn settle(&self, hold: &str, scopes: &[String], amount: i64, actual: i64) -> Result<(), LedgerError> {
        let kind = self.store.kind();
        let mut sorted: Vec<&String> = scopes.iter().collect();
        sorted.sort();
        let mut tx = self.store.begin().await.map_err(db)?;
        // the hold goes first: a sweep that already settled it wins, once
        let n = run!(tx, kind, "DELETE FROM aion_holds WHERE id = ?", hold).map_err(db)?;
        if n == 0 {
            return Ok(());
        }
        for s in sorted {
            run!(tx, kind, "UPDATE aion_budget SET reserved = reserved - ?, spent = spent + ? WHERE scope = ?", amount, actual, s).map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn extend(&self, hold: &str, secs: i64) -> Result<(), LedgerError> {
        let kind = self.store.kind();
        let mut tx = self.store.begin().await.map_err(db)?;
        run!(tx, kind, "UPDATE aion_holds SET expires_at = ? WHERE id = ?", chrono::Utc::now().timestamp() + secs, hold).map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn sweep(&self) -> Result<u64, LedgerError> {
        let now = chrono::Utc::now().timestamp();
        let sql = "SELECT id, scopes, amount FROM aion_holds WHERE expires_at < ?";
        let expired: Vec<(String, String, i64)> = match &self.store {
            Store::Sqlite(p) => sqlx::query_as(sql).bind(now).fetch_all(p).await.map_err(db)?,
            Store::Postgres(p) => sqlx::query_as(sqlx::AssertSqlSafe(numbered(sql))).bind(now).fetch_all(p).await.map_err(db)?,
        };
        let mut n = 0;
        for (id, scopes, amount) in expired {
            let scopes: Vec<String> = serde_json::from_str(&scopes).unwrap_or_default();
            tracing::warn!(hold = %id, amount_micros = amount, "a budget hold outlived its call (a server stopped mid-call); settled at its full amount");
            self.settle(&id, &scopes, amount, amount).await?;
            n += 1;
        }
        Ok(n)
    }

    async fn spend(&self, scopes: &[String]) -> Result<Vec<Spend>, LedgerError> {
        let mut out = Vec::with_capacity(scopes.len());
        let sql = "SELECT spent, reserved FROM aion_budget WHERE scope = ?";
        for s in scopes {
            let row: Option<(i64, i64)> = match &self.store {
                Store::Sqlite(p) => sqlx::query_as(sql).bind(s).fetch_optional(p).await.map_err(db)?,
                Store::Postgres(p) => sqlx::query_as(sqlx::AssertSqlSafe(numbered(sql))).bind(s).fetch_optional(p).await.map_err(db)?,
            };
            let (spent, reserved) = row.unwrap_or_default();
            out.push(Spend { scope: s.clone(), spent_micros: spent, reserved_micros: reserved });
        }
        Ok(out)
    }
}


/// Budgets of a server that owns its SQLite file alone, held in memory and
/// written behind: reservations are checked and made under one lock in
/// this process (so the cap holds exactly as with [`SqlLedger`]), and
/// every reservation, settlement and extension is then written to the
/// file in order, in batches, by one writer. No database round trip is on
/// a call's path.
///
/// - **One owner.** An exclusive `flock` on the database file itself
///   (the same inode however its path is spelt; SQLite's own locks are
///   `fcntl` locks, which `flock` does not touch) is held until the last
///   operation is written: a second server on the same file is refused at
///   start (servers that share budgets use PostgreSQL and [`SqlLedger`]).
/// - **At start** every hold left in the file belongs to a server that
///   died mid-call: each is settled at its full amount, as a sweep would.
/// - **A crash** loses what was not yet written: normally the batch in
///   flight (the writer runs as soon as anything is queued), i.e. the
///   holds and settlements of the last few milliseconds. That can only
///   under-count spend; while the server runs, no interleaving passes a
///   cap.
/// - **A failing database** is retried in order, with back-off, for as
///   long as it fails; meanwhile new reservations are refused (the
///   budgets' record would fall behind), settlements still count in
///   memory.
pub struct WriteBehindLedger {
    db: SqlLedger,
    state: std::sync::Mutex<WbState>,
    ops: tokio::sync::mpsc::UnboundedSender<WbOp>,
    /// The writer could not write its last batch (and retries it).
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Default)]
struct WbState {
    /// Scope → (spent, reserved), loaded from the file on first use.
    scopes: std::collections::HashMap<String, (i64, i64)>,
    /// Hold id → (scopes, amount, expires at, Unix seconds).
    holds: std::collections::HashMap<String, (Vec<String>, i64, i64)>,
}

enum WbOp {
    Reserve { id: String, scopes: Vec<String>, amount: i64, expires: i64 },
    Settle { id: String, scopes: Vec<String>, amount: i64, actual: i64 },
    Extend { id: String, expires: i64 },
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl std::fmt::Debug for WriteBehindLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteBehindLedger")
    }
}

impl WriteBehindLedger {
    /// The ledger of `store`, the SQLite database at `db_file`.
    pub async fn open(store: Store, db_file: &std::path::Path) -> Result<std::sync::Arc<Self>, LedgerError> {
        use std::os::fd::AsRawFd;
        let lock = std::fs::File::open(db_file).map_err(|e| LedgerError::Store(format!("{}: {e}", db_file.display())))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(LedgerError::Store(format!(
                "another server keeps its router budgets in {}; servers that share budgets need PostgreSQL",
                db_file.display()
            )));
        }
        let db = SqlLedger::new(store);
        let left: Vec<(String, String, i64)> = match &db.store {
            Store::Sqlite(p) => sqlx::query_as("SELECT id, scopes, amount FROM aion_holds").fetch_all(p).await.map_err(self::db)?,
            Store::Postgres(_) => return Err(LedgerError::Store("the write-behind ledger is for SQLite only".into())),
        };
        for (id, scopes, amount) in left {
            let scopes: Vec<String> = serde_json::from_str(&scopes).unwrap_or_default();
            tracing::warn!(hold = %id, amount_micros = amount, "a budget hold outlived its server; settled at its full amount");
            db.settle(&id, &scopes, amount, amount).await?;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // the writer holds the lock: it is released only once the last operation is written
        tokio::spawn(write_behind(db.clone(), rx, failing.clone(), lock));
        Ok(std::sync::Arc::new(Self { db, state: Default::default(), ops: tx, failing }))
    }

    /// Waits until everything before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.ops.send(WbOp::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WbState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads the scopes not yet in memory.
    async fn load(&self, scopes: &[&str]) -> Result<(), LedgerError> {
        let missing: Vec<String> = {
            let st = self.lock();
            scopes.iter().filter(|s| !st.scopes.contains_key(**s)).map(|s| (*s).to_owned()).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let loaded = self.db.spend(&missing).await?;
        let mut st = self.lock();
        for s in loaded {
            // a racing load of the same scope found the same row: the first stays
            st.scopes.entry(s.scope).or_insert((s.spent_micros, s.reserved_micros));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Ledger for WriteBehindLedger {
    async fn reserve(&self, charges: &[Charge], amount: i64, hold_secs: i64) -> Result<String, LedgerError> {
        if self.failing.load(std::sync::atomic::Ordering::Acquire) {
            return Err(LedgerError::Store("the router's budgets cannot be written to their database; no call is reserved until they can".into()));
        }
        let scopes: Vec<&str> = charges.iter().map(|c| c.scope.as_str()).collect();
        self.load(&scopes).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let expires = chrono::Utc::now().timestamp() + hold_secs;
        let mut st = self.lock();
        for c in charges {
            let (spent, reserved) = st.scopes.get(&c.scope).copied().unwrap_or_default();
            if spent + reserved + amount > c.cap_micros {
                return Err(LedgerError::Exceeded { scope: c.scope.clone(), spent, reserved, cap: c.cap_micros, asked: amount });
            }
        }
        for c in charges {
            st.scopes.entry(c.scope.clone()).or_default().1 += amount;
        }
        let owned: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        st.holds.insert(id.clone(), (owned.clone(), amount, expires));
        // sent under the lock: the writer sees operations in the order they were made
        let _ = self.ops.send(WbOp::Reserve { id: id.clone(), scopes: owned, amount, expires });
        Ok(id)
    }

    async fn settle(&self, hold: &str, _scopes: &[String], _amount: i64, actual: i64) -> Result<(), LedgerError> {
        let mut st = self.lock();
        // settled once: a sweep that got there first wins
        let Some((scopes, amount, _)) = st.holds.remove(hold) else { return Ok(()) };
        for s in &scopes {
            let e = st.scopes.entry(s.clone()).or_default();
            e.1 -= amount;
            e.0 += actual;
        }
        let _ = self.ops.send(WbOp::Settle { id: hold.to_owned(), scopes, amount, actual });
        Ok(())
    }

    async fn extend(&self, hold: &str, secs: i64) -> Result<(), LedgerError> {
        let mut st = self.lock();
        let expires = chrono::Utc::now().timestamp() + secs;
        if let Some(h) = st.holds.get_mut(hold) {
            h.2 = expires;
            let _ = self.ops.send(WbOp::Extend { id: hold.to_owned(), expires });
        }
        Ok(())
    }

    async fn sweep(&self) -> Result<u64, LedgerError> {
        let now = chrono::Utc::now().timestamp();
        let expired: Vec<(String, i64)> = self.lock().holds.iter().filter(|(_, h)| h.2 < now).map(|(id, h)| (id.clone(), h.1)).collect();
        for (id, amount) in &expired {
            tracing::warn!(hold = %id, amount_micros = amount, "a budget hold outlived its call; settled at its full amount");
            self.settle(id, &[], *amount, *amount).await?;
        }
        Ok(expired.len() as u64)
    }

    async fn spend(&self, scopes: &[String]) -> Result<Vec<Spend>, LedgerError> {
        let refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        self.load(&refs).await?;
        let st = self.lock();
        Ok(scopes
            .iter()
            .map(|s| {
                let (spent, reserved) = st.scopes.get(s).copied().unwrap_or_default();
                Spend { scope: s.clone(), spent_micros: spent, reserved_micros: reserved }
            })
            .collect())
    }
}

/// Writes the ledger's operations in order, a batch per transaction; a
/// batch that fails is retried (with back-off) until it is written.
async fn write_behind(db: SqlLedger, mut rx: tokio::sync::mpsc::UnboundedReceiver<WbOp>, failing: std::sync::Arc<std::sync::atomic::AtomicBool>, _lock: std::fs::File) {
    let mut batch = Vec::with_capacity(256);
    loop {
        if rx.recv_many(&mut batch, 256).await == 0 {
            return;
        }
        let mut flushed = Vec::new();
        let mut ops = Vec::with_capacity(batch.len());
        for op in batch.drain(..) {
            match op {
                WbOp::Flush(done) => flushed.push(done),
                other => ops.push(other),
            }
        }
        let mut wait = Duration::from_millis(50);
        loop {
            match apply(&db, &ops).await {
                Ok(()) => {
                    failing.store(false, std::sync::atomic::Ordering::Release);
                    break;
                }
                Err(e) => {
                    failing.store(true, std::sync::atomic::Ordering::Release);
                    tracing::error!(error = %e, operations = ops.len(), "writing router budgets failed; retrying (new reservations are refused meanwhile)");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

async fn apply(db: &SqlLedger, ops: &[WbOp]) -> Result<(), LedgerError> {
    if ops.is_empty() {
        return Ok(());
    }
    let kind = db.store.kind();
    let mut tx = db.store.begin().await.map_err(self::db)?;
    for op in ops {
        match op {
            WbOp::Reserve { id, scopes, amount, expires } => {
                for s in scopes {
                    run!(tx, kind, "INSERT INTO aion_budget (scope, reserved) VALUES (?, ?) ON CONFLICT (scope) DO UPDATE SET reserved = aion_budget.reserved + excluded.reserved", s, *amount).map_err(self::db)?;
                }
                let list = serde_json::to_string(scopes).map_err(|e| LedgerError::Store(e.to_string()))?;
                run!(tx, kind, "INSERT INTO aion_holds (id, scopes, amount, expires_at) VALUES (?, ?, ?, ?)", id, &list, *amount, *expires).map_err(self::db)?;
            }
            WbOp::Settle { id, scopes, amount, actual } => {
                if run!(tx, kind, "DELETE FROM aion_holds WHERE id = ?", id).map_err(self::db)? > 0 {
                    for s in scopes {
                        run!(tx, kind, "UPDATE aion_budget SET reserved = reserved - ?, spent = spent + ? WHERE scope = ?", *amount, *actual, s).map_err(self::db)?;
                    }
                }
            }
            WbOp::Extend { id, expires } => {
                run!(tx, kind, "UPDATE aion_holds SET expires_at = ? WHERE id = ?", *expires, id).map_err(self::db)?;
            }
            WbOp::Flush(_) => {}
        }
    }
    tx.commit().await.map_err(self::db)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(numbered("a = ? AND b = ?"), "a = $1 AND b = $2");
    }

    #[tokio::test]
    async fn racing_reservations_on_sqlite_never_pass_the_cap_and_a_dead_hold_is_swept() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("aion.db").display().to_string()).await.expect("open");
        let ledger = Arc::new(SqlLedger::new(store));
        let cap = Charge { scope: "user:u@2026-12".into(), cap_micros: 5_000_000 };
        let other = Charge { scope: "key:k@all".into(), cap_micros: 1_000_000_000 };
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (l, cap, other) = (ledger.clone(), cap.clone(), other.clone());
                tokio::spawn(async move { l.reserve(&[other, cap], 70_000, 60).await.is_ok() })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += i64::from(t.await.expect("task"));
        }
        assert_eq!(ok, 5_000_000 / 70_000);
        let s = ledger.spend(&[cap.scope.clone(), other.scope.clone()]).await.expect("spend");
        assert_eq!(s[0].reserved_micros, ok * 70_000);
        assert_eq!(s[1].reserved_micros, ok * 70_000, "refused reservations held nothing on the other budget");
        let hold = ledger.reserve(std::slice::from_ref(&other), 10, -1).await.expect("hold");
        assert_eq!(ledger.sweep().await.expect("sweep"), 1);
        ledger.settle(&hold, std::slice::from_ref(&other.scope), 10, 3).await.expect("late settle is a no-op");
        let s = ledger.spend(std::slice::from_ref(&other.scope)).await.expect("spend");
        assert_eq!(s[0].spent_micros, 10, "swept at its full amount, once");
    }

    #[tokio::test]
    async fn the_write_behind_ledger_never_passes_a_cap_writes_everything_and_settles_a_dead_servers_holds() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("aion.db");
        let store = Store::open(&db.display().to_string()).await.expect("open");
        let ledger = WriteBehindLedger::open(store.clone(), &db).await.expect("ledger");
        // however the path is spelt
        let other_spelling = dir.path().join(".").join("aion.db");
        assert!(WriteBehindLedger::open(store.clone(), &other_spelling).await.is_err(), "a second owner is refused");
        let cap = Charge { scope: "user:u@2026-12".into(), cap_micros: 5_000_000 };
        let other = Charge { scope: "key:k@all".into(), cap_micros: 1_000_000_000 };
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (l, cap, other) = (ledger.clone(), cap.clone(), other.clone());
                tokio::spawn(async move { l.reserve(&[other, cap], 70_000, 60).await.ok() })
            })
            .collect();
        let mut holds = Vec::new();
        for t in tasks {
            holds.extend(t.await.expect("join"));
        }
        assert_eq!(holds.len(), 71, "5,000,000 / 70,000 = 71 fit");
        // half settle below their reservation; the rest stay held, as if the server died
        let scopes = vec!["key:k@all".to_owned(), "user:u@2026-12".to_owned()];
        for h in &holds[..35] {
            ledger.settle(h, &scopes, 70_000, 10_000).await.expect("settle");
        }
        ledger.settle(&holds[0], &scopes, 70_000, 10_000).await.expect("twice is once");
        ledger.flush().await;
        let on_disk = SqlLedger::new(store.clone()).spend(&["user:u@2026-12".to_owned()]).await.expect("spend");
        assert_eq!((on_disk[0].spent_micros, on_disk[0].reserved_micros), (350_000, 36 * 70_000), "the file holds what memory holds");
        assert_eq!(ledger.spend(&["user:u@2026-12".to_owned()]).await.expect("spend")[0], on_disk[0]);
        drop(ledger);
        // the next owner settles the dead server's holds at their full amount
        tokio::time::sleep(Duration::from_millis(50)).await;
        let next = WriteBehindLedger::open(store.clone(), &db).await.expect("reopen");
        let s = next.spend(&["user:u@2026-12".to_owned()]).await.expect("spend");
        assert_eq!((s[0].spent_micros, s[0].reserved_micros), (350_000 + 36 * 70_000, 0));
        assert!(matches!(next.reserve(&[cap], 5_000_000, 60).await, Err(LedgerError::Exceeded { .. })));
    }
}
