//! Sign-in sessions: short-lived JWT access tokens and rotating refresh
//! tokens.
//!
//! - Access tokens are EdDSA (Ed25519) JWTs carrying the user, the session
//!   (`sid`) and an expiry ([`SessionConfig::access_ttl_secs`], 15 minutes by
//!   default). A revoked session's access tokens stop working at once.
//! - Each sign-in starts a session: a family of refresh tokens. A refresh
//!   token works once; using it returns a new pair. Presenting a refresh
//!   token that was already used means it leaked: the whole family is revoked.
//! - Signing keys rotate ([`Sessions::rotate_signing_key`]); the public
//!   halves of keys whose tokens may still be alive are published at
//!   `/.well-known/jwks.json`, and tokens signed by a retired key are
//!   accepted until they expire: a retired key verifies access tokens (and
//!   is published) for the access-token lifetime, and pod-session cookies,
//!   which only this server verifies, for theirs (12 hours).
//! - A session lives as long as its newest refresh token: sessions are
//!   purged once every refresh token of theirs has expired.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, TransactionTrait};
use serde::{Deserialize, Serialize};

use crate::principal::{hash_token, Principal};
use crate::entities::{refresh_token, session, signing_key, user};
use crate::ApiError;

mod ops;

/// Sign-in sessions as a service: EdDSA access tokens and refresh-token
/// families, the signing keys (sealed with the master key, rotated), and
/// the JWTs other services sign with them (pod sign-in links).
#[derive(Clone)]
pub struct Sessions {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    config: SessionConfig,
    keyring: std::sync::Arc<KeyRing>,
    master_key: std::sync::Arc<crate::crypto::MasterKey>,
    /// Cleared when a session ends: its access tokens stop at once.
    principals: std::sync::Arc<crate::tokens::PrincipalCache>,
}

impl Sessions {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
        config: SessionConfig,
        master_key: std::sync::Arc<crate::crypto::MasterKey>,
        principals: std::sync::Arc<crate::tokens::PrincipalCache>,
    ) -> Self {
        Self { db, write_lock, config, keyring: Default::default(), master_key, principals }
    }
}

/// Issuer and audience of every access token.
pub const ISSUER: &str = "pinacle";

/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "pnr_";

/// Token lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    /// A signing key older than this is replaced on the next check.
    pub key_rotation_secs: i64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { access_ttl_secs: 15 * 60, refresh_ttl_secs: 30 * 24 * 3600, key_rotation_secs: 30 * 24 * 3600 }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// User id.
    pub sub: String,
    /// User name, for logs and display.
    pub name: String,
    /// Session id (the refresh-token family).
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

/// A new pair, as the sign-in and refresh endpoints answer it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_expires_in: i64,
}

struct LoadedKey {
    decoding: DecodingKey,
    /// Public key, base64url (the JWK `x`).
    x: String,
    /// When it was retired (`None`: the current key).
    retired_at: Option<DateTime<Utc>>,
}

/// Signing keys in memory: the current one and every one still verifying.
#[derive(Default)]
pub struct KeyRing {
    inner: RwLock<KeyRingInner>,
}

impl KeyRing {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyRingInner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KeyRingInner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Default)]
struct KeyRingInner {
    current: Option<(String, EncodingKey, DateTime<Utc>)>,
    keys: HashMap<String, LoadedKey>,
    loaded_at: Option<DateTime<Utc>>,
}

fn key_context(kid: &str) -> String {
    format!("signing-key:{kid}")
}


enum KeyLookup {
    UnknownKey,
    Invalid(jsonwebtoken::errors::Error),
}

async fn revoke_session<C: ConnectionTrait>(db: &C, id: &str, reason: &str, now: DateTime<Utc>) -> Result<(), ApiError> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    // Refresh tokens of a revoked family are useless: drop them.
    refresh_token::Entity::delete_many().filter(refresh_token::Column::SessionId.eq(id)).exec(db).await?;
    Ok(())
}
