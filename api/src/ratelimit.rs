//! Token-bucket rate limits per API key and per client IP. Over the limit,
//! a request is answered 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};


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

/// Buckets by key (`ip:…`, `key:…`), in a table of bounded size.
///
/// Memory: at most [`MAX_BUCKETS`] buckets. Time: a request costs O(1)
/// amortised. Once the table holds [`SWEEP_ABOVE`] buckets, full (idle)
/// ones are swept out, but only after as many new keys have arrived as
/// half the table's size since the last sweep, so a sweep's O(n) is paid
/// for by n/2 arrivals (it used to run on every request past 10k buckets,
/// under the lock). When the table is full of buckets in use, a new key
/// is charged to one shared overflow bucket until a sweep makes room:
/// clients already known keep their own limits, and the newcomers of a
/// flood of fresh addresses share one.
pub struct RateLimiter {
    pub(crate) limits: Limits,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    buckets: HashMap<String, Bucket>,
    overflow: Option<Bucket>,
    /// New keys seen since the last sweep.
    arrivals: usize,
    /// Buckets visited by sweeps, in all (for the tests).
    swept: u64,
}

/// Most buckets kept.
pub const MAX_BUCKETS: usize = 50_000;

/// Past this many buckets, full (idle) ones are swept out.
pub const SWEEP_ABOVE: usize = 10_000;

impl Table {
    /// The bucket for `key`: its own, a new one, or the overflow bucket.
    fn bucket(&mut self, key: &str, limits: Limits, now: Instant) -> &mut Bucket {
        if !self.buckets.contains_key(key) {
            self.arrivals += 1;
            if self.buckets.len() >= SWEEP_ABOVE && self.arrivals >= self.buckets.len() / 2 {
                self.sweep(limits, now);
            }
            if self.buckets.len() >= MAX_BUCKETS {
                return self.overflow.get_or_insert_with(|| limits.full(now));
            }
        }
        self.buckets.entry(key.to_owned()).or_insert_with(|| limits.full(now))
    }

    /// The bucket [`Table::bucket`] gave for `key`, without creating one.
    fn existing(&mut self, key: &str, limits: Limits, now: Instant) -> &mut Bucket {
        match self.buckets.get_mut(key) {
            Some(b) => b,
            None => self.overflow.get_or_insert_with(|| limits.full(now)),
        }
    }

    fn sweep(&mut self, limits: Limits, now: Instant) {
        self.arrivals = 0;
        self.swept += self.buckets.len() as u64;
        // a full bucket is the same as no bucket
        self.buckets.retain(|_, b| limits.refilled(b, now) < f64::from(limits.burst));
    }
}

impl RateLimiter {
    pub fn new(limits: Limits) -> Self {
        Self { limits, table: Mutex::default() }
    }

