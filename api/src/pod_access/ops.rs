//! What the pod-access service does.

use super::*;

impl PodAccess {
    /// A sign-in link for a browser: the pod host's `/.pinacle/auth` with a
    /// one-minute, single-use token scoped to this pod, landing on `path`;
    /// `embed` for a page in the IDE's iframe.
    pub async fn open_link(
        &self,
        who: &Principal,
        key: &str,
        port: u16,
        path: Option<String>,
        embed: bool,
    ) -> Result<OpenLink, ApiError> {
        let site = self.proxy_site.get().cloned().ok_or_else(|| {
            ApiError::not_supported(
                "no proxy serves this Pinacle; start it with --proxy-listen or --proxy-tls-listen",
            )
        })?;
        if port == 0 {
            return Err(ApiError::bad_request(
                "invalid_request",
                "port must be 1 to 65535",
            ));
        }
        let path = path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.starts_with("//") || path.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_request",
                "path must be a path on the pod's host, starting with a single /",
            ));
        }
        let view = self.pods.find_pod(who, key, crate::policy::Action::Exec).await?;
        let owner = self.pods.pod_owner_name(&view).await?;
        let host = pinacle_orchestrator::hostname::host_for(
            &pinacle_orchestrator::hostname::Target::Port(port),
            &view.name,
            &owner,
            &site.domain,
        )
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
        let label = host
            .strip_suffix(&format!(".{}", site.domain))
            .unwrap_or(&host)
            .to_owned();
        let (token, ttl) = self.mint_pod_token(
            who,
            &view.id.to_string(),
            PodTokenKind::Login,
        )?;
        let origin = site.origin(&label);
        let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let url = format!(
            "{origin}/.pinacle/auth?token={token}&next={}{}",
            enc(&path),
            if embed { "&embed=1" } else { "" }
        );
        Ok(OpenLink {
            url,
            origin,
            host,
            expires_in: ttl,
        })
    }

    /// A token for `who` to use pod `pod_id` in a browser.
    pub fn mint_pod_token(&self, who: &Principal, pod_id: &str, kind: PodTokenKind) -> Result<(String, i64), ApiError> {
        let ttl = match kind {
            PodTokenKind::Login => POD_LOGIN_TTL_SECS,
            PodTokenKind::Session => POD_SESSION_TTL_SECS,
        };
        let now = chrono::Utc::now().timestamp();
        let claims = PodClaims {
            iss: ISSUER.into(),
            aud: pod_audience(pod_id),
            sub: who.user_id.clone(),
            name: who.user_name.clone(),
            sid: who.session_id.clone(),
            tid: who.token_id.clone(),
            kind,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat: now,
            exp: now + ttl,
        };
        Ok((self.sessions.sign_claims(&claims)?, ttl))
    }

    /// The principal behind a pod-scoped token of `kind` for `pod_id`, if
    /// the token is valid (signature, audience, expiry, live session, and
    /// for a login token, first use).
    pub async fn pod_token_principal(&self, token: &str, pod_id: &str, kind: PodTokenKind) -> Result<Option<Principal>, ApiError> {
        if token.len() > 4096 || !token.is_ascii() {
            return Ok(None);
        }
        let Some(claims) = self.sessions.verify_claims::<PodClaims>(token, &pod_audience(pod_id)).await? else {
            return Ok(None);
        };
        if claims.kind != kind {
            return Ok(None);
        }
        if let Some(sid) = &claims.sid {
            if !self.sessions.session_is_live(sid).await? {
                return Ok(None);
            }
        }
        if let Some(tid) = &claims.tid {
            if !self.auth.api_token_is_live(tid).await? {
                return Ok(None);
            }
        }
        if kind == PodTokenKind::Login
            && (!self.used_pod_logins.take(&claims.jti, claims.exp, chrono::Utc::now().timestamp())
                || !self.bus.claim_once(&format!("pod-login:{}", claims.jti), claims.exp).await)
        {
            return Ok(None);
        }
        let Some(user) = crate::entities::user::Entity::find_by_id(claims.sub.clone()).one(&self.db).await? else {
            return Ok(None);
        };
        let mut p = Principal::system(&user.id, &user.name, "proxy");
        p.subject.teams = self.auth.team_roles(&user.id).await?;
        p.session_id = claims.sid;
        p.token_id = claims.tid;
        Ok(Some(p))
    }
}
