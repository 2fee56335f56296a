//! What the web IDE keeps per user: SSH public keys and, per pod, the
//! workspace layout (its tabs); and a running pod's resource use.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::Serialize;

use crate::auth::Principal;
use crate::entities::{ssh_key, workspace_layout};
use crate::policy::Action;
use crate::{ApiError, AppState};

/// Longest accepted public key line.
pub const MAX_PUBLIC_KEY_BYTES: usize = 16 * 1024;
/// Most keys one user may register.
pub const MAX_KEYS_PER_USER: usize = 50;
/// Largest saved layout (JSON).
pub const MAX_LAYOUT_BYTES: usize = 64 * 1024;

/// A registered SSH key, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct SshKeyView {
    pub id: String,
    pub name: String,
    pub algorithm: String,
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ssh_key::Model> for SshKeyView {
    fn from(m: ssh_key::Model) -> Self {
        SshKeyView {
            id: m.id,
            name: m.name,
            algorithm: m.algorithm,
            fingerprint: m.fingerprint,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
        }
    }
}

/// A checked OpenSSH public key line: algorithm, `SHA256:` fingerprint and
/// the key without its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedKey {
    pub algorithm: String,
    pub fingerprint: String,
    pub openssh: String,
}

/// Reads one OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
pub fn check_public_key(text: &str) -> Result<CheckedKey, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("paste a public key, e.g. the contents of ~/.ssh/id_ed25519.pub".into());
    }
    if text.len() > MAX_PUBLIC_KEY_BYTES {
        return Err(format!(
            "a public key is at most {MAX_PUBLIC_KEY_BYTES} bytes"
        ));
    }
    if text.contains("PRIVATE KEY") {
        return Err("this is a private key; paste the public key (the .pub file) and keep the private key secret".into());
    }
    if text.lines().count() > 1 {
        return Err("one key at a time: the text has several lines".into());
    }
    let key = ::ssh_key::PublicKey::from_openssh(text).map_err(|e| {
        format!(
            "not an OpenSSH public key ({e}); expected a line like `ssh-ed25519 AAAA... you@host`"
        )
    })?;
    let openssh = key
        .to_openssh()
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    let openssh = openssh
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    Ok(CheckedKey {
        algorithm: key.algorithm().as_str().to_owned(),
        fingerprint: key.fingerprint(::ssh_key::HashAlg::Sha256).to_string(),
        openssh,
    })
}

