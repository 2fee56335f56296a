//! The router's errors: each a code, an HTTP status and a message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::budget::LedgerError;
use crate::decide::NoRoute;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AionError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// An idempotency key reused for another request.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NoRoute(#[from] NoRoute),
    #[error("{0}")]
    Budget(String),
    /// Every candidate failed before answering.
    #[error("{0}")]
    Upstream(String),
    #[error("{0} is not supported")]
    NotSupported(String),
    /// A module of the intent failed (it is the operator's to fix).
    #[error("{0}")]
    Module(String),
    #[error("{0}")]
    Internal(String),
}

impl AionError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        AionError::BadRequest { code, message: message.into() }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AionError::BadRequest { code, .. } => code,
            AionError::Unauthenticated(_) => "unauthenticated",
            AionError::Forbidden(_) => "forbidden",
            AionError::NotFound(_) => "not_found",
            AionError::Conflict(_) => "idempotency_conflict",
            AionError::NoRoute(NoRoute::UnknownModel(_)) => "model_not_found",
            AionError::NoRoute(NoRoute::UnknownIntent(_)) => "intent_not_found",
            AionError::NoRoute(NoRoute::NotChat(_)) => "not_a_chat_model",
            AionError::NoRoute(_) => "no_route",
            AionError::Budget(_) => "budget_exceeded",
            AionError::Upstream(_) => "upstream_failed",
            AionError::NotSupported(_) => "not_supported",
            AionError::Module(_) => "module_failed",
            AionError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AionError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AionError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AionError::Forbidden(_) => StatusCode::FORBIDDEN,
            AionError::NotFound(_) | AionError::NoRoute(NoRoute::UnknownModel(_) | NoRoute::UnknownIntent(_)) => StatusCode::NOT_FOUND,
            AionError::Conflict(_) => StatusCode::CONFLICT,
            AionError::NoRoute(NoRoute::NotChat(_) | NoRoute::NoIntent) => StatusCode::BAD_REQUEST,
            AionError::NoRoute(_) => StatusCode::SERVICE_UNAVAILABLE,
            AionError::Budget(_) => StatusCode::PAYMENT_REQUIRED,
            AionError::Upstream(_) => StatusCode::BAD_GATEWAY,
            AionError::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
            AionError::Internal(_) | AionError::Module(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body: the platform's `{"error": {"code", "message"}}`,
    /// with OpenAI's `type` so its clients read it too.
    pub fn body(&self) -> serde_json::Value {
        let kind = match self.status().as_u16() {
            400 | 404 | 409 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            402 => "insufficient_quota",
            _ => "api_error",
        };
        serde_json::json!({"error": {"code": self.code(), "message": self.to_string(), "type": kind}})
    }
}

impl From<LedgerError> for AionError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Exceeded { .. } => AionError::Budget(e.to_string()),
            LedgerError::Store(m) => AionError::Internal(format!("the router's store failed: {m}")),
        }
    }
}

impl IntoResponse for AionError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.body())).into_response()
    }
}
