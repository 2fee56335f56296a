//! Each provider's health as this server sees it: a circuit breaker
//! (consecutive failures open it; after the open time one probe goes
//! through; its success closes it) and the p95 of its recent latencies
//! (time to first token for streams, whole call otherwise).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::registry::Breaker;

/// Latencies kept per provider for its p95.
pub const WINDOW: usize = 256;

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// A probe is out while the breaker is half-open.
    probing: bool,
    /// Backing off after a `Retry-After` until then.
    retry_after_until: Option<Instant>,
    latencies_ms: VecDeque<u32>,
}

/// What the decision sees of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Closed,
    /// Open: no call until it cools down.
    Open,
    /// Cooled down: one probe may go.
    HalfOpen,
    /// It asked us to wait (`Retry-After`) and the wait is not over.
    Backoff,
}

/// A provider's health, shown in `/v1/models` and the web view.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub availability: Availability,
    pub consecutive_failures: u32,
    pub p95_ms: Option<u32>,
    pub samples: usize,
}

/// Every provider's health.
#[derive(Debug, Default)]
pub struct Health {
    by_provider: Mutex<HashMap<String, State>>,
}

impl Health {
    fn with<R>(&self, provider: &str, f: impl FnOnce(&mut State) -> R) -> R {
        let mut map = self.by_provider.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !map.contains_key(provider) {
            map.insert(provider.to_owned(), State::default());
        }
        let state = map.get_mut(provider).unwrap_or_else(|| unreachable!("inserted above"));
        f(state)
    }

    /// Whether a call to `provider` may go now; a half-open breaker lets
    /// exactly one through (taking it).
    pub fn admit(&self, provider: &str, now: Instant) -> Result<(), Availability> {
        self.with(provider, |s| {
            if s.retry_after_until.is_some_and(|t| now < t) {
                return Err(Availability::Backoff);
            }
            match s.open_until {
                Some(t) if now < t => Err(Availability::Open),
                Some(_) if s.probing => Err(Availability::Open),
                Some(_) => {
                    s.probing = true;
                    Ok(())
                }
                None => Ok(()),
            }
        })
    }

    /// What `provider` looks like now, without taking a probe.
    pub fn availability(&self, provider: &str, now: Instant) -> Availability {
        self.with(provider, |s| {
            if s.retry_after_until.is_some_and(|t| now < t) {
                Availability::Backoff
            } else {
                match s.open_until {
                    Some(t) if now < t => Availability::Open,
                    Some(_) if s.probing => Availability::Open,
                    Some(_) => Availability::HalfOpen,
                    None => Availability::Closed,
                }
            }
        })
    }

    /// A call succeeded after `latency`.
    pub fn success(&self, provider: &str, latency: Duration) {
        self.with(provider, |s| {
            s.consecutive_failures = 0;
            s.open_until = None;
            s.probing = false;
            if s.latencies_ms.len() == WINDOW {
                s.latencies_ms.pop_front();
            }
            s.latencies_ms.push_back(latency.as_millis().min(u128::from(u32::MAX)) as u32);
        });
    }

    /// A call failed; `retry_after` is the provider's own wait, if it gave one.
    pub fn failure(&self, provider: &str, breaker: &Breaker, retry_after: Option<Duration>, now: Instant) {
        self.with(provider, |s| {
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            if let Some(wait) = retry_after {
                s.retry_after_until = Some(now + wait);
            }
            if s.probing || s.consecutive_failures >= breaker.failures {
                s.open_until = Some(now + Duration::from_millis(breaker.open_ms));
                s.probing = false;
            }
        });
    }

    /// A probe or call ended without a verdict on the provider (the client
    /// left): a half-open breaker may probe again.
    pub fn release_probe(&self, provider: &str) {
        self.with(provider, |s| s.probing = false);
    }

    /// The p95 latency of `provider`, from at least 5 samples.
    pub fn p95_ms(&self, provider: &str) -> Option<u32> {
        self.with(provider, |s| p95(&s.latencies_ms))
    }

    pub fn snapshot(&self, provider: &str, now: Instant) -> Snapshot {
        let availability = self.availability(provider, now);
        self.with(provider, |s| Snapshot { availability, consecutive_failures: s.consecutive_failures, p95_ms: p95(&s.latencies_ms), samples: s.latencies_ms.len() })
    }
}

fn p95(samples: &VecDeque<u32>) -> Option<u32> {
    if samples.len() < 5 {
        return None;
    }
    let mut v: Vec<u32> = samples.iter().copied().collect();
    v.sort_unstable();
    let rank = (v.len() * 95).div_ceil(100).saturating_sub(1);
    v.get(rank).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Breaker = Breaker { failures: 3, open_ms: 1000 };

    #[test]
    fn consecutive_failures_open_the_breaker_and_one_probe_closes_it() {
        let h = Health::default();
        let t0 = Instant::now();
        for _ in 0..2 {
            h.failure("p", &B, None, t0);
        }
        assert_eq!(h.admit("p", t0), Ok(()));
        h.failure("p", &B, None, t0);
        assert_eq!(h.admit("p", t0), Err(Availability::Open));
        let later = t0 + Duration::from_millis(1001);
        assert_eq!(h.availability("p", later), Availability::HalfOpen);
        assert_eq!(h.admit("p", later), Ok(()), "one probe");
        assert_eq!(h.admit("p", later), Err(Availability::Open), "only one");
        h.success("p", Duration::from_millis(5));
        assert_eq!(h.admit("p", later), Ok(()));
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_retry_after_is_honoured() {
        let h = Health::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            h.failure("p", &B, None, t0);
        }
        let later = t0 + Duration::from_millis(1001);
        assert_eq!(h.admit("p", later), Ok(()));
        h.failure("p", &B, None, later);
        assert_eq!(h.admit("p", later + Duration::from_millis(999)), Err(Availability::Open));
        h.failure("q", &B, Some(Duration::from_secs(2)), t0);
        assert_eq!(h.admit("q", t0 + Duration::from_secs(1)), Err(Availability::Backoff));
        assert_eq!(h.admit("q", t0 + Duration::from_secs(3)), Ok(()));
    }

    #[test]
    fn p95_needs_five_samples_and_takes_the_high_end() {
        let h = Health::default();
        for ms in 1..=4 {
            h.success("p", Duration::from_millis(ms));
        }
        assert_eq!(h.p95_ms("p"), None);
        for ms in 5..=100 {
            h.success("p", Duration::from_millis(ms));
        }
        assert_eq!(h.p95_ms("p"), Some(95));
    }
}
