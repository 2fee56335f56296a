//! Errors of the host agent.

use std::path::PathBuf;

use crate::ControlPlaneError;

/// What can go wrong while driving a pod's sandbox.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("image {0:?} is not built on this host; run `pinacle image build {0}`")]
    ImageMissing(String),
    #[error("{0}")]
    Snapshot(String),
    /// No snapshot by that id.
    #[error("{0}")]
    SnapshotNotFound(String),
    #[error("pod {0} is running; stop it first")]
    NotStopped(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Mount(String),
    #[error("runtime {runtime} failed to {op} {id}: {message}")]
    Runtime {
        runtime: &'static str,
        op: &'static str,
        id: String,
        message: String,
    },
    #[error("pod sandbox {0} is not running")]
    NotRunning(String),
    #[error("image build failed: {0}")]
    ImageBuild(String),
    /// A devcontainer feature could not be fetched or prepared.
    #[error("devcontainer features: {0}")]
    Features(String),
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error("bundle: {0}")]
    Bundle(String),
    #[error("pod network: {0}")]
    Network(String),
    #[error("pod supervisor: {0}")]
    Supervisor(String),
    /// Pulling the pod's image from its registry failed.
    #[error(transparent)]
    Pull(#[from] pinacle_oci::OciError),
}

impl AgentError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| AgentError::Io { what, path, source }
    }
}
