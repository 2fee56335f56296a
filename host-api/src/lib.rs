//! The one contract between Pinacle's control plane and a host: every
//! operation the control plane performs on a host's pods goes through
//! [`HostApi`], and every type that crosses it is defined here.
//!
//! **Architecture invariant:** the control plane (`pinacle-api`) reaches a
//! host only through a `dyn HostApi` it gets from its host directory by the
//! pod's host id; which implementation answers (the agent in the same
//! process today, a remote agent over its connection later) is not its
//! business. Errors cross as [`HostError`] codes, never as text to match.
//!
//! **API boundary:** this crate holds no I/O and no policy: wire types, the
//! trait and the error codes. It depends only on the pure domain
//! (`pinacle-orchestrator`) and the pod supervisor's client.

pub mod control;
pub mod wire;

use std::net::Ipv4Addr;

use async_trait::async_trait;
use pinacle_orchestrator::{PodJob, PodRecord};
pub use pinacle_supervisor::client::{BoxedStream, SupervisorStream as ByteStream};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Repository prefix of images a host built for pods from their
/// repositories (`localhost/pinacle/pods/{key}`): only hosts name them (the
/// control plane refuses them in requests and configurations).
pub const POD_BUILDS_PREFIX: &str = "pinacle/pods/";

/// Version of this contract; a peer speaking another answers
/// [`HostError::Unsupported`] to what it does not know.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a host refused or failed an operation, as a code the control plane
/// maps to its answer (the message is for people).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", content = "message", rename_all = "snake_case")]
pub enum HostError {
    /// The pod, snapshot or file asked for does not exist on the host.
    #[error("{0}")]
    NotFound(String),
    /// The operation needs a running pod.
    #[error("{0}")]
    NotRunning(String),
    /// The pod is changing state (or must be stopped first); try again.
    #[error("{0}")]
    Busy(String),
    /// The request is invalid for this host (a bad egress policy, ...).
    #[error("{0}")]
    Invalid(String),
    /// The host does not do this (a feature it lacks, an older protocol).
    #[error("{0}")]
    Unsupported(String),
    /// The host cannot be reached now.
    #[error("host {0} is unreachable")]
    Unreachable(String),
    /// An image reference that is not one.
    #[error("{0}")]
    InvalidImage(String),
    /// The image does not exist (in its registry, or on the host).
    #[error("{0}")]
    ImageNotFound(String),
    /// The registry refused the credentials.
    #[error("{0}")]
    RegistryAuthRefused(String),
    /// The image has no linux/amd64 variant.
    #[error("{0}")]
    UnsupportedPlatform(String),
    /// The image's registry cannot be reached.
    #[error("{0}")]
    RegistryUnreachable(String),
    /// The operation failed on the host, for a reason the user can act on
    /// (a snapshot that could not be taken, a registry's answer).
    #[error("{0}")]
    Failed(String),
    /// Nothing accepts connections on the pod's port.
    #[error("{0}")]
    Refused(String),
    /// The host failed internally (its message is for the operator's log).
    #[error("{0}")]
    Internal(String),
}

impl HostError {
    /// The code, as it crosses the wire (`not_found`, `busy`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            HostError::NotFound(_) => "not_found",
            HostError::NotRunning(_) => "not_running",
            HostError::Busy(_) => "busy",
            HostError::Invalid(_) => "invalid",
            HostError::Unsupported(_) => "unsupported",
            HostError::Unreachable(_) => "unreachable",
            HostError::InvalidImage(_) => "invalid_image",
            HostError::ImageNotFound(_) => "image_not_found",
            HostError::RegistryAuthRefused(_) => "registry_auth_refused",
            HostError::UnsupportedPlatform(_) => "unsupported_platform",
            HostError::RegistryUnreachable(_) => "registry_unreachable",
            HostError::Failed(_) => "failed",
            HostError::Refused(_) => "refused",
            HostError::Internal(_) => "internal",
        }
    }
}

/// A command to run in a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Extra `NAME=VALUE` variables.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; `/workspace` if unset.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Bytes written to the command's stdin (then closed).
    #[serde(default)]
    pub stdin: Option<Vec<u8>>,
}

/// Output of a command running in a pod, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command ended with this code (128 + signal if killed).
    Exit(i32),
}

/// A pod's resource use now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PodUsage {
    /// CPU time over wall time, in percent of one CPU (150 = one and a half).
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// Used bytes of the pod's disk.
    pub disk_bytes: Option<u64>,
}

/// What a snapshot of a pod's volumes is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// `20261122T073000Z-1a2b` (sorts by time).
    pub id: String,
    /// The user's label; `auto` for one taken on stop.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// Bytes of the compressed archive.
    pub size_bytes: u64,
    /// SHA-256 of the archive, hex.
    pub sha256: String,
    /// Taken automatically when the pod stopped.
    pub auto: bool,
    /// The image the pod ran when it was taken.
    pub image: String,
    /// Entries that cannot be archived (Unix sockets, FIFOs, devices) and
    /// were left out (the first ones named, the rest counted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// A pod's own SSH key (its public half).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodKey {
    /// `ssh-ed25519 AAAA... pinacle-pod-NAME`.
    pub public_key: String,
    /// `SHA256:...`.
    pub fingerprint: String,
}

