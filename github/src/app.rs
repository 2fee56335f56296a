//! The GitHub App's identity and its REST client.
//!
//! GitHub authenticates an App by an RS256 JWT (`iss` = App id, at most 10
//! minutes) signed with the App's private key; with it the App mints
//! installation tokens (1 hour), which every other call uses. octocrab's
//! own App support needs its `jwt` feature (jsonwebtoken 10 and a second
//! crypto stack); the JWT is made here with `ring`, already in the tree,
//! and handed to octocrab as a bearer token, so every request and answer
//! still goes through octocrab's client and types.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine;
use octocrab::Octocrab;
use ring::signature::RsaKeyPair;
use serde::Deserialize;

use crate::repo::FullName;
use crate::GithubError;

/// The JWT's lifetime: GitHub allows at most 10 minutes; `iat` is set a
/// minute back for clock drift, as GitHub advises.
pub const JWT_TTL_SECS: i64 = 9 * 60;

/// An installation token is minted again when less than this is left of
/// it, so a token handed out always has at least this long to live.
pub const TOKEN_MIN_LEFT_SECS: i64 = 30 * 60;

/// How long a connection to GitHub may take to open.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long GitHub may take to answer (or take a request).
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Most entries of the token cache; past it, expired ones are dropped and
/// then the whole cache if still full.
const MAX_CACHED_TOKENS: usize = 4096;

/// The App's private key and id: signs the App's JWTs.
#[derive(Clone)]
pub struct AppKey {
    app_id: u64,
    key: Arc<RsaKeyPair>,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKey").field("app_id", &self.app_id).field("key", &"<redacted>").finish()
    }
}

impl AppKey {
    /// From the PEM GitHub hands out (`BEGIN RSA PRIVATE KEY`, PKCS#1) or
    /// a PKCS#8 `BEGIN PRIVATE KEY`.
    pub fn from_pem(app_id: u64, pem: &str) -> Result<Self, GithubError> {
        let (label, der) = pem_block(pem).ok_or_else(|| GithubError::Key("no PEM block found".into()))?;
        let key = match label.as_str() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            other => return Err(GithubError::Key(format!("a {other:?} block; expected RSA PRIVATE KEY"))),
        }
        .map_err(|e| GithubError::Key(e.to_string()))?;
        Ok(Self { app_id, key: Arc::new(key) })
    }

    pub fn app_id(&self) -> u64 {
        self.app_id
    }

    /// The App's JWT at `now` (seconds since the epoch).
    pub fn jwt(&self, now: i64) -> Result<String, GithubError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({"iat": now - 60, "exp": now + JWT_TTL_SECS, "iss": self.app_id.to_string()});
        let claims = b64.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing_input.as_bytes(), &mut sig)
            .map_err(|_| GithubError::Key("signing failed".into()))?;
        Ok(format!("{signing_input}.{}", b64.encode(sig)))
    }
}

/// The first PEM block of `pem`: its label and bytes.
fn pem_block(pem: &str) -> Option<(String, Vec<u8>)> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_owned();
    let body = &rest[label_end + 5..];
    let end = body.find(&format!("-----END {label}-----"))?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some((label, der))
}

/// An installation token. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("token", &"<redacted>").field("expires_at", &self.expires_at).finish()
    }
}

/// What a token may do: an installation, optionally narrowed to some of
/// its repositories (by name, without the owner) and to some permissions
/// (`contents` → `read`/`write`). Empty lists: all the installation has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TokenScope {
    pub installation: u64,
    pub repositories: Vec<String>,
    pub permissions: BTreeMap<String, String>,
}

impl TokenScope {
    /// The whole installation (what Pinacle's own calls use).
    pub fn installation(installation: u64) -> Self {
        Self { installation, ..Self::default() }
    }

    /// One repository with `contents` read (or write): what a pod's git
    /// gets.
    pub fn git(installation: u64, repo: &FullName, write: bool) -> Self {
        Self {
            installation,
            repositories: vec![repo.name().to_owned()],
            permissions: BTreeMap::from([("contents".to_owned(), if write { "write" } else { "read" }.to_owned())]),
        }
    }
}

