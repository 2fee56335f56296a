//! Authentication: who is calling. Every `/api` route passes through
//! [`require_principal`]; handlers receive the [`Principal`] and never look at
//! credentials themselves.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use rand::RngCore;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};

use crate::entities::{api_token, user};
use crate::{ApiError, AppState};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub user_name: String,
    /// Where the request came from (peer address), for the audit log.
    pub source: String,
    /// What the presented token may do.
    pub scope: crate::tokens::Scope,
}

impl Principal {
    /// Whether this is the instance administrator (roles arrive with teams).
    pub fn is_admin(&self) -> bool {
        self.user_name == crate::state::ADMIN_USER
    }
}

/// Prefix of every token Pinacle issues, so leaked tokens are recognisable.
pub const TOKEN_PREFIX: &str = "pnc_";

/// A new random API token (256 bits).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// How tokens are stored: hex SHA-256. Tokens are random and long, so a
/// plain hash is enough (no password stretching needed).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Middleware: resolves the bearer token to a [`Principal`] or answers 401.
pub async fn require_principal(State(state): State<AppState>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization header; send `Authorization: Bearer <token>`"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Authorization header must be `Bearer <token>`"))?;
    let mut principal =
        state.principal_for_token(token).await?.ok_or_else(|| ApiError::unauthorized("invalid or revoked token"))?;
    if let Some(axum::extract::ConnectInfo(peer)) = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        principal.source = peer.ip().to_string();
    }
    if !principal.scope.allows(req.method()) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this token is read-only; {} needs a token with scope full", req.method()),
        ));
    }
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

impl AppState {
    /// The principal a token belongs to, if the token is valid.
    pub async fn principal_for_token(&self, token: &str) -> Result<Option<Principal>, ApiError> {
        let hash = hash_token(token);
        let Some(tok) = api_token::Entity::find().filter(api_token::Column::TokenHash.eq(hash)).one(&self.db).await? else {
            return Ok(None);
        };
        let now = chrono::Utc::now();
        if tok.expires_at.is_some_and(|exp| exp <= now) {
            return Ok(None);
        }
        // Last use, to the minute: one write a minute per token at most.
        if tok.last_used_at.is_none_or(|t| now - t > chrono::Duration::seconds(60)) {
            api_token::Entity::update_many()
                .col_expr(api_token::Column::LastUsedAt, sea_orm::sea_query::Expr::value(now))
                .filter(api_token::Column::Id.eq(tok.id.clone()))
                .exec(&self.db)
                .await?;
        }
        let scope = crate::tokens::Scope::parse_stored(&tok.scope);
        let Some(u) = user::Entity::find_by_id(tok.user_id).one(&self.db).await? else {
            return Ok(None);
        };
        Ok(Some(Principal { user_id: u.id, user_name: u.name, source: "unknown".to_owned(), scope }))
    }
}
