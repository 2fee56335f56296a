//! Local accounts: sign-up (open, invite-only or closed) and password
//! sign-in (argon2id), which starts a session (see [`crate::sessions`]).

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, SqlErr, TransactionTrait};
use serde::Deserialize;

use crate::principal::Principal;
use crate::entities::user;
use crate::sessions::TokenPair;
use crate::settings::SignupMode;
use crate::ApiError;

mod ops;

/// Local accounts as a service: sign-up (as the settings allow, with
/// invitations) and password sign-in, which starts a session.
#[derive(Clone)]
pub struct Accounts {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    settings: crate::settings::InstanceSettings,
    sessions: crate::sessions::Sessions,
    teams: crate::teams::Teams,
}

impl Accounts {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
        settings: crate::settings::InstanceSettings,
        sessions: crate::sessions::Sessions,
        teams: crate::teams::Teams,
    ) -> Self {
        Self { db, write_lock, settings, sessions, teams }
    }
}

/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 10;

/// `POST /api/v1/auth/login`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ name: {:?}, password: <redacted> }}", self.name)
    }
}

/// `POST /api/v1/auth/signup`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    pub name: String,
    pub password: String,
    /// An invitation code: required when sign-up is invite-only; a team
    /// invitation also makes the new user a member.
    #[serde(default)]
    pub invite: Option<String>,
}

impl std::fmt::Debug for SignupRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignupRequest {{ name: {:?}, password: <redacted>, invite: <redacted> }}", self.name)
    }
}

pub use crate::principal::check_user_name;

/// Why a password is refused.
pub fn check_password(name: &str, password: &str) -> Result<(), String> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(format!("password is {len} characters; use at least {MIN_PASSWORD_LEN}"));
    }
    if len > 1024 {
        return Err("password is longer than 1024 characters".into());
    }
    let first = password.chars().next();
    if password.chars().all(|c| Some(c) == first) {
        return Err("password repeats one character; choose a real one".into());
    }
    if password.to_lowercase().contains(&name.to_lowercase()) {
        return Err("password contains the user name".into());
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(ApiError::internal)
}

/// Password hashing runs at most this many at once (one per CPU), on
/// blocking threads: a flood of sign-ins waits here instead of starving
/// the async workers that answer every other request.
fn argon2_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map(usize::from).unwrap_or(2)))
}

/// Runs argon2 work `f` on a blocking thread, under [`argon2_slots`].
async fn run_argon2<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    let _slot = argon2_slots().acquire().await.map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)
}

/// Hashes a password off the async workers.
async fn hash_password_blocking(password: String) -> Result<String, ApiError> {
    run_argon2(move || hash_password(&password)).await?
}

/// Checks `password` against `stored` (or the decoy hash, for equal
/// timing, when there is none) off the async workers.
async fn verify_password_blocking(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    run_argon2(move || {
        let candidate = stored.as_deref().unwrap_or_else(|| decoy_hash());
        PasswordHash::new(candidate).map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok()).unwrap_or(false)
    })
    .await
}

/// A fixed hash to verify against when the user does not exist, so unknown
/// names and wrong passwords take the same time.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy-password-never-valid").unwrap_or_default())
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_follow_host_name_rules() {
        assert!(check_user_name("alice").is_ok());
        assert!(check_user_name("a-1").is_ok());
        for bad in ["", "Alice", "al ice", "-a", "a-", &"a".repeat(33), "al.ice"] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn weak_passwords_are_refused_with_a_reason() {
        assert!(check_password("alice", "correct horse battery").is_ok());
        assert!(check_password("alice", "short").unwrap_err().contains("at least 10"));
        assert!(check_password("alice", "aaaaaaaaaaaa").unwrap_err().contains("repeats"));
        assert!(check_password("alice", "xxALICExx123").unwrap_err().contains("user name"));
        assert!(check_password("alice", &"ab".repeat(600)).is_err());
    }

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&a).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse battery", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"wrong", &parsed).is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn hashing_runs_off_the_async_thread() {
        // One async thread: had argon2 run on it, the spawned hash would
        // finish before this task ran again.
        let h = tokio::spawn(hash_password_blocking("correct horse battery".into()));
        tokio::task::yield_now().await;
        assert!(!h.is_finished(), "the async thread is free while the hash runs");
        let hash = h.await.unwrap().unwrap();
        let check = tokio::spawn(verify_password_blocking("correct horse battery".into(), Some(hash.clone())));
        tokio::task::yield_now().await;
        assert!(!check.is_finished(), "the async thread is free while a password is checked");
        assert!(check.await.unwrap().unwrap());
        assert!(!verify_password_blocking("wrong password!".into(), Some(hash)).await.unwrap());
        // no stored hash: the decoy is checked, and never matches
        assert!(!verify_password_blocking("correct horse battery".into(), None).await.unwrap());
    }
}
