//! `/api/v1/auth/*`: sign-up, sign-in, token refresh and sign-out, and the
//! published verification keys.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;

use crate::principal::Principal;
use crate::error::ApiJson;
use crate::sessions::TokenPair;
use crate::{ApiError, AppState};

fn peer(info: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>) -> String {
    info.map(|Extension(axum::extract::ConnectInfo(a))| a.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

/// `POST /api/v1/auth/signup`.
pub async fn signup(
    State(s): State<AppState>,
    info: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ApiJson(req): ApiJson<crate::accounts::SignupRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let u = s.accounts.signup(req, peer(info)).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({"id": u.id, "name": u.name}))))
}

/// `POST /api/v1/auth/login`: an access token (JWT, 15 minutes by default)
/// and a refresh token.
pub async fn login(
    State(s): State<AppState>,
    info: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ApiJson(creds): ApiJson<crate::accounts::Credentials>,
) -> Result<Json<TokenPair>, ApiError> {
    Ok(Json(s.accounts.login(creds, peer(info)).await?))
}

/// `POST /api/v1/auth/refresh` and `/auth/logout` bodies.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// `POST /api/v1/auth/refresh`: trades a refresh token for a new pair.
pub async fn refresh(
    State(s): State<AppState>,
    info: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    Ok(Json(s.sessions.refresh(&req.refresh_token, &peer(info)).await?))
}

