//! `/api/v1/secrets`: user, team (`?team=`) and pod (`?pod=`) secrets.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use crate::principal::Principal;
use crate::error::{ApiJson, ApiPath, ApiQuery};
use crate::secrets::{SecretScopeQuery, SecretView, SetSecretRequest};
use crate::{ApiError, AppState};

pub async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<SecretScopeQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(serde_json::json!({ "secrets": s.secrets.list_secrets(&who, &q).await? })))
}

/// `PUT /api/v1/secrets/{name}`: 201 when created, 200 when replaced; the
/// answer never holds the value.
pub async fn set(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<SecretScopeQuery>,
    ApiJson(req): ApiJson<SetSecretRequest>,
) -> Result<(StatusCode, Json<SecretView>), ApiError> {
    let (view, created) = s.secrets.set_secret(&who, &name, &q, req).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(view)))
}

pub async fn delete(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<SecretScopeQuery>,
) -> Result<StatusCode, ApiError> {
    s.secrets.delete_secret(&who, &name, &q).await?;
    Ok(StatusCode::NO_CONTENT)
}
