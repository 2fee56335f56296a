//! Instance settings the administrator changes at run time.

use sea_orm::{ActiveModelTrait, EntityTrait, Set, TransactionTrait};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::entities::setting;
use crate::policy::{Action, Resource};
use crate::{ApiError, AppState};

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SignupMode {
    /// Anyone who reaches the server.
    #[default]
    Open,
    /// Only with an invitation code.
    Invite,
    /// Nobody.
    Closed,
}

impl SignupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SignupMode::Open => "open",
            SignupMode::Invite => "invite",
            SignupMode::Closed => "closed",
        }
    }
}

/// The settings as shown and changed (`GET`/`PATCH /api/v1/admin/settings`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    pub signup: SignupMode,
}

/// A change; absent fields stay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    #[serde(default)]
    pub signup: Option<SignupMode>,
}

const SIGNUP_KEY: &str = "signup";

impl AppState {
    /// The current settings.
    pub async fn settings(&self) -> Result<Settings, ApiError> {
        let signup = match setting::Entity::find_by_id(SIGNUP_KEY.to_owned()).one(&self.db).await? {
            Some(s) => serde_json::from_str(&s.value).map_err(ApiError::internal)?,
            None => SignupMode::default(),
        };
        Ok(Settings { signup })
    }

    /// The settings, for the administrator.
    pub async fn show_settings(&self, who: &Principal) -> Result<Settings, ApiError> {
        who.authorize(Action::Read, &Resource::Instance, "settings")?;
        self.settings().await
    }

    /// Changes settings (administrator).
    pub async fn update_settings(&self, who: &Principal, update: SettingsUpdate) -> Result<Settings, ApiError> {
        who.authorize(Action::Configure, &Resource::Instance, "settings")?;
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        if let Some(mode) = update.signup {
            let value = serde_json::to_string(&mode).map_err(ApiError::internal)?;
            let row = setting::ActiveModel { key: Set(SIGNUP_KEY.to_owned()), value: Set(value) };
            if setting::Entity::find_by_id(SIGNUP_KEY.to_owned()).one(&txn).await?.is_some() {
                row.update(&txn).await?;
            } else {
                row.insert(&txn).await?;
            }
            crate::audit::append(&txn, who, "settings.update", &format!("signup={}", mode.as_str())).await?;
        }
        txn.commit().await?;
        drop(_w);
        self.settings().await
    }
}