    /// Takes a token from every bucket in `keys`; all must have one.
    pub fn check(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        // check all first so one refusal does not spend the others' tokens
        let mut wait = Duration::ZERO;
        for k in keys {
            let mut probe = *table.bucket(k, self.limits, now);
            if let Err(w) = self.limits.take(&mut probe, now) {
                wait = wait.max(w);
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        for k in keys {
            let _ = self.limits.take(table.existing(k, self.limits, now), now);
        }
        Ok(())
    }
}

/// The bucket key of a client address: IPv4 addresses one by one, IPv6 by
/// their /64 (the block one subscriber gets, which they can rotate through).
pub fn ip_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// An address block (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: std::net::IpAddr,
    bits: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        let bad = || format!("{raw:?} is not an IP address or CIDR block (10.0.0.0/8, fd00::/8)");
        let (ip, bits) = match raw.trim().split_once('/') {
            Some((ip, bits)) => (ip.parse::<std::net::IpAddr>().map_err(|_| bad())?, Some(bits.parse::<u8>().map_err(|_| bad())?)),
            None => (raw.trim().parse::<std::net::IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(bad());
        }
        Ok(Cidr { net: ip, bits })
    }
}

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                let mask = if self.bits == 0 { 0 } else { u32::MAX << (32 - u32::from(self.bits)) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                let mask = if self.bits == 0 { 0 } else { u128::MAX << (128 - u32::from(self.bits)) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy
/// (a load balancer in front of the servers), the last address in
/// `X-Forwarded-For` that is not one of them (what the client cannot forge).
pub fn client_ip(peer: std::net::IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> std::net::IpAddr {
    if !trusted.iter().any(|c| c.contains(peer)) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.unwrap_or_default().rsplit(',') {
        let Ok(ip) = hop.trim().parse::<std::net::IpAddr>() else { break };
        client = ip;
        if !trusted.iter().any(|c| c.contains(ip)) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_behind_a_trusted_balancer_is_the_forwarded_one() {
        let trusted: Vec<Cidr> = ["10.0.0.0/8", "fd00::/8"].iter().map(|c| c.parse().unwrap()).collect();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // a client talking to the server directly cannot claim an address
        assert_eq!(client_ip(ip("203.0.113.9"), Some("198.51.100.1"), &trusted), ip("203.0.113.9"));
        // behind the balancer: the last address it did not add
        assert_eq!(client_ip(ip("10.1.2.3"), Some("198.51.100.1, 203.0.113.9"), &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("10.1.2.3"), Some("203.0.113.9, 10.9.9.9"), &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("::ffff:10.1.2.3"), Some("203.0.113.9"), &trusted), ip("203.0.113.9"));
        // nothing (or garbage) forwarded: the balancer's own address
        assert_eq!(client_ip(ip("10.1.2.3"), None, &trusted), ip("10.1.2.3"));
        assert_eq!(client_ip(ip("10.1.2.3"), Some("not-an-ip"), &trusted), ip("10.1.2.3"));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err() && "x".parse::<Cidr>().is_err());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
    }

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

    fn stats(r: &RateLimiter) -> (usize, u64) {
        let t = r.table.lock().unwrap();
        (t.buckets.len(), t.swept)
    }

    #[test]
    fn a_flood_of_new_keys_costs_constant_work_per_request_and_bounded_memory() {
        let r = RateLimiter::new(Limits { per_minute: 60, burst: 10 });
        let now = Instant::now();
        let n = 200_000u64;
        // every key spends a token, so no bucket is full and none can be swept
        for i in 0..n {
            let _ = r.check(&[format!("ip:{i}")], now);
        }
        let (len, swept) = stats(&r);
        assert!(len <= MAX_BUCKETS, "{len}");
        // the old limiter visited every bucket on every request past 10k:
        // about 10k..200k visits per request, 10^10 in all
        assert!(swept <= 4 * n, "sweeps visited {swept} buckets for {n} requests");
        // known clients keep their own buckets; newcomers share one
        assert!(r.check(&["ip:1".to_owned()], now).is_ok());
        let newcomers: Vec<bool> = (0..20).map(|i| r.check(&[format!("ip:new{i}")], now).is_ok()).collect();
        assert_eq!(newcomers.iter().filter(|ok| **ok).count(), 0, "the overflow bucket was spent by the flood");
        // once the flood's buckets refill, a sweep makes room again
        let later = now + Duration::from_secs(60);
        for i in 0..MAX_BUCKETS {
            let _ = r.check(&[format!("ip:later{i}")], later);
        }
        assert!(r.check(&["ip:latecomer".to_owned()], later).is_ok());
        assert!(stats(&r).0 <= MAX_BUCKETS);
    }

    #[test]
    fn idle_buckets_are_swept_below_the_cap() {
        let r = RateLimiter::new(Limits { per_minute: 60, burst: 10 });
        let t0 = Instant::now();
        for i in 0..SWEEP_ABOVE {
            r.check(&[format!("ip:{i}")], t0).unwrap();
        }
        // ten seconds later all are full again: the next arrivals sweep them
        let t1 = t0 + Duration::from_secs(10);
        for i in 0..SWEEP_ABOVE {
            r.check(&[format!("ip:b{i}")], t1).unwrap();
        }
        let (len, swept) = stats(&r);
        assert!(swept > 0 && len < 2 * SWEEP_ABOVE, "{len} buckets, {swept} swept");
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        assert_eq!(ip_key(a), "ip:2001:db8:1:2::/64");
        assert_eq!(ip_key("::ffff:10.0.0.1".parse().unwrap()), "ip:10.0.0.1");
        assert_eq!(ip_key("10.0.0.1".parse().unwrap()), "ip:10.0.0.1");
    }
}
