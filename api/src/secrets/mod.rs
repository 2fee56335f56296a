//! Secrets: user, team and pod scoped key/values, sealed under the master
//! key (see [`crate::crypto`]) and handed to pods as environment variables
//! when they start. Values are accepted once and never answered again: list
//! endpoints show names and times only, and no value reaches a log line.
//!
//! What a pod gets: a personal pod, its owner's user secrets; a team pod, the
//! team's secrets (never a member's personal ones); then the pod's own
//! secrets, which win over both.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait};
use serde::{Deserialize, Serialize};

use crate::principal::Principal;
use crate::entities::secret;
use crate::policy::{Action, Resource};
use crate::ApiError;

pub mod ops;


/// The sealed secrets as a pod's start needs them: opened with the master
/// key for the pod's environment and its image pulls, never stored open.
#[derive(Clone)]
pub struct SecretVault {
    db: sea_orm::DatabaseConnection,
    master_key: std::sync::Arc<crate::crypto::MasterKey>,
}

impl SecretVault {
    pub fn new(db: sea_orm::DatabaseConnection, master_key: std::sync::Arc<crate::crypto::MasterKey>) -> Self {
        Self { db, master_key }
    }

    /// The environment a pod starts with (`NAME=value`), for its host agent.
    pub async fn pod_secret_env(&self, pod_id: uuid::Uuid) -> Result<Vec<String>, ApiError> {
        let Some(pod) = crate::entities::pod::Entity::find_by_id(pod_id.to_string()).one(&self.db).await? else {
            return Ok(Vec::new());
        };
        // a fork's pull request runs untrusted code, and other pull
        // requests' pods get secrets only when the repository says so
        if crate::entities::github_pod::Entity::find_by_id(pod_id.to_string()).one(&self.db).await?.is_some_and(|g| g.fork || !g.with_secrets) {
            return Ok(Vec::new());
        }
        let base = match &pod.team_id {
            Some(team) => ("team", team.clone()),
            None => ("user", pod.owner_id.clone()),
        };
        let mut env = self.opened_secrets(&[base, ("pod", pod.id.clone())], |_| true).await?;
        // A pod whose pinacle.yaml names its `secrets` gets those only.
        let wanted: Vec<String> = serde_json::from_str::<pinacle_config::PinacleConfig>(&pod.config)
            .map(|c| c.secrets)
            .unwrap_or_default();
        if !wanted.is_empty() {
            // a repository pod keeps the token its clone and pushes use
            let repository = !pod.repository.is_empty();
            env.retain(|name, _| wanted.contains(name) || (repository && (name == "GIT_TOKEN" || name == "GIT_USERNAME")));
            for missing in wanted.iter().filter(|w| !env.contains_key(*w)) {
                tracing::warn!(pod = %pod.id, secret = %missing, "pinacle.yaml names a secret that is not set");
            }
        }
        Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
    }

    /// The registry credential secrets (`{P}_CONTAINER_REGISTRY_SERVER`,
    /// `_USER`, `_PASSWORD`, as in Codespaces) an image pull for this owner
    /// uses, as `NAME=value`: the team's for a team pod (else the user's),
    /// then the pod's own. A pinacle.yaml's `secrets:` list does not limit
    /// them: they never enter the pod unless it names them.
    pub async fn registry_secret_env(&self, owner_id: &str, team_id: Option<&str>, pod_id: Option<uuid::Uuid>) -> Result<Vec<String>, ApiError> {
        let mut scopes = vec![match team_id {
            Some(team) => ("team", team.to_owned()),
            None => ("user", owner_id.to_owned()),
        }];
        if let Some(pod) = pod_id {
            scopes.push(("pod", pod.to_string()));
        }
        let env = self.opened_secrets(&scopes, |name| name.contains("_CONTAINER_REGISTRY_")).await?;
        Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
    }

    /// A caller's own provider key for the router: secret `name` of the
    /// team (for a team's call) else the user, then the pod's own, opened.
    pub async fn provider_key(&self, user_id: &str, team_id: Option<&str>, pod_id: Option<uuid::Uuid>, name: &str) -> Result<Option<String>, ApiError> {
        let mut scopes = vec![match team_id {
            Some(team) => ("team", team.to_owned()),
            None => ("user", user_id.to_owned()),
        }];
        if let Some(pod) = pod_id {
            scopes.push(("pod", pod.to_string()));
        }
        Ok(self.opened_secrets(&scopes, |n| n == name).await?.remove(name))
    }

