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
