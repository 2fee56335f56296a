//! The host directory: the one way the control plane reaches a host. Every
//! operation on a pod goes to `HostLinks::host(&pod.host)` (`crate::peers`), a `dyn HostApi`
//! (the agent in this process, or a remote agent's link), and
//! [`HostError`] codes become the API's answers here, in one place.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use pinacle_host_api::{HostApi, HostError};
use pinacle_host_link::remote::RemoteHost;

use pinacle_orchestrator::host::HostStatus;
use pinacle_orchestrator::{PodEvent, PodState};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set, TransactionTrait};

use crate::principal::Principal;
use crate::entities::{host, host_join, pod};
use crate::policy::{Action, Resource};
use crate::ApiError;

pub mod ops;



/// The hosts this control plane can reach now, by id: the agent in this
/// process, and remote agents whose link ends here.
#[derive(Default)]
pub struct HostDirectory {
    hosts: RwLock<BTreeMap<String, Arc<dyn HostApi>>>,
    links: RwLock<BTreeMap<String, RemoteHost>>,
}

impl HostDirectory {
    /// Adds (or replaces) a host.
    pub fn attach(&self, host: Arc<dyn HostApi>) {
        let id = host.host_id().to_owned();
        self.hosts.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, host);
    }

    /// Forgets host `id`, and ends its link if it has one (a removed host
    /// is cut off at once).
    pub fn detach(&self, id: &str) {
        self.hosts.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
        if let Some(link) = self.links.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id) {
            link.close();
        }
    }

    /// Adds a remote host whose link just came up; an older link of the
    /// same host (an agent that reconnected before its old connection
    /// timed out) is closed.
    pub fn attach_link(&self, link: RemoteHost) {
        let id = link.host_id().to_owned();
        let older = self.links.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone(), link.clone());
        self.hosts.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, Arc::new(link.clone()));
        if let Some(older) = older.filter(|o| !o.same_link(&link)) {
            older.close();
        }
    }

    /// The link of host `id`, when it ends at this server.
    pub fn link(&self, id: &str) -> Option<RemoteHost> {
        self.links.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).filter(|l| !l.is_closed()).cloned()
    }

    /// Forgets a link that ended, unless a newer one replaced it.
    pub fn detach_link(&self, link: &RemoteHost) {
        let id = link.host_id();
        let mut links = self.links.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if links.get(id).is_some_and(|l| l.same_link(link)) {
            links.remove(id);
            self.hosts.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
        }
    }

    /// The host with id `id`, if it can be reached.
    pub fn get(&self, id: &str) -> Option<Arc<dyn HostApi>> {
        self.hosts.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).cloned()
    }

    /// The host `id` when it is this process's own agent (not a link).
    pub fn local(&self, id: &str) -> Option<Arc<dyn HostApi>> {
        if self.links.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(id) {
            return None;
        }
        self.get(id)
    }

    /// This process's own agents (not the links ending here).
    pub fn all_local(&self) -> Vec<Arc<dyn HostApi>> {
        let links = self.links.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.hosts.read().unwrap_or_else(std::sync::PoisonError::into_inner).iter().filter(|(id, _)| !links.contains_key(*id)).map(|(_, h)| h.clone()).collect()
    }

    /// Every reachable host, by id.
    pub fn all(&self) -> Vec<Arc<dyn HostApi>> {
        self.hosts.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }
}

/// A host's refusal or failure as the API answers it.
pub fn host_error(e: HostError) -> ApiError {
    let message = e.to_string();
    match e {
        HostError::NotFound(_) => ApiError::not_found(message),
        HostError::NotRunning(_) => ApiError::conflict("pod_not_running", message),
        HostError::Busy(_) => ApiError::conflict("pod_busy", message),
        HostError::Invalid(_) => ApiError::bad_request("invalid_request", message),
        HostError::Unsupported(_) => ApiError::not_supported(message),
        HostError::Unreachable(_) => ApiError::unavailable("host_unreachable", message),
        HostError::InvalidImage(_) => ApiError::bad_request("invalid_image", message),
        HostError::ImageNotFound(_) => ApiError::bad_request("image_not_found", message),
        HostError::RegistryAuthRefused(_) => {
            ApiError::bad_request("registry_auth_refused", format!("{message} (set the secrets NAME_CONTAINER_REGISTRY_SERVER, _USER and _PASSWORD)"))
        }
        HostError::UnsupportedPlatform(_) => ApiError::bad_request("unsupported_platform", message),
        HostError::RegistryUnreachable(_) => ApiError::bad_gateway("registry_unreachable", message),
        HostError::Refused(_) => ApiError::bad_gateway("port_refused", message),
        HostError::Failed(_) | HostError::Internal(_) => ApiError::internal(message),
    }
}

/// How long a join token (`pnj_…`) is valid.
pub const JOIN_TOKEN_TTL_SECS: i64 = 3600;
/// The longest a reusable join token may live.
pub const MAX_POOL_TOKEN_TTL_SECS: i64 = 365 * 86_400;
const JOIN_PREFIX: &str = "pnj_";
const HOST_SECRET_PREFIX: &str = "pnh_";

/// A host added by the operator, and the one-time token its agent joins with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostJoin {
    pub host: String,
    /// Shown once; stored hashed.
    pub join_token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// What a joining agent gets: its host id and its credential (shown once).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostCredential {
    pub host: String,
    pub secret: String,
}

/// Whether `id` can name a host: 1 to 253 lower-case letters, digits,
/// `-`, `_` and `.` (a Kubernetes node's name, `ip-10-0-1-2.ec2.internal`),
/// starting and ending with a letter or digit.
pub fn valid_host_id(id: &str) -> bool {
    (1..=253).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.')
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        && !id.contains("..")
}

/// A host as `GET /api/v1/admin/hosts` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostView {
    pub id: String,
    /// `ready`, `cordoned`, `unreachable` or `lost`.
    pub status: HostStatus,
    /// The operator keeps new pods off it.
    pub cordoned: bool,
    pub runtimes: Vec<String>,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// What its live pods were promised.
    pub vcpus_used: u32,
    pub memory_used: u64,
    /// Pods placed on it that are not deleted.
    pub pods: usize,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    /// This control plane reaches it for exec, terminals, files, logs,
    /// snapshots and the proxy.
    pub connected: bool,
    /// The API server its link ends at, with several servers (`null`:
    /// none, or one server only).
    pub link_server: Option<String>,
    /// Labels its agent reports (`region`, `gpu`, ...).
    pub labels: std::collections::BTreeMap<String, String>,
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_become_api_answers_by_code() {
        use axum::http::StatusCode;
        let cases = [
            (HostError::NotFound("x".into()), StatusCode::NOT_FOUND, "not_found"),
            (HostError::NotRunning("x".into()), StatusCode::CONFLICT, "pod_not_running"),
            (HostError::Busy("x".into()), StatusCode::CONFLICT, "pod_busy"),
            (HostError::Unreachable("h".into()), StatusCode::SERVICE_UNAVAILABLE, "host_unreachable"),
            (HostError::ImageNotFound("x".into()), StatusCode::BAD_REQUEST, "image_not_found"),
            (HostError::RegistryUnreachable("x".into()), StatusCode::BAD_GATEWAY, "registry_unreachable"),
            (HostError::Failed("disk on fire".into()), StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        ];
        for (e, status, code) in cases {
            let a = host_error(e);
            assert_eq!((a.status, a.code), (status, code));
        }
        // internals never leak into a 500's message
        assert!(!host_error(HostError::Failed("disk on fire".into())).message.contains("fire"));
    }
}
