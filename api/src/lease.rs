//! One holder among the API servers that share a database, for background
//! work that must run once at a time (the GitHub App's preview watcher,
//! sweep and redelivery): without it two servers would both post a pull
//! request's first comment, or both delete a closed preview.
//!
//! The lease is a row of `settings` (`lease:{name}` = `{holder} {until}`,
//! milliseconds since the epoch), inserted when absent and otherwise taken
//! or renewed by compare-and-swap on the whole value, so it behaves the
//! same on SQLite and PostgreSQL. A holder that dies loses it when `until`
//! passes; the holder renews it when half its time is left. `until` is
//! each server's own clock: servers whose clocks differ by more than half
//! the lease's time may both hold it for the difference (keep them in
//! step with NTP, as TLS and tokens need anyway). Its writes take the
//! server's database write lock, like every other writer's: on SQLite an
//! unlocked write between another writer's read and write fails that one.

use std::sync::Mutex;
use std::time::Duration;

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};

use crate::entities::setting;

/// A named lease, as seen by one server.
pub struct Lease {
    db: sea_orm::DatabaseConnection,
    key: String,
    holder: String,
    ttl_ms: i64,
    /// Until when this server holds it, as it last wrote.
    until: Mutex<Option<i64>>,
    /// The one that serialises the database's writers.
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Whether `holder` may take a lease whose row reads `current` at `now`:
/// it is free, its own, expired, or unreadable (a damaged row is taken
/// over rather than blocking the work for ever).
pub fn may_take(current: &str, holder: &str, now: i64) -> bool {
    match current.split_once(' ') {
        Some((h, until)) => h == holder || until.parse::<i64>().map_or(true, |u| u <= now),
        None => true,
    }
}

/// Until when `holder` holds a lease whose row reads `value`, if it does.
fn held_until(value: &str, holder: &str) -> Option<i64> {
    let (h, until) = value.split_once(' ')?;
    (h == holder).then(|| until.parse().ok()).flatten()
}

impl Lease {
    /// `name` says what the lease guards; `ttl` is how long a holder keeps
    /// it without renewing; `write_lock` serialises the database's writers.
    pub fn new(db: sea_orm::DatabaseConnection, name: &str, ttl: Duration, write_lock: std::sync::Arc<tokio::sync::Mutex<()>>) -> Self {
        Self {
            db,
            key: format!("lease:{name}"),
            holder: uuid::Uuid::new_v4().to_string(),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4),
            until: Mutex::new(None),
            write_lock,
        }
    }

    /// Whether this server holds the lease now, taking or renewing it
    /// when due. A database error counts as not holding it (once what
    /// was last written has run out).
    pub async fn held(&self) -> bool {
        let now = chrono::Utc::now().timestamp_millis();
        let last = *self.until.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|u| u - now > self.ttl_ms / 2) {
            return true;
        }
        let taken = match self.take(now).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(lease = %self.key, error = %e, "renewing a lease");
                last.filter(|u| *u > now)
            }
        };
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = taken;
        taken.is_some()
    }

    /// Gives the lease up (at a clean stop), so another server, or this
    /// one started again, takes it at once rather than when it runs out.
    pub async fn release(&self) {
        let held = self.until.lock().unwrap_or_else(|p| p.into_inner()).take().is_some();
        if !held {
            return;
        }
        let _w = self.write_lock.lock().await;
        let gone = setting::Entity::delete_many()
            .filter(setting::Column::Key.eq(self.key.clone()))
            .filter(setting::Column::Value.starts_with(format!("{} ", self.holder)))
            .exec(&self.db)
            .await;
        if let Err(e) = gone {
            tracing::warn!(lease = %self.key, error = %e, "giving a lease up; it runs out by itself");
        }
    }

    /// Takes or renews the lease at `now`: until when it is held, or
    /// `None` when another server holds it.
    async fn take(&self, now: i64) -> Result<Option<i64>, sea_orm::DbErr> {
        let until = now.saturating_add(self.ttl_ms);
        let value = format!("{} {until}", self.holder);
        let _w = self.write_lock.lock().await;
        let current = setting::Entity::find_by_id(self.key.clone()).one(&self.db).await?;
        let Some(current) = current else {
            let row = setting::ActiveModel { key: Set(self.key.clone()), value: Set(value.clone()) };
            setting::Entity::insert(row).on_conflict_do_nothing().exec(&self.db).await?;
            // ours, or another server's that won the race
            let now_there = setting::Entity::find_by_id(self.key.clone()).one(&self.db).await?;
            return Ok(now_there.is_some_and(|r| r.value == value).then_some(until));
        };
        if !may_take(&current.value, &self.holder, now) {
            return Ok(None);
        }
        let swapped = setting::Entity::update_many()
            .col_expr(setting::Column::Value, Expr::value(value))
            .filter(setting::Column::Key.eq(self.key.clone()))
            .filter(setting::Column::Value.eq(current.value))
            .exec(&self.db)
            .await?;
        if swapped.rows_affected == 1 {
            return Ok(Some(until));
        }
        // another task of this server may have renewed it meanwhile
        let now_there = setting::Entity::find_by_id(self.key.clone()).one(&self.db).await?;
        Ok(now_there.and_then(|r| held_until(&r.value, &self.holder)).filter(|u| *u > now))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pinacle_migrations::{Migrator, MigratorTrait};

    #[test]
    fn a_lease_is_taken_when_free_own_expired_or_damaged() {
        assert!(may_take("a 1000", "a", 5000), "its own, even expired");
        assert!(may_take("a 9000", "a", 5000), "its own");
        assert!(!may_take("b 9000", "a", 5000), "another's, alive");
        assert!(may_take("b 5000", "a", 5000), "another's, run out");
        assert!(may_take("b soon", "a", 5000) && may_take("", "a", 5000), "damaged");
        assert_eq!(held_until("a 9000", "a"), Some(9000));
        assert_eq!(held_until("b 9000", "a"), None);
        assert_eq!(held_until("a soon", "a"), None);
    }

    #[tokio::test]
    async fn one_server_holds_a_lease_until_it_runs_out() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let ttl = Duration::from_secs(3);
        let lock = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        let (one, two) = (Lease::new(db.clone(), "work", ttl, lock.clone()), Lease::new(db.clone(), "work", ttl, lock.clone()));
        assert!(one.held().await);
        assert!(!two.held().await, "held by the first");
        // two tasks of the first server renewing at once both hold it
        *one.until.lock().unwrap() = None;
        let (a, b) = tokio::join!(one.held(), one.held());
        assert!(a && b, "a renewal raced by its own server");
        assert!(one.held().await, "still the first's");
        // another lease is another row
        assert!(Lease::new(db.clone(), "other", ttl, lock.clone()).held().await);
        // the first stops renewing (a dead server): the second takes over
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert!(two.held().await, "taken over after it ran out");
        *one.until.lock().unwrap() = None;
        assert!(!one.held().await, "the first has lost it");
        // a clean stop gives it up at once
        two.release().await;
        assert!(one.held().await, "released: taken before it ran out");
        two.release().await;
        assert!(one.held().await, "a lease not held is not given up");
    }
}
