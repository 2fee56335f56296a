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

use crate::principal::Principal;
use crate::sessions::ISSUER;
use crate::ApiError;

mod ops;

/// Access to pods' ports through the proxy as a service: sign-in links
/// (one minute, single use across servers) and pod-session cookies.
#[derive(Clone)]
pub struct PodAccess {
    db: sea_orm::DatabaseConnection,
    pods: crate::service::Pods,
    sessions: crate::sessions::Sessions,
    auth: crate::auth::Authenticator,
    /// Single-use claims shared by the servers.
    bus: std::sync::Arc<crate::bus::Bus>,
    used_pod_logins: std::sync::Arc<UsedLogins>,
    /// Set once a proxy serves this control plane.
    proxy_site: std::sync::Arc<std::sync::OnceLock<ProxySite>>,
}

/// What [`PodAccess`] is built from.
pub struct PodAccessDeps {
    pub db: sea_orm::DatabaseConnection,
    pub pods: crate::service::Pods,
    pub sessions: crate::sessions::Sessions,
    pub auth: crate::auth::Authenticator,
    pub bus: std::sync::Arc<crate::bus::Bus>,
    pub proxy_site: std::sync::Arc<std::sync::OnceLock<ProxySite>>,
}

impl PodAccess {
    pub fn new(d: PodAccessDeps) -> Self {
        Self {
            db: d.db,
            pods: d.pods,
            sessions: d.sessions,
            auth: d.auth,
            bus: d.bus,
            used_pod_logins: Default::default(),
            proxy_site: d.proxy_site,
        }
    }
}

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

/// A sign-in link to a pod's port (see [`PodAccess::open_link`]).
#[derive(Debug, Clone, Serialize)]
pub struct OpenLink {
    pub url: String,
    pub origin: String,
    pub host: String,
    pub expires_in: i64,
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
