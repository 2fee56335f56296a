//! `/api/v1/audit`: read and verify the audit log.

use axum::extract::State;
use axum::{Extension, Json};

use crate::auth::Principal;
use crate::policy::{Action, Resource};
use crate::{ApiError, AppState};

/// `GET /api/v1/audit`: the entries the caller may read (their own; the
/// administrator reads all).
pub async fn list(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<serde_json::Value>, ApiError> {
    let entries: Vec<_> = s
        .audit_entries()
        .await?
        .into_iter()
        .filter(|e| who.authorize(Action::Read, &Resource::AuditEntry { actor: &e.fields.actor_id }, "entry").is_ok())
        .collect();
    Ok(Json(serde_json::json!({ "entries": entries })))
}

/// `GET /api/v1/audit/verify`: checks the whole chain and its anchors
/// (administrator only).
pub async fn verify(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<crate::audit::Verification>, ApiError> {
    who.authorize(Action::Read, &Resource::Instance, "audit log")?;
    Ok(Json(crate::audit::verify_with_anchors(&s.audit_entries().await?, &s.audit_anchors().await?)))
}

/// `POST /api/v1/audit/anchor`: records the head now (administrator only).
pub async fn anchor(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.authorize(Action::Create, &Resource::Instance, "audit log")?;
    Ok(Json(serde_json::json!({ "anchor": s.anchor_audit().await? })))
}
