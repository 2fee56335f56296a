//! What the sessions service does.

use super::*;

impl Sessions {
    /// Loads signing keys from the database, creating the first one (or a
    /// fresh one when the current key is older than the rotation period).
    pub async fn load_signing_keys(&self) -> Result<(), ApiError> {
        let current = signing_key::Entity::find()
            .filter(signing_key::Column::RetiredAt.is_null())
            .one(&self.db)
            .await?;
        let stale = current
            .as_ref()
            .is_none_or(|k| Utc::now() - k.created_at > Duration::seconds(self.config.key_rotation_secs));
        if stale {
            self.rotate_signing_key(None).await?;
        } else {
            self.reload_keys().await?;
        }
        Ok(())
    }

    /// How long a retired key keeps verifying: as long as the longest-lived
    /// token it may have signed (an access token, or a pod-session cookie).
    fn retired_key_lifetime(&self) -> Duration {
        Duration::seconds(self.config.access_ttl_secs.max(crate::pod_access::POD_SESSION_TTL_SECS))
    }

    /// How long a retired key verifies (and is published for) access tokens.
    fn access_window(&self) -> Duration {
        Duration::seconds(self.config.access_ttl_secs)
    }

    async fn reload_keys(&self) -> Result<(), ApiError> {
        let rows = signing_key::Entity::find().all(&self.db).await?;
        let ttl = self.retired_key_lifetime();
        let now = Utc::now();
        let mut inner = KeyRingInner { loaded_at: Some(now), ..Default::default() };
        for row in rows {
            if row.retired_at.is_some_and(|r| r + ttl <= now) {
                continue;
            }
            let decoding = DecodingKey::from_ed_components(&row.public_key)
                .map_err(|e| ApiError::internal(format!("signing key {}: {e}", row.kid)))?;
            if row.retired_at.is_none() {
                let pkcs8 = self
                    .master_key
                    .open(&key_context(&row.kid), &row.sealed_private_key)
                    .map_err(|e| ApiError::internal(format!("signing key {}: {e}", row.kid)))?;
                inner.current = Some((row.kid.clone(), EncodingKey::from_ed_der(&pkcs8), row.created_at));
            }
            inner.keys.insert(row.kid, LoadedKey { decoding, x: row.public_key, retired_at: row.retired_at });
        }
        *self.keyring.write() = inner;
        Ok(())
    }