impl AppState {
    /// The caller's SSH keys, oldest first.
    pub async fn list_ssh_keys(&self, who: &Principal) -> Result<Vec<SshKeyView>, ApiError> {
        Ok(ssh_key::Entity::find()
            .filter(ssh_key::Column::UserId.eq(who.user_id.as_str()))
            .order_by_asc(ssh_key::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Registers a public key for the caller. A key belongs to one account.
    pub async fn add_ssh_key(
        &self,
        who: &Principal,
        name: &str,
        public_key: &str,
    ) -> Result<SshKeyView, ApiError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_name",
                "a key's name is 1 to 100 characters, without control characters",
            ));
        }
        let key = check_public_key(public_key)
            .map_err(|m| ApiError::bad_request("invalid_public_key", m))?;
        if self.list_ssh_keys(who).await?.len() >= MAX_KEYS_PER_USER {
            return Err(ApiError::conflict(
                "too_many_keys",
                format!("at most {MAX_KEYS_PER_USER} keys per account; delete one first"),
            ));
        }
        if ssh_key::Entity::find()
            .filter(ssh_key::Column::Fingerprint.eq(key.fingerprint.as_str()))
            .one(&self.db)
            .await?
            .is_some()
        {
            return Err(ApiError::conflict(
                "ssh_key_exists",
                format!("the key {} is already registered", key.fingerprint),
            ));
        }
        let model = ssh_key::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            user_id: Set(who.user_id.clone()),
            name: Set(name.to_owned()),
            algorithm: Set(key.algorithm),
            fingerprint: Set(key.fingerprint.clone()),
            public_key: Set(key.openssh),
            created_at: Set(Utc::now()),
            last_used_at: Set(None),
        }
        .insert(&self.db)
        .await
        .map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => ApiError::conflict(
                "ssh_key_exists",
                format!("the key {} is already registered", key.fingerprint),
            ),
            _ => e.into(),
        })?;
        self.audit(
            who,
            "ssh_key.add",
            &format!("{} ({})", model.fingerprint, model.name),
        )
        .await?;
        Ok(model.into())
    }

    /// Removes one of the caller's keys.
    pub async fn delete_ssh_key(&self, who: &Principal, id: &str) -> Result<(), ApiError> {
        let key = ssh_key::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .filter(|k| k.user_id == who.user_id)
            .ok_or_else(|| ApiError::not_found(format!("SSH key {id} not found")))?;
        ssh_key::Entity::delete_by_id(key.id.clone())
            .exec(&self.db)
            .await?;
        self.audit(
            who,
            "ssh_key.delete",
            &format!("{} ({})", key.fingerprint, key.name),
        )
        .await
    }

    /// `who`'s saved layout for `pod`, a pod already found for them (the
    /// policy was asked then).
    pub async fn workspace_layout(&self, who: &Principal, pod: &crate::service::PodView) -> Result<Option<serde_json::Value>, ApiError> {
        let row = workspace_layout::Entity::find_by_id((who.user_id.clone(), pod.id.to_string())).one(&self.db).await?;
        Ok(row.and_then(|r| serde_json::from_str(&r.layout).ok()))
    }

    /// Saves the caller's layout for a pod (any JSON object the web app
    /// writes, 64 KiB at most).
    pub async fn save_workspace_layout(
        &self,
        who: &Principal,
        pod_key: &str,
        layout: &serde_json::Value,
    ) -> Result<(), ApiError> {
        if !layout.is_object() {
            return Err(ApiError::bad_request(
                "invalid_layout",
                "a layout is a JSON object",
            ));
        }
        let text = layout.to_string();
        if text.len() > MAX_LAYOUT_BYTES {
            return Err(ApiError::bad_request(
                "invalid_layout",
                format!("a layout is at most {MAX_LAYOUT_BYTES} bytes of JSON"),
            ));
        }
        let pod = self.find_pod(who, pod_key, Action::Read).await?;
        let row = workspace_layout::ActiveModel {
            user_id: Set(who.user_id.clone()),
            pod_id: Set(pod.id.to_string()),
            layout: Set(text),
            updated_at: Set(Utc::now()),
        };
        workspace_layout::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::columns([
                    workspace_layout::Column::UserId,
                    workspace_layout::Column::PodId,
                ])
                .update_columns([
                    workspace_layout::Column::Layout,
                    workspace_layout::Column::UpdatedAt,
                ])
                .to_owned(),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// What `pod` (already found for the caller) uses now; `None` unless it
    /// runs on this server's host.
    pub async fn pod_usage(&self, pod: &crate::service::PodView) -> Option<pinacle_host_agent::agent::PodUsage> {
        if pod.state != pinacle_orchestrator::PodState::Running {
            return None;
        }
        let agent = self.local_agent.get().filter(|a| a.host_id() == pod.host)?;
        Some(agent.usage(pod.id).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_are_checked_and_fingerprinted_like_ssh_keygen() {
        // what `ssh-keygen -lf` printed for this key
        let k = check_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAslebIX1AsoKLpkR9B6kXvkJKXv7rNiPDCrRgoZj5b2 alice@laptop\n").unwrap();
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(
            k.fingerprint,
            "SHA256:/yZTBcM2GWnpSuguwKMyme8cRmh3n/YIGvTLiW9mEIM"
        );
        assert!(
            !k.openssh.contains("alice"),
            "the comment is dropped: {}",
            k.openssh
        );
        assert!(check_public_key("").unwrap_err().contains("paste"));
        assert!(check_public_key("-----BEGIN OPENSSH PRIVATE KEY-----\nabc")
            .unwrap_err()
            .contains("private key"));
        assert!(check_public_key("ssh-ed25519 notbase64!")
            .unwrap_err()
            .contains("not an OpenSSH public key"));
        assert!(check_public_key("ssh-ed25519 AAAA\nssh-rsa BBBB")
            .unwrap_err()
            .contains("several lines"));
    }
}
