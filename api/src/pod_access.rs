//! Browser access to pods through the proxy.
//!
//! A browser cannot send a bearer token on a plain navigation, and a
//! cookie of the app's own domain does not reach `*.{domain}` pod hosts.
//! So the app (`POST /api/v1/pods/{pod}/open`) mints a **login token**: a
//! JWT for one pod (audience `pinacle-pod:{id}`), valid for a minute and
//! usable once. The browser takes it to `/.pinacle/auth` on the pod's host,
//! where the proxy exchanges it for a **pod-session** token of the same
//! audience in an HttpOnly cookie (12 hours). Both carry the user's
//! session id when minted from a session (signing out ends them too), or
//! the API token's id when minted through one (revoking it ends them). On
//! every request the user's current rights to the pod are checked again,
//! so a removed team member loses access at once.

use std::collections::HashMap;

use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::sessions::ISSUER;
use crate::{ApiError, AppState};

/// Lifetime of a login token.
pub const POD_LOGIN_TTL_SECS: i64 = 60;
/// Lifetime of a pod-session cookie.
pub const POD_SESSION_TTL_SECS: i64 = 12 * 3600;

/// What a pod-scoped token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodTokenKind {
    /// Exchanged once, at `/.pinacle/auth`, for a session.
    Login,
    /// The cookie's value.
    Session,
}

/// Claims of a pod-scoped token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodClaims {
    pub iss: String,
    /// `pinacle-pod:{pod id}`.
    pub aud: String,
    /// User id.
    pub sub: String,
    pub name: String,
    /// The user's session, when minted from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The API token, when minted through one: the token's revocation or
    /// expiry ends the cookie too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    pub kind: PodTokenKind,
    /// Token id (single use of login tokens).
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}

/// The audience of tokens for pod `pod_id`.
pub fn pod_audience(pod_id: &str) -> String {
    format!("pinacle-pod:{pod_id}")
}

/// Where browsers reach the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySite {
    /// Pods live at `{service|port}-{pod}-{owner}.{domain}`.
    pub domain: String,
    /// `https` when the proxy serves TLS, else `http`.
    pub scheme: &'static str,
    /// The port browsers use (omitted from URLs when it is the default).
    pub port: u16,
}

impl ProxySite {
    /// `scheme://{label}.{domain}[:port]`.
    pub fn origin(&self, label: &str) -> String {
        let default = matches!((self.scheme, self.port), ("https", 443) | ("http", 80));
        if default {
            format!("{}://{label}.{}", self.scheme, self.domain)
        } else {
            format!("{}://{label}.{}:{}", self.scheme, self.domain, self.port)
        }
    }
}

/// Used login tokens, by token id, until they expire.
#[derive(Default)]
pub struct UsedLogins(std::sync::Mutex<HashMap<String, i64>>);

impl UsedLogins {
    /// Records `jti` as used; false if it was already.
    fn take(&self, jti: &str, exp: i64, now: i64) -> bool {
        let mut used = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        used.retain(|_, e| *e >= now);
        used.insert(jti.to_owned(), exp).is_none()
    }
}

/// A sign-in link to a pod's port (see [`AppState::open_link`]).
#[derive(Debug, Clone, Serialize)]
pub struct OpenLink {
    pub url: String,
    pub origin: String,
    pub host: String,
    pub expires_in: i64,
}

