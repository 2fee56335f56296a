//! What the SSH access service does.

use super::*;

impl SshAccess {
    /// The certificate authorities, made on first use.
    pub async fn ssh_authorities(&self) -> Result<Arc<SshAuthorities>, ApiError> {
        self.ssh_cas
            .get_or_try_init(|| async {
                let user_ca = self.load_or_create_ca(USER_CA_SETTING, "pinacle user CA").await?;
                let host_ca = self.load_or_create_ca(HOST_CA_SETTING, "pinacle host CA").await?;
                Ok::<_, ApiError>(Arc::new(SshAuthorities { user_ca, host_ca }))
            })
            .await
            .cloned()
    }

    async fn load_or_create_ca(&self, name: &str, comment: &str) -> Result<PrivateKey, ApiError> {
        let open = |row: setting::Model| -> Result<PrivateKey, ApiError> {
            let pem = self.master_key.open(name, &row.value).map_err(ApiError::internal)?;
            PrivateKey::from_openssh(&pem).map_err(ApiError::internal)
        };
        if let Some(row) = setting::Entity::find_by_id(name.to_owned()).one(&self.db).await? {
            return open(row);
        }
        let key = new_ed25519_key(comment).map_err(ApiError::internal)?;
        let pem = key.to_openssh(LineEnding::LF).map_err(ApiError::internal)?;
        let sealed = self.master_key.seal(name, pem.as_bytes()).map_err(ApiError::internal)?;
        let row = setting::ActiveModel { key: Set(name.to_owned()), value: Set(sealed) };
        match row.insert(&self.db).await {
            Ok(_) => Ok(key),
            // another process made it first: use theirs
            Err(_) => match setting::Entity::find_by_id(name.to_owned()).one(&self.db).await? {
                Some(row) => open(row),
                None => Err(ApiError::internal(format!("cannot store the {comment}"))),
            },
        }
    }

    /// Public facts about SSH access.
    pub async fn ssh_info(&self) -> Result<SshInfo, ApiError> {
        let cas = self.ssh_authorities().await?;
        let line = |k: &PrivateKey| k.public_key().to_openssh().map_err(ApiError::internal);
        Ok(SshInfo { gateway: self.ssh_site.get().cloned(), host_ca: line(&cas.host_ca)?, user_ca: line(&cas.user_ca)? })
    }

    /// A certificate for `public_key` that lets `who` into pod `key` over
    /// SSH for [`USER_CERT_LIFETIME`].
    pub async fn issue_ssh_certificate(&self, who: &Principal, key: &str, public_key: &str) -> Result<SshCertificateView, ApiError> {
        let pod = self.pods.find_pod(who, key, Action::Exec).await?;
        let checked = crate::workspace::check_public_key(public_key).map_err(|m| ApiError::bad_request("invalid_public_key", m))?;
        let public = PublicKey::from_openssh(&checked.openssh).map_err(|e| ApiError::bad_request("invalid_public_key", e.to_string()))?;
        let cas = self.ssh_authorities().await?;
        let now = SystemTime::now();
        let lifetime = self.ssh_cert_lifetime.get().copied().unwrap_or(USER_CERT_LIFETIME);
        let cert = sign_user_certificate(&cas.user_ca, &public, &who.user_id, &pod.id.to_string(), now, lifetime)
            .map_err(ApiError::internal)?;
        let login = self.ssh_login(&pod).await?;
        self.audit.record(who, "ssh.certificate", &format!("pod:{} ({}) key {}", pod.id, pod.name, checked.fingerprint)).await?;
        Ok(SshCertificateView {
            certificate: cert.to_openssh().map_err(ApiError::internal)?,
            login,
            pod_id: pod.id.to_string(),
            valid_before: chrono::DateTime::<chrono::Utc>::from(now + lifetime),
            gateway: self.ssh_site.get().cloned(),
            host_ca: cas.host_ca.public_key().to_openssh().map_err(ApiError::internal)?,
        })
    }

    /// Pod `key`'s own SSH key (its public half), if `who` may read the pod.
    pub async fn pod_ssh_key(&self, who: &Principal, key: &str) -> Result<PodKeyView, ApiError> {
        let pod = self.pods.find_pod(who, key, Action::Read).await?;
        let agent = self.pods.agent_of(&pod)?;
        let record = pod.record()?;
        let k = agent
            .pod_key(&record)
            .await
            .map_err(crate::hosts::host_error)?
            .ok_or_else(|| ApiError::conflict("pod_not_running", format!("pod {}'s key is on its disk: start the pod to read it (or its ~/.ssh/id_ed25519 is not a key Pinacle made; rotate-keys replaces it)", pod.name)))?;
        Ok(PodKeyView { public_key: k.public_key, fingerprint: k.fingerprint })
    }

    /// Replaces pod `key`'s own SSH key with a new one.
    pub async fn rotate_pod_ssh_key(&self, who: &Principal, key: &str) -> Result<PodKeyView, ApiError> {
        let pod = self.pods.find_pod(who, key, Action::Configure).await?;
        let agent = self.pods.agent_of(&pod)?;
        let record = pod.record()?;
        let k = agent.rotate_pod_key(&record).await.map_err(|e| match e {
            pinacle_host_api::HostError::Busy(_) => ApiError::conflict("pod_busy", format!("pod {} is changing state; try again", pod.name)),
            other => crate::hosts::host_error(other),
        })?;
        self.audit.record(who, "pod.rotate_keys", &format!("pod:{} ({}) new key {}", pod.id, pod.name, k.fingerprint)).await?;
        Ok(PodKeyView { public_key: k.public_key, fingerprint: k.fingerprint })
    }

    /// The SSH login name of `pod`: its name, or `name.team` for a team's.
    pub async fn ssh_login(&self, pod: &crate::service::PodView) -> Result<String, ApiError> {
        Ok(match &pod.team_id {
            Some(team_id) => {
                let team = crate::entities::team::Entity::find_by_id(team_id.clone()).one(&self.db).await?;
                format!("{}.{}", pod.name, team.map(|t| t.name).unwrap_or_else(|| team_id.clone()))
            }
            None => pod.name.to_string(),
        })
    }

    /// The user a registered public key belongs to (noting its use).
    pub async fn ssh_key_owner(&self, key: &PublicKey) -> Result<Option<String>, ApiError> {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let Some(row) = ssh_key_row::Entity::find().filter(ssh_key_row::Column::Fingerprint.eq(fingerprint)).one(&self.db).await? else {
            return Ok(None);
        };
        let now = chrono::Utc::now();
        if row.last_used_at.is_none_or(|t| now - t > chrono::Duration::seconds(60)) {
            ssh_key_row::Entity::update_many()
                .col_expr(ssh_key_row::Column::LastUsedAt, sea_orm::sea_query::Expr::value(now))
                .filter(ssh_key_row::Column::Id.eq(row.id.clone()))
                .exec(&self.db)
                .await?;
        }
        Ok(Some(row.user_id))
    }

    /// The principal of user `user_id` acting over SSH from `source`, with
    /// their team roles; `None` for a user that no longer exists.
    pub async fn principal_for_user(&self, user_id: &str, source: &str) -> Result<Option<Principal>, ApiError> {
        let Some(u) = user::Entity::find_by_id(user_id.to_owned()).one(&self.db).await? else {
            return Ok(None);
        };
        let mut p = Principal::system(&u.id, &u.name, source);
        p.subject.teams = self.auth.team_roles(&u.id).await?;
        Ok(Some(p))
    }
}
