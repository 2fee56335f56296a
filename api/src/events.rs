//! Pod events as they happen: each goes to this server's subscribers (SSE,
//! GraphQL subscriptions) at once and, through the [`Bus`], to the other
//! API servers, which hand it to theirs; every server drops its cached pod
//! lists. The database holds every event too: a subscriber that starts
//! late or misses one reads the history there.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use pinacle_orchestrator::PodState;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::bus::Bus;
use crate::cache::ReadCache;

/// Serialised `GET /api/v1/pods` answers by viewer: what a pod event makes
/// stale.
pub type PodLists = ReadCache<String, bytes::Bytes>;

/// One pod event, as stored and as streamed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodEventView {
    /// Increases with every event of every pod.
    pub seq: i64,
    pub pod_id: Uuid,
    pub at: DateTime<Utc>,
    pub event: String,
    pub from: Option<PodState>,
    pub to: PodState,
    pub message: String,
}

/// Where pod events go: subscribers here, the other servers, and the
/// caches they make stale. Cheap to clone.
#[derive(Clone)]
pub struct PodEvents {
    local: broadcast::Sender<PodEventView>,
    bus: Arc<Bus>,
    lists: Arc<PodLists>,
}

/// Events a slow subscriber may fall behind by before it misses some (it
/// reads them from the database then).
const BACKLOG: usize = 1024;

impl PodEvents {
    pub fn new(bus: Arc<Bus>, lists: Arc<PodLists>) -> Self {
        Self { local: broadcast::channel(BACKLOG).0, bus, lists }
    }

    /// Every event from now on, this server's and the others'.
    pub fn subscribe(&self) -> broadcast::Receiver<PodEventView> {
        self.local.subscribe()
    }

    /// A pod event happened here: this server's subscribers get it now,
    /// the other servers' through the bus; cached pod lists are dropped.
    pub async fn publish(&self, event: PodEventView) {
        self.lists.clear();
        self.bus.publish(&event).await;
        let _ = self.local.send(event);
    }

    /// Takes the other servers' events off the bus until the process ends;
    /// `None` without Redis.
    pub fn spawn_bus_listener(&self) -> Option<tokio::task::JoinHandle<()>> {
        let (local, lists) = (self.local.clone(), self.lists.clone());
        self.bus.spawn_listener(move |event: PodEventView| {
            lists.clear();
            let _ = local.send(event);
        })
    }
}
