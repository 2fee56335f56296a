//! The REST API (nested at `/api/v1/memory` by the server): every route
//! takes the caller from its bearer token through [`TokenVerifier`], and
//! errors answer `{"error":{"code","message"}}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::error::MemoryError;
use crate::model::*;
use crate::service::MemoryService;

/// Turns a bearer token into a caller (the platform's JWKS-signed memory
/// tokens; a fake in tests).
#[async_trait::async_trait]
pub trait TokenVerifier: Send + Sync {
    async fn verify(&self, token: &str) -> Result<Caller, MemoryError>;
}

/// What the routes share.
#[derive(Clone)]
pub struct MemoryApi {
    pub service: MemoryService,
    pub verifier: Arc<dyn TokenVerifier>,
}

/// Largest request body (documents and imports).
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// The routes, relative to where they are nested.
pub fn router<S: Clone + Send + Sync + 'static>(api: MemoryApi) -> Router<S> {
    Router::new()
        .route("/memories", post(add).get(list))
        .route("/memories/batch", post(add_batch))
        .route("/memories/{id}", get(get_one).patch(update).delete(delete))
        .route("/memories/{id}/history", get(history))
        .route("/search", post(search))
        .route("/documents", post(ingest))
        .route("/logs/{log}", get(log))
        .route("/logs/{log}/verify", get(verify))
        .route("/export", get(export))
        .route("/import", post(import))
        .route("/project", axum::routing::delete(purge))
        .route("/position", get(position))
        .route("/restore", post(restore))
        .route("/reembed", post(reembed).get(reembedding))
        .route("/fork", post(fork))
        .route("/openapi.json", get(openapi))
        .nest_service("/mcp", crate::mcp::http_service(api.service.clone(), api.verifier.clone()))
        .fallback(|| async { ApiFailure(MemoryError::NotFound("no such memory route; see /api/v1/memory/openapi.json".into())) })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

/// An error as the API answers it.
pub struct ApiFailure(pub MemoryError);

impl From<MemoryError> for ApiFailure {
    fn from(e: MemoryError) -> Self {
        ApiFailure(e)
    }
}

impl From<JsonRejection> for ApiFailure {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiFailure(MemoryError::TooLarge(format!("request body over {BODY_LIMIT} bytes")));
        }
        ApiFailure(MemoryError::invalid("invalid_json", r.body_text()))
    }
}

/// Status and code of an error.
pub fn status_of(e: &MemoryError) -> (StatusCode, &'static str) {
    match e {
        MemoryError::Invalid { code: "conflict", .. } => (StatusCode::CONFLICT, "conflict"),
        MemoryError::Invalid { code, .. } => (StatusCode::BAD_REQUEST, code),
        MemoryError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        MemoryError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        MemoryError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        MemoryError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        MemoryError::Embed(_) => (StatusCode::BAD_GATEWAY, "embedder_unavailable"),
        MemoryError::Store(_) | MemoryError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// The message a client sees (server faults are logged, not shown).
pub fn public_message(e: &MemoryError) -> String {
    match e {
        MemoryError::Store(_) | MemoryError::Internal(_) => {
            tracing::error!(error = %e, "memory service error");
            "internal error; see the server log".into()
        }
        // the provider's address and answer stay in the server's log
        MemoryError::Embed(_) => {
            tracing::error!(error = %e, "embedding provider failed");
            "the embedding provider failed; see the server log".into()
        }
        other => other.to_string(),
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let (status, code) = status_of(&self.0);
        let message = public_message(&self.0);
        let mut resp = (status, Json(serde_json::json!({"error": {"code": code, "message": message}}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"pinacle-memory\""));
        }
        resp
    }
}

type Answer<T> = Result<T, ApiFailure>;

/// The verified caller of a request.
pub struct Authed(pub Caller);

impl FromRequestParts<MemoryApi> for Authed {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, api: &MemoryApi) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            MemoryError::Unauthenticated("send the memory token as Authorization: Bearer <token> (in a pod: the file $PINAK_TOKEN_FILE)".into())
        })?;
        Ok(Authed(api.verifier.verify(token).await?))
    }
}

/// The bearer token of a request (REST and MCP alike).
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// JSON bodies, with rejections in the API's error shape.
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiFailure;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(Body(v))
    }
}

async fn add(State(api): State<MemoryApi>, Authed(c): Authed, Body(item): Body<NewMemory>) -> Answer<(StatusCode, Json<Added>)> {
    let added = api.service.add(&c, vec![item]).await?.remove(0);
    let status = if added.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(added)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub memories: Vec<NewMemory>,
}

async fn add_batch(State(api): State<MemoryApi>, Authed(c): Authed, Body(b): Body<Batch>) -> Answer<Json<serde_json::Value>> {
    let results = api.service.add(&c, b.memories).await?;
    Ok(Json(serde_json::json!({ "results": results })))
}

