//! Why a memory operation failed. Each variant maps to one HTTP status and
//! code (see `http`); nothing is classified by its text.

use pinacle_memory::embed::EmbedError;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The request is malformed: `code` names the field or rule.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// Nothing with that id in the caller's project (also what another
    /// tenant's or project's ids answer).
    #[error("{0}")]
    NotFound(String),
    /// The caller's role does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// No or a bad token.
    #[error("{0}")]
    Unauthenticated(String),
    /// Too much at once (a batch, a document).
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("memory store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("memory store: {0}")]
    Internal(String),
}

impl MemoryError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        MemoryError::Invalid { code, message: message.into() }
    }
}

pub type Result<T, E = MemoryError> = std::result::Result<T, E>;
