//! The control plane as host agents see it, over this server's database.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use sea_orm::EntityTrait;
use pinacle_host_api::control::{ControlPlane, ControlPlaneError, ImageSetup, RepositoryConfigOutcome};
use pinacle_orchestrator::pod::RepositorySource;
use pinacle_orchestrator::{PodEvent, PodRecord, PodState};
use uuid::Uuid;

use crate::service::TransitionError;
use crate::ApiError;

fn backend(e: ApiError) -> ControlPlaneError {
    ControlPlaneError::Backend(e.message)
}

/// The control plane as host agents call it: their pods, state changes,
/// a pod's secrets at its start, repository and image set-up.
#[derive(Clone)]
pub struct Control {
    db: sea_orm::DatabaseConnection,
    pods: crate::service::Pods,
    vault: crate::secrets::SecretVault,
    memory: crate::memory::MemoryAccess,
    /// Pods' git tokens (the GitHub App), set once the App's service
    /// exists (it is built after the hosts, which need this).
    git_tokens: Arc<OnceLock<Arc<dyn GitTokens>>>,
}

/// Who mints pods' git tokens (the GitHub App's service).
#[async_trait]
pub trait GitTokens: Send + Sync {
    /// The pod's token and when it expires (seconds since the epoch).
    async fn git_token(&self, pod: Uuid) -> Result<Option<(String, i64)>, ApiError>;
}

impl Control {
    pub fn new(db: sea_orm::DatabaseConnection, pods: crate::service::Pods, vault: crate::secrets::SecretVault, memory: crate::memory::MemoryAccess) -> Self {
        Self { db, pods, vault, memory, git_tokens: Arc::default() }
    }

    /// Sets who mints pods' git tokens (once).
    pub fn set_git_tokens(&self, tokens: Arc<dyn GitTokens>) {
        let _ = self.git_tokens.set(tokens);
    }
}

#[async_trait]
impl ControlPlane for Control {
    async fn pod(&self, id: Uuid) -> Result<Option<PodRecord>, ControlPlaneError> {
        match self.pods.pod_by_id(id).await.map_err(backend)? {
            Some(v) => Ok(Some(v.record().map_err(backend)?)),
            None => Ok(None),
        }
    }

    async fn pods_on_host(&self, host: &str) -> Result<Vec<PodRecord>, ControlPlaneError> {
        self.pods.pods_on_host(host)
            .await
            .map_err(backend)?
            .iter()
            .map(|v| v.record().map_err(backend))
            .collect()
    }

    async fn record(&self, id: Uuid, event: PodEvent, message: &str) -> Result<PodState, ControlPlaneError> {
        match self.pods.transition(id, event, message).await {
            Ok(v) => Ok(v.state),
            Err(TransitionError::NotFound) => Err(ControlPlaneError::NotFound(id)),
            Err(TransitionError::Refused(e)) => Err(ControlPlaneError::Transition(e)),
            Err(TransitionError::Api(e)) => Err(backend(e)),
        }
    }

    async fn pod_environment(&self, id: Uuid) -> Result<Vec<String>, ControlPlaneError> {
        self.vault.pod_secret_env(id).await.map_err(backend)
    }

    async fn platform_token(&self, id: Uuid) -> Result<Option<pinacle_host_api::wire::PlatformToken>, ControlPlaneError> {
        let minted = self.memory.mint_for_pod(id).await.map_err(backend)?;
        Ok(minted.map(|t| pinacle_host_api::wire::PlatformToken { token: pinacle_host_api::wire::Secret(t.token), expires_at: t.expires_at }))
    }

    async fn git_token(&self, id: Uuid) -> Result<Option<pinacle_host_api::wire::PlatformToken>, ControlPlaneError> {
        let Some(tokens) = self.git_tokens.get() else { return Ok(None) };
        let t = tokens.git_token(id).await.map_err(backend)?;
        Ok(t.map(|(token, expires_at)| pinacle_host_api::wire::PlatformToken { token: pinacle_host_api::wire::Secret(token), expires_at }))
    }

    async fn snapshot_taken(&self, id: Uuid, snapshot: &str) -> Result<(), ControlPlaneError> {
        self.memory.host_snapshot_taken(id, snapshot).await.map_err(backend)
    }

    async fn registry_environment(&self, id: Uuid) -> Result<Vec<String>, ControlPlaneError> {
        // a preview without secrets pulls with no one's registry credentials
        if !self.pods.secrets_allowed(id).await.map_err(backend)? {
            return Ok(Vec::new());
        }
        let Some(pod) = crate::entities::pod::Entity::find_by_id(id.to_string()).one(&self.db).await.map_err(|e| backend(e.into()))? else {
            return Ok(Vec::new());
        };
        self.vault.registry_secret_env(&pod.owner_id, pod.team_id.as_deref(), Some(id)).await.map_err(backend)
    }

    async fn progress(&self, id: Uuid, message: &str) {
        if let Err(e) = self.pods.record_progress(id, message).await {
            tracing::warn!(pod = %id, error = %e.message, "progress note not recorded");
        }
    }

    async fn repository(&self, id: Uuid) -> Result<Option<RepositorySource>, ControlPlaneError> {
        Ok(self.pods.pod_by_id(id).await.map_err(backend)?.and_then(|v| v.repository))
    }

    async fn apply_repository_config(&self, id: Uuid, file: &str, text: &str) -> Result<RepositoryConfigOutcome, ControlPlaneError> {
        match self.pods.apply_repository_config(id, file, text).await {
            Ok(true) => Ok(RepositoryConfigOutcome::Restart),
            Ok(false) => Ok(RepositoryConfigOutcome::Applied),
            Err(e) if e.status.is_client_error() => Err(ControlPlaneError::InvalidConfig(e.message)),
            Err(e) => Err(backend(e)),
        }
    }

    async fn image_setup(&self, id: Uuid) -> Result<ImageSetup, ControlPlaneError> {
        let config = self.pods.pod_config(id).await.map_err(backend)?;
        Ok(config.map(|c| ImageSetup { build: c.image_build, features: c.features }).unwrap_or_default())
    }

    async fn set_built_image(&self, id: Uuid, image: &str) -> Result<(), ControlPlaneError> {
        self.pods.set_built_image(id, image).await.map_err(backend)
    }
}
