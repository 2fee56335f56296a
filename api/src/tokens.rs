//! API tokens for automation: shown once, stored hashed, scoped, expiring,
//! revocable, with their last use recorded.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait};
use serde::{Deserialize, Serialize};

use crate::principal::{generate_token, hash_token, Principal};
use crate::entities::api_token;
use crate::policy::{Action, Resource, Scope};
use crate::ApiError;

/// Longest lifetime a token can be created with.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 366 * 24 * 3600;

/// `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    #[serde(default)]
    pub scope: Option<Scope>,
    /// Lifetime in seconds (1 to one year); none: until revoked.
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
}

/// A token as listed (never with its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<api_token::Model> for TokenView {
    fn from(m: api_token::Model) -> Self {
        TokenView {
            scope: Scope::parse_stored(&m.scope),
            id: m.id,
            name: m.name,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
            expires_at: m.expires_at,
        }
    }
}

/// Principals by bearer-token hash, with their credential's expiry: what
/// [`crate::auth`] caches and every change to tokens, sessions or team
/// membership clears.
pub type PrincipalCache = crate::cache::ReadCache<String, (Principal, Option<DateTime<Utc>>)>;

/// API tokens as a service: created (shown once), listed, revoked.
#[derive(Clone)]
pub struct ApiTokens {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Cleared by a revocation: the token stops working at once.
    principals: std::sync::Arc<PrincipalCache>,
}

impl ApiTokens {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
        principals: std::sync::Arc<PrincipalCache>,
    ) -> Self {
        Self { db, write_lock, principals }
    }

    /// Creates a token for the caller; the secret is in the answer only.
    pub async fn create(&self, who: &Principal, req: CreateTokenRequest) -> Result<(TokenView, String), ApiError> {
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request("invalid_name", "token name must be 1 to 64 printable characters"));
        }
        let expires_at = match req.expires_in_seconds {
            None => None,
            Some(s) if (1..=MAX_TOKEN_LIFETIME_SECS).contains(&s) => Some(Utc::now() + Duration::seconds(s)),
            Some(s) => {
                return Err(ApiError::bad_request(
                    "invalid_expiry",
                    format!("expires_in_seconds is {s}; use 1 to {MAX_TOKEN_LIFETIME_SECS} (one year), or leave it out"),
                ))
            }
        };
        who.authorize(Action::Create, &Resource::Token { owner: &who.user_id }, "token")?;
        let secret = generate_token();
        let scope = req.scope.unwrap_or(Scope::Full);
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        // Expired tokens (sign-in sessions above all) are dead weight: drop
        // the caller's before adding one.
        api_token::Entity::delete_many()
            .filter(api_token::Column::UserId.eq(who.user_id.clone()))
            .filter(api_token::Column::ExpiresAt.lte(Utc::now()))
            .exec(&txn)
            .await?;
        let model = api_token::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            user_id: Set(who.user_id.clone()),
            name: Set(name.to_owned()),
            token_hash: Set(hash_token(&secret)),
            created_at: Set(Utc::now()),
            last_used_at: Set(None),
            scope: Set(scope.as_str().to_owned()),
            expires_at: Set(expires_at),
        }
        .insert(&txn)
        .await?;
        crate::audit::append(&txn, who, "token.create", &format!("token:{} ({name}, {})", model.id, scope.as_str())).await?;
        txn.commit().await?;
        Ok((model.into(), secret))
    }

    /// The caller's tokens, newest first.
    pub async fn list(&self, who: &Principal) -> Result<Vec<TokenView>, ApiError> {
        Ok(api_token::Entity::find()
            .filter(api_token::Column::UserId.eq(who.user_id.clone()))
            .order_by_desc(api_token::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .filter(|t| who.authorize(Action::Read, &Resource::Token { owner: &t.user_id }, "token").is_ok())
            .map(TokenView::from)
            .collect())
    }

    /// Revokes one of the caller's tokens; others' tokens are "not found".
    pub async fn revoke(&self, who: &Principal, id: &str) -> Result<(), ApiError> {
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let token = api_token::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("token {id} not found")))?;
        who.authorize(Action::Delete, &Resource::Token { owner: &token.user_id }, &format!("token {id}"))?;
        api_token::Entity::delete_by_id(token.id).exec(&txn).await?;
        crate::audit::append(&txn, who, "token.revoke", &format!("token:{id}")).await?;
        txn.commit().await?;
        self.principals.clear();
        Ok(())
    }
}
