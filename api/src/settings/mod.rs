//! Instance settings the administrator changes at run time.

use sea_orm::{ActiveModelTrait, EntityTrait, Set, TransactionTrait};
use serde::{Deserialize, Serialize};

use crate::principal::Principal;
use crate::entities::setting;
use crate::policy::{Action, Resource};
use crate::ApiError;

mod ops;

/// The instance's settings (sign-up mode, who may use youki, quotas), kept
/// in the database; changes are the administrator's and audited.
#[derive(Clone)]
pub struct InstanceSettings {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl InstanceSettings {
    /// `write_lock`: the one that serialises the database's writers.
    pub fn new(db: sea_orm::DatabaseConnection, write_lock: std::sync::Arc<tokio::sync::Mutex<()>>) -> Self {
        Self { db, write_lock }
    }
}

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

/// Who may run pods on youki: the host's kernel, behind a syscall filter
/// and a user namespace, rather than gVisor's user-space kernel. Faster,
/// but a kernel bug is then a way out of the pod, so by default nobody
/// (gVisor for everyone); the administrator allows it for everyone, for
/// pods of some teams, or for pods of some tiers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeAccess {
    #[serde(default)]
    pub everyone: bool,
    /// Team names: those teams' pods.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Tier ids (`dev.small`, ...): pods of those tiers.
    #[serde(default)]
    pub tiers: Vec<String>,
}

impl RuntimeAccess {
    /// Whether a pod of `team` (none: a personal pod) and `tier` may run on it.
    pub fn allows(&self, team: Option<&str>, tier: &str) -> bool {
        self.everyone || team.is_some_and(|t| self.teams.iter().any(|a| a == t)) || self.tiers.iter().any(|a| a == tier)
    }

    fn describe(&self) -> String {
        if self.everyone {
            return "everyone".into();
        }
        format!("teams=[{}] tiers=[{}]", self.teams.join(","), self.tiers.join(","))
    }
}

/// How much one tenant may hold, so that one account (sign-up is open by
/// default) cannot take a host's whole capacity from everyone else.
/// Personal pods count against their owner, team pods against the team.
/// Pods count until deleted; vCPUs count while a pod is not stopped (a
/// failed pod too: delete or stop it).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    pub user_pods: u32,
    pub user_vcpus: u32,
    pub team_pods: u32,
    pub team_vcpus: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas { user_pods: 10, user_vcpus: 8, team_pods: 50, team_vcpus: 32 }
    }
}

impl Quotas {
    /// Why a tenant holding `pods` pods and `vcpus` vCPUs (not stopped) may
    /// not add `more_pods` pods and `more_vcpus` vCPUs; `None` if it may.
    pub fn refusal(&self, team: bool, pods: u32, vcpus: u32, more_pods: u32, more_vcpus: u32) -> Option<String> {
        let (max_pods, max_vcpus, whose) =
            if team { (self.team_pods, self.team_vcpus, "the team") } else { (self.user_pods, self.user_vcpus, "you") };
        if pods.saturating_add(more_pods) > max_pods {
            return Some(format!("{whose} already have {pods} pods, the most allowed ({max_pods}); delete one first"));
        }
        if vcpus.saturating_add(more_vcpus) > max_vcpus {
            return Some(format!(
                "{whose} already run {vcpus} of at most {max_vcpus} vCPUs and this pod needs {more_vcpus}; stop a pod or choose a smaller tier"
            ));
        }
        None
    }
}

/// The settings as shown and changed (`GET`/`PATCH /api/v1/admin/settings`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    pub signup: SignupMode,
    /// Who may ask for `runtime: youki`.
    pub youki: RuntimeAccess,
    /// Per-tenant limits.
    pub quotas: Quotas,
}

/// A change; absent fields stay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    #[serde(default)]
    pub signup: Option<SignupMode>,
    #[serde(default)]
    pub youki: Option<RuntimeAccess>,
    #[serde(default)]
    pub quotas: Option<Quotas>,
}

const SIGNUP_KEY: &str = "signup";
const YOUKI_KEY: &str = "runtime.youki";
const QUOTAS_KEY: &str = "quotas";

/// Writes `value` (JSON) as setting `key`, inside `txn`.
async fn store(txn: &sea_orm::DatabaseTransaction, key: &str, value: String) -> Result<(), ApiError> {
    let row = setting::ActiveModel { key: Set(key.to_owned()), value: Set(value) };
    if setting::Entity::find_by_id(key.to_owned()).one(txn).await?.is_some() {
        row.update(txn).await?;
    } else {
        row.insert(txn).await?;
    }
    Ok(())
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn youki_access_by_default_nobody_then_everyone_teams_or_tiers() {
        assert!(!RuntimeAccess::default().allows(Some("acme"), "dev-small"));
        assert!(!RuntimeAccess::default().allows(None, "dev-small"));
        assert!(RuntimeAccess { everyone: true, ..Default::default() }.allows(None, "dev-small"));
        let teams = RuntimeAccess { teams: vec!["acme".into()], ..Default::default() };
        assert!(teams.allows(Some("acme"), "dev-small"));
        assert!(!teams.allows(Some("other"), "dev-small"));
        assert!(!teams.allows(None, "dev-small"), "a personal pod is no team's");
        let tiers = RuntimeAccess { tiers: vec!["dev-large".into()], ..Default::default() };
        assert!(tiers.allows(None, "dev-large"));
        assert!(!tiers.allows(None, "dev-small"));
        // the stored form refuses unknown fields (a typo must not silently allow nothing)
        assert!(serde_json::from_str::<RuntimeAccess>(r#"{"everyone":true,"team":["x"]}"#).is_err());
    }

    #[test]
    fn quotas_count_pods_and_running_vcpus_per_tenant() {
        let q = Quotas { user_pods: 2, user_vcpus: 3, team_pods: 5, team_vcpus: 8 };
        assert_eq!(q.refusal(false, 1, 1, 1, 2), None);
        assert!(q.refusal(false, 2, 0, 1, 1).unwrap().contains("2 pods"));
        assert!(q.refusal(false, 1, 2, 1, 2).unwrap().contains("vCPUs"));
        // starting a stopped pod adds vCPUs, not pods
        assert_eq!(q.refusal(false, 2, 1, 0, 2), None);
        assert_eq!(q.refusal(true, 4, 6, 1, 2), None);
        assert!(q.refusal(true, 5, 0, 1, 1).unwrap().starts_with("the team"));
        assert!(q.refusal(false, u32::MAX, u32::MAX, 1, 1).is_some(), "no overflow");
    }
}
