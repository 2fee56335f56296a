//! The other direction of the host contract: what a host agent asks of the
//! control plane (its pods, their environment, state changes, progress).

use async_trait::async_trait;
use pinacle_orchestrator::pod::RepositorySource;
use pinacle_orchestrator::{InvalidTransition, PodEvent, PodRecord, PodState};
use uuid::Uuid;

/// Why the control plane refused or failed a call.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The pod moved on (for example, it was deleted while provisioning).
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    #[error("pod {0} not found")]
    NotFound(Uuid),
    #[error("control plane: {0}")]
    Backend(String),
    /// A configuration the control plane refused (every problem, with its
    /// file and line).
    #[error("{0}")]
    InvalidConfig(String),
}

/// What the control plane did with a repository's own configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepositoryConfigOutcome {
    /// Stored; the sandbox runs what it asks for already.
    Applied,
    /// Stored; the image or the processes changed, so the sandbox must
    /// start again from the new record.
    Restart,
}

/// What a pod's image is made of beyond its name, from its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageSetup {
    /// A Dockerfile of the pod's repository the image is built from.
    pub build: Option<pinacle_config::pinacle_yaml::ImageBuild>,
    /// Devcontainer features installed in the pod, in dependency order.
    pub features: Vec<pinacle_config::pinacle_yaml::FeatureRequest>,
}

/// How a host agent reads pods and reports what happened to them.
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// The pod's current record, deleted pods included; `None` if it never existed.
    async fn pod(&self, id: Uuid) -> Result<Option<PodRecord>, ControlPlaneError>;

    /// Pods placed on `host` that are not deleted.
    async fn pods_on_host(&self, host: &str) -> Result<Vec<PodRecord>, ControlPlaneError>;

    /// Applies `event` to the pod through the state machine, stores it as a
    /// pod event with `message`, and returns the new state. An event that is
    /// not allowed in the pod's current state changes nothing and answers
    /// [`ControlPlaneError::Transition`].
    async fn record(
        &self,
        id: Uuid,
        event: PodEvent,
        message: &str,
    ) -> Result<PodState, ControlPlaneError>;

    /// Extra environment (`NAME=value`) the pod starts with: its secrets.
    /// Values are never logged.
    async fn pod_environment(&self, id: Uuid) -> Result<Vec<String>, ControlPlaneError> {
        let _ = id;
        Ok(Vec::new())
    }

    /// The registry credential secrets (`NAME=value`) pulls of the pod's
    /// image use (see [`crate::registry`]). Values are never logged.
    async fn registry_environment(&self, id: Uuid) -> Result<Vec<String>, ControlPlaneError> {
        let _ = id;
        Ok(Vec::new())
    }

    /// Records a progress note in the pod's events (an image pull, a
    /// clone) without changing its state. Best effort: failures are logged.
    async fn progress(&self, id: Uuid, message: &str) {
        let _ = (id, message);
    }

    /// The repository the pod's `/workspace` is cloned from, if any.
    async fn repository(&self, id: Uuid) -> Result<Option<RepositorySource>, ControlPlaneError> {
        let _ = id;
        Ok(None)
    }

    /// Configures the pod from its repository's own `file` (`pinacle.yaml`,
    /// `.devcontainer/devcontainer.json`, ...) holding `text`, checked as a
    /// request's `config` is: image, processes, ports and configuration are
    /// stored on the pod. [`ControlPlaneError::InvalidConfig`] when the file
    /// is refused (nothing changes).
    async fn apply_repository_config(&self, id: Uuid, file: &str, text: &str) -> Result<RepositoryConfigOutcome, ControlPlaneError> {
        let _ = (id, file, text);
        Ok(RepositoryConfigOutcome::Applied)
    }

    /// The pod's image build and features (none by default).
    async fn image_setup(&self, id: Uuid) -> Result<ImageSetup, ControlPlaneError> {
        let _ = id;
        Ok(ImageSetup::default())
    }

    /// A short-lived token for the platform services (the memory service)
    /// in the pod's name: its owner's tenant, its project. `None` when the
    /// control plane offers none (or the pod is gone). The host agent keeps
    /// it fresh in the pod and adds it to the pod's platform requests.
    async fn platform_token(&self, id: Uuid) -> Result<Option<crate::wire::PlatformToken>, ControlPlaneError> {
        let _ = id;
        Ok(None)
    }

    /// A short-lived token for the pod's git, for its repository only (a
    /// GitHub App installation token), `None` when the pod clones without
    /// one. The host agent keeps it fresh in the pod's platform directory,
    /// where the pod's git credential helper reads it.
    async fn git_token(&self, id: Uuid) -> Result<Option<crate::wire::PlatformToken>, ControlPlaneError> {
        let _ = id;
        Ok(None)
    }

    /// The host took snapshot `snapshot` of pod `id` on its own (at stop):
    /// the control plane records what goes with it (where the project's
    /// memory stands), so restoring it brings that back too.
    async fn snapshot_taken(&self, id: Uuid, snapshot: &str) -> Result<(), ControlPlaneError> {
        let _ = (id, snapshot);
        Ok(())
    }

    /// Records `image` (`localhost/pinacle/pods/…@sha256:…`, built by this
    /// host from the pod's repository) as the pod's image; the next start
    /// runs it.
    async fn set_built_image(&self, id: Uuid, image: &str) -> Result<(), ControlPlaneError> {
        let _ = (id, image);
        Err(ControlPlaneError::Backend("this control plane cannot record built images".into()))
    }
}