/// `POST /api/v1/auth/logout` (authenticated): ends the caller's session,
/// or the session of the refresh token in the body.
pub async fn logout(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let body: Option<RefreshRequest> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_request", format!("request body does not fit: {e}")))?)
    };
    let session = match body {
        Some(req) => s
            .sessions
            .session_of_refresh_token(&req.refresh_token)
            .await?
            .ok_or_else(|| ApiError::not_found("session not found"))?,
        None => who.session_id.clone().ok_or_else(|| {
            ApiError::bad_request(
                "no_session",
                "this request used an API token, which has no session; revoke it with DELETE /api/v1/tokens/{id}",
            )
        })?,
    };
    s.sessions.end_session(&who, &session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /.well-known/jwks.json`: keys that verify access tokens.
pub async fn jwks(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(s.sessions.jwks())
}

/// `GET /api/v1/auth/github/start`: redirects to GitHub's authorize page.
pub async fn github_start(State(s): State<AppState>) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let (url, nonce) = s.github_sign_in.start()?;
    let secure = s.github.get().is_some_and(|g| g.redirect_url.starts_with("https://"));
    let cookie = format!(
        "{}={nonce}; Path=/api/v1/auth/github; Max-Age={}; HttpOnly; SameSite=Lax{}",
        crate::github::STATE_COOKIE,
        crate::github::STATE_TTL_SECS,
        if secure { "; Secure" } else { "" }
    );
    Ok((StatusCode::FOUND, [(axum::http::header::LOCATION, url), (axum::http::header::SET_COOKIE, cookie)]).into_response())
}

/// `GET /api/v1/auth/github/callback`: completes the sign-in and answers a
/// token pair.
pub async fn github_callback(
    State(s): State<AppState>,
    info: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
    crate::error::ApiQuery(q): crate::error::ApiQuery<crate::github::CallbackQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let prefix = format!("{}=", crate::github::STATE_COOKIE);
    let nonce = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(prefix.as_str()).map(str::to_owned));
    let done = s.github_sign_in.callback(q, nonce.as_deref(), &peer(info)).await?;
    let clear = format!("{}=; Path=/api/v1/auth/github; Max-Age=0; HttpOnly; SameSite=Lax", crate::github::STATE_COOKIE);
    let browser = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser {
        // Back to the web app, the tokens in the fragment (never sent to a
        // server, never in a log); the app stores them and clears it.
        let t = &done.tokens;
        let location = format!(
            "/auth/complete#access_token={}&refresh_token={}&expires_in={}",
            crate::github::encode_query_value(&t.access_token),
            crate::github::encode_query_value(&t.refresh_token),
            t.expires_in
        );
        return Ok((
            StatusCode::FOUND,
            [
                (axum::http::header::SET_COOKIE, clear),
                (axum::http::header::LOCATION, location),
                (axum::http::header::CACHE_CONTROL, "no-store".to_owned()),
            ],
        )
            .into_response());
    }
    Ok(([(axum::http::header::SET_COOKIE, clear)], Json(done)).into_response())
}

/// `GET /api/v1/auth/providers` (public): how one may sign in here, for the
/// web app's sign-in page.
pub async fn providers(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let signup = s.settings.current().await?.signup != crate::settings::SignupMode::Closed;
    Ok(Json(
        serde_json::json!({ "github": s.github.get().is_some(), "signup": signup }),
    ))
}

/// `POST /api/v1/auth/device`: starts a device sign-in.
pub async fn device_start(State(s): State<AppState>) -> Result<Json<crate::device::DeviceStart>, ApiError> {
    Ok(Json(s.devices.start().await?))
}

/// `POST /api/v1/auth/device/token` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePoll {
    pub device_code: String,
}

/// `POST /api/v1/auth/device/token`: the device polls; 400
/// `authorization_pending` until approved, then a token pair (once).
pub async fn device_token(
    State(s): State<AppState>,
    info: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ApiJson(req): ApiJson<DevicePoll>,
) -> Result<Json<TokenPair>, ApiError> {
    Ok(Json(s.devices.poll(&req.device_code, &peer(info)).await?))
}

/// `POST /api/v1/auth/device/approve` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceDecision {
    pub user_code: String,
    /// `false` denies the device.
    #[serde(default = "yes")]
    pub approve: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/v1/auth/device/approve` (signed in): lets the waiting device
/// with this user code sign in as the caller, or denies it.
pub async fn device_approve(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(req): ApiJson<DeviceDecision>,
) -> Result<StatusCode, ApiError> {
    s.devices.decide(&who, &req.user_code, req.approve).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/ssh-keys`: the caller's SSH public keys.
pub async fn list_ssh_keys(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(
        serde_json::json!({ "keys": s.workspace.list_ssh_keys(&who).await? }),
    ))
}

/// `POST /api/v1/ssh-keys` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddSshKey {
    pub name: String,
    /// One OpenSSH public key line.
    pub public_key: String,
    /// A challenge from `POST /api/v1/ssh-keys/challenge`.
    #[serde(default)]
    pub challenge: Option<String>,
    /// The challenge signed with the key's private half: the armored output
    /// of `ssh-keygen -Y sign -n pinacle-ssh-key`.
    #[serde(default)]
    pub signature: Option<String>,
}

/// `POST /api/v1/ssh-keys`: registers a public key, with proof that the
/// caller holds its private key (400 `proof_required` without).
pub async fn add_ssh_key(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(req): ApiJson<AddSshKey>,
) -> Result<(StatusCode, Json<crate::workspace::SshKeyView>), ApiError> {
    let view = match (&req.challenge, &req.signature) {
        (Some(challenge), Some(signature)) => {
            s.workspace.add_ssh_key_with_proof(&who, &req.name, &req.public_key, challenge, signature).await?
        }
        _ => s.workspace.add_ssh_key(&who, &req.name, &req.public_key).await?,
    };
    Ok((StatusCode::CREATED, Json(view)))
}

/// `POST /api/v1/ssh-keys/challenge` body (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SshKeyChallengeRequest {
    /// How long the challenge stays valid (1 to 600 seconds; default 300).
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
}

/// `POST /api/v1/ssh-keys/challenge`: a short-lived, single-use challenge
/// to sign with the private key of the key to register.
pub async fn ssh_key_challenge(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<crate::workspace::SshKeyChallenge>), ApiError> {
    let req: SshKeyChallengeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SshKeyChallengeRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_request", format!("request body does not fit: {e}")))?
    };
    Ok((StatusCode::CREATED, Json(s.workspace.ssh_key_challenge(&who, req.expires_in_seconds)?)))
}

/// `DELETE /api/v1/ssh-keys/{id}`.
pub async fn delete_ssh_key(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    crate::error::ApiPath(id): crate::error::ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    s.workspace.delete_ssh_key(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/ssh`: where the SSH gateway is and the CAs to trust.
pub async fn ssh_info(State(s): State<AppState>, Extension(_who): Extension<Principal>) -> Result<Json<crate::ssh::SshInfo>, ApiError> {
    Ok(Json(s.ssh.ssh_info().await?))
}

/// `POST /api/v1/pods/{pod}/ssh-certificate` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshCertificateRequest {
    /// The OpenSSH public key line to certify (a fresh one, ideally).
    pub public_key: String,
}

/// `POST /api/v1/pods/{pod}/ssh-certificate`: a 15-minute certificate
/// that lets the caller into the pod over SSH.
pub async fn ssh_certificate(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    crate::error::ApiPath(pod): crate::error::ApiPath<String>,
    ApiJson(req): ApiJson<SshCertificateRequest>,
) -> Result<(StatusCode, Json<crate::ssh::SshCertificateView>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.ssh.issue_ssh_certificate(&who, &pod, &req.public_key).await?)))
}

/// `GET /api/v1/pods/{pod}/ssh-key`: the pod's own SSH key (public half).
pub async fn pod_ssh_key(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    crate::error::ApiPath(pod): crate::error::ApiPath<String>,
) -> Result<Json<crate::ssh::PodKeyView>, ApiError> {
    Ok(Json(s.ssh.pod_ssh_key(&who, &pod).await?))
}

/// `POST /api/v1/pods/{pod}/rotate-keys`: replaces the pod's own SSH key.
pub async fn rotate_pod_keys(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    crate::error::ApiPath(pod): crate::error::ApiPath<String>,
) -> Result<Json<crate::ssh::PodKeyView>, ApiError> {
    let key = s.ssh.rotate_pod_ssh_key(&who, &pod).await?;
    // a pod whose key is a GitHub deploy key gets the new one registered
    let view = s.pods.find_pod(&who, &pod, crate::policy::Action::Read).await?;
    s.github_apps.rotated(&who, view.id, &key.public_key).await?;
    Ok(Json(key))
}
