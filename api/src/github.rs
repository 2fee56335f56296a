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

use crate::auth::Principal;
use crate::entities::{user, user_identity};
use crate::sessions::TokenPair;
use crate::settings::SignupMode;
use crate::{ApiError, AppState};

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
    names.retain(|n| crate::accounts::check_user_name(n).is_ok());
    names.dedup();
    names
}

fn not_configured() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "not_supported",
        "GitHub sign-in is not configured on this server; start it with --github-client-id and PINACLE_GITHUB_CLIENT_SECRET",
    )
}

fn refused(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::new(axum::http::StatusCode::UNAUTHORIZED, code, msg)
}

fn upstream(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "GitHub request failed");
    ApiError::new(axum::http::StatusCode::BAD_GATEWAY, "github_unavailable", "GitHub did not answer as expected; try again")
}

impl AppState {
    /// Starts a sign-in: the authorize URL to send the browser to, and the
    /// nonce for the binding cookie.
    pub fn github_start(&self) -> Result<(String, String), ApiError> {
        let gh = self.github.get().ok_or_else(not_configured)?;
        let nonce = crate::auth::random_secret("");
        let sealed = SealedState { nonce: nonce.clone(), exp: (Utc::now() + Duration::seconds(STATE_TTL_SECS)).timestamp() };
        let json = serde_json::to_vec(&sealed).map_err(ApiError::internal)?;
        let state = self.master_key.seal(STATE_CONTEXT, &json).map_err(ApiError::internal)?;
        let url = format!(
            "{}/login/oauth/authorize?client_id={}&redirect_uri={}&scope={}&state={}&allow_signup=true",
            gh.oauth_url.trim_end_matches('/'),
            encode_query_value(&gh.client_id),
            encode_query_value(&gh.redirect_url),
            encode_query_value("read:user user:email"),
            encode_query_value(&state),
        );
        Ok((url, nonce))
    }

    /// Completes a sign-in from GitHub's redirect; `cookie_nonce` is the
    /// binding cookie's value.
    pub async fn github_callback(
        &self,
        q: CallbackQuery,
        cookie_nonce: Option<&str>,
        source: &str,
    ) -> Result<GithubSignIn, ApiError> {
        let gh = self.github.get().ok_or_else(not_configured)?;
        if let Some(err) = q.error {
            let why = q.error_description.unwrap_or_else(|| err.clone());
            return Err(refused("github_denied", format!("GitHub sign-in was not completed: {why}")));
        }
        let (Some(code), Some(state)) = (q.code, q.state) else {
            return Err(ApiError::bad_request("invalid_request", "the callback needs code and state"));
        };
        let bad_state = || refused("invalid_state", "this sign-in link is invalid or expired, or was started in another browser; start again");
        let opened = self.master_key.open(STATE_CONTEXT, &state).map_err(|_| bad_state())?;
        let sealed: SealedState = serde_json::from_slice(&opened).map_err(|_| bad_state())?;
        if sealed.exp < Utc::now().timestamp() || cookie_nonce != Some(sealed.nonce.as_str()) {
            return Err(bad_state());
        }

        // The code for a token, at GitHub's token endpoint.
        let oauth = octocrab::Octocrab::builder()
            .base_uri(gh.oauth_url.as_str())
            .map_err(ApiError::internal)?
            .add_header(axum::http::header::ACCEPT, "application/json".to_owned())
            .build()
            .map_err(ApiError::internal)?;
        let body = serde_json::json!({
            "client_id": gh.client_id,
            "client_secret": gh.client_secret,
            "code": code,
            "redirect_uri": gh.redirect_url,
        });
        let token: TokenResponse = oauth.post("/login/oauth/access_token", Some(&body)).await.map_err(upstream)?;
        let access = match (token.access_token, token.error) {
            (Some(t), None) => t,
            (_, err) => {
                let why = token.error_description.or(err).unwrap_or_else(|| "no token".into());
                return Err(refused("github_denied", format!("GitHub refused the sign-in: {why}")));
            }
        };
        // Who that is, from the REST API.
        let api = octocrab::Octocrab::builder()
            .base_uri(gh.api_url.as_str())
            .map_err(ApiError::internal)?
            .user_access_token(access)
            .build()
            .map_err(ApiError::internal)?;
        let me = api.current().user().await.map_err(upstream)?;
        let github_id = me.id.0;
        let (u, created) = self.user_for_github(github_id, &me.login, source).await?;
        let tokens = self.start_session(&u, source).await?;
        tracing::info!(user = %u.name, github = %me.login, created, "signed in with GitHub");
        Ok(GithubSignIn {
            user: serde_json::json!({"id": u.id, "name": u.name, "github_login": me.login}),
            created,
            tokens,
        })
    }

    /// The user linked to a GitHub id, creating (and linking) one when
    /// sign-up is open.
    async fn user_for_github(&self, github_id: u64, login: &str, source: &str) -> Result<(user::Model, bool), ApiError> {
        let subject = github_id.to_string();
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let linked = user_identity::Entity::find()
            .filter(user_identity::Column::Provider.eq("github"))
            .filter(user_identity::Column::Subject.eq(subject.clone()))
            .one(&txn)
            .await?;
        if let Some(link) = linked {
            let u = user::Entity::find_by_id(link.user_id).one(&txn).await?.ok_or_else(|| ApiError::internal("linked user is gone"))?;
            return Ok((u, false));
        }
        match self.settings().await?.signup {
            SignupMode::Open => {}
            mode => {
                return Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    if mode == SignupMode::Closed { "signup_closed" } else { "invite_required" },
                    "no Pinacle account is linked to this GitHub account, and sign-up on this server is not open",
                ))
            }
        }
        let mut name = None;
        for candidate in candidate_names(login, github_id) {
            if !self.account_name_taken(&txn, &candidate).await? {
                name = Some(candidate);
                break;
            }
        }
        let name = name.ok_or_else(|| ApiError::conflict("name_taken", format!("no free user name for GitHub user {login}")))?;
        let now = Utc::now();
        let u = user::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            name: Set(name),
            created_at: Set(now),
            password_hash: Set(None),
        }
        .insert(&txn)
        .await?;
        user_identity::ActiveModel {
            provider: Set("github".into()),
            subject: Set(subject),
            user_id: Set(u.id.clone()),
            login: Set(login.to_owned()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let who = Principal::system(&u.id, &u.name, source);
        crate::audit::append(&txn, &who, "user.signup", &format!("user:{} github:{github_id} ({login})", u.id)).await?;
        txn.commit().await?;
        Ok((u, true))
    }
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
            assert!(crate::accounts::check_user_name(&n).is_ok(), "{n}");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("read:user user:email"), "read%3Auser%20user%3Aemail");
        assert_eq!(encode_query_value("v1:ab+/="), "v1%3Aab%2B%2F%3D");
        assert_eq!(encode_query_value("a-b_c.d~"), "a-b_c.d~");
    }
}
