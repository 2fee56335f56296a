//! Creating the App from the admin page (GitHub's manifest flow) and
//! keeping its credentials: GitHub makes the App from a manifest the
//! admin's browser posts, sends the browser back with a code, and the code
//! is traded once for the App's id, private key, webhook secret and client
//! credentials. They are kept sealed under the master key (`settings`,
//! key `github_app`) and the App is configured at once, and at each start.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde::{Deserialize, Serialize};

use super::{AppConfig, GithubApps};
use crate::entities::setting;
use crate::principal::Principal;
use crate::ApiError;

/// The settings key of the saved App.
const SAVED_KEY: &str = "github_app";

/// The seal's context.
const SEAL_CONTEXT: &str = "github-app";

/// The manifest flow's state's context, and how long it holds.
const STATE_CONTEXT: &str = "github-app-manifest";
const STATE_TTL_SECS: i64 = 3600;

/// Where GitHub and this server are: set at start, for an App configured
/// later.
#[derive(Debug, Clone)]
pub struct AppSite {
    /// `https://github.com`.
    pub github_url: String,
    /// `https://api.github.com`.
    pub api_url: String,
    /// Where pods clone from (default: `github_url`).
    pub git_url: String,
    /// This server's public URL.
    pub public_url: String,
}

/// The App's credentials as kept (sealed).
#[derive(Serialize, Deserialize)]
struct SavedApp {
    id: u64,
    slug: Option<String>,
    pem: String,
    webhook_secret: String,
    client_id: String,
    client_secret: String,
}

#[derive(Serialize, Deserialize)]
struct ManifestState {
    admin: String,
    exp: i64,
}

/// GitHub's answer to the code's conversion.
#[derive(Deserialize)]
struct Conversion {
    id: u64,
    #[serde(default)]
    slug: Option<String>,
    pem: String,
    webhook_secret: Option<String>,
    client_id: String,
    client_secret: String,
}

