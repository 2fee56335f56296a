//! The platform's side of the AI router (issue 19): who calls it (users'
//! access and API tokens, and pods' platform tokens), what the policy lets
//! them do, whose provider keys their calls use, and the audit of policy
//! changes. The router itself is `pinacle-aion`.
//!
//! - A user's token: the caller is that user, charged to their own budget
//!   and, for an API token, to that key's. Spending is a write: a read-only
//!   token is refused (the policy's `Exec` on their own account).
//! - A pod's platform token (the one the host agent writes into the pod;
//!   re-checked on every call, so a deleted pod's token stops at once):
//!   the caller is the pod (its tasks are its own), charged to the pod as
//!   its key, and to its team for a team pod or its owner for a personal
//!   one; the owner's policy lists (local-only subjects) apply.
//! - Only the instance administrator reloads or rolls back the policy.

use axum::http::HeaderMap;
use pinacle_aion::engine::Caller;
use pinacle_aion::error::AionError;
use pinacle_aion::registries::Change;
use pinacle_memory_service::http::TokenVerifier;

use crate::policy::{self, Action, Denied, Resource};
use crate::principal::Principal;

/// Verifies callers, audits changes, finds callers' own keys.
#[derive(Clone)]
pub struct AionAccess {
    auth: crate::auth::Authenticator,
    memory_access: crate::memory::MemoryAccess,
    pods: crate::service::Pods,
    audit: crate::audit::AuditLog,
    vault: crate::secrets::SecretVault,
}

impl AionAccess {
    pub fn new(
        auth: crate::auth::Authenticator,
        memory_access: crate::memory::MemoryAccess,
        pods: crate::service::Pods,
        audit: crate::audit::AuditLog,
        vault: crate::secrets::SecretVault,
    ) -> Self {
        Self { auth, memory_access, pods, audit, vault }
    }

    /// The caller a user's principal is, if the policy lets them spend.
    pub fn caller_for(who: &Principal) -> Result<Caller, AionError> {
        match policy::decide(who, Action::Exec, &Resource::Account { user: &who.user_id }) {
            Ok(()) => {}
            Err(Denied::Forbidden(m)) => return Err(AionError::Forbidden(format!("calling models spends money: {m}"))),
            Err(Denied::Hidden) => return Err(AionError::Forbidden("calling models is not allowed for this token".into())),
        }
        let admin = policy::decide(who, Action::Configure, &Resource::Instance).is_ok();
        Ok(Caller {
            subject: format!("user:{}", who.user_id),
            user_id: who.user_id.clone(),
            team_id: None,
            key_id: who.token_id.as_ref().map(|t| format!("token:{t}")),
            admin,
            user_budget: true,
        })
    }
}

fn bearer(headers: &HeaderMap) -> Result<String, AionError> {
    crate::auth::bearer_of(headers).map_err(|e| AionError::Unauthenticated(e.message))
}

#[async_trait::async_trait]
impl pinacle_aion::http::Verifier for AionAccess {
    async fn verify(&self, headers: &HeaderMap) -> Result<Caller, AionError> {
        let token = bearer(headers)?;
        match self.auth.principal_for_bearer(&token).await {
            Ok(who) => return Self::caller_for(&who),
            Err(e) if e.status.is_server_error() => return Err(AionError::Internal(e.message)),
            Err(_) => {}
        }
        // a pod's platform token
        let refused = || AionError::Unauthenticated("token refused: sign in, use an API token, or (in a pod) the pod's platform token".into());
        let caller = match self.memory_access.verify(&token).await {
            Ok(c) => c,
            Err(pinacle_memory_service::MemoryError::Unauthenticated(m)) if m.contains("pod") => return Err(AionError::Unauthenticated(m)),
            Err(pinacle_memory_service::MemoryError::Internal(m)) => return Err(AionError::Internal(m)),
            Err(_) => return Err(refused()),
        };
        let Some(pod) = caller.subject.strip_prefix("pod:").and_then(|p| uuid::Uuid::parse_str(p).ok()) else { return Err(refused()) };
        let view = self.pods.pod_by_id(pod).await.map_err(|e| AionError::Internal(e.message))?.ok_or_else(refused)?;
        // the pod's tasks are its own (not its owner's: a team member who
        // can run code in a team pod must not read its creator's tasks); a
        // team pod's calls are the team's to pay, a personal pod's its owner's
        let user_budget = view.team_id.is_none();
        Ok(Caller { subject: format!("pod:{pod}"), user_id: view.owner_id, team_id: view.team_id, key_id: Some(format!("pod:{pod}")), admin: false, user_budget })
    }
}

#[async_trait::async_trait]
impl pinacle_aion::http::Auditor for AionAccess {
    async fn registry_changed(&self, who: &Caller, action: &str, change: &Change) {
        let who = Principal::system(&who.user_id, "", "router");
        let mut target = format!("registry v{} ({}) -> v{} ({})", change.from_version, change.from_digest, change.to_version, change.to_digest);
        if let Some(note) = &change.note {
            target.push_str(": ");
            target.push_str(note);
        }
        if let Err(e) = self.audit.record(&who, action, &target).await {
            tracing::error!(error = %e.message, %action, "the router policy change was not audited");
        }
    }
}

#[async_trait::async_trait]
impl pinacle_aion::engine::KeySource for AionAccess {
    async fn key(&self, caller: &Caller, name: &str) -> Option<String> {
        let pod = caller.key_id.as_deref().and_then(|k| k.strip_prefix("pod:")).and_then(|p| uuid::Uuid::parse_str(p).ok());
        match self.vault.provider_key(&caller.user_id, caller.team_id.as_deref(), pod, name).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e.message, secret = %name, "reading a provider key secret failed");
                None
            }
        }
    }
}
