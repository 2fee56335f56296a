//! Who a caller is, independent of how they proved it: the [`Principal`]
//! every service method takes, and the random secrets and their hashes
//! that API tokens, join tokens and refresh tokens are made of. Pure: no
//! database, no HTTP.

use std::collections::BTreeMap;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::policy::{self, Action, Denied, Resource, Scope, Subject};
use crate::ApiError;

/// Why a user (or team) name is refused; the names become part of host
/// names, and users and teams share them.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() || name.len() > 32 || !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "invalid user name {name:?}: use 1 to 32 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ));
    }
    Ok(())
}

/// Name of the first user, the instance administrator.
pub const ADMIN_USER: &str = "admin";

/// The authenticated caller: a [`Subject`] for the policy, plus what the
/// audit log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: Subject,
    pub user_name: String,
    /// Where the request came from (peer address), for the audit log.
    pub source: String,
    /// The sign-in session, when the caller presented an access token.
    pub session_id: Option<String>,
    /// The API token's id, when the caller presented an API token.
    pub token_id: Option<String>,
}

impl std::ops::Deref for Principal {
    type Target = Subject;
    fn deref(&self) -> &Subject {
        &self.subject
    }
}

impl Principal {
    /// A principal for actions taken on a user's behalf outside a request
    /// (sign-up, sign-in): full scope, no team roles loaded.
    pub fn system(user_id: &str, user_name: &str, source: &str) -> Self {
        Principal {
            subject: Subject {
                user_id: user_id.to_owned(),
                instance_admin: user_name == ADMIN_USER,
                scope: Scope::Full,
                teams: BTreeMap::new(),
            },
            user_name: user_name.to_owned(),
            source: source.to_owned(),
            session_id: None,
            token_id: None,
        }
    }

    /// Whether this is the instance administrator.
    pub fn is_admin(&self) -> bool {
        self.subject.instance_admin
    }

    /// Asks the policy; `what` names the resource in a "not found" answer.
    pub fn authorize(&self, action: Action, resource: &Resource<'_>, what: &str) -> Result<(), ApiError> {
        policy::decide(&self.subject, action, resource).map_err(|d| match d {
            Denied::Hidden => ApiError::not_found(format!("{what} not found")),
            Denied::Forbidden(why) => ApiError::forbidden("forbidden", why),
        })
    }
}

/// How often a long-lived connection (GraphQL over WebSocket, SSE, a
/// terminal) checks that its caller still may use it.
pub const RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Prefix of every token Pinacle issues, so leaked tokens are recognisable.
pub const TOKEN_PREFIX: &str = "pnc_";

/// A new random API token (256 bits).
pub fn generate_token() -> String {
    random_secret(TOKEN_PREFIX)
}

/// A new random secret (256 bits, URL-safe base64) after `prefix`, which
/// says what kind of secret it is (`pnc_`, `pnr_`, `pni_`, `pnd_`, or none).
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// How tokens are stored: hex SHA-256. Tokens are random and long, so a
/// plain hash is enough (no password stretching needed).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

