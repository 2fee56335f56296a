//! Authentication: which [`Principal`] a bearer credential (an API token or
//! a JWT access token) stands for, cached and re-checked for long-lived
//! connections. The HTTP side (`Authorization`, WebSocket subprotocols) is
//! [`crate::routes::middleware`]: handlers receive the principal and never
//! look at credentials themselves.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use std::collections::BTreeMap;

use crate::entities::{api_token, team_member, user};
use crate::policy::{Role, Scope};
use crate::principal::{hash_token, Principal, RECHECK_INTERVAL, TOKEN_PREFIX};
use crate::tokens::PrincipalCache;
use crate::ApiError;

/// Authentication as a service: which [`Principal`] a bearer credential
/// stands for now (cached in the principal cache that token, session and
/// membership changes clear).
#[derive(Clone)]
pub struct Authenticator {
    db: sea_orm::DatabaseConnection,
    principals: std::sync::Arc<PrincipalCache>,
    /// Verifies access tokens (JWTs).
    sessions: crate::sessions::Sessions,
}

impl Authenticator {
    pub fn new(db: sea_orm::DatabaseConnection, principals: std::sync::Arc<PrincipalCache>, sessions: crate::sessions::Sessions) -> Self {
        Self { db, principals, sessions }
    }

    /// Whether API token `id` still exists (not revoked) and has not
    /// expired: what tokens minted with one re-check.
    pub async fn api_token_is_live(&self, id: &str) -> Result<bool, ApiError> {
        let token = api_token::Entity::find_by_id(id.to_owned()).one(&self.db).await?;
        Ok(token.is_some_and(|t| t.expires_at.is_none_or(|e| e > chrono::Utc::now())))
    }

    /// The principal a bearer credential stands for: an API token
    /// (`pnc_...`) or a JWT access token (three dot-separated parts).
    pub async fn principal_for_bearer(&self, token: &str) -> Result<Principal, ApiError> {
        Ok(self.principal_and_expiry_for_bearer(token).await?.0)
    }

    /// [`Authenticator::principal_for_bearer`], and when the credential expires
    /// (`None`: an API token without an expiry).
    pub async fn principal_and_expiry_for_bearer(&self, token: &str) -> Result<(Principal, Option<chrono::DateTime<chrono::Utc>>), ApiError> {
        if token.len() > 4096 || !token.is_ascii() {
            return Err(ApiError::unauthorized("malformed bearer token"));
        }
        let key = hash_token(token);
        let now = chrono::Utc::now();
        if let Some((p, expires)) = self.principals.get(&key) {
            if expires.is_none_or(|e| e > now) {
                return Ok((p, expires));
            }
        }
        let read = self.principals.begin_read();
        let (principal, expires) = if token.starts_with(TOKEN_PREFIX) {
            self.principal_for_token(token).await?.ok_or_else(|| ApiError::unauthorized("invalid or revoked token"))?
        } else if token.split('.').count() == 3 {
            let claims = self.sessions.verify_access_token(token).await?;
            let mut p = Principal::system(&claims.sub, &claims.name, "unknown");
            p.subject.teams = self.team_roles(&claims.sub).await?;
            p.session_id = Some(claims.sid);
            // whole seconds: a token is valid through its `exp` second
            (p, chrono::DateTime::from_timestamp(claims.exp + 1, 0))
        } else {
            return Err(ApiError::unauthorized(format!(
                "malformed bearer token: expected an API token ({TOKEN_PREFIX}...) or an access token (JWT)"
            )));
        };
        self.principals.insert(key, (principal.clone(), expires), read);
        Ok((principal, expires))
    }

    /// Waits until the credential `token` stops working (expired, revoked,
    /// its session signed out) or `still_allowed` refuses the caller as
    /// they are now (current team roles): the reason. For long-lived
    /// connections (GraphQL over WebSocket, SSE, terminals), which check
    /// every [`RECHECK_INTERVAL`] and at the credential's expiry. Our own
    /// failures (5xx) do not end a connection; the next check decides.
    pub async fn access_lost<F, Fut>(&self, token: &str, mut still_allowed: F) -> ApiError
    where
        F: FnMut(Principal) -> Fut,
        Fut: std::future::Future<Output = Result<(), ApiError>>,
    {
        loop {
            let mut wait = RECHECK_INTERVAL;
            match self.principal_and_expiry_for_bearer(token).await {
                Ok((principal, expires)) => {
                    match still_allowed(principal).await {
                        Err(e) if !e.status.is_server_error() => return e,
                        _ => {}
                    }
                    if let Some(left) = expires.and_then(|e| (e - chrono::Utc::now()).to_std().ok()) {
                        wait = wait.min(left);
                    }
                }
                Err(e) if !e.status.is_server_error() => return e,
                Err(_) => {}
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The user's team roles, team id → role.
    pub async fn team_roles(&self, user_id: &str) -> Result<BTreeMap<String, Role>, ApiError> {
        Ok(team_member::Entity::find()
            .filter(team_member::Column::UserId.eq(user_id))
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|m| m.role.parse().ok().map(|r| (m.team_id, r)))
            .collect())
    }

    /// The principal an API token belongs to, and when the token expires,
    /// if the token is valid.
    pub async fn principal_for_token(&self, token: &str) -> Result<Option<(Principal, Option<chrono::DateTime<chrono::Utc>>)>, ApiError> {
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
        let scope = Scope::parse_stored(&tok.scope);
        let Some(u) = user::Entity::find_by_id(tok.user_id).one(&self.db).await? else {
            return Ok(None);
        };
        let mut p = Principal::system(&u.id, &u.name, "unknown");
        p.subject.scope = scope;
        p.token_id = Some(tok.id.clone());
        p.subject.teams = self.team_roles(&u.id).await?;
        Ok(Some((p, tok.expires_at)))
    }
}

/// WebSocket subprotocol prefix that carries a bearer token, for browsers,
/// which cannot set headers on a WebSocket: the client offers
/// `["pinacle.terminal", "bearer.<token>"]` and the server picks the first.
pub const WS_BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The bearer token of a request: the `Authorization` header, or on a
/// WebSocket upgrade a `bearer.<token>` subprotocol.
pub fn bearer_of(headers: &axum::http::HeaderMap) -> Result<String, crate::ApiError> {
    let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
        let upgrade = headers.get(axum::http::header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let from_protocol = headers
            .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|p| p.trim().strip_prefix(WS_BEARER_PROTOCOL_PREFIX).map(str::to_owned))
            .filter(|t| upgrade && !t.is_empty());
        return from_protocol.ok_or_else(|| crate::ApiError::unauthorized("missing Authorization header; send `Authorization: Bearer <token>`"));
    };
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| crate::ApiError::unauthorized("Authorization header must be `Bearer <token>`"))
}