    /// Makes a new signing key current and retires the old one, whose
    /// tokens stay valid until they expire. Returns the new key id.
    pub async fn rotate_signing_key(&self, who: Option<&Principal>) -> Result<String, ApiError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| ApiError::internal("key generation failed"))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| ApiError::internal("key generation failed"))?;
        let x = B64URL.encode(pair.public_key().as_ref());
        let kid = uuid::Uuid::now_v7().simple().to_string();
        let sealed = self.master_key.open_check_seal(&key_context(&kid), pkcs8.as_ref())?;
        let now = Utc::now();
        {
            let _w = self.write_lock.lock().await;
            let txn = self.db.begin().await?;
            signing_key::Entity::update_many()
                .col_expr(signing_key::Column::RetiredAt, Expr::value(now))
                .filter(signing_key::Column::RetiredAt.is_null())
                .exec(&txn)
                .await?;
            signing_key::ActiveModel {
                kid: Set(kid.clone()),
                sealed_private_key: Set(sealed),
                public_key: Set(x),
                created_at: Set(now),
                retired_at: Set(None),
            }
            .insert(&txn)
            .await?;
            // Keys whose tokens are all expired are of no further use.
            let dead = now - self.retired_key_lifetime();
            signing_key::Entity::delete_many().filter(signing_key::Column::RetiredAt.lt(dead)).exec(&txn).await?;
            if let Some(who) = who {
                crate::audit::append(&txn, who, "signing_key.rotate", &format!("signing_key:{kid}")).await?;
            }
            txn.commit().await?;
        }
        self.reload_keys().await?;
        tracing::info!(%kid, "new token-signing key in use");
        Ok(kid)
    }

    /// The published verification keys (`/.well-known/jwks.json`): those
    /// whose access tokens may still be alive. (Pod-session cookies are
    /// verified only here, with retired keys kept for their lifetime.)
    pub fn jwks(&self) -> serde_json::Value {
        let guard = self.keyring.read();
        let now = Utc::now();
        let window = self.access_window();
        let mut keys: Vec<_> = guard
            .keys
            .iter()
            .filter(|(_, k)| k.retired_at.is_none_or(|r| r + window > now))
            .map(|(kid, k)| {
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": k.x})
            })
            .collect();
        keys.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
        serde_json::json!({ "keys": keys })
    }

    fn sign_access_token(&self, user: &user::Model, session_id: &str) -> Result<String, ApiError> {
        let guard = self.keyring.read();
        let (kid, key, _) = guard.current.as_ref().ok_or_else(|| ApiError::internal("no signing key loaded"))?;
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: ISSUER.into(),
            sub: user.id.clone(),
            name: user.name.clone(),
            sid: session_id.to_owned(),
            iat: now,
            exp: now + self.config.access_ttl_secs,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &claims, key).map_err(ApiError::internal)
    }

    /// Checks an access token's signature, expiry and session.
    pub async fn verify_access_token(&self, token: &str) -> Result<Claims, ApiError> {
        let bad = |why: &str| ApiError::unauthorized(format!("access token refused: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("malformed"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(bad("unexpected algorithm"));
        }
        let kid = header.kid.ok_or_else(|| bad("no key id"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let decoded = {
            let window = self.access_window();
            let mut attempt = self.decode_with::<Claims>(&kid, token, &validation, window);
            if matches!(attempt, Err(KeyLookup::UnknownKey)) && self.may_reload_keys() {
                // Another server may have rotated: look again, at most once a second.
                self.reload_keys().await?;
                attempt = self.decode_with::<Claims>(&kid, token, &validation, window);
            }
            match attempt {
                Ok(c) => c,
                Err(KeyLookup::UnknownKey) => return Err(bad("signed by an unknown or expired key")),
                Err(KeyLookup::Invalid(e)) => {
                    return Err(match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::unauthenticated("token_expired",
                            "access token expired; get a new one with POST /api/v1/auth/refresh",
                        ),
                        _ => bad("invalid signature or claims"),
                    })
                }
            }
        };
        let live = session::Entity::find_by_id(decoded.sid.clone())
            .filter(session::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?;
        if live.is_none() {
            return Err(ApiError::unauthenticated("session_revoked", "this session was signed out or revoked; sign in again"));
        }
        Ok(decoded)
    }

    /// Decodes with key `kid` if it is current, or was retired less than
    /// `window` ago.
    fn decode_with<C: serde::de::DeserializeOwned>(&self, kid: &str, token: &str, v: &Validation, window: Duration) -> Result<C, KeyLookup> {
        let guard = self.keyring.read();
        let key = guard
            .keys
            .get(kid)
            .filter(|k| k.retired_at.is_none_or(|r| r + window > Utc::now()))
            .ok_or(KeyLookup::UnknownKey)?;
        jsonwebtoken::decode::<C>(token, &key.decoding, v).map(|d| d.claims).map_err(KeyLookup::Invalid)
    }

    /// Signs `claims` with the current key (for tokens other than access
    /// tokens: they carry another audience).
    pub(crate) fn sign_claims<C: Serialize>(&self, claims: &C) -> Result<String, ApiError> {
        let guard = self.keyring.read();
        let (kid, key, _) = guard.current.as_ref().ok_or_else(|| ApiError::internal("no signing key loaded"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).map_err(ApiError::internal)
    }

    /// Checks the signature, issuer, expiry and `audience` of a token
    /// signed by [`Self::sign_claims`]; `None` for any fault.
    pub(crate) async fn verify_claims<C: serde::de::DeserializeOwned>(&self, token: &str, audience: &str) -> Result<Option<C>, ApiError> {
        let Ok(header) = jsonwebtoken::decode_header(token) else { return Ok(None) };
        let (Algorithm::EdDSA, Some(kid)) = (header.alg, header.kid) else { return Ok(None) };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let window = self.retired_key_lifetime();
        let mut attempt = self.decode_with::<C>(&kid, token, &validation, window);
        if matches!(attempt, Err(KeyLookup::UnknownKey)) && self.may_reload_keys() {
            self.reload_keys().await?;
            attempt = self.decode_with::<C>(&kid, token, &validation, window);
        }
        Ok(attempt.ok())
    }

    /// Whether session `sid` is still signed in.
    pub(crate) async fn session_is_live(&self, sid: &str) -> Result<bool, ApiError> {
        Ok(session::Entity::find_by_id(sid.to_owned()).filter(session::Column::RevokedAt.is_null()).one(&self.db).await?.is_some())
    }

    fn may_reload_keys(&self) -> bool {
        let guard = self.keyring.read();
        guard.loaded_at.is_none_or(|t| Utc::now() - t > Duration::seconds(1))
    }

    /// Starts a session for `user` and returns its first token pair.
    pub async fn start_session(&self, user: &user::Model, source: &str) -> Result<TokenPair, ApiError> {
        let session_id = uuid::Uuid::new_v4().to_string();
        let now = Utc::now();
        let refresh = {
            let _w = self.write_lock.lock().await;
            let txn = self.db.begin().await?;
            // Sessions whose last refresh token expired are gone for good;
            // a session refreshed all along stays, however old it is.
            let live_families = sea_orm::sea_query::Query::select()
                .column(refresh_token::Column::SessionId)
                .from(refresh_token::Entity)
                .and_where(refresh_token::Column::ExpiresAt.gt(now))
                .to_owned();
            session::Entity::delete_many()
                .filter(session::Column::UserId.eq(user.id.clone()))
                .filter(session::Column::CreatedAt.lt(now - Duration::seconds(self.config.refresh_ttl_secs)))
                .filter(session::Column::Id.not_in_subquery(live_families))
                .exec(&txn)
                .await?;
            session::ActiveModel {
                id: Set(session_id.clone()),
                user_id: Set(user.id.clone()),
                created_at: Set(now),
                revoked_at: Set(None),
                revoked_reason: Set(None),
            }
            .insert(&txn)
            .await?;
            let refresh = self.insert_refresh_token(&txn, &session_id).await?;
            let who = Principal::system(&user.id, &user.name, source);
            crate::audit::append(&txn, &who, "session.start", &format!("session:{session_id}")).await?;
            txn.commit().await?;
            refresh
        };
        self.pair(user, &session_id, refresh)
    }

    fn pair(&self, user: &user::Model, session_id: &str, refresh: String) -> Result<TokenPair, ApiError> {
        Ok(TokenPair {
            access_token: self.sign_access_token(user, session_id)?,
            token_type: "Bearer",
            expires_in: self.config.access_ttl_secs,
            refresh_token: refresh,
            refresh_expires_in: self.config.refresh_ttl_secs,
        })
    }

    async fn insert_refresh_token<C: ConnectionTrait>(&self, db: &C, session_id: &str) -> Result<String, ApiError> {
        let secret = crate::principal::random_secret(REFRESH_PREFIX);
        let now = Utc::now();
        refresh_token::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            session_id: Set(session_id.to_owned()),
            token_hash: Set(hash_token(&secret)),
            created_at: Set(now),
            expires_at: Set(now + Duration::seconds(self.config.refresh_ttl_secs)),
            used_at: Set(None),
        }
        .insert(db)
        .await?;
        Ok(secret)
    }

    /// Trades a refresh token for a new pair. A token used before revokes
    /// its whole session (someone else has a copy).
    pub async fn refresh(&self, presented: &str, source: &str) -> Result<TokenPair, ApiError> {
        let refused = |code: &'static str, msg: &str| ApiError::unauthenticated(code, msg);
        if !presented.starts_with(REFRESH_PREFIX) || presented.len() > 200 {
            return Err(refused("invalid_refresh_token", "not a refresh token"));
        }
        let now = Utc::now();
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let Some(tok) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(hash_token(presented)))
            .one(&txn)
            .await?
        else {
            return Err(refused("invalid_refresh_token", "unknown refresh token; sign in again"));
        };
        let Some(sess) = session::Entity::find_by_id(tok.session_id.clone()).one(&txn).await? else {
            return Err(refused("invalid_refresh_token", "unknown refresh token; sign in again"));
        };
        let Some(u) = user::Entity::find_by_id(sess.user_id.clone()).one(&txn).await? else {
            return Err(refused("invalid_refresh_token", "unknown refresh token; sign in again"));
        };
        if sess.revoked_at.is_some() {
            return Err(refused("session_revoked", "this session was signed out or revoked; sign in again"));
        }
        let who = Principal::system(&u.id, &u.name, source);
        if tok.used_at.is_some() {
            revoke_session(&txn, &sess.id, "refresh token reused", now).await?;
            crate::audit::append(&txn, &who, "session.reuse_detected", &format!("session:{}", sess.id)).await?;
            txn.commit().await?;
            self.principals.clear();
            tracing::warn!(session = %sess.id, user = %u.name, %source, "refresh token reused: session revoked");
            return Err(refused(
                "refresh_token_reused",
                "this refresh token was already used; the session is revoked for safety; sign in again",
            ));
        }
        if tok.expires_at <= now {
            return Err(refused("refresh_token_expired", "refresh token expired; sign in again"));
        }
        refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
            .filter(refresh_token::Column::Id.eq(tok.id.clone()))
            .exec(&txn)
            .await?;
        let next = self.insert_refresh_token(&txn, &sess.id).await?;
        txn.commit().await?;
        drop(_w);
        self.pair(&u, &sess.id, next)
    }

    /// Signs a session out: its refresh and access tokens stop working.
    pub async fn end_session(&self, who: &Principal, session_id: &str) -> Result<(), ApiError> {
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let Some(sess) = session::Entity::find_by_id(session_id.to_owned()).one(&txn).await? else {
            return Err(ApiError::not_found("session not found"));
        };
        who.authorize(crate::policy::Action::Delete, &crate::policy::Resource::Token { owner: &sess.user_id }, "session")?;
        revoke_session(&txn, session_id, "signed out", Utc::now()).await?;
        crate::audit::append(&txn, who, "session.end", &format!("session:{session_id}")).await?;
        txn.commit().await?;
        self.principals.clear();
        Ok(())
    }

    /// The session a refresh token belongs to, if it is live.
    pub async fn session_of_refresh_token(&self, presented: &str) -> Result<Option<String>, ApiError> {
        Ok(refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(hash_token(presented)))
            .one(&self.db)
            .await?
            .map(|t| t.session_id))
    }
}
