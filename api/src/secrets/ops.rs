//! What [`crate::AppState`] does with this module's parts (the methods
//! other services and the routes call); the parts themselves, which the
//! state holds, are in the parent module and need no state.

use super::*;
use crate::AppState;

impl AppState {
    /// Resolves `q` to (scope, scope id) after asking the policy for `action`.
    async fn secret_scope(&self, who: &Principal, q: &SecretScopeQuery, action: Action) -> Result<(&'static str, String), ApiError> {
        match (&q.team, &q.pod) {
            (Some(_), Some(_)) => Err(ApiError::bad_request("invalid_request", "give team or pod, not both")),
            (Some(team), None) => {
                // Reading team secret names is for members; changing them for admins.
                let team_action = if action == Action::Read { Action::Read } else { Action::Configure };
                Ok(("team", self.teams.find_team(who, team, team_action).await?.id))
            }
            (None, Some(pod)) => {
                let action = if action == Action::Read { Action::Read } else { Action::Configure };
                Ok(("pod", self.find_pod(who, pod, action).await?.id.to_string()))
            }
            (None, None) => {
                who.authorize(action, &Resource::Account { user: &who.user_id }, "secrets")?;
                Ok(("user", who.user_id.clone()))
            }
        }
    }

    /// Creates or replaces a secret. Answers its listing, never its value.
    pub async fn set_secret(
        &self,
        who: &Principal,
        name: &str,
        q: &SecretScopeQuery,
        req: SetSecretRequest,
    ) -> Result<(SecretView, bool), ApiError> {
        check_secret_name(name).map_err(|m| ApiError::bad_request("invalid_name", m))?;
        check_secret_value(&req.value).map_err(|m| ApiError::bad_request("invalid_value", m))?;
        let (scope, scope_id) = self.secret_scope(who, q, Action::Configure).await?;
        let sealed = self.master_key.open_check_seal(&context(scope, &scope_id, name), req.value.as_bytes())?;
        let now = Utc::now();
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let existing = secret::Entity::find()
            .filter(secret::Column::Scope.eq(scope))
            .filter(secret::Column::ScopeId.eq(scope_id.clone()))
            .filter(secret::Column::Name.eq(name))
            .one(&txn)
            .await?;
        let created = existing.is_none();
        let model = match existing {
            Some(old) => {
                let mut m: secret::ActiveModel = old.into();
                m.sealed = Set(sealed);
                m.updated_at = Set(now);
                m.update(&txn).await?
            }
            None => {
                secret::ActiveModel {
                    id: Set(uuid::Uuid::new_v4().to_string()),
                    scope: Set(scope.to_owned()),
                    scope_id: Set(scope_id.clone()),
                    name: Set(name.to_owned()),
                    sealed: Set(sealed),
                    created_by: Set(who.user_id.clone()),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(&txn)
                .await?
            }
        };
        let action = if created { "secret.create" } else { "secret.update" };
        crate::audit::append(&txn, who, action, &format!("secret:{scope}:{scope_id}:{name}")).await?;
        txn.commit().await?;
        Ok((model.into(), created))
    }

    /// Names and times of one scope's secrets.
    pub async fn list_secrets(&self, who: &Principal, q: &SecretScopeQuery) -> Result<Vec<SecretView>, ApiError> {
        let (scope, scope_id) = self.secret_scope(who, q, Action::Read).await?;
        Ok(secret::Entity::find()
            .filter(secret::Column::Scope.eq(scope))
            .filter(secret::Column::ScopeId.eq(scope_id))
            .order_by_asc(secret::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(SecretView::from)
            .collect())
    }

    /// Deletes one secret.
    pub async fn delete_secret(&self, who: &Principal, name: &str, q: &SecretScopeQuery) -> Result<(), ApiError> {
        let (scope, scope_id) = self.secret_scope(who, q, Action::Configure).await?;
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let deleted = secret::Entity::delete_many()
            .filter(secret::Column::Scope.eq(scope))
            .filter(secret::Column::ScopeId.eq(scope_id.clone()))
            .filter(secret::Column::Name.eq(name))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(ApiError::not_found(format!("secret {name} not found")));
        }
        crate::audit::append(&txn, who, "secret.delete", &format!("secret:{scope}:{scope_id}:{name}")).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The environment a pod starts with (`NAME=value`), for its host agent.
    pub async fn pod_secret_env(&self, pod_id: uuid::Uuid) -> Result<Vec<String>, ApiError> {
        let Some(pod) = crate::entities::pod::Entity::find_by_id(pod_id.to_string()).one(&self.db).await? else {
            return Ok(Vec::new());
        };
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
