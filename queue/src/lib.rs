//! The per-host job queues, on apalis with SQLite storage. The control
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
    pool: SqlitePool,
}

impl JobQueue {
    /// Opens (creating if needed) the queue database at `path`.
    pub async fn open(path: &Path) -> Result<Self, QueueError> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let open = |e: String| QueueError::Open { path: path.display().to_string(), message: e };
        let pool = SqlitePool::connect(&url).await.map_err(|e| open(e.to_string()))?;
        SqliteStorage::setup(&pool).await.map_err(|e| open(format!("preparing: {e}")))?;
        Ok(Self { pool })
    }

    fn storage(&self, host_id: &str) -> SqliteStorage<PodJob> {
        let config = Config::default()
            .queue(PodJob::queue_for_host(host_id))
            .heartbeat_interval(Duration::from_secs(2))
            .missed_heartbeats(2);
        SqliteStorage::new(&self.pool).with_config(config)
    }

    /// Queues `job` for host `host_id`.
    pub async fn push(&self, host_id: &str, job: PodJob) -> Result<(), QueueError> {
        let mut storage = self.storage(host_id);
        storage.push(job).await.map_err(|e| QueueError::Push { job: format!("{job:?}"), host: host_id.to_owned(), message: e.to_string() })
    }

    /// Whether the queue database answers.
    pub async fn ping(&self) -> bool {
        sqlx_ping(&self.pool).await
    }

    /// Consumes host `agent`'s queue until `shutdown` turns true.
    pub async fn run_worker<H: HostApi>(
        &self,
        agent: Arc<H>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), QueueError> {
        let backend = self.storage(agent.host_id()).poll_with_interval(POLL_INTERVAL);
        // A fresh worker name per process: a previous incarnation's jobs are
        // orphans that the heartbeat check hands back to the queue.
        let name = format!("{}-{}", PodJob::queue_for_host(agent.host_id()), uuid::Uuid::new_v4().simple());
        let worker = WorkerBuilder::new(name)
            .backend(backend)
            .concurrency(16)
            .data(Worked { host: agent, queue: self.clone() })
            .build(run_job::<H>);
        worker
            .run_until(async move {
                while !*shutdown.borrow() {
                    if shutdown.changed().await.is_err() {
                        break;
                    }
                }
                Ok::<(), std::io::Error>(())
            })
            .await
            .map_err(|e| QueueError::Worker(e.to_string()))
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

async fn sqlx_ping(pool: &SqlitePool) -> bool {
    pool.acquire().await.is_ok()
}
