//! Brute-force protection: failed sign-ins counted per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most addresses remembered; older windows are dropped past this.
const MAX_TRACKED: usize = 10_000;

/// Counts failed sign-ins per address in fixed windows; an address with
/// `max` failures in its current window is refused until the window ends.
pub struct AuthLimiter {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthLimiter {
    /// Allows `max` failures per `window` (0: no limit).
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max, window, failures: Mutex::new(HashMap::new()) }
    }

    /// Whether `ip` is refused at `now`.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        if self.max == 0 {
            return false;
        }
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&source_of(ip)).is_some_and(|(start, n)| now.duration_since(*start) < self.window && *n >= self.max)
    }

    /// Records a failed sign-in from `ip` at `now`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED {
            let window = self.window;
            map.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        if map.len() >= MAX_TRACKED {
            // still full of live windows: forget the oldest half
            let mut starts: Vec<Instant> = map.values().map(|(start, _)| *start).collect();
            starts.sort_unstable();
            if let Some(cut) = starts.get(starts.len() / 2).copied() {
                map.retain(|_, (start, _)| *start > cut);
            }
        }
        let entry = map.entry(source_of(ip)).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Takes back one failure of `ip` (it signed in after all).
    pub fn forgive(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get_mut(&source_of(ip)) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

/// Connections still signing in, counted per source (an IPv4 address or
/// an IPv6 /64), so one source cannot take every pre-authentication slot.
pub struct PreAuthSlots {
    per_source: usize,
    counts: std::sync::Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place among its source's [`PreAuthSlots`]; given back
/// when dropped (at sign-in, or when the connection ends).
pub struct PreAuthSlot {
    source: IpAddr,
    counts: std::sync::Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PreAuthSlots {
    /// Allows `per_source` connections signing in at once per source.
    pub fn new(per_source: usize) -> Self {
        Self { per_source, counts: Default::default() }
    }

    /// A slot for a connection from `ip`, unless its source holds all of
    /// its slots already.
    pub fn take(&self, ip: IpAddr) -> Option<PreAuthSlot> {
        let source = source_of(ip);
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(source).or_insert(0);
        if *n >= self.per_source {
            return None;
        }
        *n += 1;
        Some(PreAuthSlot { source, counts: self.counts.clone() })
    }
}

impl Drop for PreAuthSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.source);
            }
        }
    }
}

/// What counts as one source: an IPv4 address, or an IPv6 /64 (one host
/// usually has a whole /64 to pick addresses from).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn an_address_is_refused_after_max_failures_until_its_window_ends() {
        let l = AuthLimiter::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..2 {
            l.failed(a, t0);
        }
        assert!(!l.blocked(a, t0), "two failures are allowed");
        l.failed(a, t0 + Duration::from_secs(1));
        assert!(l.blocked(a, t0 + Duration::from_secs(2)), "the third one blocks");
        assert!(!l.blocked(b, t0 + Duration::from_secs(2)), "other addresses are not affected");
        assert!(!l.blocked(a, t0 + Duration::from_secs(61)), "the window ends");
        l.failed(a, t0 + Duration::from_secs(61));
        assert!(!l.blocked(a, t0 + Duration::from_secs(62)), "a new window starts from zero");
        assert!(!AuthLimiter::new(0, Duration::from_secs(60)).blocked(a, t0), "0 means no limit");
        // a sign-in after a refusal takes that refusal back
        l.failed(b, t0);
        l.failed(b, t0);
        l.forgive(b);
        l.failed(b, t0);
        assert!(!l.blocked(b, t0));
    }

    #[test]
    fn one_source_gets_at_most_its_share_of_pre_auth_slots() {
        let slots = PreAuthSlots::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let first = slots.take(a).unwrap();
        let _second = slots.take("::ffff:127.0.0.2".parse().unwrap()).unwrap();
        assert!(slots.take(a).is_none(), "a third from the same source waits");
        assert!(slots.take("127.0.0.1".parse().unwrap()).is_some(), "other sources are not affected");
        let v6: Vec<_> = ["2001:db8::1", "2001:db8::2"].iter().map(|s| slots.take(s.parse().unwrap()).unwrap()).collect();
        assert!(slots.take("2001:db8::ffff".parse().unwrap()).is_none(), "an IPv6 /64 is one source");
        drop(v6);
        assert!(slots.take("2001:db8::ffff".parse().unwrap()).is_some());
        drop(first);
        assert!(slots.take(a).is_some(), "a slot comes back when its connection signs in or ends");
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        let l = AuthLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        l.failed("2001:db8:1:2::1".parse().unwrap(), t0);
        l.failed("2001:db8:1:2:ffff::9".parse().unwrap(), t0);
        assert!(l.blocked("2001:db8:1:2::77".parse().unwrap(), t0));
        assert!(!l.blocked("2001:db8:1:3::1".parse().unwrap(), t0));
        l.failed("::ffff:127.0.0.5".parse().unwrap(), t0);
        l.failed("127.0.0.5".parse().unwrap(), t0);
        assert!(l.blocked("127.0.0.5".parse().unwrap(), t0), "a mapped IPv4 address is that address");
    }
}