/// A repository as the picker shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RepoSummary {
    pub id: u64,
    pub full_name: String,
    pub private: bool,
    pub default_branch: Option<String>,
}

/// What a GitHub user may do in a repository (`GET
/// /repos/{o}/{r}/collaborators/{login}/permission`; GitHub's legacy base
/// roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RepoRole {
    None,
    Read,
    Write,
    Admin,
}

impl RepoRole {
    fn parse(s: &str) -> Self {
        match s {
            "admin" => Self::Admin,
            "write" | "maintain" => Self::Write,
            "read" | "triage" => Self::Read,
            _ => Self::None,
        }
    }
}

/// An installation as Pinacle records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationInfo {
    pub id: u64,
    pub account: String,
    pub account_type: String,
    pub suspended: bool,
}

/// A delivery GitHub could not make (every attempt failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedDelivery {
    /// GitHub's id of the attempt (what a redelivery names).
    pub id: u64,
    /// `X-GitHub-Delivery`.
    pub guid: String,
    pub delivered_at: chrono::DateTime<chrono::Utc>,
}

/// A check run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    InProgress,
    Success,
    Failure,
    Neutral,
}

/// A check run to create or update.
#[derive(Debug, Clone)]
pub struct CheckRun {
    pub name: String,
    pub head_sha: String,
    pub state: CheckState,
    pub details_url: Option<String>,
    pub title: String,
    pub summary: String,
}

/// The App's REST client: one per server, shared. Tokens are cached per
/// scope; clients per token.
pub struct GithubApp {
    key: AppKey,
    api_url: String,
    tokens: Mutex<HashMap<TokenScope, Token>>,
    clients: Mutex<HashMap<String, Octocrab>>,
}

impl std::fmt::Debug for GithubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubApp").field("app_id", &self.key.app_id).field("api_url", &self.api_url).finish()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[derive(Deserialize)]
struct PermissionAnswer {
    permission: String,
}

impl GithubApp {
    /// `api_url`: `https://api.github.com` (or a GitHub Enterprise's
    /// `/api/v3`, or a test's fake).
    pub fn new(key: AppKey, api_url: &str) -> Self {
        Self { key, api_url: api_url.trim_end_matches('/').to_owned(), tokens: Mutex::default(), clients: Mutex::default() }
    }

