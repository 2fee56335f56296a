//! What the accounts service does.

use super::*;

impl Accounts {
    /// Creates a local account, if the sign-up mode allows it.
    pub async fn signup(&self, req: SignupRequest, source: String) -> Result<user::Model, ApiError> {
        let mode = self.settings.current().await?.signup;
        match (mode, &req.invite) {
            (SignupMode::Closed, _) => {
                return Err(ApiError::forbidden("signup_closed",
                    "sign-up is closed on this server; ask the administrator for an account",
                ))
            }
            (SignupMode::Invite, None) => {
                return Err(ApiError::forbidden("invite_required",
                    "sign-up on this server needs an invitation code (field `invite`)",
                ))
            }
            _ => {}
        }
        check_user_name(&req.name).map_err(|m| ApiError::bad_request("invalid_name", m))?;
        check_password(&req.name, &req.password).map_err(|m| ApiError::bad_request("weak_password", m))?;
        let hash = hash_password_blocking(req.password.clone()).await?;
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let taken = || {
            ApiError::conflict(
                "name_taken",
                format!("the name {} is taken, or too close to another account's for unambiguous host names", req.name),
            )
        };
        if self.teams.account_name_taken(&txn, &req.name).await? {
            return Err(taken());
        }
        let model = match (user::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            name: Set(req.name.clone()),
            created_at: Set(Utc::now()),
            password_hash: Set(Some(hash)),
        })
        .insert(&txn)
        .await
        {
            Ok(m) => m,
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => return Err(taken()),
            Err(e) => return Err(e.into()),
        };
        let who = Principal::system(&model.id, &model.name, &source);
        crate::audit::append(&txn, &who, "user.signup", &format!("user:{}", model.id)).await?;
        if let (SignupMode::Invite, Some(code)) = (mode, &req.invite) {
            match self.teams.invite_admits_new_account(&txn, code).await? {
                None => return Err(ApiError::bad_request("invalid_invite", "invitation code is unknown, used or expired")),
                Some(false) => {
                    return Err(ApiError::forbidden("invite_not_for_signup",
                        "sign-up on this server needs an invitation from the administrator; a team invitation \
                         from a team admin does not create accounts (an existing user accepts it with POST /api/v1/invites/accept)",
                    ))
                }
                Some(true) => {}
            }
        }
        if let Some(code) = &req.invite {
            if let Some((team, role)) = self.teams.redeem_invite(&txn, code, &model.id).await? {
                crate::audit::append(&txn, &who, "team.member.join", &format!("team:{team} role:{role}")).await?;
            }
        }
        txn.commit().await?;
        Ok(model)
    }

    /// Checks a password and starts a session (access and refresh tokens).
    pub async fn login(&self, creds: Credentials, source: String) -> Result<TokenPair, ApiError> {
        let found = user::Entity::find().filter(user::Column::Name.eq(creds.name.clone())).one(&self.db).await?;
        let stored = found.as_ref().and_then(|u| u.password_hash.clone());
        let matches = verify_password_blocking(creds.password.clone(), stored.clone()).await?;
        let (Some(u), true, true) = (found, stored.is_some(), matches) else {
            return Err(ApiError::unauthenticated("invalid_credentials", "wrong user name or password"));
        };
        self.sessions.start_session(&u, &source).await
    }
}