/// `layers=a,b`, `session_id`, `since`, `until` (ms), `limit`, `cursor`,
/// and `meta.KEY=VALUE` (string equality).
fn filters_from_query(q: &HashMap<String, String>) -> Result<Filters, MemoryError> {
    let num = |k: &str| -> Result<Option<i64>, MemoryError> {
        q.get(k).map(|v| v.parse().map_err(|_| MemoryError::invalid("invalid_query", format!("{k}: a number (ms since the epoch)")))).transpose()
    };
    let mut f = Filters {
        layers: q.get("layers").or(q.get("layer")).map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()).unwrap_or_default(),
        session_id: q.get("session_id").cloned(),
        since: num("since")?,
        until: num("until")?,
        ..Default::default()
    };
    for (k, v) in q {
        if let Some(key) = k.strip_prefix("meta.") {
            f.metadata.insert(key.to_owned(), serde_json::Value::String(v.clone()));
        } else if !matches!(k.as_str(), "layers" | "layer" | "session_id" | "since" | "until" | "limit" | "cursor") {
            return Err(MemoryError::invalid("invalid_query", format!("unknown parameter {k:?}")));
        }
    }
    Ok(f)
}

async fn list(State(api): State<MemoryApi>, Authed(c): Authed, Query(q): Query<HashMap<String, String>>) -> Answer<Json<Page>> {
    let filters = filters_from_query(&q)?;
    let limit = q.get("limit").map(|l| l.parse::<usize>().map_err(|_| MemoryError::invalid("invalid_limit", "limit: a number"))).transpose()?;
    Ok(Json(api.service.list(&c, &filters, limit, q.get("cursor").map(String::as_str)).await?))
}

async fn get_one(State(api): State<MemoryApi>, Authed(c): Authed, Path(id): Path<String>) -> Answer<Json<Memory>> {
    Ok(Json(api.service.get(&c, &id).await?))
}

async fn update(State(api): State<MemoryApi>, Authed(c): Authed, Path(id): Path<String>, Body(p): Body<Patch>) -> Answer<Json<Memory>> {
    Ok(Json(api.service.update(&c, &id, p).await?))
}

async fn delete(State(api): State<MemoryApi>, Authed(c): Authed, Path(id): Path<String>) -> Answer<Json<Memory>> {
    Ok(Json(api.service.delete(&c, &id).await?))
}

async fn history(State(api): State<MemoryApi>, Authed(c): Authed, Path(id): Path<String>) -> Answer<Json<History>> {
    Ok(Json(api.service.history(&c, &id).await?))
}

async fn search(State(api): State<MemoryApi>, Authed(c): Authed, Body(req): Body<SearchRequest>) -> Answer<Json<serde_json::Value>> {
    let hits = api.service.search(&c, &req).await?;
    Ok(Json(serde_json::json!({ "results": hits })))
}

async fn ingest(State(api): State<MemoryApi>, Authed(c): Authed, Body(doc): Body<Document>) -> Answer<(StatusCode, Json<Ingested>)> {
    Ok((StatusCode::CREATED, Json(api.service.ingest(&c, doc).await?)))
}

fn log_name(s: &str) -> Result<LogName, MemoryError> {
    LogName::parse(s).ok_or_else(|| MemoryError::NotFound(format!("no log {s:?}: the logs are events and changelog")))
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_log_limit")]
    limit: usize,
}

fn default_log_limit() -> usize {
    100
}

async fn log(State(api): State<MemoryApi>, Authed(c): Authed, Path(name): Path<String>, q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>) -> Answer<Json<LogPage>> {
    let Query(q) = q.map_err(|e| MemoryError::invalid("invalid_query", e.body_text()))?;
    Ok(Json(api.service.log(&c, log_name(&name)?, q.after, q.limit).await?))
}

async fn verify(State(api): State<MemoryApi>, Authed(c): Authed, Path(name): Path<String>) -> Answer<Json<Verification>> {
    Ok(Json(api.service.verify(&c, log_name(&name)?).await?))
}

async fn export(State(api): State<MemoryApi>, Authed(c): Authed) -> Answer<Json<Export>> {
    Ok(Json(api.service.export(&c).await?))
}

async fn import(State(api): State<MemoryApi>, Authed(c): Authed, Body(e): Body<Export>) -> Answer<Json<Imported>> {
    Ok(Json(api.service.import(&c, e).await?))
}

async fn purge(State(api): State<MemoryApi>, Authed(c): Authed) -> Answer<Json<Purged>> {
    Ok(Json(api.service.purge(&c).await?))
}

async fn position(State(api): State<MemoryApi>, Authed(c): Authed) -> Answer<Json<Position>> {
    Ok(Json(api.service.position(&c).await?))
}

async fn restore(State(api): State<MemoryApi>, Authed(c): Authed, Body(r): Body<RestoreRequest>) -> Answer<Json<Restored>> {
    Ok(Json(api.service.restore(&c, r.changelog_seq).await?))
}

async fn fork(State(api): State<MemoryApi>, Authed(c): Authed, Body(r): Body<ForkRequest>) -> Answer<(StatusCode, Json<Forked>)> {
    Ok((StatusCode::CREATED, Json(api.service.fork(&c, r).await?)))
}

async fn reembed(State(api): State<MemoryApi>, Authed(c): Authed) -> Answer<(StatusCode, Json<Reembedding>)> {
    Ok((StatusCode::ACCEPTED, Json(api.service.reembed(&c).await?)))
}

async fn reembedding(State(api): State<MemoryApi>, Authed(c): Authed) -> Answer<Json<Reembedding>> {
    Ok(Json(api.service.reembedding(&c).await?))
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
