//! Access to the memory service (issue 18): the short-lived memory tokens
//! that carry tenant, project and role, minted for signed-in users and for
//! pods and signed with the instance's token keys (published in
//! `/.well-known/jwks.json`, rotated with them), and their verification.
//!
//! Tenant and project only ever come from a verified token: the memory API
//! never takes them from request parameters.

use pinacle_memory::project;
use pinacle_memory_service::http::TokenVerifier;
use pinacle_memory_service::{Caller, MemoryError, Role, Scope};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::policy::{self, Action, Denied};
use crate::principal::Principal;
use crate::ApiError;

/// The audience of memory tokens (access tokens and pod-session cookies
/// have others, so none is accepted in another's place).
pub const AUDIENCE: &str = "pinacle-memory";

/// How long a memory token lives: pods' supervisors fetch a new one well
/// before (every [`POD_TOKEN_REFRESH_SECS`]).
pub const TOKEN_TTL_SECS: i64 = 15 * 60;

/// How often a pod's memory token is replaced.
pub const POD_TOKEN_REFRESH_SECS: u64 = 5 * 60;

/// What a memory token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryClaims {
    pub iss: String,
    pub aud: String,
    /// `user:<id>` or `pod:<id>`.
    pub sub: String,
    /// `user:<id>` or `team:<id>`.
    pub tenant: String,
    pub project: String,
    pub role: Role,
    /// The pod a pod's token belongs to (re-checked on every request: a
    /// deleted pod's token stops at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The sign-in session a user's token was minted in (re-checked on
    /// every request: signing out stops the token at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The API token a user's token was minted with (re-checked on every
    /// request: revoking it stops the token at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

/// A minted token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryToken {
    pub token: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
    pub tenant: String,
    pub project: String,
    pub role: Role,
}

/// What a user asks a token for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryTokenRequest {
    /// A repository (`github.com/owner/repo`, or any URL of it) or another
    /// project name.
    pub project: String,
    /// The team whose memory (name or id); none: the caller's own.
    #[serde(default)]
    pub team: Option<String>,
}

/// The project a pod's memory belongs to: its repository's, else its own.
pub fn pod_project(pod: Uuid, repository_url: Option<&str>) -> String {
    repository_url.and_then(project::from_repository_url).unwrap_or_else(|| format!("pod:{pod}"))
}

/// The memory role a team role gives (see [`policy::memory_role`]).
fn team_memory_role(role: crate::policy::Role) -> Role {
    let subject = crate::policy::Subject {
        user_id: String::new(),
        instance_admin: false,
        scope: crate::policy::Scope::Full,
        teams: [("t".to_owned(), role)].into_iter().collect(),
    };
    policy::memory_role(&subject, Some("t")).unwrap_or(Role::Viewer)
}

/// The label a snapshot's memory position is kept under.
fn snapshot_label(pod: Uuid, snapshot: &str) -> String {
    format!("snapshot:{pod}/{snapshot}")
}

/// Mints and verifies memory tokens; ties pod snapshots to memory
/// positions.
#[derive(Clone)]
pub struct MemoryAccess {
    sessions: crate::sessions::Sessions,
    auth: crate::auth::Authenticator,
    pods: crate::service::Pods,
    teams: crate::teams::Teams,
    memory: pinacle_memory_service::MemoryService,
}

/// What a user's token was minted with, re-checked on every request.
#[derive(Default)]
struct Via {
    session: Option<String>,
    api_token: Option<String>,
}

/// The memory scope of a pod: its owner's tenant (the team's for a team
/// pod) and its repository's project.
pub fn pod_scope(view: &crate::service::PodView) -> Scope {
    let tenant = match &view.team_id {
        Some(t) => format!("team:{t}"),
        None => format!("user:{}", view.owner_id),
    };
    Scope { tenant, project: pod_project(view.id, view.repository.as_ref().map(|r| r.url.as_str())) }
}

impl MemoryAccess {
    pub fn new(
        sessions: crate::sessions::Sessions,
        auth: crate::auth::Authenticator,
        pods: crate::service::Pods,
        teams: crate::teams::Teams,
        memory: pinacle_memory_service::MemoryService,
    ) -> Self {
        Self { sessions, auth, pods, teams, memory }
    }

    /// Records the memory position of pod `key`'s project under its new
    /// snapshot `snapshot` (a failure is logged: the snapshot stands).
    pub async fn snapshot_taken(&self, who: &Principal, key: &str, snapshot: &str) {
        let marked = async {
            let view = self.pods.find_pod(who, key, Action::Read).await.map_err(|e| e.message)?;
            self.memory.mark_position(&pod_scope(&view), &snapshot_label(view.id, snapshot)).await.map_err(|e| e.to_string())
        };
        if let Err(e) = marked.await {
            tracing::warn!(pod = %key, %snapshot, error = %e, "the snapshot's memory position was not recorded");
        }
    }

    /// The same for a snapshot a host took on its own (at stop, for a pod
    /// with `snapshot_on_stop`): the host names its pod by id.
    pub async fn host_snapshot_taken(&self, pod: Uuid, snapshot: &str) -> Result<(), ApiError> {
        let Some(view) = self.pods.pod_by_id(pod).await? else { return Ok(()) };
        self.memory.mark_position(&pod_scope(&view), &snapshot_label(view.id, snapshot)).await.map_err(ApiError::internal)?;
        Ok(())
    }

