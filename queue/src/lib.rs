//! The per-host job queues, on apalis: SQLite storage in a file for one
//! process (`pinacle up`), PostgreSQL (LISTEN/NOTIFY, `SKIP LOCKED`) when
//! several processes share them (API servers on one database). The control
//! plane owns the queue; a host's worker takes its jobs and carries them
//! out through [`HostApi::handle`] (whatever implements the host).
//!
//! The control plane pushes [`PodJob`]s to queue `host.{id}`; the agent of
//! that host consumes it. Jobs are durable: a job taken by an agent that dies
//! goes back to its queue once the agent's heartbeat is missed, and the
//! agent's reconcile pass re-drives unfinished pods in any case.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::{PgPool, PostgresStorage};
use apalis_sqlite::{Config, SqlitePool, SqliteStorage};
use pinacle_orchestrator::PodJob;

use pinacle_host_api::HostApi;

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue database cannot be opened or prepared.
    #[error("job queue: opening {path}: {message}")]
    Open { path: String, message: String },
    /// A job could not be queued.
    #[error("job queue: queueing {job} for host {host}: {message}")]
    Push { job: String, host: String, message: String },
    /// The worker stopped.
    #[error("job queue: worker stopped: {0}")]
    Worker(String),
}

/// How often an idle agent looks for new jobs.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A handle on the job queues of all hosts.
#[derive(Debug, Clone)]
pub struct JobQueue {
    store: Store,
}

#[derive(Debug, Clone)]
enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// How often a worker tells the queue it is alive, and how many beats it
/// may miss before its jobs go back to the queue.
const WORKER_HEARTBEAT: Duration = Duration::from_secs(2);
const MISSED_HEARTBEATS: usize = 2;

impl JobQueue {
    /// The queue in SQLite file `path` (created if missing).
    pub async fn open(path: &Path) -> Result<Self, QueueError> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let open = |e: String| QueueError::Open { path: path.display().to_string(), message: e };
        let pool = SqlitePool::connect(&url).await.map_err(|e| open(e.to_string()))?;
        SqliteStorage::setup(&pool).await.map_err(|e| open(format!("preparing: {e}")))?;
        Ok(Self { store: Store::Sqlite(pool) })
    }

    /// The queue in the PostgreSQL database at `url` (its `apalis` schema,
    /// made if missing), shared by every process that opens it.
    pub async fn open_postgres(url: &str) -> Result<Self, QueueError> {
        let open = |e: String| QueueError::Open { path: "the PostgreSQL database".into(), message: e };
        let pool = PgPool::connect(url).await.map_err(|e| open(e.to_string()))?;
        PostgresStorage::<()>::setup(&pool).await.map_err(|e| open(format!("preparing: {e}")))?;
        Ok(Self { store: Store::Postgres(pool) })
    }

    /// Whether the queue lives in PostgreSQL (shared by processes).
    pub fn is_shared(&self) -> bool {
        matches!(self.store, Store::Postgres(_))
    }

    fn sqlite(pool: &SqlitePool, host_id: &str) -> SqliteStorage<PodJob> {
        let config = Config::default()
            .queue(PodJob::queue_for_host(host_id))
            .heartbeat_interval(WORKER_HEARTBEAT)
            .missed_heartbeats(MISSED_HEARTBEATS);
        SqliteStorage::new(pool).with_config(config)
    }

    fn postgres(pool: &PgPool, host_id: &str) -> PostgresStorage<PodJob> {
        let config = apalis_postgres::Config::default()
            .queue(PodJob::queue_for_host(host_id))
            .heartbeat_interval(WORKER_HEARTBEAT)
            .missed_heartbeats(MISSED_HEARTBEATS);
        PostgresStorage::new(pool).with_config(config)
    }

    /// Queues `job` for host `host_id`.
    pub async fn push(&self, host_id: &str, job: PodJob) -> Result<(), QueueError> {
        let failed = |e: String| QueueError::Push { job: format!("{job:?}"), host: host_id.to_owned(), message: e };
        match &self.store {
            Store::Sqlite(pool) => Self::sqlite(pool, host_id).push(job).await.map_err(|e| failed(e.to_string())),
            Store::Postgres(pool) => Self::postgres(pool, host_id).push(job).await.map_err(|e| failed(e.to_string())),
        }
    }

    /// Whether the queue's database answers.
    pub async fn ping(&self) -> bool {
        match &self.store {
            Store::Sqlite(pool) => pool.acquire().await.is_ok(),
            Store::Postgres(pool) => pool.acquire().await.is_ok(),
        }
    }

    /// Works host `agent`'s queue until `shutdown` turns true: each job is
    /// carried out through [`HostApi::handle`], 16 at a time.
    pub async fn run_worker<H: HostApi>(
        &self,
        agent: Arc<H>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), QueueError> {
        let name = format!("{}-{}", PodJob::queue_for_host(agent.host_id()), uuid::Uuid::new_v4().simple());
        let data = Worked { host: agent.clone(), queue: self.clone() };
        let stop = async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
            Ok::<(), std::io::Error>(())
        };
        let ran = match &self.store {
            Store::Sqlite(pool) => {
                let backend = Self::sqlite(pool, agent.host_id()).poll_with_interval(POLL_INTERVAL);
                WorkerBuilder::new(name).backend(backend).concurrency(16).data(data).build(run_job::<H>).run_until(stop).await
            }
            Store::Postgres(pool) => {
                // woken by the database's notifications when a job is pushed
                let backend = Self::postgres(pool, agent.host_id()).with_pubsub();
                WorkerBuilder::new(name).backend(backend).concurrency(16).data(data).build(run_job::<H>).run_until(stop).await
            }
        };
        ran.map_err(|e| QueueError::Worker(e.to_string()))
    }
}

/// What a worker works for: the host, and the queue to put back a job the
/// host could not be reached for.
struct Worked<H> {
    host: Arc<H>,
    queue: JobQueue,
}

impl<H> Clone for Worked<H> {
    fn clone(&self) -> Self {
        Self { host: self.host.clone(), queue: self.queue.clone() }
    }
}

async fn run_job<H: HostApi>(job: PodJob, worked: Data<Worked<H>>) -> Result<(), BoxDynError> {
    match worked.host.handle(job).await {
        Ok(()) => Ok(()),
        // the host's link dropped before it acknowledged the job: the job
        // goes back on its queue for when the host is reachable again (jobs
        // are idempotent, so one it had finished is harmless to repeat)
        Err(pinacle_host_api::HostError::Unreachable(host)) => {
            tracing::warn!(?job, %host, "host unreachable; the job is queued again");
            worked.queue.push(worked.host.host_id(), job).await.map_err(|e| Box::new(e) as BoxDynError)
        }
        Err(e) => Err(Box::new(e) as BoxDynError),
    }
}


