//! What the GitHub sign-in service does.

use super::*;

impl GithubAuth {
    /// Starts a sign-in: the authorize URL to send the browser to, and the
    /// nonce for the binding cookie.
    pub fn start(&self) -> Result<(String, String), ApiError> {
        let gh = self.github.get().ok_or_else(not_configured)?;
        let nonce = crate::principal::random_secret("");
        let sealed = SealedState { nonce: nonce.clone(), exp: (Utc::now() + Duration::seconds(STATE_TTL_SECS)).timestamp() };
        let json = serde_json::to_vec(&sealed).map_err(ApiError::internal)?;
        let state = self.master_key.seal(STATE_CONTEXT, &json).map_err(ApiError::internal)?;
        let url = format!(
            "{}/login/oauth/authorize?client_id={}&redirect_uri={}&scope={}&state={}&allow_signup=true",
            gh.oauth_url.trim_end_matches('/'),
            encode_query_value(&gh.client_id),
            encode_query_value(&gh.redirect_url),
            encode_query_value("read:user user:email"),
            encode_query_value(&state),
        );
        Ok((url, nonce))
    }

    /// Completes a sign-in from GitHub's redirect; `cookie_nonce` is the
    /// binding cookie's value.
    pub async fn callback(
        &self,
        q: CallbackQuery,
        cookie_nonce: Option<&str>,
        source: &str,
    ) -> Result<GithubSignIn, ApiError> {
        let gh = self.github.get().ok_or_else(not_configured)?;
        if let Some(err) = q.error {
            let why = q.error_description.unwrap_or_else(|| err.clone());
            return Err(refused("github_denied", format!("GitHub sign-in was not completed: {why}")));
        }
        let (Some(code), Some(state)) = (q.code, q.state) else {
            return Err(ApiError::bad_request("invalid_request", "the callback needs code and state"));
        };
        let bad_state = || refused("invalid_state", "this sign-in link is invalid or expired, or was started in another browser; start again");
        let opened = self.master_key.open(STATE_CONTEXT, &state).map_err(|_| bad_state())?;
        let sealed: SealedState = serde_json::from_slice(&opened).map_err(|_| bad_state())?;
        if sealed.exp < Utc::now().timestamp() || cookie_nonce != Some(sealed.nonce.as_str()) {
            return Err(bad_state());
        }

        // The code for a token, at GitHub's token endpoint.
        let oauth = octocrab::Octocrab::builder()
            .base_uri(gh.oauth_url.as_str())
            .map_err(ApiError::internal)?
            .add_header(axum::http::header::ACCEPT, "application/json".to_owned())
            .build()
            .map_err(ApiError::internal)?;
        let body = serde_json::json!({
            "client_id": gh.client_id,
            "client_secret": gh.client_secret,
            "code": code,
            "redirect_uri": gh.redirect_url,
        });
        let token: TokenResponse = oauth.post("/login/oauth/access_token", Some(&body)).await.map_err(upstream)?;
        let access = match (token.access_token, token.error) {
            (Some(t), None) => t,
            (_, err) => {
                let why = token.error_description.or(err).unwrap_or_else(|| "no token".into());
                return Err(refused("github_denied", format!("GitHub refused the sign-in: {why}")));
            }
        };
        // Who that is, from the REST API.
        let api = octocrab::Octocrab::builder()
            .base_uri(gh.api_url.as_str())
            .map_err(ApiError::internal)?
            .user_access_token(access)
            .build()
            .map_err(ApiError::internal)?;
        let me = api.current().user().await.map_err(upstream)?;
        let github_id = me.id.0;
        let (u, created) = self.user_for_github(github_id, &me.login, source).await?;
        let tokens = self.sessions.start_session(&u, source).await?;
        tracing::info!(user = %u.name, github = %me.login, created, "signed in with GitHub");
        Ok(GithubSignIn {
            user: serde_json::json!({"id": u.id, "name": u.name, "github_login": me.login}),
            created,
            tokens,
        })
    }

    /// The user linked to a GitHub id, creating (and linking) one when
    /// sign-up is open.
    async fn user_for_github(&self, github_id: u64, login: &str, source: &str) -> Result<(user::Model, bool), ApiError> {
        let subject = github_id.to_string();
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let linked = user_identity::Entity::find()
            .filter(user_identity::Column::Provider.eq("github"))
            .filter(user_identity::Column::Subject.eq(subject.clone()))
            .one(&txn)
            .await?;
        if let Some(link) = linked {
            let u = user::Entity::find_by_id(link.user_id.clone()).one(&txn).await?.ok_or_else(|| ApiError::internal("linked user is gone"))?;
            if link.login != login {
                // a renamed GitHub account: repository access is checked by
                // login, and the old one may be someone else's now
                let mut m: user_identity::ActiveModel = link.into();
                m.login = Set(login.to_owned());
                m.update(&txn).await?;
                txn.commit().await?;
            }
            return Ok((u, false));
        }
        match self.settings.current().await?.signup {
            SignupMode::Open => {}
            mode => {
                return Err(ApiError::forbidden(if mode == SignupMode::Closed { "signup_closed" } else { "invite_required" },
                    "no Pinacle account is linked to this GitHub account, and sign-up on this server is not open",
                ))
            }
        }
        let mut name = None;
        for candidate in candidate_names(login, github_id) {
            if !self.teams.account_name_taken(&txn, &candidate).await? {
                name = Some(candidate);
                break;
            }
        }
        let name = name.ok_or_else(|| ApiError::conflict("name_taken", format!("no free user name for GitHub user {login}")))?;
        let now = Utc::now();
        let u = user::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            name: Set(name),
            created_at: Set(now),
            password_hash: Set(None),
        }
        .insert(&txn)
        .await?;
        user_identity::ActiveModel {
            provider: Set("github".into()),
            subject: Set(subject),
            user_id: Set(u.id.clone()),
            login: Set(login.to_owned()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let who = Principal::system(&u.id, &u.name, source);
        crate::audit::append(&txn, &who, "user.signup", &format!("user:{} github:{github_id} ({login})", u.id)).await?;
        txn.commit().await?;
        Ok((u, true))
    }
}
