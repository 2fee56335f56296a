//! What the secrets service does.

use super::*;

/// Secrets as a service: set (sealed at once), listed (names only) and
/// deleted, for a user, a team or one pod, as the policy allows.
#[derive(Clone)]
pub struct Secrets {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    master_key: std::sync::Arc<crate::crypto::MasterKey>,
    teams: crate::teams::Teams,
    pods: crate::service::Pods,
}

impl Secrets {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
        master_key: std::sync::Arc<crate::crypto::MasterKey>,
        teams: crate::teams::Teams,
        pods: crate::service::Pods,
    ) -> Self {
        Self { db, write_lock, master_key, teams, pods }
    }
}

impl Secrets {
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
                Ok(("pod", self.pods.find_pod(who, pod, action).await?.id.to_string()))
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
}
