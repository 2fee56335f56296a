//! What crosses a host link (a remote agent's one connection to the
//! control plane), in both directions. The transport (`pinacle-host-link`)
//! frames these as JSON; their meaning is [`crate::HostApi`]'s and
//! [`crate::control::ControlPlane`]'s, one message per method.

use pinacle_orchestrator::pod::RepositorySource;
use pinacle_orchestrator::{PodEvent, PodJob, PodRecord, PodState, RuntimeKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::control::{ControlPlaneError, ImageSetup, RepositoryConfigOutcome};
use crate::ExecRequest;

/// A one-shot call of the control plane on a host: a [`crate::HostApi`]
/// method without a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum HostCall {
    /// What the host is and has now (the heartbeat).
    Report,
    Handle { job: PodJob },
    Logs { pod: Uuid, max_bytes: u64 },
    Usage { pod: Uuid },
    PodPorts { pod: Uuid },
    /// Whether the pod runs under a supervisor.
    HasSupervisor { pod: Uuid },
    SetEgress { pod: Uuid, egress: String },
    HasImage { name: String },
    ResolveImage { image: String, env: Vec<String> },
    StoredImages,
    GcImages { keep: Vec<String> },
    Snapshots { pod: Uuid },
    TakeSnapshot { pod: Box<PodRecord>, name: String },
    RestoreSnapshot { pod: Box<PodRecord>, id: String },
    DeleteSnapshot { pod: Uuid, id: String },
    PodKey { pod: Box<PodRecord> },
    RotatePodKey { pod: Box<PodRecord> },
    /// Keep `secret` as the host's credential from now on (the old one
    /// stops working once the control plane switches): the renewal of a
    /// host's credential over its link.
    RenewCredential { secret: Secret },
}

/// A secret on the wire; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The first message of a stream the control plane opens on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "open", rename_all = "snake_case")]
pub enum StreamOpen {
    /// [`crate::HostApi::exec`]: output comes back as framed
    /// [`crate::ExecOutput`]s.
    Exec { pod: Box<PodRecord>, req: ExecRequest },
    /// A connection to the pod's supervisor carrying `op` (the host adds
    /// the pod's secret, which never leaves it); then raw bytes both ways.
    Supervisor { pod: Uuid, op: pinacle_supervisor::protocol::Op },
    /// [`crate::HostApi::connect`]: then raw bytes both ways.
    Connect { pod: Uuid, port: u16 },
}

/// What a host reports of itself on each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// The host's [`crate::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The id it was joined as.
    pub host: String,
    pub runtimes: Vec<RuntimeKind>,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Labels the operator gave the agent (`region=eu`, `gpu=nvidia`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Whether its first reconcile is done.
    pub ready: bool,
}

/// A call of a host on the control plane: a
/// [`crate::control::ControlPlane`] method. Every call is about the
/// calling host's own pods; the control plane answers any other pod as
/// not found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum ControlCall {
    Pod { id: Uuid },
    /// The calling host's pods (a host never names another).
    PodsOnHost,
    Record { id: Uuid, event: PodEvent, message: String },
    PodEnvironment { id: Uuid },
    RegistryEnvironment { id: Uuid },
    Progress { id: Uuid, message: String },
    Repository { id: Uuid },
    ApplyRepositoryConfig { id: Uuid, file: String, text: String },
    ImageSetup { id: Uuid },
    SetBuiltImage { id: Uuid, image: String },
    PlatformToken { id: Uuid },
    GitToken { id: Uuid },
    SnapshotTaken { id: Uuid, snapshot: String },
}

/// A pod's token for the platform services, and when it expires (seconds
/// since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformToken {
    pub token: Secret,
    pub expires_at: i64,
}

/// A [`ControlPlaneError`] as it crosses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ControlFault {
    Transition { state: PodState, event: PodEvent },
    NotFound { pod: Uuid },
    Backend { message: String },
    InvalidConfig { message: String },
}

impl From<&ControlPlaneError> for ControlFault {
    fn from(e: &ControlPlaneError) -> Self {
        match e {
            ControlPlaneError::Transition(t) => ControlFault::Transition { state: t.state, event: t.event },
            ControlPlaneError::NotFound(pod) => ControlFault::NotFound { pod: *pod },
            ControlPlaneError::Backend(message) => ControlFault::Backend { message: message.clone() },
            ControlPlaneError::InvalidConfig(message) => ControlFault::InvalidConfig { message: message.clone() },
        }
    }
}

impl From<ControlFault> for ControlPlaneError {
    fn from(f: ControlFault) -> Self {
        match f {
            ControlFault::Transition { state, event } => ControlPlaneError::Transition(pinacle_orchestrator::InvalidTransition { state, event }),
            ControlFault::NotFound { pod } => ControlPlaneError::NotFound(pod),
            ControlFault::Backend { message } => ControlPlaneError::Backend(message),
            ControlFault::InvalidConfig { message } => ControlPlaneError::InvalidConfig(message),
        }
    }
}

/// What a [`ControlCall`] answers, by call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", content = "value", rename_all = "snake_case")]
pub enum ControlAnswer {
    Pod(Option<Box<PodRecord>>),
    Pods(Vec<PodRecord>),
    State(PodState),
    Env(Vec<String>),
    Repository(Option<RepositorySource>),
    Outcome(RepositoryConfigOutcome),
    ImageSetup(ImageSetup),
    PlatformToken(Option<PlatformToken>),
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_errors_cross_by_variant() {
        let id = Uuid::nil();
        for e in [
            ControlPlaneError::Transition(pinacle_orchestrator::InvalidTransition { state: PodState::Deleted, event: PodEvent::StartRequested }),
            ControlPlaneError::NotFound(id),
            ControlPlaneError::Backend("db down".into()),
            ControlPlaneError::InvalidConfig("pinacle.yaml:3: bad".into()),
        ] {
            let json = serde_json::to_string(&ControlFault::from(&e)).unwrap_or_default();
            let back: ControlPlaneError = serde_json::from_str::<ControlFault>(&json).map(Into::into).unwrap_or(ControlPlaneError::Backend(String::new()));
            assert_eq!(back.to_string(), e.to_string(), "{json}");
            assert_eq!(std::mem::discriminant(&back), std::mem::discriminant(&e));
        }
    }

    #[test]
    fn calls_are_tagged_by_name() {
        let call = HostCall::Logs { pod: Uuid::nil(), max_bytes: 10 };
        let json = serde_json::to_value(&call).unwrap_or_default();
        assert_eq!(json["call"], "logs");
        assert_eq!(serde_json::from_value::<HostCall>(json).ok(), Some(call));
        assert!(serde_json::from_str::<HostCall>(r#"{"call":"format_disk"}"#).is_err(), "unknown calls are refused");
        let c = ControlCall::PodsOnHost;
        assert_eq!(serde_json::to_value(&c).unwrap_or_default(), serde_json::json!({"call": "pods_on_host"}));
    }
}