    /// The secrets of `scopes` whose names pass `wanted`, opened; a later
    /// scope's value wins.
    async fn opened_secrets(&self, scopes: &[(&str, String)], wanted: impl Fn(&str) -> bool) -> Result<BTreeMap<String, String>, ApiError> {
        let mut env = BTreeMap::new();
        for (scope, scope_id) in scopes {
            let rows = secret::Entity::find()
                .filter(secret::Column::Scope.eq(*scope))
                .filter(secret::Column::ScopeId.eq(scope_id.clone()))
                .all(&self.db)
                .await?;
            for row in rows.into_iter().filter(|r| wanted(&r.name)) {
                let value = self
                    .master_key
                    .open(&context(scope, scope_id, &row.name), &row.sealed)
                    .map_err(|e| ApiError::internal(format!("secret {} of {scope} {scope_id}: {e}", row.name)))?;
                let value = String::from_utf8(value).map_err(|_| ApiError::internal(format!("secret {} is not UTF-8", row.name)))?;
                env.insert(row.name, value);
            }
        }
        Ok(env)
    }
}

/// Largest secret value.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Environment names a secret cannot take: Pinacle sets these.
const RESERVED: &[&str] = &["PATH", "HOME", "TERM", "LANG"];

/// Which secrets: `?team=NAME` or `?pod=NAME|ID`, neither for the caller's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretScopeQuery {
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
}

/// `PUT /api/v1/secrets/{name}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSecretRequest {
    pub value: String,
}

impl std::fmt::Debug for SetSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetSecretRequest { value: <redacted> }")
    }
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretView {
    pub name: String,
    /// `user`, `team` or `pod`.
    pub scope: String,
    pub scope_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why a secret name is refused: it must work as an environment variable.
pub fn check_secret_name(name: &str) -> Result<(), String> {
    let valid_chars = name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_uppercase() || c == '_');
    if name.is_empty() || name.len() > 128 || !valid_chars || !first_ok {
        return Err(format!(
            "invalid secret name {name:?}: use 1 to 128 characters of A-Z, 0-9 and _, not starting with a digit (it becomes an environment variable)"
        ));
    }
    if RESERVED.contains(&name) || name.starts_with("PINACLE_") {
        return Err(format!("secret name {name} is reserved; PATH, HOME, TERM, LANG and PINACLE_* are set by Pinacle"));
    }
    Ok(())
}

/// Why a secret value is refused.
pub fn check_secret_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("secret value is empty".into());
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("secret value is {} bytes; the limit is {MAX_VALUE_BYTES}", value.len()));
    }
    if value.contains('\0') {
        return Err("secret value contains a NUL byte, which an environment variable cannot hold".into());
    }
    Ok(())
}

fn context(scope: &str, scope_id: &str, name: &str) -> String {
    format!("secret:{scope}:{scope_id}:{name}")
}

impl From<secret::Model> for SecretView {
    fn from(m: secret::Model) -> Self {
        SecretView { name: m.name, scope: m.scope, scope_id: m.scope_id, created_at: m.created_at, updated_at: m.updated_at }
    }
}

/// Removes every secret of one scope (a deleted team or pod).
pub async fn delete_scope<C: ConnectionTrait>(db: &C, scope: &str, scope_id: &str) -> Result<(), ApiError> {
    secret::Entity::delete_many()
        .filter(secret::Column::Scope.eq(scope))
        .filter(secret::Column::ScopeId.eq(scope_id))
        .exec(db)
        .await?;
    Ok(())
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_environment_variables() {
        for ok in ["DB_PASSWORD", "_X", "A1"] {
            assert!(check_secret_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "db_password", "1A", "A-B", "A B", &"A".repeat(129)] {
            assert!(check_secret_name(bad).unwrap_err().contains("invalid secret name"), "{bad:?}");
        }
        for reserved in ["PATH", "HOME", "PINACLE_POD"] {
            assert!(check_secret_name(reserved).unwrap_err().contains("reserved"), "{reserved}");
        }
    }

    #[test]
    fn values_must_fit_an_environment() {
        assert!(check_secret_value("s3cr3t value with spaces\nand lines").is_ok());
        assert!(check_secret_value("").is_err());
        assert!(check_secret_value("a\0b").unwrap_err().contains("NUL"));
        assert!(check_secret_value(&"x".repeat(MAX_VALUE_BYTES + 1)).unwrap_err().contains("limit"));
    }

    #[test]
    fn debug_output_hides_the_value() {
        let r = SetSecretRequest { value: "hunter2-hunter2".into() };
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
