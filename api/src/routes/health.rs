//! `/healthz` (the process answers), `/readyz` (it can do its work) and
//! `/metrics` (Prometheus text format).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use pinacle_orchestrator::PodState;
use sea_orm::{ConnectionTrait, Statement};

use crate::metrics::StateLabels;
use crate::{ApiError, AppState};

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.db.execute_raw(Statement::from_string(state.db.get_database_backend(), "SELECT 1")).await.is_ok();
    let queue = state.queue.ping().await;
    // this process's own agent: remote hosts come and go without making
    // the API unready
    let agent = state.hosts.all_local().iter().all(|h| h.is_ready());
    let checks = serde_json::json!({"database": db, "queue": queue, "agent": agent});
    if db && queue && agent {
        (StatusCode::OK, Json(serde_json::json!({"status": "ready", "checks": checks})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"status": "not_ready", "checks": checks})))
    }
}

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let rows = state
        .db
        .query_all_raw(Statement::from_string(
            state.db.get_database_backend(),
            "SELECT state, COUNT(*) AS n FROM pods GROUP BY state",
        ))
        .await?;
    for s in PodState::ALL {
        state.metrics.pods.get_or_create(&StateLabels { state: s.as_str().into() }).set(0);
    }
    for row in rows {
        let st: String = row.try_get("", "state")?;
        let n: i64 = row.try_get("", "n")?;
        state.metrics.pods.get_or_create(&StateLabels { state: st }).set(n);
    }
    state.memory.refresh_gauges().await;
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &state.metrics.registry).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body))
}
