//! Budgets that never overshoot: before a call, its worst-case cost is
//! reserved atomically against every budget that applies (task, user,
//! team, key) — all or none; after it, the reservation is settled with
//! what the call really cost. A budget's spent plus reserved never passes
//! its cap, however many requests race, on however many servers (the
//! conditional update runs in the shared database).
//!
//! [`Ledger`] is the seam; [`MemoryLedger`] keeps one process's budgets
//! (and is the fake of unit tests); `store::SqlLedger` keeps them in
//! SQLite or PostgreSQL.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

/// One budget a reservation is charged to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Charge {
    /// `user:<id>@2026-12`, `team:<id>@2026-12-06`, `key:<id>@all`.
    pub scope: String,
    pub cap_micros: i64,
}

/// The budgets of `b` that apply at `now` to a call by `user` (when their
/// own budget pays), for `team` and with `key`: each with its kind
/// (`user`, `team`, `key`) and its scope in the current period.
pub fn applicable(b: &crate::registry::Budgets, user: Option<&str>, team: Option<&str>, key: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Vec<(&'static str, Charge)> {
    let mut out = Vec::new();
    for (kind, budget, subject) in [("user", &b.user, user), ("team", &b.team, team), ("key", &b.key, key)] {
        if let (Some(budget), Some(subject)) = (budget, subject) {
            out.push((kind, Charge { scope: format!("{kind}:{subject}@{}", budget.period.window(now)), cap_micros: crate::cost::usd_to_micros(budget.cap_for(subject)) }));
        }
    }
    out
}

/// A reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("budget {scope} would be exceeded: ${spent_usd:.6} spent and ${reserved_usd:.6} reserved of ${cap_usd:.6}, this task may cost up to ${asked_usd:.6}", spent_usd = crate::cost::micros_to_usd(*spent), reserved_usd = crate::cost::micros_to_usd(*reserved), cap_usd = crate::cost::micros_to_usd(*cap), asked_usd = crate::cost::micros_to_usd(*asked))]
    Exceeded { scope: String, spent: i64, reserved: i64, cap: i64, asked: i64 },
    #[error("the budget store failed: {0}")]
    Store(String),
}

/// Spend of one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spend {
    pub scope: String,
    pub spent_micros: i64,
    pub reserved_micros: i64,
}

/// Where budgets are kept.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync {
    /// Reserves `amount` against every charge, or none of them. Returns
    /// the hold's id (settled later, or released by [`Ledger::sweep`] if
    /// this server dies before).
    async fn reserve(&self, charges: &[Charge], amount: i64, hold_secs: i64) -> Result<String, LedgerError>;

    /// Settles hold `hold` (of `amount` on `scopes`) with `actual`: the
    /// reservation is released and `actual` is spent.
    async fn settle(&self, hold: &str, scopes: &[String], amount: i64, actual: i64) -> Result<(), LedgerError>;

    /// Pushes hold `hold`'s deadline `secs` from now (a call still running).
    async fn extend(&self, hold: &str, secs: i64) -> Result<(), LedgerError>;

    /// Holds older than their deadline (a server died mid-call) are
    /// settled at their full amount: the budget never overshoots.
    async fn sweep(&self) -> Result<u64, LedgerError>;

    /// The spend of `scopes`.
    async fn spend(&self, scopes: &[String]) -> Result<Vec<Spend>, LedgerError>;
}

/// One process's budgets, in memory.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    inner: Mutex<HashMap<String, (i64, i64)>>,
    holds: Mutex<u64>,
}

#[async_trait::async_trait]
impl Ledger for MemoryLedger {
    async fn reserve(&self, charges: &[Charge], amount: i64, _hold_secs: i64) -> Result<String, LedgerError> {
        let mut map = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in charges {
            let (spent, reserved) = map.get(&c.scope).copied().unwrap_or_default();
            if spent + reserved + amount > c.cap_micros {
                return Err(LedgerError::Exceeded { scope: c.scope.clone(), spent, reserved, cap: c.cap_micros, asked: amount });
            }
        }
        for c in charges {
            map.entry(c.scope.clone()).or_default().1 += amount;
        }
        let mut n = self.holds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *n += 1;
        Ok(n.to_string())
    }

    async fn settle(&self, _hold: &str, scopes: &[String], amount: i64, actual: i64) -> Result<(), LedgerError> {
        let mut map = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in scopes {
            let e = map.entry(s.clone()).or_default();
            e.0 += actual;
            e.1 -= amount;
        }
        Ok(())
    }

    async fn extend(&self, _hold: &str, _secs: i64) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn sweep(&self) -> Result<u64, LedgerError> {
        Ok(0)
    }

    async fn spend(&self, scopes: &[String]) -> Result<Vec<Spend>, LedgerError> {
        let map = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(scopes
            .iter()
            .map(|s| {
                let (spent, reserved) = map.get(s).copied().unwrap_or_default();
                Spend { scope: s.clone(), spent_micros: spent, reserved_micros: reserved }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn reservations_are_all_or_none_and_settle_to_the_actual_cost() {
        let l = MemoryLedger::default();
        let user = Charge { scope: "user:u@m".into(), cap_micros: 100 };
        let team = Charge { scope: "team:t@m".into(), cap_micros: 50 };
        let h = l.reserve(&[user.clone(), team.clone()], 40, 60).await.expect("fits");
        let e = l.reserve(&[user.clone(), team.clone()], 20, 60).await.expect_err("team is full");
        assert!(matches!(e, LedgerError::Exceeded { ref scope, .. } if scope == "team:t@m"));
        // nothing was charged to the user by the refused one
        assert_eq!(l.spend(std::slice::from_ref(&user.scope)).await.expect("spend")[0].reserved_micros, 40);
        l.settle(&h, &[user.scope.clone(), team.scope.clone()], 40, 7).await.expect("settle");
        let s = l.spend(&[user.scope.clone(), team.scope.clone()]).await.expect("spend");
        assert_eq!((s[0].spent_micros, s[0].reserved_micros, s[1].spent_micros), (7, 0, 7));
    }

    #[tokio::test]
    async fn a_thousand_racing_reservations_never_pass_the_cap() {
        let l = Arc::new(MemoryLedger::default());
        let cap = Charge { scope: "key:k@all".into(), cap_micros: 5_000_000 };
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (l, cap) = (l.clone(), cap.clone());
                tokio::spawn(async move { l.reserve(&[cap], 7_000, 60).await.is_ok() })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += i64::from(t.await.expect("task"));
        }
        assert_eq!(ok, 5_000_000 / 7_000);
        assert!(l.spend(&[cap.scope]).await.expect("spend")[0].reserved_micros <= 5_000_000);
    }
}