impl AppState {
    /// A sign-in link for a browser: the pod host's `/.pinacle/auth` with a
    /// one-minute, single-use token scoped to this pod, landing on `path`;
    /// `embed` for a page in the IDE's iframe.
    pub async fn open_link(
        &self,
        who: &Principal,
        key: &str,
        port: u16,
        path: Option<String>,
        embed: bool,
    ) -> Result<OpenLink, ApiError> {
        let site = self.proxy_site.get().cloned().ok_or_else(|| {
            ApiError::not_supported(
                "no proxy serves this Pinacle; start it with --proxy-listen or --proxy-tls-listen",
            )
        })?;
        if port == 0 {
            return Err(ApiError::bad_request(
                "invalid_request",
                "port must be 1 to 65535",
            ));
        }
        let path = path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.starts_with("//") || path.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_request",
                "path must be a path on the pod's host, starting with a single /",
            ));
        }
        let view = self.find_pod(who, key, crate::policy::Action::Exec).await?;
        let owner = self.pod_owner_name(&view).await?;
        let host = pinacle_orchestrator::hostname::host_for(
            &pinacle_orchestrator::hostname::Target::Port(port),
            &view.name,
            &owner,
            &site.domain,
        )
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
        let label = host
            .strip_suffix(&format!(".{}", site.domain))
            .unwrap_or(&host)
            .to_owned();
        let (token, ttl) = self.mint_pod_token(
            who,
            &view.id.to_string(),
            PodTokenKind::Login,
        )?;
        let origin = site.origin(&label);
        let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let url = format!(
            "{origin}/.pinacle/auth?token={token}&next={}{}",
            enc(&path),
            if embed { "&embed=1" } else { "" }
        );
        Ok(OpenLink {
            url,
            origin,
            host,
            expires_in: ttl,
        })
    }

    /// A token for `who` to use pod `pod_id` in a browser.
    pub fn mint_pod_token(&self, who: &Principal, pod_id: &str, kind: PodTokenKind) -> Result<(String, i64), ApiError> {
        let ttl = match kind {
            PodTokenKind::Login => POD_LOGIN_TTL_SECS,
            PodTokenKind::Session => POD_SESSION_TTL_SECS,
        };
        let now = chrono::Utc::now().timestamp();
        let claims = PodClaims {
            iss: ISSUER.into(),
            aud: pod_audience(pod_id),
            sub: who.user_id.clone(),
            name: who.user_name.clone(),
            sid: who.session_id.clone(),
            tid: who.token_id.clone(),
            kind,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat: now,
            exp: now + ttl,
        };
        Ok((self.sign_claims(&claims)?, ttl))
    }

    /// The principal behind a pod-scoped token of `kind` for `pod_id`, if
    /// the token is valid (signature, audience, expiry, live session, and
    /// for a login token, first use).
    pub async fn pod_token_principal(&self, token: &str, pod_id: &str, kind: PodTokenKind) -> Result<Option<Principal>, ApiError> {
        if token.len() > 4096 || !token.is_ascii() {
            return Ok(None);
        }
        let Some(claims) = self.verify_claims::<PodClaims>(token, &pod_audience(pod_id)).await? else {
            return Ok(None);
        };
        if claims.kind != kind {
            return Ok(None);
        }
        if let Some(sid) = &claims.sid {
            if !self.session_is_live(sid).await? {
                return Ok(None);
            }
        }
        if let Some(tid) = &claims.tid {
            if !self.api_token_is_live(tid).await? {
                return Ok(None);
            }
        }
        if kind == PodTokenKind::Login
            && (!self.used_pod_logins.take(&claims.jti, claims.exp, chrono::Utc::now().timestamp())
                || !self.bus.claim_once(&format!("pod-login:{}", claims.jti), claims.exp).await)
        {
            return Ok(None);
        }
        let Some(user) = crate::entities::user::Entity::find_by_id(claims.sub.clone()).one(&self.db).await? else {
            return Ok(None);
        };
        let mut p = Principal::system(&user.id, &user.name, "proxy");
        p.subject.teams = self.team_roles(&user.id).await?;
        p.session_id = claims.sid;
        p.token_id = claims.tid;
        Ok(Some(p))
    }

    /// Whether API token `id` still exists (not revoked) and has not expired.
    async fn api_token_is_live(&self, id: &str) -> Result<bool, ApiError> {
        let token = crate::entities::api_token::Entity::find_by_id(id.to_owned()).one(&self.db).await?;
        Ok(token.is_some_and(|t| t.expires_at.is_none_or(|e| e > chrono::Utc::now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_leave_out_default_ports() {
        let site = |scheme, port| ProxySite { domain: "pinacle.test".into(), scheme, port };
        assert_eq!(site("https", 443).origin("8080-web-alice"), "https://8080-web-alice.pinacle.test");
        assert_eq!(site("https", 8443).origin("8080-web-alice"), "https://8080-web-alice.pinacle.test:8443");
        assert_eq!(site("http", 80).origin("x"), "http://x.pinacle.test");
    }

    #[test]
    fn a_login_token_is_used_once() {
        let used = UsedLogins::default();
        assert!(used.take("a", 100, 50));
        assert!(!used.take("a", 100, 60));
        assert!(used.take("b", 100, 60));
        // expired entries are forgotten (their tokens no longer verify anyway)
        assert!(used.take("a", 300, 200));
    }
}
