//! What the settings service does.

use super::*;

impl InstanceSettings {
    /// The current settings.
    pub async fn current(&self) -> Result<Settings, ApiError> {
        let signup = match setting::Entity::find_by_id(SIGNUP_KEY.to_owned()).one(&self.db).await? {
            Some(s) => serde_json::from_str(&s.value).map_err(ApiError::internal)?,
            None => SignupMode::default(),
        };
        Ok(Settings { signup, youki: self.youki_access().await?, quotas: self.quotas().await? })
    }

    /// Per-tenant limits.
    pub async fn quotas(&self) -> Result<Quotas, ApiError> {
        Ok(match setting::Entity::find_by_id(QUOTAS_KEY.to_owned()).one(&self.db).await? {
            Some(s) => serde_json::from_str(&s.value).map_err(ApiError::internal)?,
            None => Quotas::default(),
        })
    }

    /// Who may run pods on youki.
    pub async fn youki_access(&self) -> Result<RuntimeAccess, ApiError> {
        Ok(match setting::Entity::find_by_id(YOUKI_KEY.to_owned()).one(&self.db).await? {
            Some(s) => serde_json::from_str(&s.value).map_err(ApiError::internal)?,
            None => RuntimeAccess::default(),
        })
    }

    /// The settings, for the administrator.
    pub async fn show(&self, who: &Principal) -> Result<Settings, ApiError> {
        who.authorize(Action::Read, &Resource::Instance, "settings")?;
        self.current().await
    }

    /// Changes settings (administrator).
    pub async fn update(&self, who: &Principal, update: SettingsUpdate) -> Result<Settings, ApiError> {
        who.authorize(Action::Configure, &Resource::Instance, "settings")?;
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        if let Some(mode) = update.signup {
            store(&txn, SIGNUP_KEY, serde_json::to_string(&mode).map_err(ApiError::internal)?).await?;
            crate::audit::append(&txn, who, "settings.update", &format!("signup={}", mode.as_str())).await?;
        }
        if let Some(access) = update.youki {
            for tier in &access.tiers {
                if tier.parse::<pinacle_orchestrator::Tier>().is_err() {
                    return Err(ApiError::bad_request("unknown_tier", format!("unknown tier {tier:?} in youki.tiers")));
                }
            }
            store(&txn, YOUKI_KEY, serde_json::to_string(&access).map_err(ApiError::internal)?).await?;
            crate::audit::append(&txn, who, "settings.update", &format!("youki={}", access.describe())).await?;
        }
        if let Some(q) = update.quotas {
            store(&txn, QUOTAS_KEY, serde_json::to_string(&q).map_err(ApiError::internal)?).await?;
            let text = format!("quotas=user:{}pods/{}vcpus,team:{}pods/{}vcpus", q.user_pods, q.user_vcpus, q.team_pods, q.team_vcpus);
            crate::audit::append(&txn, who, "settings.update", &text).await?;
        }
        txn.commit().await?;
        drop(_w);
        self.current().await
    }
}
