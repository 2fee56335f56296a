//! `/api/v1/admin/*`: instance settings and signing keys (administrator).

use axum::extract::State;
use axum::{Extension, Json};

use crate::auth::Principal;
use crate::error::ApiJson;
use crate::policy::{Action, Resource};
use crate::settings::{Settings, SettingsUpdate};
use crate::{ApiError, AppState};

pub async fn settings(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<Settings>, ApiError> {
    Ok(Json(s.show_settings(&who).await?))
}

pub async fn update_settings(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(req): ApiJson<SettingsUpdate>,
) -> Result<Json<Settings>, ApiError> {
    Ok(Json(s.update_settings(&who, req).await?))
}

/// `POST /api/v1/admin/signing-keys/rotate`: a new key signs from now on;
/// tokens signed by the old one stay valid until they expire.
pub async fn rotate_signing_key(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.authorize(Action::Configure, &Resource::Instance, "signing keys")?;
    let kid = s.rotate_signing_key(Some(&who)).await?;
    Ok(Json(serde_json::json!({ "kid": kid })))
}

/// A pulled image on the server's own host, and how many live pods use it.
#[derive(Debug, serde::Serialize)]
pub struct RegistryImageView {
    pub pinned: String,
    pub references: Vec<String>,
    pub digest: String,
    pub size_bytes: u64,
    pub pulled_at: chrono::DateTime<chrono::Utc>,
    pub pods: usize,
}

/// `GET /api/v1/admin/images`: images pulled from registries on this
/// server's host, with the number of live pods pinned to each.
pub async fn images(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<Vec<RegistryImageView>>, ApiError> {
    who.authorize(Action::Configure, &Resource::Instance, "images")?;
    let agent = s.local_agent.get().ok_or_else(|| ApiError::not_supported("this server runs no host agent"))?;
    let used = registry_images_in_use(&s).await?;
    let list = agent.registry_images().list().await.map_err(ApiError::internal)?;
    Ok(Json(
        list.into_iter()
            .map(|i| RegistryImageView {
                pods: used.iter().filter(|d| **d == i.info.manifest_digest).count(),
                pinned: i.info.pinned,
                references: i.info.references,
                digest: i.info.manifest_digest.to_string(),
                size_bytes: i.info.size,
                pulled_at: i.info.pulled_at,
            })
            .collect(),
    ))
}

/// `POST /api/v1/admin/images/gc`: removes pulled images no live pod is
/// pinned to, and the layers only they held; audited.
pub async fn images_gc(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<serde_json::Value>, ApiError> {
    who.authorize(Action::Configure, &Resource::Instance, "images")?;
    let agent = s.local_agent.get().ok_or_else(|| ApiError::not_supported("this server runs no host agent"))?;
    let keep = registry_images_in_use(&s).await?;
    let report = agent.registry_images().gc(&keep).await.map_err(ApiError::internal)?;
    let summary = format!("{} image(s), {} layer(s), {} bytes", report.removed_images.len(), report.removed_blobs.len(), report.freed_bytes);
    s.audit(&who, "images.gc", &summary).await?;
    Ok(Json(serde_json::json!({
        "removed_images": report.removed_images.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "removed_blobs": report.removed_blobs.len(),
        "freed_bytes": report.freed_bytes,
    })))
}

/// Manifest digests of the registry images live (not deleted) pods are
/// pinned to, one entry per pod.
async fn registry_images_in_use(s: &AppState) -> Result<Vec<pinacle_oci::Digest>, ApiError> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let pods = crate::entities::pod::Entity::find()
        .filter(crate::entities::pod::Column::State.ne(pinacle_orchestrator::PodState::Deleted.as_str()))
        .all(&s.db)
        .await?;
    Ok(pods
        .iter()
        .filter_map(|p| pinacle_oci::Reference::parse(&p.image).ok())
        .filter_map(|r| r.digest().cloned())
        .collect())
}