    pub fn app_id(&self) -> u64 {
        self.key.app_id
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    fn octocrab(&self, bearer: &str) -> Result<Octocrab, GithubError> {
        if let Some(c) = self.clients.lock().unwrap_or_else(|p| p.into_inner()).get(bearer) {
            return Ok(c.clone());
        }
        let c = Octocrab::builder()
            .base_uri(self.api_url.as_str())
            .map_err(|e| GithubError::Transport(e.to_string()))?
            .personal_token(bearer.to_owned())
            .set_connect_timeout(Some(CONNECT_TIMEOUT))
            .set_read_timeout(Some(READ_TIMEOUT))
            .set_write_timeout(Some(READ_TIMEOUT))
            .build()
            .map_err(|e| GithubError::Transport(e.to_string()))?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_CACHED_TOKENS {
            clients.clear();
        }
        clients.insert(bearer.to_owned(), c.clone());
        Ok(c)
    }

    /// A client acting as the App itself (JWT): installations only.
    fn as_app(&self) -> Result<Octocrab, GithubError> {
        // a fresh JWT each time: signing takes under a millisecond, and a
        // cached client would outlive its JWT
        Octocrab::builder()
            .base_uri(self.api_url.as_str())
            .map_err(|e| GithubError::Transport(e.to_string()))?
            .personal_token(self.key.jwt(now())?)
            .set_connect_timeout(Some(CONNECT_TIMEOUT))
            .set_read_timeout(Some(READ_TIMEOUT))
            .set_write_timeout(Some(READ_TIMEOUT))
            .build()
            .map_err(|e| GithubError::Transport(e.to_string()))
    }

    /// A token for `scope` with at least [`TOKEN_MIN_LEFT_SECS`] to live:
    /// the cached one, or a new one.
    pub async fn token(&self, scope: &TokenScope) -> Result<Token, GithubError> {
        if let Some(t) = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(scope) {
            if t.expires_at - now() > TOKEN_MIN_LEFT_SECS {
                return Ok(t.clone());
            }
        }
        let token = self.fresh_token(scope).await?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= MAX_CACHED_TOKENS {
            let t = now();
            tokens.retain(|_, v| v.expires_at - t > TOKEN_MIN_LEFT_SECS);
            if tokens.len() >= MAX_CACHED_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(scope.clone(), token.clone());
        Ok(token)
    }

    /// A new token for `scope`, not cached: one nobody else is handed.
    pub async fn fresh_token(&self, scope: &TokenScope) -> Result<Token, GithubError> {
        let body = octocrab::models::apps::CreateInstallationAccessToken {
            repositories: (!scope.repositories.is_empty()).then(|| scope.repositories.clone()),
            repository_ids: None,
            permissions: (!scope.permissions.is_empty()).then(|| scope.permissions.clone().into_iter().collect()),
        };
        let minted = self.as_app()?.apps().create_installation_access_token(scope.installation, &body).await?;
        let expires_at = minted
            .expires_at
            .as_deref()
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
            .map_or(now() + 3600, |t| t.timestamp());
        Ok(Token { token: minted.token, expires_at })
    }

    /// A client acting as the installation (all it was granted).
    async fn as_installation(&self, installation: u64) -> Result<Octocrab, GithubError> {
        let t = self.token(&TokenScope::installation(installation)).await?;
        self.octocrab(&t.token)
    }

    /// Forgets the cached tokens of an installation and revokes them at
    /// GitHub (`DELETE /installation/token`): after its removal, or when
    /// a pod that held one is gone. Revoking an already dead token is not
    /// an error.
    pub async fn revoke_installation_tokens(&self, installation: u64) -> Result<usize, GithubError> {
        let gone: Vec<Token> = {
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<TokenScope> = tokens.keys().filter(|k| k.installation == installation).cloned().collect();
            keys.into_iter().filter_map(|k| tokens.remove(&k)).collect()
        };
        let mut revoked = 0;
        for t in gone {
            revoked += usize::from(self.revoke(&t).await?);
        }
        Ok(revoked)
    }

    /// Revokes one installation token at GitHub (`DELETE
    /// /installation/token`, authenticated by the token itself); whether
    /// it was still alive. An expired or already revoked token is not an
    /// error.
    pub async fn revoke(&self, t: &Token) -> Result<bool, GithubError> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).remove(&t.token);
        let client = self.octocrab(&t.token)?;
        let answer = client._delete("/installation/token", None::<&()>).await;
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).remove(&t.token);
        match answer {
            Ok(r) if r.status().is_success() => Ok(true),
            Ok(r) if r.status().as_u16() == 401 || r.status().as_u16() == 404 => Ok(false),
            Ok(r) => {
                tracing::warn!(status = r.status().as_u16(), "revoking an installation token");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The App's webhook deliveries GitHub recorded since `since` whose
    /// every attempt failed (no 2xx), newest attempt of each, at most
    /// `max` (the newest 100 attempts are read: what GitHub lists first).
    pub async fn failed_deliveries(&self, since: chrono::DateTime<chrono::Utc>, max: usize) -> Result<Vec<FailedDelivery>, GithubError> {
        let list = self.as_app()?.apps().webhook_deliveries().per_page(100u8).send().await?;
        let ok: std::collections::HashSet<String> =
            list.iter().filter(|d| (200..300).contains(&d.status_code)).map(|d| d.guid.clone()).collect();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for d in list {
            if d.delivered_at < since || ok.contains(&d.guid) || !seen.insert(d.guid.clone()) {
                continue;
            }
            out.push(FailedDelivery { id: d.id.0, guid: d.guid, delivered_at: d.delivered_at });
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Asks GitHub to send delivery `id` again.
    pub async fn redeliver(&self, id: u64) -> Result<(), GithubError> {
        self.as_app()?.apps().redeliver_webhook_delivery(id).await?;
        Ok(())
    }

    /// `GET /app/installations/{id}`.
    pub async fn installation(&self, installation: u64) -> Result<InstallationInfo, GithubError> {
        let i = self.as_app()?.apps().installation(installation).await?;
        Ok(InstallationInfo {
            id: i.id.0,
            account: i.account.login,
            account_type: i.target_type.unwrap_or_else(|| i.account.r#type.clone()),
            suspended: false,
        })
    }

    /// The repositories an installation may see (`GET
    /// /installation/repositories`), at most `max`.
    pub async fn installation_repositories(&self, installation: u64, max: usize) -> Result<Vec<RepoSummary>, GithubError> {
        let client = self.as_installation(installation).await?;
        let mut out = Vec::new();
        for page in 1..=100u32 {
            #[derive(Deserialize)]
            struct Page {
                repositories: Vec<octocrab::models::Repository>,
            }
            let p: Page = client.get("/installation/repositories", Some(&[("per_page", "100"), ("page", &page.to_string())])).await?;
            let n = p.repositories.len();
            out.extend(p.repositories.into_iter().filter_map(summary));
            if n < 100 || out.len() >= max {
                break;
            }
        }
        out.truncate(max);
        Ok(out)
    }

    /// `GET /repos/{o}/{r}` through the installation.
    pub async fn repository(&self, installation: u64, repo: &FullName) -> Result<RepoSummary, GithubError> {
        let r = self.as_installation(installation).await?.repos(repo.owner(), repo.name()).get().await?;
        summary(r).ok_or_else(|| GithubError::Transport("a repository without a full name".into()))
    }

    /// The repository's branches and their heads (the first 100).
    pub async fn branches(&self, installation: u64, repo: &FullName) -> Result<Vec<(String, String)>, GithubError> {
        let page = self.as_installation(installation).await?.repos(repo.owner(), repo.name()).list_branches().per_page(100).send().await?;
        Ok(page.items.into_iter().map(|b| (b.name, b.commit.sha)).collect())
    }

    /// What GitHub user `login` may do in the repository (none when they
    /// are no collaborator or the repository is hidden from them).
    pub async fn role_of(&self, installation: u64, repo: &FullName, login: &str) -> Result<RepoRole, GithubError> {
        // octocrab's `RepoPermission` reads `permission` as the *team*
        // permission names (pull/push/…) and fails on GitHub's actual
        // admin/write/read/none, so the answer is read here.
        let client = self.as_installation(installation).await?;
        let route = format!("/repos/{}/{}/collaborators/{}/permission", repo.owner(), repo.name(), login);
        match client.get::<PermissionAnswer, _, ()>(route, None).await {
            Ok(p) => Ok(RepoRole::parse(&p.permission)),
            Err(e) => match GithubError::from(e) {
                GithubError::NotFound(_) => Ok(RepoRole::None),
                other => Err(other),
            },
        }
    }

    /// A file's text at `git_ref`, `None` when there is no such file (at
    /// most `max` bytes; a larger or binary file is an error).
    pub async fn file(&self, installation: u64, repo: &FullName, path: &str, git_ref: &str, max: usize) -> Result<Option<String>, GithubError> {
        let client = self.as_installation(installation).await?;
        let answer = client.repos(repo.owner(), repo.name()).get_content().path(path).r#ref(git_ref).send().await;
        let mut items = match answer {
            Ok(items) => items,
            Err(e) => {
                return match GithubError::from(e) {
                    GithubError::NotFound(_) => Ok(None),
                    other => Err(other),
                }
            }
        };
        let Some(item) = items.take_items().into_iter().find(|i| i.r#type == "file") else { return Ok(None) };
        if item.size < 0 || item.size as usize > max {
            return Err(GithubError::Invalid(format!("{path} is larger than {max} bytes")));
        }
        let text = item.decoded_content().ok_or_else(|| GithubError::Invalid(format!("{path} is not UTF-8 text")))?;
        Ok(Some(text))
    }

    /// Adds a deploy key; its id.
    pub async fn add_deploy_key(&self, installation: u64, repo: &FullName, title: &str, public_key: &str, read_only: bool) -> Result<u64, GithubError> {
        let client = self.as_installation(installation).await?;
        let key = client.repos(repo.owner(), repo.name()).keys().create(title, public_key).read_only(read_only).send().await?;
        Ok(key.id.0)
    }

    /// The ids of the repository's deploy keys titled `title` (the
    /// reconcile pass finds a deleted pod's keys by their title, also
    /// ones added just before a crash and never recorded). At most ten
    /// pages of 100 keys are read. A repository that is gone, or that the
    /// installation no longer sees, has none.
    pub async fn deploy_keys_titled(&self, installation: u64, repo: &FullName, title: &str) -> Result<Vec<u64>, GithubError> {
        const PER_PAGE: usize = 100;
        let client = self.as_installation(installation).await?;
        let route = format!("/repos/{}/{}/keys", repo.owner(), repo.name());
        let mut ids = Vec::new();
        for page in 1..=10u32 {
            let page = page.to_string();
            let keys: Vec<octocrab::models::repos::DeployKey> = match client.get(&route, Some(&[("per_page", "100"), ("page", page.as_str())])).await {
                Ok(keys) => keys,
                Err(e) => match GithubError::from(e) {
                    GithubError::NotFound(_) => {
                        tracing::info!(repo = %repo, "the repository is gone or out of the installation: its deploy keys, if any, are not Pinacle's to list");
                        return Ok(ids);
                    }
                    other => return Err(other),
                },
            };
            let full = keys.len() == PER_PAGE;
            ids.extend(keys.into_iter().filter(|k| k.title == title).map(|k| k.id.0));
            if !full {
                break;
            }
        }
        Ok(ids)
    }

    /// Removes a deploy key; one already gone is not an error.
    pub async fn delete_deploy_key(&self, installation: u64, repo: &FullName, id: u64) -> Result<(), GithubError> {
        let client = self.as_installation(installation).await?;
        match client.repos(repo.owner(), repo.name()).keys().delete(id).await {
            Ok(()) => Ok(()),
            Err(e) => match GithubError::from(e) {
                GithubError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Posts a comment on issue or pull request `number`; its id.
    pub async fn create_comment(&self, installation: u64, repo: &FullName, number: u64, body: &str) -> Result<u64, GithubError> {
        let client = self.as_installation(installation).await?;
        Ok(client.issues(repo.owner(), repo.name()).create_comment(number, body).await?.id.0)
    }

    /// Replaces a comment's text.
    pub async fn update_comment(&self, installation: u64, repo: &FullName, id: u64, body: &str) -> Result<(), GithubError> {
        let client = self.as_installation(installation).await?;
        client.issues(repo.owner(), repo.name()).update_comment(id.into(), body).await?;
        Ok(())
    }

    /// Creates a check run (`id: None`) or updates one; its id.
    pub async fn check_run(&self, installation: u64, repo: &FullName, id: Option<u64>, run: &CheckRun) -> Result<u64, GithubError> {
        use octocrab::params::checks::{CheckRunConclusion, CheckRunOutput, CheckRunStatus};
        let client = self.as_installation(installation).await?;
        let checks = client.checks(repo.owner(), repo.name());
        let (status, conclusion) = match run.state {
            CheckState::InProgress => (CheckRunStatus::InProgress, None),
            CheckState::Success => (CheckRunStatus::Completed, Some(CheckRunConclusion::Success)),
            CheckState::Failure => (CheckRunStatus::Completed, Some(CheckRunConclusion::Failure)),
            CheckState::Neutral => (CheckRunStatus::Completed, Some(CheckRunConclusion::Neutral)),
        };
        let output = CheckRunOutput { title: run.title.clone(), summary: run.summary.clone(), text: None, annotations: vec![], images: vec![] };
        let made = match id {
            None => {
                let mut b = checks.create_check_run(run.name.clone(), run.head_sha.clone()).status(status).output(output);
                if let Some(c) = conclusion {
                    b = b.conclusion(c).completed_at(chrono::Utc::now());
                }
                if let Some(u) = &run.details_url {
                    b = b.details_url(u.clone());
                }
                b.send().await?
            }
            Some(id) => {
                let mut b = checks.update_check_run(id.into()).status(status).output(output);
                if let Some(c) = conclusion {
                    b = b.conclusion(c).completed_at(chrono::Utc::now());
                }
                if let Some(u) = &run.details_url {
                    b = b.details_url(u.clone());
                }
                b.send().await?
            }
        };
        Ok(made.id.0)
    }
}

fn summary(r: octocrab::models::Repository) -> Option<RepoSummary> {
    Some(RepoSummary { id: r.id.0, full_name: r.full_name?, private: r.private.unwrap_or(true), default_branch: r.default_branch })
}

/// Runs `op` again after a transient failure ([`GithubError::retryable`]):
/// at most `tries` times in all, waiting 0.5 s, 1 s, 2 s, … between them.
pub async fn with_retries<T, F, Fut>(tries: u32, mut op: F) -> Result<T, GithubError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, GithubError>>,
{
    let mut wait = std::time::Duration::from_millis(500);
    let mut left = tries.max(1);
    loop {
        match op().await {
            Err(e) if e.retryable() && left > 1 => {
                tracing::debug!(error = %e, "GitHub call failed; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
                left -= 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl (apt-get install openssl)");
        if let Some(i) = input {
            child.stdin.take().expect("stdin").write_all(i).expect("write");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("openssl");
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn the_apps_jwt_verifies_with_its_public_key_and_carries_the_app_id() {
        let pem = openssl(&["genrsa", "-traditional", "2048"], None);
        let pem = String::from_utf8(pem).expect("pem");
        let key = AppKey::from_pem(4242, &pem).expect("key");
        assert!(format!("{key:?}").contains("redacted"));
        let jwt = key.jwt(1_700_000_000).expect("jwt");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("json");
        assert_eq!(claims, serde_json::json!({"iat": 1_699_999_940, "exp": 1_700_000_540, "iss": "4242"}));
        let public = openssl(&["rsa", "-RSAPublicKey_out", "-outform", "DER"], Some(pem.as_bytes()));
        let verifier = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public);
        let sig = b64.decode(parts[2]).expect("sig");
        verifier.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).expect("verifies");
        // a PKCS#8 form of the same key signs alike
        let pkcs8 = String::from_utf8(openssl(&["pkcs8", "-topk8", "-nocrypt"], Some(pem.as_bytes()))).expect("pem");
        assert!(AppKey::from_pem(1, &pkcs8).is_ok());
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        assert!(matches!(AppKey::from_pem(1, "nothing"), Err(GithubError::Key(_))));
        let ec = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(AppKey::from_pem(1, ec), Err(GithubError::Key(m)) if m.contains("EC PRIVATE KEY")));
        let junk = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(AppKey::from_pem(1, junk), Err(GithubError::Key(_))));
    }

    #[test]
    fn git_scopes_name_one_repository_and_contents_only() {
        let repo = FullName::parse("octo/app").expect("name");
        let s = TokenScope::git(7, &repo, false);
        assert_eq!((s.installation, s.repositories.as_slice()), (7, ["app".to_owned()].as_slice()));
        assert_eq!(s.permissions, BTreeMap::from([("contents".to_owned(), "read".to_owned())]));
        assert_eq!(TokenScope::git(7, &repo, true).permissions["contents"], "write");
        assert!(format!("{:?}", Token { token: "ghs_secret".into(), expires_at: 1 }).contains("redacted"));
        assert!(!format!("{:?}", Token { token: "ghs_secret".into(), expires_at: 1 }).contains("ghs_secret"));
    }

    #[tokio::test]
    async fn retries_stop_at_a_refusal_and_after_the_count() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let r: Result<(), _> = with_retries(3, || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(GithubError::NotFound("x".into()))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        tokio::time::pause();
        let r: Result<(), _> = with_retries(3, || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(GithubError::Status { status: 502, message: "bad gateway".into() })
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    }
}