    /// Brings pod `key`'s project memory back to where it stood when
    /// `snapshot` was taken; `None` when no position was recorded.
    pub async fn snapshot_restored(&self, who: &Principal, key: &str, snapshot: &str) -> Result<Option<pinacle_memory_service::model::Restored>, ApiError> {
        let view = self.pods.find_pod(who, key, Action::Configure).await?;
        self.memory
            .restore_marked(&pod_scope(&view), &format!("user:{}", who.user_id), &snapshot_label(view.id, snapshot))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    fn mint(&self, sub: String, tenant: String, project: String, role: Role, pod: Option<String>, via: Via) -> Result<MemoryToken, ApiError> {
        let iat = chrono::Utc::now().timestamp();
        let claims = MemoryClaims {
            iss: crate::sessions::ISSUER.into(),
            aud: AUDIENCE.into(),
            sub,
            tenant: tenant.clone(),
            project: project.clone(),
            role,
            pod,
            sid: via.session,
            tid: via.api_token,
            iat,
            exp: iat + TOKEN_TTL_SECS,
        };
        let token = self.sessions.sign_claims(&claims)?;
        Ok(MemoryToken { token, expires_at: claims.exp, tenant, project, role })
    }

    /// A token for `who` in their own memory or a team's, with the role
    /// the policy gives them there.
    pub async fn mint_for_user(&self, who: &Principal, req: MemoryTokenRequest) -> Result<MemoryToken, ApiError> {
        let project = project::from_repository_url(&req.project).unwrap_or_else(|| req.project.trim().to_owned());
        project::check(&project).map_err(|m| ApiError::bad_request("invalid_project", m))?;
        let (tenant, team_id) = match &req.team {
            None => (format!("user:{}", who.user_id), None),
            Some(key) => {
                let team = self.teams.find_team(who, key, Action::Read).await?;
                (format!("team:{}", team.id), Some(team.id))
            }
        };
        let role = match policy::memory_role(who, team_id.as_deref()) {
            Ok(r) => r,
            Err(Denied::Hidden) => return Err(ApiError::not_found("no such team")),
            Err(Denied::Forbidden(m)) => return Err(ApiError::forbidden("forbidden", m)),
        };
        let via = Via { session: who.session_id.clone(), api_token: who.token_id.clone() };
        self.mint(format!("user:{}", who.user_id), tenant, project, role, None, via)
    }

    /// A pod's token: its owner's tenant (the team's for a team pod), its
    /// repository's project, editor. `None` for a pod that is gone.
    pub async fn mint_for_pod(&self, pod: Uuid) -> Result<Option<MemoryToken>, ApiError> {
        let Some(view) = self.pods.pod_by_id(pod).await? else { return Ok(None) };
        if view.state == pinacle_orchestrator::PodState::Deleted {
            return Ok(None);
        }
        // an untrusted preview (a fork's pull request) neither reads nor
        // writes its owner's memory
        if self.pods.untrusted_preview(pod).await? {
            return Ok(None);
        }
        let scope = pod_scope(&view);
        self.mint(format!("pod:{pod}"), scope.tenant, scope.project, Role::Editor, Some(pod.to_string()), Via::default()).map(Some)
    }
}

#[async_trait::async_trait]
impl TokenVerifier for MemoryAccess {
    async fn verify(&self, token: &str) -> Result<Caller, MemoryError> {
        let refused = || MemoryError::Unauthenticated("memory token refused: expired, malformed or not a memory token; get a new one".into());
        let claims: MemoryClaims = self
            .sessions
            .verify_claims(token, AUDIENCE)
            .await
            .map_err(|e| MemoryError::Internal(e.message))?
            .ok_or_else(refused)?;
        if let Some(pod) = &claims.pod {
            let id = Uuid::parse_str(pod).map_err(|_| refused())?;
            let live = self.pods.pod_by_id(id).await.map_err(|e| MemoryError::Internal(e.message))?;
            if live.is_none_or(|p| p.state == pinacle_orchestrator::PodState::Deleted) {
                return Err(MemoryError::Unauthenticated("this pod was deleted; its memory token no longer works".into()));
            }
        }
        if let Some(sid) = &claims.sid {
            if !self.sessions.session_is_live(sid).await.map_err(|e| MemoryError::Internal(e.message))? {
                return Err(MemoryError::Unauthenticated("the session this token was minted in has ended; sign in again".into()));
            }
        }
        if let Some(tid) = &claims.tid {
            if !self.auth.api_token_is_live(tid).await.map_err(|e| MemoryError::Internal(e.message))? {
                return Err(MemoryError::Unauthenticated("the API token this memory token was minted with was revoked or has expired".into()));
            }
        }
        // a user's role in a team's memory is the one they hold now: a
        // member removed or demoted loses it at once
        let mut role = claims.role;
        if let (Some(user), Some(team)) = (claims.sub.strip_prefix("user:"), claims.tenant.strip_prefix("team:")) {
            let now = self.teams.member_role(team, user).await.map_err(|e| MemoryError::Internal(e.message))?;
            let Some(team_role) = now else {
                return Err(MemoryError::Unauthenticated("you are no longer a member of this team; its memory is closed to you".into()));
            };
            role = role.min(team_memory_role(team_role));
        }
        Ok(Caller { scope: Scope { tenant: claims.tenant, project: claims.project }, role, subject: claims.sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_of_one_repository_share_a_project_and_others_have_their_own() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        assert_eq!(pod_project(a, Some("https://github.com/o/r.git")), pod_project(b, Some("https://github.com/o/r")));
        assert_eq!(pod_project(a, None), format!("pod:{a}"));
        assert_ne!(pod_project(a, None), pod_project(b, None));
    }
}
