//! Token-bucket rate limits per API key and per client IP. Over the limit,
//! a request is answered 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

/// One bucket: holds up to `burst` tokens, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Limits as configured: sustained requests per minute and burst size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub per_minute: u32,
    pub burst: u32,
}

impl Limits {
    /// The tokens `bucket` holds at `now`.
    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let rate = f64::from(self.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        (bucket.tokens + elapsed * rate).min(f64::from(self.burst))
    }

    /// Takes one token from `bucket` at `now`, or says how long until one is
    /// there.
    pub fn take(&self, bucket: &mut Bucket, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(self.per_minute) / 60.0;
        bucket.tokens = self.refilled(bucket, now);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    fn full(&self, now: Instant) -> Bucket {
        Bucket { tokens: f64::from(self.burst), last: now }
    }
}

/// Buckets by key (`ip:…`, `key:…`).
pub struct RateLimiter {
    limits: Limits,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Past this many buckets, full (idle) ones are dropped.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    pub fn new(limits: Limits) -> Self {
        Self { limits, buckets: Mutex::default() }
    }

    /// Takes a token from every bucket in `keys`; all must have one.
    pub fn check(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > MAX_BUCKETS {
            let limits = self.limits;
            // a full bucket is the same as no bucket
            buckets.retain(|_, b| limits.refilled(b, now) < f64::from(limits.burst));
        }
        // check all first so one refusal does not spend the others' tokens
        let mut wait = Duration::ZERO;
        for k in keys {
            let mut probe = *buckets.entry(k.clone()).or_insert_with(|| self.limits.full(now));
            if let Err(w) = self.limits.take(&mut probe, now) {
                wait = wait.max(w);
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        for k in keys {
            if let Some(b) = buckets.get_mut(k) {
                let _ = self.limits.take(b, now);
            }
        }
        Ok(())
    }
}

/// Middleware for the API routes.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(limiter) = state.rate_limiter.as_ref() else { return next.run(req).await };
    let mut keys = Vec::with_capacity(2);
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>() {
        keys.push(format!("ip:{}", peer.ip()));
    }
    if let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    {
        // keyed by the token's hash: the token itself is never kept
        keys.push(format!("key:{}", &crate::auth::hash_token(token.trim())[..16]));
    }
    match limiter.check(&keys, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut resp = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {secs} s"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_the_rate() {
        let l = Limits { per_minute: 60, burst: 3 };
        let t0 = Instant::now();
        let mut b = l.full(t0);
        for _ in 0..3 {
            assert!(l.take(&mut b, t0).is_ok());
        }
        let wait = l.take(&mut b, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
        // one per second comes back
        assert!(l.take(&mut b, t0 + Duration::from_millis(1000)).is_ok());
        assert!(l.take(&mut b, t0 + Duration::from_millis(1100)).is_err());
        // never more than the burst, however long it was idle
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.take(&mut b, later).is_ok());
        }
        assert!(l.take(&mut b, later).is_err());
    }

    #[test]
    fn every_key_must_have_a_token_and_refusals_spend_nothing() {
        let r = RateLimiter::new(Limits { per_minute: 60, burst: 1 });
        let now = Instant::now();
        let (ip, k1, k2) = ("ip:1".to_string(), "key:a".to_string(), "key:b".to_string());
        assert!(r.check(&[ip.clone(), k1.clone()], now).is_ok());
        // same IP, other key: the IP bucket is empty
        assert!(r.check(&[ip.clone(), k2.clone()], now).is_err());
        // k2's token was not spent by that refusal
        assert!(r.check(&[k2], now).is_ok());
    }
}
