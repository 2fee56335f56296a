//! `Idempotency-Key` on POST: the first answer (JSON, below 5xx) is stored
//! per user and key and replayed for retries, so a retried create does not
//! create twice. The same key with a different request is refused (422); a
//! retry while the first request still runs gets 409. Keys live 24 hours.
//! Streamed answers (exec) are not remembered. Stored answers are sealed
//! with the master key (they may hold a new API token or invitation code),
//! bound to the user and key.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, SqlErr};
use sha2::{Digest, Sha256};

use crate::principal::Principal;
use crate::entities::idempotency_key as ik;
use crate::{ApiError, AppState};

/// Header naming the key.
pub const HEADER: &str = "idempotency-key";
/// Set on replayed answers.
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a key is remembered.
pub const KEY_TTL_HOURS: i64 = 24;
/// Largest answer that is remembered.
const MAX_STORED: usize = 1 << 20;

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    if req.method() != Method::POST {
        return Ok(next.run(req).await);
    }
    let Some(raw_key) = req.headers().get(HEADER) else { return Ok(next.run(req).await) };
    let key = raw_key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters"))?
        .to_owned();
    let who = req
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::internal("idempotency layer ran before authentication"))?;
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, crate::routes::BODY_LIMIT)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is too large"))?;
    let mut h = Sha256::new();
    h.update(parts.uri.path().as_bytes());
    h.update([0]);
    h.update(&bytes);
    let request_hash = hex::encode(h.finalize());

    // Reserve the key; the primary key makes concurrent retries collide.
    let now = Utc::now();
    ik::Entity::delete_many()
        .filter(ik::Column::CreatedAt.lt(now - Duration::hours(KEY_TTL_HOURS)))
        .exec(&state.db)
        .await?;
    let reserved = ik::ActiveModel {
        user_id: Set(who.user_id.clone()),
        key: Set(key.clone()),
        request_hash: Set(request_hash.clone()),
        status: Set(None),
        body: Set(None),
        created_at: Set(now),
    }
    .insert(&state.db)
    .await;
    match reserved {
        Ok(_) => {}
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            let first = ik::Entity::find_by_id((who.user_id.clone(), key.clone()))
                .one(&state.db)
                .await?
                .ok_or_else(|| ApiError::conflict("request_in_progress", "a request with this Idempotency-Key just finished; retry"))?;
            if first.request_hash != request_hash {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request; use a new key",
                ));
            }
            return match (first.status, first.body) {
                (Some(status), Some(sealed)) => {
                    let body = open_body(&state, &who.user_id, &key, &sealed)?;
                    let status = StatusCode::from_u16(status as u16).map_err(ApiError::internal)?;
                    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
                    resp.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
                    Ok(resp)
                }
                _ => Err(ApiError::conflict("request_in_progress", "the first request with this Idempotency-Key is still running")),
            };
        }
        Err(e) => return Err(e.into()),
    }

    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let forget = || async {
        let _ = ik::Entity::delete_by_id((who.user_id.clone(), key.clone())).exec(&state.db).await;
    };
    if resp.status().is_server_error() || !is_json {
        forget().await;
        return Ok(resp);
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_STORED).await else {
        forget().await;
        return Err(ApiError::internal("answer too large to remember for Idempotency-Key"));
    };
    // Answers may carry secrets (a new API token, an invitation code): they
    // are stored sealed, bound to the user and key.
    let sealed = match state.master_key.seal(&body_context(&who.user_id, &key), &bytes) {
        Ok(s) => s,
        Err(e) => {
            forget().await;
            return Err(ApiError::internal(e));
        }
    };
    ik::Entity::update_many()
        .col_expr(ik::Column::Status, Expr::value(i32::from(parts.status.as_u16())))
        .col_expr(ik::Column::Body, Expr::value(sealed))
        .filter(ik::Column::UserId.eq(who.user_id.clone()))
        .filter(ik::Column::Key.eq(key.clone()))
        .exec(&state.db)
        .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The sealing context of a stored answer.
fn body_context(user_id: &str, key: &str) -> String {
    format!("idempotency:{user_id}:{key}")
}

/// A stored answer, opened. Rows written before answers were sealed hold
/// plain JSON (kept at most [`KEY_TTL_HOURS`]).
fn open_body(state: &AppState, user_id: &str, key: &str, stored: &str) -> Result<Vec<u8>, ApiError> {
    if stored.starts_with('{') || stored.starts_with('[') {
        return Ok(stored.as_bytes().to_vec());
    }
    state.master_key.open(&body_context(user_id, key), stored).map_err(ApiError::internal)
}