/// An image pulled from a registry (or built) into a host's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    /// `sha256:…` of its manifest.
    pub digest: String,
    /// The references it was pulled or built as.
    pub references: Vec<String>,
    /// `registry/repository@sha256:…`: pulling it always gives this image.
    pub pinned: String,
    /// Bytes of its root file system.
    pub size_bytes: u64,
    pub pulled_at: chrono::DateTime<chrono::Utc>,
}

/// What a garbage collection of a host's image store removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageGcReport {
    /// Manifest digests of the images removed.
    pub removed_images: Vec<String>,
    /// Layers removed.
    pub removed_blobs: usize,
    pub freed_bytes: u64,
}

/// How the control plane reaches a pod's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodPorts {
    /// The pod has no network: nothing outside it reaches its ports.
    None,
    /// At this address, from this process (the host is this machine).
    Direct(Ipv4Addr),
    /// Only through its host: [`HostApi::connect`].
    ViaHost,
}

/// Everything the control plane does on a host.
#[async_trait]
pub trait HostApi: Send + Sync + 'static {
    /// The host's id (what pods' `host` names).
    fn host_id(&self) -> &str;

    /// Whether the host has finished starting (its first reconcile).
    fn is_ready(&self) -> bool;

    /// Carries out a pod job now (jobs are idempotent: the queued copy is
    /// the durable record).
    async fn handle(&self, job: PodJob) -> Result<(), HostError>;

    /// Runs a command in a running pod; output and the exit code arrive on
    /// the receiver.
    async fn exec(&self, pod: &PodRecord, req: ExecRequest) -> Result<mpsc::Receiver<ExecOutput>, HostError>;

    /// The last `max_bytes` of the pod's console log.
    async fn logs(&self, pod: Uuid, max_bytes: u64) -> Result<String, HostError>;

    /// What the pod uses now.
    async fn usage(&self, pod: Uuid) -> Result<PodUsage, HostError>;

    /// How the pod's ports are reached.
    async fn pod_ports(&self, pod: Uuid) -> Result<PodPorts, HostError>;

    /// A byte stream to TCP port `port` of the running pod, opened by its
    /// host: the control plane needs no route to pod networks.
    /// [`HostError::Refused`] when nothing listens there.
    async fn connect(&self, pod: Uuid, port: u16) -> Result<BoxedStream, HostError>;

    /// A client of the pod's supervisor (terminals, files, processes);
    /// `None` when the pod runs without one.
    async fn supervisor(&self, pod: Uuid) -> Result<Option<pinacle_supervisor::client::SupervisorClient>, HostError>;

    /// Applies the pod's egress policy now; `false` when it is not running
    /// (it applies at the next start).
    async fn set_egress(&self, pod: Uuid, egress: &str) -> Result<bool, HostError>;

    /// Whether the host has the host-built image `name` (`base`, `node`, ...).
    async fn has_image(&self, name: &str) -> Result<bool, HostError>;

    /// The pinned form (`…@sha256:…`) of registry image `image`, asked of
    /// its registry with the credentials in `env` (the owner's secrets).
    async fn resolve_image(&self, image: &str, env: &[String]) -> Result<String, HostError>;

    /// Images in the host's registry image store.
    async fn stored_images(&self) -> Result<Vec<StoredImage>, HostError>;

    /// Removes stored images whose digest is not in `keep`, and the layers
    /// only they held.
    async fn gc_images(&self, keep: &[String]) -> Result<ImageGcReport, HostError>;

    /// The pod's snapshots, oldest first.
    async fn snapshots(&self, pod: Uuid) -> Result<Vec<SnapshotInfo>, HostError>;

    /// Takes a snapshot of the pod's volumes labelled `name`.
    async fn take_snapshot(&self, pod: &PodRecord, name: &str) -> Result<SnapshotInfo, HostError>;

    /// Restores snapshot `id` onto the (stopped) pod.
    async fn restore_snapshot(&self, pod: &PodRecord, id: &str) -> Result<SnapshotInfo, HostError>;

    /// Deletes snapshot `id`.
    async fn delete_snapshot(&self, pod: Uuid, id: &str) -> Result<SnapshotInfo, HostError>;

    /// The pod's own SSH key; `None` when it cannot be read now.
    async fn pod_key(&self, pod: &PodRecord) -> Result<Option<PodKey>, HostError>;

    /// Replaces the pod's own SSH key.
    async fn rotate_pod_key(&self, pod: &PodRecord) -> Result<PodKey, HostError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_as_codes_with_their_message() {
        let e = HostError::Busy("pod a is changing state".into());
        let json = serde_json::to_value(&e).unwrap_or_default();
        assert_eq!(json, serde_json::json!({"code": "busy", "message": "pod a is changing state"}));
        assert_eq!(json["code"], e.code());
        let back: HostError = serde_json::from_value(json).unwrap_or(HostError::Failed(String::new()));
        assert_eq!(back, e);
        for e in [
            HostError::NotFound(String::new()),
            HostError::NotRunning(String::new()),
            HostError::Invalid(String::new()),
            HostError::Unsupported(String::new()),
            HostError::Unreachable(String::new()),
            HostError::InvalidImage(String::new()),
            HostError::ImageNotFound(String::new()),
            HostError::RegistryAuthRefused(String::new()),
            HostError::UnsupportedPlatform(String::new()),
            HostError::RegistryUnreachable(String::new()),
            HostError::Failed(String::new()),
            HostError::Refused(String::new()),
            HostError::Internal(String::new()),
        ] {
            assert_eq!(serde_json::to_value(&e).unwrap_or_default()["code"], e.code(), "{e:?}");
        }
    }
}
