//! The memory service's routes: its own API (tokens checked by
//! [`crate::memory::MemoryAccess`]) and the route that mints tokens for
//! signed-in users.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json, Router};

use crate::memory::{MemoryToken, MemoryTokenRequest};
use crate::principal::Principal;
use crate::{ApiError, AppState};

/// The memory API, nested at `/api/v1/memory`.
pub fn router(state: &AppState) -> Router<AppState> {
    pinacle_memory_service::http::router(pinacle_memory_service::http::MemoryApi {
        service: state.memory.clone(),
        verifier: Arc::new(state.memory_access.clone()),
    })
}

/// `POST /api/v1/memory/tokens`: a memory token for the caller in their
/// own memory or a team's (`{"project", "team"?}`).
pub async fn token(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    body: Result<Json<MemoryTokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<MemoryToken>, ApiError> {
    let Json(req) = body?;
    Ok(Json(s.memory_access.mint_for_user(&who, req).await?))
}
