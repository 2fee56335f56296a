//! Several API servers on one database: a host's link ends at one of them
//! (`hosts.link_server`, its advertised address); the others reach the host
//! through that server, which relays the link to them over the same
//! protocol (`GET /api/v1/internal/hosts/{id}/relay`, upgraded, with a
//! credential derived from the master key every server holds). So every
//! server answers for every pod, whichever server its host dialed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pinacle_host_api::{BoxedStream, ExecOutput, ExecRequest, HostApi, HostError, ImageGcReport, PodKey, PodPorts, PodUsage, SnapshotInfo, StoredImage};
use pinacle_host_link::remote::{LinkOptions, NoCalls, RemoteHost};
use pinacle_orchestrator::{PodJob, PodRecord};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::entities::host;
use crate::ApiError;

mod ops;

/// How this server reaches hosts: its own agent and the links ending here
/// (the directory), else, with several servers, through the server that
/// holds a host's link (relayed, and kept).
#[derive(Clone)]
pub struct HostLinks {
    db: sea_orm::DatabaseConnection,
    hosts: Arc<crate::hosts::HostDirectory>,
    relays: Arc<Relays>,
    /// This server's address for the others; `None`: the only server.
    advertise_url: Option<String>,
    master_key: Arc<crate::crypto::MasterKey>,
    /// Keep-alive of relayed links.
    heartbeat: std::time::Duration,
}

impl HostLinks {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        hosts: Arc<crate::hosts::HostDirectory>,
        advertise_url: Option<String>,
        master_key: Arc<crate::crypto::MasterKey>,
        heartbeat: std::time::Duration,
    ) -> Self {
        Self { db, hosts, relays: Arc::default(), advertise_url, master_key, heartbeat }
    }
}

/// What the relay credential is derived for.
const RELAY_PURPOSE: &str = "pinacle peer relay v1";

/// Links relayed from other servers, by host id (with the server).
#[derive(Default)]
pub struct Relays {
    links: Mutex<HashMap<String, (String, RemoteHost)>>,
    /// One dial at a time: a second caller waits and takes the first's link.
    dialing: tokio::sync::Mutex<()>,
}

impl Relays {
    fn get(&self, host: &str, server: &str) -> Option<RemoteHost> {
        let links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        links.get(host).filter(|(s, l)| s == server && !l.is_closed()).map(|(_, l)| l.clone())
    }

    fn put(&self, host: &str, server: &str, link: RemoteHost) {
        let old = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(host.to_owned(), (server.to_owned(), link));
        if let Some((_, old)) = old {
            old.close();
        }
    }
}

/// `http://host:port` → (`host:port` to dial and to name).
fn authority(url: &str) -> Result<String, HostError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HostError::Unreachable(format!("{url} (servers reach each other over http:// on their private network)")))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(HostError::Unreachable(format!("{url} is not http://HOST:PORT")));
    }
    Ok(authority.to_owned())
}


#[cfg(test)]
mod tests {
    #[test]
    fn peers_are_addressed_by_plain_http_authorities() {
        assert_eq!(super::authority("http://10.0.0.2:7070").ok().as_deref(), Some("10.0.0.2:7070"));
        assert_eq!(super::authority("http://api-0.pinacle:7070/").ok().as_deref(), Some("api-0.pinacle:7070"));
        for bad in ["https://a:1", "a:1", "http://", "http://a:1/x"] {
            assert!(super::authority(bad).is_err(), "{bad}");
        }
    }
}
