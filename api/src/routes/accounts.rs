//! `/api/v1/auth/signup` and `/auth/login`: local accounts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use crate::{ApiError, AppState};
use crate::error::ApiJson;

fn peer(info: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>) -> String {
    info.map(|Extension(axum::extract::ConnectInfo(a))| a.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

/// `POST /api/v1/auth/signup` (open sign-up).
pub async fn signup(
    State(s): State<AppState>,
    info: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ApiJson(creds): ApiJson<crate::accounts::Credentials>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let u = s.signup(creds, peer(info)).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({"id": u.id, "name": u.name}))))
}

/// `POST /api/v1/auth/login`: a bearer token valid for 15 minutes.
pub async fn login(
    State(s): State<AppState>,
    info: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ApiJson(creds): ApiJson<crate::accounts::Credentials>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token = s.login(creds, peer(info)).await?;
    Ok(Json(serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": crate::accounts::SESSION_SECS,
    })))
}
