//! The GitHub App's routes: its webhook, the repository picker, and the
//! admin's view of installations and deliveries.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::error::{ApiJson, ApiPath, ApiQuery};
use crate::policy::{Action, Resource};
use crate::principal::Principal;
use crate::{ApiError, AppState};

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /api/v1/github/webhook`: GitHub's deliveries, signed with the
/// App's webhook secret (401 otherwise); answered 202 once recorded,
/// processed in the background.
pub async fn webhook(State(s): State<AppState>, headers: HeaderMap, body: axum::body::Body) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let max = pinacle_github::webhook::MAX_BODY;
    let body = axum::body::to_bytes(body, max).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("a delivery is at most {} MiB", max >> 20))
    })?;
    let received = s
        .github_apps
        .receive(header(&headers, "x-github-event"), header(&headers, "x-github-delivery"), header(&headers, "x-hub-signature-256"), &body)
        .await?;
    let status = if received.outcome == "duplicate" { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(serde_json::json!({"delivery": received.id, "outcome": received.outcome}))))
}

/// `GET /api/v1/github/status`: whether the App is configured, and where
/// users install it.
pub async fn status(State(s): State<AppState>) -> Json<serde_json::Value> {
    let app = s.github_apps.config();
    Json(serde_json::json!({"app": {"configured": app.is_some(), "install_url": app.and_then(|a| a.install_url.clone())}}))
}

/// `GET /api/v1/github/repositories`: the installed repositories the
/// caller's GitHub account can read.
pub async fn repositories(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<serde_json::Value>, ApiError> {
    let repos = s.github_apps.repositories(&who).await?;
    Ok(Json(serde_json::json!({"repositories": repos})))
}

/// `GET /api/v1/github/repositories/{owner}/{repo}/branches`.
pub async fn branches(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath((owner, repo)): ApiPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let branches = s.github_apps.branches(&who, &format!("{owner}/{repo}")).await?;
    Ok(Json(serde_json::json!({"branches": branches})))
}

/// `POST /api/v1/admin/github/manifest`: the App's manifest and where the
/// admin's browser posts it (GitHub's manifest flow).
pub async fn manifest(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(req): ApiJson<crate::github::app::ManifestRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.authorize(Action::Configure, &Resource::Instance, "github")?;
    Ok(Json(s.github_apps.manifest(&who, req)?))
}

#[derive(Deserialize)]
pub struct ManifestCallback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

/// `GET /api/v1/github/manifest/callback?code&state`: GitHub sends the
/// browser back here once the App exists; it lands on the admin page.
pub async fn manifest_callback(State(s): State<AppState>, ApiQuery(q): ApiQuery<ManifestCallback>) -> Result<(StatusCode, HeaderMap), ApiError> {
    let to = s.github_apps.manifest_callback(q.code, q.state).await?;
    let mut h = HeaderMap::new();
    h.insert(axum::http::header::LOCATION, to.parse().map_err(ApiError::internal)?);
    Ok((StatusCode::FOUND, h))
}

/// `POST /api/v1/admin/github/redeliver`: asks GitHub now for the
/// deliveries that never reached this server (also done every 10 minutes).
pub async fn redeliver(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<serde_json::Value>, ApiError> {
    who.authorize(Action::Configure, &Resource::Instance, "github")?;
    Ok(Json(serde_json::json!({"redelivered": s.github_apps.redeliver_failed().await?})))
}

/// `GET /api/v1/admin/github/installations`.
pub async fn installations(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<serde_json::Value>, ApiError> {
    who.authorize(Action::Configure, &Resource::Instance, "github")?;
    Ok(Json(serde_json::json!({"installations": s.github_apps.installations().await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[serde(default)]
    limit: Option<u64>,
}

/// `GET /api/v1/admin/github/deliveries?limit=N`: the latest deliveries.
pub async fn deliveries(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.authorize(Action::Configure, &Resource::Instance, "github")?;
    Ok(Json(serde_json::json!({"deliveries": s.github_apps.deliveries(q.limit.unwrap_or(50)).await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewsBody {
    enabled: bool,
}

/// `PUT /api/v1/admin/github/repositories/{owner}/{repo}/previews`.
pub async fn set_previews(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath((owner, repo)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PreviewsBody>,
) -> Result<Json<crate::github::app::RepositoryView>, ApiError> {
    who.authorize(Action::Configure, &Resource::Instance, "github")?;
    Ok(Json(s.github_apps.set_previews(&who, &format!("{owner}/{repo}"), body.enabled).await?))
}
