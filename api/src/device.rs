//! Device sign-in, shaped like OAuth's device authorization grant (RFC 8628):
//! a device without a browser (`pinacle login --device` on a remote box)
//! asks for a code pair, shows the short user code, and polls; the person
//! approves the user code from somewhere they are already signed in
//! (`pinacle device approve CODE`, or `POST /api/v1/auth/device/approve`),
//! and the device's next poll receives a session of its own.

use chrono::{Duration, Utc};
use rand::Rng;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait};
use serde::Serialize;

use crate::principal::{hash_token, Principal};
use crate::entities::{device_code, user};
use crate::policy::{Action, Resource};
use crate::sessions::TokenPair;
use crate::ApiError;

/// How long a device code waits for approval.
pub const DEVICE_CODE_TTL_SECS: i64 = 600;

/// Seconds a device should wait between polls.
pub const POLL_INTERVAL_SECS: u64 = 2;

/// Prefix of device codes (the device's secret).
pub const DEVICE_PREFIX: &str = "pnd_";

/// Letters that cannot be confused with each other or spell words easily.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// What the device gets when it starts.
#[derive(Debug, Serialize)]
pub struct DeviceStart {
    pub device_code: String,
    pub user_code: String,
    /// Where a person approves (the API path; the web app serves a page there later).
    pub verification_uri: String,
    pub expires_in: i64,
    pub interval: u64,
}

/// A new user code, `XXXX-XXXX` (20^8 ≈ 2.6e10 possibilities).
pub fn new_user_code() -> String {
    let mut rng = rand::thread_rng();
    let mut code: String =
        (0..8).map(|_| USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())] as char).collect();
    code.insert(4, '-');
    code
}

/// A typed user code in canonical form: upper case, `XXXX-XXXX`.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let letters: String = typed.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_uppercase()).collect();
    if letters.len() != 8 || !letters.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)) {
        return None;
    }
    Some(format!("{}-{}", &letters[..4], &letters[4..]))
}

fn pending(code: &'static str, msg: &str) -> ApiError {
    ApiError::bad_request(code, msg)
}

/// Device sign-in as a service.
#[derive(Clone)]
pub struct DeviceSignIn {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    sessions: crate::sessions::Sessions,
}

impl DeviceSignIn {
    pub fn new(db: sea_orm::DatabaseConnection, write_lock: std::sync::Arc<tokio::sync::Mutex<()>>, sessions: crate::sessions::Sessions) -> Self {
        Self { db, write_lock, sessions }
    }

    /// Starts a device sign-in.
    pub async fn start(&self) -> Result<DeviceStart, ApiError> {
        let device_code = crate::principal::random_secret(DEVICE_PREFIX);
        let now = Utc::now();
        let _w = self.write_lock.lock().await;
        // Expired codes are of no use to anyone.
        device_code::Entity::delete_many().filter(device_code::Column::ExpiresAt.lt(now)).exec(&self.db).await?;
        let user_code = loop {
            let c = new_user_code();
            if device_code::Entity::find().filter(device_code::Column::UserCode.eq(c.clone())).one(&self.db).await?.is_none() {
                break c;
            }
        };
        device_code::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            device_code_hash: Set(hash_token(&device_code)),
            user_code: Set(user_code.clone()),
            created_at: Set(now),
            expires_at: Set(now + Duration::seconds(DEVICE_CODE_TTL_SECS)),
            approved_by: Set(None),
            denied: Set(false),
            consumed_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        Ok(DeviceStart {
            device_code,
            user_code,
            verification_uri: "/api/v1/auth/device/approve".into(),
            expires_in: DEVICE_CODE_TTL_SECS,
            interval: POLL_INTERVAL_SECS,
        })
    }

    /// Approves (or denies) a waiting device as the caller.
    pub async fn decide(&self, who: &Principal, typed: &str, approve: bool) -> Result<(), ApiError> {
        // Signing a device in as yourself is an act on your own account.
        who.authorize(Action::Create, &Resource::Account { user: &who.user_id }, "account")?;
        let not_found = || ApiError::not_found("no device is waiting with this code (it may have expired)");
        let code = normalize_user_code(typed).ok_or_else(not_found)?;
        let now = Utc::now();
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let row = device_code::Entity::find()
            .filter(device_code::Column::UserCode.eq(code.clone()))
            .one(&txn)
            .await?
            .filter(|d| d.expires_at > now && d.approved_by.is_none() && !d.denied)
            .ok_or_else(not_found)?;
        let id = row.id.clone();
        let mut m: device_code::ActiveModel = row.into();
        if approve {
            m.approved_by = Set(Some(who.user_id.clone()));
        } else {
            m.denied = Set(true);
        }
        m.update(&txn).await?;
        let action = if approve { "device.approve" } else { "device.deny" };
        crate::audit::append(&txn, who, action, &format!("device:{id}")).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The device polls: a token pair once approved, else why not yet.
    pub async fn poll(&self, presented: &str, source: &str) -> Result<TokenPair, ApiError> {
        if !presented.starts_with(DEVICE_PREFIX) || presented.len() > 200 {
            return Err(pending("invalid_grant", "not a device code"));
        }
        let now = Utc::now();
        let approved_user = {
            let _w = self.write_lock.lock().await;
            let txn = self.db.begin().await?;
            let row = device_code::Entity::find()
                .filter(device_code::Column::DeviceCodeHash.eq(hash_token(presented)))
                .one(&txn)
                .await?
                .ok_or_else(|| pending("invalid_grant", "unknown device code; start again"))?;
            if row.consumed_at.is_some() {
                return Err(pending("invalid_grant", "this device code was already used; start again"));
            }
            if row.denied {
                return Err(pending("access_denied", "the sign-in was denied"));
            }
            if row.expires_at <= now {
                return Err(pending("expired_token", "the code expired before it was approved; start again"));
            }
            let Some(user_id) = row.approved_by.clone() else {
                return Err(pending("authorization_pending", "waiting for approval"));
            };
            device_code::Entity::update_many()
                .col_expr(device_code::Column::ConsumedAt, Expr::value(now))
                .filter(device_code::Column::Id.eq(row.id))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            user_id
        };
        let u = user::Entity::find_by_id(approved_user)
            .one(&self.db)
            .await?
            .ok_or_else(|| pending("invalid_grant", "the approving user no longer exists"))?;
        self.sessions.start_session(&u, source).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_short_unambiguous_and_forgiving_to_type() {
        for _ in 0..100 {
            let c = new_user_code();
            assert_eq!(c.len(), 9);
            assert_eq!(normalize_user_code(&c).as_deref(), Some(c.as_str()));
            assert!(!c.contains(['A', 'E', 'I', 'O', 'U', '0', '1']));
        }
        assert_eq!(normalize_user_code("bcdf ghjk").as_deref(), Some("BCDF-GHJK"));
        assert_eq!(normalize_user_code("bcdfghjk").as_deref(), Some("BCDF-GHJK"));
        for bad in ["", "BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "BCDF-GH1K"] {
            assert_eq!(normalize_user_code(bad), None, "{bad}");
        }
    }
}
