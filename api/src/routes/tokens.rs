//! `/api/v1/tokens`: API tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use crate::principal::Principal;
use crate::{ApiError, AppState};
use crate::error::{ApiJson, ApiPath};

pub async fn create(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(req): ApiJson<crate::tokens::CreateTokenRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let (view, secret) = s.tokens.create(&who, req).await?;
    let mut body = serde_json::to_value(view).map_err(ApiError::internal)?;
    body["token"] = serde_json::Value::String(secret);
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(serde_json::json!({ "tokens": s.tokens.list(&who).await? })))
}

pub async fn revoke(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    s.tokens.revoke(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
