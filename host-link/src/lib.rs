//! The remote side of Pinacle's host contract.
//!
//! A host agent on another machine dials out to the control plane
//! (`GET /api/v1/agents/connect` with its host credential and
//! `Upgrade: pinacle-host/1`); the upgraded connection then carries
//! HTTP/2, with the control plane as the client and the agent as the
//! server, so every [`pinacle_host_api::HostApi`] call, every byte stream
//! (exec, supervisor connections, a pod's ports) and the agent's calls
//! back on the control plane share one multiplexed, flow-controlled
//! connection that needs no route from the control plane to the host.
//!
//! - [`remote::RemoteHost`] is the control plane's `dyn HostApi` for such a
//!   host ([`remote::accept`] makes one from an upgraded connection).
//! - [`agent::serve`] answers them on the agent, and [`agent::LinkControl`]
//!   is the agent's [`pinacle_host_api::control::ControlPlane`], whose
//!   calls travel back over the same connection.
//!
//! **Invariants:** messages are [`pinacle_host_api::wire`] types, framed as
//! length-prefixed JSON of at most [`MAX_FRAME`] bytes; the control plane
//! answers a host's calls only about that host's own pods; the pod's
//! supervisor secret never leaves its host (the agent adds it).

pub mod agent;
mod frame;
mod pipe;
pub mod remote;

pub use frame::MAX_FRAME;

/// The `Upgrade` token of a host link.
pub const UPGRADE: &str = "pinacle-host/1";

/// The control plane's path agents dial.
pub const CONNECT_PATH: &str = "/api/v1/agents/connect";

/// Paths on the agent's side of the link.
pub(crate) mod path {
    pub const CALL: &str = "/v1/call";
    pub const STREAM: &str = "/v1/stream";
    pub const CONTROL: &str = "/v1/control";
}

/// Why the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("host link: {0}")]
    Io(#[from] std::io::Error),
    #[error("host link: HTTP/2: {0}")]
    Http(#[from] hyper::Error),
    #[error("host link: bad message: {0}")]
    Message(#[from] serde_json::Error),
    #[error("host link: a message of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("host link: closed")]
    Closed,
}

/// The body type of every request and answer on the link.
pub(crate) type LinkBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

pub(crate) fn full(data: impl Into<bytes::Bytes>) -> LinkBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(data.into()).map_err(|e| match e {}).boxed()
}