/// The manifest request: an organisation to own the App (none: the
/// admin's own account), and its name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRequest {
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl GithubApps {
    /// Where GitHub and this server are (at start).
    pub fn set_site(&self, site: AppSite) {
        let _ = self.site.set(site);
    }

    fn site(&self) -> Result<&AppSite, ApiError> {
        self.site.get().ok_or_else(|| ApiError::not_supported("this server does not know its public address for GitHub"))
    }

    /// Configures the App from credentials: the App itself and, when no
    /// OAuth client was given at start, sign-in with its client.
    fn configure_from(&self, saved: &SavedApp) -> Result<(), ApiError> {
        let site = self.site()?.clone();
        let key = pinacle_github::app::AppKey::from_pem(saved.id, &saved.pem).map_err(|e| ApiError::bad_gateway("github_app_key", e.to_string()))?;
        let _ = self.sign_in.set(crate::github::GithubConfig {
            client_id: saved.client_id.clone(),
            client_secret: saved.client_secret.clone(),
            oauth_url: site.github_url.clone(),
            api_url: site.api_url.clone(),
            redirect_url: format!("{}/api/v1/auth/github/callback", site.public_url.trim_end_matches('/')),
        });
        self.configure(AppConfig {
            client: std::sync::Arc::new(pinacle_github::app::GithubApp::new(key, &site.api_url)),
            webhook_secret: saved.webhook_secret.clone(),
            git_url: site.git_url.clone(),
            install_url: saved.slug.as_ref().map(|s| format!("{}/apps/{s}/installations/new", site.github_url)),
            public_url: site.public_url.clone(),
        });
        Ok(())
    }

    /// Configures the App saved by an earlier manifest flow, if any (at
    /// start, when no App was given on the command line).
    pub async fn load_saved(&self) -> Result<bool, ApiError> {
        let Some(row) = setting::Entity::find_by_id(SAVED_KEY.to_owned()).one(&self.db).await? else { return Ok(false) };
        let opened = self.master_key.open(SEAL_CONTEXT, &row.value).map_err(|_| ApiError::internal("the saved GitHub App cannot be opened with this master key"))?;
        let saved: SavedApp = serde_json::from_slice(&opened).map_err(ApiError::internal)?;
        self.configure_from(&saved)?;
        Ok(true)
    }

    /// The manifest for `POST {github}/settings/apps/new` (or an
    /// organisation's), and where the admin's browser posts it.
    pub fn manifest(&self, who: &Principal, req: ManifestRequest) -> Result<serde_json::Value, ApiError> {
        if self.config.get().is_some() {
            return Err(ApiError::conflict("already_configured", "a GitHub App is already configured on this server"));
        }
        let site = self.site()?;
        let public = site.public_url.trim_end_matches('/');
        if let Some(org) = &req.organization {
            if org.is_empty() || org.len() > 39 || !org.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(ApiError::bad_request("invalid_request", "organization: a GitHub organisation's login"));
            }
        }
        let name = req.name.unwrap_or_else(|| "Pinacle".into());
        if name.trim().is_empty() || name.len() > 34 {
            return Err(ApiError::bad_request("invalid_request", "name: 1 to 34 characters (GitHub's limit)"));
        }
        let state = serde_json::to_vec(&ManifestState { admin: who.user_id.clone(), exp: Utc::now().timestamp() + STATE_TTL_SECS }).map_err(ApiError::internal)?;
        let state = self.master_key.seal(STATE_CONTEXT, &state).map_err(ApiError::internal)?;
        let url = match &req.organization {
            Some(org) => format!("{}/organizations/{org}/settings/apps/new", site.github_url),
            None => format!("{}/settings/apps/new", site.github_url),
        };
        let manifest = serde_json::json!({
            "name": name,
            "url": public,
            "hook_attributes": {"url": format!("{public}/api/v1/github/webhook"), "active": true},
            "redirect_url": format!("{public}/api/v1/github/manifest/callback"),
            "callback_urls": [format!("{public}/api/v1/auth/github/callback")],
            "public": false,
            "default_permissions": {
                "contents": "write", "metadata": "read", "pull_requests": "read", "issues": "write",
                "checks": "write", "administration": "write"
            },
            "default_events": ["pull_request", "push"]
        });
        Ok(serde_json::json!({"url": format!("{url}?state={}", crate::github::encode_query_value(&state)), "manifest": manifest}))
    }

    /// GitHub's redirect after the App was made: trades the code, keeps
    /// the credentials sealed, configures the App. Audited.
    pub async fn manifest_callback(&self, code: Option<String>, state: Option<String>) -> Result<String, ApiError> {
        let (Some(code), Some(state)) = (code, state) else {
            return Err(ApiError::bad_request("invalid_request", "the callback needs code and state"));
        };
        let bad_state = || ApiError::unauthenticated("invalid_state", "this link is invalid or expired; start again from the admin page");
        let opened = self.master_key.open(STATE_CONTEXT, &state).map_err(|_| bad_state())?;
        let st: ManifestState = serde_json::from_slice(&opened).map_err(|_| bad_state())?;
        if st.exp < Utc::now().timestamp() {
            return Err(bad_state());
        }
        if code.is_empty() || code.len() > 200 || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(ApiError::bad_request("invalid_request", "code: not a GitHub code"));
        }
        if self.config.get().is_some() {
            return Err(ApiError::conflict("already_configured", "a GitHub App is already configured on this server"));
        }
        let site = self.site()?.clone();
        let client = octocrab::Octocrab::builder().base_uri(site.api_url.as_str()).map_err(ApiError::internal)?.build().map_err(ApiError::internal)?;
        let converted: Conversion = client
            .post(format!("/app-manifests/{code}/conversions"), None::<&()>)
            .await
            .map_err(|e| ApiError::bad_gateway("github_unavailable", format!("GitHub did not make the App: {}", pinacle_github::GithubError::from(e))))?;
        let saved = SavedApp {
            id: converted.id,
            slug: converted.slug,
            pem: converted.pem,
            webhook_secret: converted.webhook_secret.filter(|s| !s.is_empty()).ok_or_else(|| ApiError::bad_gateway("github_unavailable", "GitHub's App has no webhook secret"))?,
            client_id: converted.client_id,
            client_secret: converted.client_secret,
        };
        let sealed = self.master_key.seal(SEAL_CONTEXT, &serde_json::to_vec(&saved).map_err(ApiError::internal)?).map_err(ApiError::internal)?;
        setting::ActiveModel { key: Set(SAVED_KEY.to_owned()), value: Set(sealed) }.insert(&self.db).await?;
        self.configure_from(&saved)?;
        let who = self.owner_principal(&st.admin).await?;
        self.audit.record(&who, "github.app.create", &format!("app:{} slug:{}", saved.id, saved.slug.as_deref().unwrap_or(""))).await?;
        tracing::info!(app = saved.id, "GitHub App created from the manifest and configured");
        Ok(format!("{}/admin", site.public_url.trim_end_matches('/')))
    }
}
