//! `/api/v1/audit`: read and verify the audit log.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;

use crate::principal::Principal;
use crate::error::ApiQuery;
use crate::policy::{Action, Resource};
use crate::{ApiError, AppState};

/// Entries per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: u64 = 100;
/// Most entries one request may ask for.
pub const MAX_PAGE: u64 = 1000;

/// `GET /api/v1/audit` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Entries per page, 1 to [`MAX_PAGE`] (default [`DEFAULT_PAGE`]).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Only entries with an id below this one (the `next_before` of the
    /// previous page).
    #[serde(default)]
    pub before: Option<i64>,
}

/// `GET /api/v1/audit?limit=&before=`: one page of the entries the caller
/// may read (their own; the administrator reads all), newest page first,
/// oldest first within it. `next_before` is the cursor of the next
/// (older) page, `null` on the last one.
pub async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", format!("limit must be from 1 to {MAX_PAGE}")));
    }
    // the filter narrows the query to what the policy allows; the policy
    // still decides each entry
    let actor = (!who.instance_admin).then_some(who.user_id.as_str());
    let (entries, next_before) = s.audit.page(actor, q.before, limit).await?;
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|e| who.authorize(Action::Read, &Resource::AuditEntry { actor: &e.fields.actor_id }, "entry").is_ok())
        .collect();
    Ok(Json(serde_json::json!({ "entries": entries, "next_before": next_before })))
}

/// `GET /api/v1/audit/verify`: checks the whole chain and its anchors
/// (administrator only), reading the log a page at a time.
pub async fn verify(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<crate::audit::Verification>, ApiError> {
    who.authorize(Action::Read, &Resource::Instance, "audit log")?;
    Ok(Json(s.audit.verify().await?))
}

/// `POST /api/v1/audit/anchor`: records the head now (administrator only).
pub async fn anchor(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.authorize(Action::Create, &Resource::Instance, "audit log")?;
    Ok(Json(serde_json::json!({ "anchor": s.audit.anchor().await? })))
}
