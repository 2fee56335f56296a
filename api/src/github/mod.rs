//! GitHub sign-in (OAuth web flow), driven by octocrab.
//!
//! 1. `GET /api/v1/auth/github/start` redirects the browser to GitHub's
//!    authorize page with a `state` that is sealed under the master key
//!    (a nonce and an expiry) and a cookie holding the same nonce, so the
//!    callback only completes in the browser that started it (CSRF).
//! 2. `GET /api/v1/auth/github/callback?code&state` checks both, trades the
//!    code for a GitHub token, reads the GitHub user, and signs in the
//!    Pinacle user linked to that GitHub id, creating one when sign-up is
//!    open. The answer is a session's token pair, as from password sign-in.
//!
//! Every URL is configurable, so tests point the real client at a local
//! server that speaks GitHub's OAuth and REST protocols.

use chrono::{Duration, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait};
use serde::{Deserialize, Serialize};

use crate::principal::Principal;
use crate::entities::{user, user_identity};
use crate::sessions::TokenPair;
use crate::settings::SignupMode;
use crate::ApiError;

pub mod app;
mod ops;

/// Sign-in with GitHub as a service (OAuth web flow): accounts made or
/// found by GitHub id, sessions started.
#[derive(Clone)]
pub struct GithubAuth {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Set once the server knows its callback URL; unset: not offered.
    github: std::sync::Arc<std::sync::OnceLock<GithubConfig>>,
    master_key: std::sync::Arc<crate::crypto::MasterKey>,
    settings: crate::settings::InstanceSettings,
    sessions: crate::sessions::Sessions,
    teams: crate::teams::Teams,
}

impl GithubAuth {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: sea_orm::DatabaseConnection,
        write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
        github: std::sync::Arc<std::sync::OnceLock<GithubConfig>>,
        master_key: std::sync::Arc<crate::crypto::MasterKey>,
        settings: crate::settings::InstanceSettings,
        sessions: crate::sessions::Sessions,
        teams: crate::teams::Teams,
    ) -> Self {
        Self { db, write_lock, github, master_key, settings, sessions, teams }
    }
}

/// How long a started sign-in may take.
pub const STATE_TTL_SECS: i64 = 600;

/// Name of the cookie that binds a sign-in to its browser.
pub const STATE_COOKIE: &str = "pinacle_github_state";

const STATE_CONTEXT: &str = "github-oauth-state";

/// Where GitHub is and who we are to it. Debug output hides the secret.
#[derive(Clone)]
pub struct GithubConfig {
    pub client_id: String,
    pub client_secret: String,
    /// `https://github.com` (authorize and token endpoints live under it).
    pub oauth_url: String,
    /// `https://api.github.com`.
    pub api_url: String,
    /// This server's callback URL, as registered with the OAuth app.
    pub redirect_url: String,
}

impl std::fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("oauth_url", &self.oauth_url)
            .field("api_url", &self.api_url)
            .field("redirect_url", &self.redirect_url)
            .finish()
    }
}

/// The callback's query.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
}

/// A completed sign-in.
#[derive(Debug, Serialize)]
pub struct GithubSignIn {
    pub user: serde_json::Value,
    /// Whether this sign-in created the Pinacle account.
    pub created: bool,
    #[serde(flatten)]
    pub tokens: TokenPair,
}

#[derive(Serialize, Deserialize)]
struct SealedState {
    nonce: String,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Pinacle user names to try for a GitHub login, best first: the login made
/// to fit the user-name rules, then with `-gh`, then with the GitHub id.
pub fn candidate_names(login: &str, github_id: u64) -> Vec<String> {
    let mut base: String =
        login.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    while base.contains("--") {
        base = base.replace("--", "-");
    }
    let base = base.trim_matches('-').to_owned();
    let fit = |s: String| -> String { s.chars().take(32).collect::<String>().trim_end_matches('-').to_owned() };
    let id_suffix = format!("-{github_id}");
    let mut names = Vec::new();
    if !base.is_empty() {
        names.push(fit(base.clone()));
        names.push(fit(format!("{}-gh", fit(base.clone()).chars().take(29).collect::<String>())));
        let room = 32 - id_suffix.len();
        names.push(format!("{}{id_suffix}", base.chars().take(room).collect::<String>().trim_end_matches('-')));
    }
    names.push(format!("gh{id_suffix}"));
    names.retain(|n| crate::principal::check_user_name(n).is_ok());
    names.dedup();
    names
}

fn not_configured() -> ApiError {
    ApiError::not_supported(
        "GitHub sign-in is not configured on this server; start it with --github-client-id and PINACLE_GITHUB_CLIENT_SECRET",
    )
}

fn refused(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::unauthenticated(code, msg)
}

fn upstream(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "GitHub request failed");
    ApiError::bad_gateway("github_unavailable", "GitHub did not answer as expected; try again")
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_logins_become_valid_user_names() {
        assert_eq!(candidate_names("Octo-Cat", 42), vec!["octo-cat", "octo-cat-gh", "octo-cat-42", "gh-42"]);
        assert_eq!(candidate_names("a__b", 7)[0], "a-b");
        assert_eq!(candidate_names("---", 7), vec!["gh-7"]);
        let long = "x".repeat(39);
        for n in candidate_names(&long, 123_456_789) {
            assert!(crate::principal::check_user_name(&n).is_ok(), "{n}");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("read:user user:email"), "read%3Auser%20user%3Aemail");
        assert_eq!(encode_query_value("v1:ab+/="), "v1%3Aab%2B%2F%3D");
        assert_eq!(encode_query_value("a-b_c.d~"), "a-b_c.d~");
    }
}
