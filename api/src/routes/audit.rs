//! `/api/v1/audit`: read and verify the audit log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use crate::auth::Principal;
use crate::{ApiError, AppState};

/// `GET /api/v1/audit`: the caller's own entries; the administrator sees all.
pub async fn list(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<serde_json::Value>, ApiError> {
    let entries: Vec<_> = s
        .audit_entries()
        .await?
        .into_iter()
        .filter(|e| who.is_admin() || e.fields.actor_id == who.user_id)
        .collect();
    Ok(Json(serde_json::json!({ "entries": entries })))
}

/// `GET /api/v1/audit/verify`: checks the whole chain (administrator only).
pub async fn verify(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<crate::audit::Verification>, ApiError> {
    if !who.is_admin() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only the administrator can verify the audit log"));
    }
    Ok(Json(crate::audit::verify(&s.audit_entries().await?)))
}
