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

use std::collections::BTreeMap;

use crate::entities::{api_token, team_member, user};
use crate::policy::{self, Action, Denied, Resource, Role, Subject};
use crate::tokens::Scope;
use crate::{ApiError, AppState};

/// The authenticated caller: a [`Subject`] for the policy, plus what the
/// audit log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: Subject,
    pub user_name: String,
    /// Where the request came from (peer address), for the audit log.
    pub source: String,
    /// The sign-in session, when the caller presented an access token.
    pub session_id: Option<String>,
    /// The API token's id, when the caller presented an API token.
    pub token_id: Option<String>,
}

impl std::ops::Deref for Principal {
    type Target = Subject;
    fn deref(&self) -> &Subject {
        &self.subject
    }
}

impl Principal {
    /// A principal for actions taken on a user's behalf outside a request
    /// (sign-up, sign-in): full scope, no team roles loaded.
    pub fn system(user_id: &str, user_name: &str, source: &str) -> Self {
        Principal {
            subject: Subject {
                user_id: user_id.to_owned(),
                instance_admin: user_name == crate::state::ADMIN_USER,
                scope: Scope::Full,
                teams: BTreeMap::new(),
            },
            user_name: user_name.to_owned(),
            source: source.to_owned(),
            session_id: None,
            token_id: None,
        }
    }

    /// Whether this is the instance administrator.
    pub fn is_admin(&self) -> bool {
        self.subject.instance_admin
    }

    /// Asks the policy; `what` names the resource in a "not found" answer.
    pub fn authorize(&self, action: Action, resource: &Resource<'_>, what: &str) -> Result<(), ApiError> {
        policy::decide(&self.subject, action, resource).map_err(|d| match d {
            Denied::Hidden => ApiError::not_found(format!("{what} not found")),
            Denied::Forbidden(why) => ApiError::new(axum::http::StatusCode::FORBIDDEN, "forbidden", why),
        })
    }
}

/// How often a long-lived connection (GraphQL over WebSocket, SSE, a
/// terminal) checks that its caller still may use it.
pub const RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Prefix of every token Pinacle issues, so leaked tokens are recognisable.
pub const TOKEN_PREFIX: &str = "pnc_";

/// A new random API token (256 bits).
pub fn generate_token() -> String {
    random_secret(TOKEN_PREFIX)
}

/// A new random secret (256 bits, URL-safe base64) after `prefix`, which
/// says what kind of secret it is (`pnc_`, `pnr_`, `pni_`, `pnd_`, or none).
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// How tokens are stored: hex SHA-256. Tokens are random and long, so a
/// plain hash is enough (no password stretching needed).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Middleware: resolves the bearer token to a [`Principal`] or answers 401.
pub async fn require_principal(State(state): State<AppState>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let token = bearer_of(req.headers())?;
    let mut principal = state.principal_for_bearer(&token).await?;
    if let Some(axum::extract::ConnectInfo(peer)) = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        principal.source = peer.ip().to_string();
    }
    // GraphQL queries are POSTs too: its mutations check the scope themselves
    if !principal.scope.allows(req.method()) && req.uri().path() != "/graphql" {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this token is read-only; {} needs a token with scope full", req.method()),
        ));
    }
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// WebSocket subprotocol prefix that carries a bearer token, for browsers,
/// which cannot set headers on a WebSocket: the client offers
/// `["pinacle.terminal", "bearer.<token>"]` and the server picks the first.
pub const WS_BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The bearer token of a request: the `Authorization` header, or on a
/// WebSocket upgrade a `bearer.<token>` subprotocol.
pub fn bearer_of(headers: &axum::http::HeaderMap) -> Result<String, ApiError> {
    let Some(header) = headers.get(header::AUTHORIZATION) else {
        let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let from_protocol = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|p| p.trim().strip_prefix(WS_BEARER_PROTOCOL_PREFIX).map(str::to_owned))
            .filter(|t| upgrade && !t.is_empty());
        return from_protocol.ok_or_else(|| ApiError::unauthorized("missing Authorization header; send `Authorization: Bearer <token>`"));
    };
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::unauthorized("Authorization header must be `Bearer <token>`"))
}

impl AppState {
    /// The principal a bearer credential stands for: an API token
    /// (`pnc_...`) or a JWT access token (three dot-separated parts).
    pub async fn principal_for_bearer(&self, token: &str) -> Result<Principal, ApiError> {
        Ok(self.principal_and_expiry_for_bearer(token).await?.0)
    }

    /// [`AppState::principal_for_bearer`], and when the credential expires
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
            let claims = self.verify_access_token(token).await?;
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

    /// Drops every cached principal: after a change to tokens, sessions or
    /// team membership, the next request reads them afresh.
    pub fn forget_principals(&self) {
        self.principals.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_subprotocol_counts_only_on_a_websocket_upgrade() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, "pinacle.terminal, bearer.pnc_abc".parse().unwrap());
        assert!(bearer_of(&h).is_err(), "a plain request with the header");
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert_eq!(bearer_of(&h).unwrap(), "pnc_abc");
        h.insert(header::AUTHORIZATION, "Bearer pnc_header".parse().unwrap());
        assert_eq!(bearer_of(&h).unwrap(), "pnc_header", "the header wins");
        h.insert(header::AUTHORIZATION, "Basic x".parse().unwrap());
        assert!(bearer_of(&h).is_err());
    }
}
