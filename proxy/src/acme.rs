//! Certificates from an ACME CA (Let's Encrypt, or Pebble in tests)
//! through instant-acme.
//!
//! Per-name certificates are validated with HTTP-01 (answered by the
//! plain listener) or TLS-ALPN-01 (answered by the TLS listener); a
//! wildcard certificate needs DNS-01, which goes through a hook program
//! the operator provides: `HOOK set NAME VALUE` before validation and
//! `HOOK clear NAME VALUE` after, where NAME is `_acme-challenge.DOMAIN`
//! and VALUE the TXT record's content.
//!
//! Certificates are renewed when a third of their lifetime, or
//! `renew_before`, whichever is shorter, remains ([`renewal_due`]); the new
//! one replaces the old in the [`CertStore`] for new handshakes only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use crate::tls::CertStore;

/// How a per-name certificate's authorization is proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// A file under `/.well-known/acme-challenge/` on port 80.
    Http01,
    /// A special certificate on port 443 (ALPN `acme-tls/1`).
    TlsAlpn01,
}

impl std::str::FromStr for ChallengeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http-01" => Ok(Self::Http01),
            "tls-alpn-01" => Ok(Self::TlsAlpn01),
            other => Err(format!("unknown ACME challenge {other:?}; use http-01 or tls-alpn-01")),
        }
    }
}

/// Settings of the ACME client.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The CA's directory URL.
    pub directory_url: String,
    /// PEM file of the root the CA's own HTTPS endpoint chains to, when it
    /// is not publicly trusted (Pebble).
    pub root_ca: Option<PathBuf>,
    /// Contact addresses (`mailto:...`).
    pub contact: Vec<String>,
    pub challenge: ChallengeKind,
    /// DNS-01 hook program; when set, one wildcard certificate for the
    /// proxy's domain is used instead of per-name ones.
    pub dns_hook: Option<PathBuf>,
    /// Renew when less than this remains (capped at a third of the
    /// certificate's lifetime).
    pub renew_before: Duration,
    /// Where the account credentials are kept (`acme-account.json`, 0600).
    pub state_dir: PathBuf,
}

/// Errors of issuance.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Protocol(String),
    #[error("ACME DNS hook: {0}")]
    Hook(String),
    #[error("ACME: {0}")]
    Io(String),
    #[error("ACME: issuance for {0} failed recently; not retrying yet")]
    Backoff(String),
    #[error("ACME: too many certificate orders for {0} lately; not ordering now")]
    RateLimited(String),
}

impl From<instant_acme::Error> for AcmeError {
    fn from(e: instant_acme::Error) -> Self {
        Self::Protocol(e.to_string())
    }
}

impl From<crate::tls::TlsError> for AcmeError {
    fn from(e: crate::tls::TlsError) -> Self {
        Self::Io(e.to_string())
    }
}

/// Whether a certificate valid from `not_before` to `not_after` should be
/// renewed at `now` (all seconds since the epoch).
pub fn renewal_due(not_before: i64, not_after: i64, now: i64, renew_before: Duration) -> bool {
    let lifetime = (not_after - not_before).max(0);
    let window = i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX).min(lifetime / 3);
    now >= not_after - window
}

/// After a failed issuance, the same name waits this long.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(60);

/// At most this many names are remembered as recently failed (older
/// failures are forgotten first; a forgotten name is still rate-limited).
pub const MAX_FAILURES: usize = 4096;

/// A token bucket: `burst` orders at once, then one per `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

/// Limits on on-demand orders (renewals are not limited): per pod and for
/// the whole proxy. The CA's own limits (Let's Encrypt: 50 certificates a
/// week per registered domain, 300 new orders per 3 hours per account)
/// are much easier to exhaust than these protect, so a wildcard
/// certificate is the better choice for many pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderLimits {
    pub per_pod: Rate,
    pub global: Rate,
    /// Pods tracked at once; beyond, orders for new pods wait.
    pub max_pods: usize,
}

impl Default for OrderLimits {
    fn default() -> Self {
        Self {
            per_pod: Rate { burst: 10, every: Duration::from_secs(600) },
            global: Rate { burst: 30, every: Duration::from_secs(120) },
            max_pods: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self { tokens: f64::from(rate.burst), at: now }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let per_sec = 1.0 / rate.every.as_secs_f64().max(1e-3);
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * per_sec).min(f64::from(rate.burst));
        self.at = now;
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens >= f64::from(rate.burst)
    }
}

/// The per-pod and global token buckets of on-demand orders.
#[derive(Debug)]
pub struct OrderLimiter {
    limits: OrderLimits,
    global: Bucket,
    pods: HashMap<String, Bucket>,
}

impl OrderLimiter {
    pub fn new(limits: OrderLimits, now: Instant) -> Self {
        Self { limits, global: Bucket::full(limits.global, now), pods: HashMap::new() }
    }

    /// Takes one order for `pod` if both its bucket and the global one
    /// have a token; takes nothing otherwise.
    pub fn admit(&mut self, pod: &str, now: Instant) -> bool {
        let limits = self.limits;
        if !self.pods.contains_key(pod) && self.pods.len() >= limits.max_pods {
            // forget pods whose buckets are full again (they lose nothing)
            self.pods.retain(|_, b| !b.is_full(limits.per_pod, now));
            if self.pods.len() >= limits.max_pods {
                return false;
            }
        }
        self.global.refill(limits.global, now);
        let bucket = self.pods.entry(pod.to_owned()).or_insert_with(|| Bucket::full(limits.per_pod, now));
        bucket.refill(limits.per_pod, now);
        if bucket.tokens < 1.0 || self.global.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        self.global.tokens -= 1.0;
        true
    }

    /// Pods tracked now.
    pub fn tracked(&self) -> usize {
        self.pods.len()
    }
}

/// The ACME client and its issued certificates.
pub struct Acme {
    cfg: AcmeConfig,
    store: Arc<CertStore>,
    account: tokio::sync::OnceCell<Account>,
    /// One issuance at a time per name (entries leave when unused).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Recently failed names (expiring, at most [`MAX_FAILURES`]).
    failures: Mutex<HashMap<String, Instant>>,
    /// Limits on on-demand orders.
    limiter: Mutex<OrderLimiter>,
    /// Orders by outcome.
    pub metrics: crate::metrics::ProxyMetrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedAccount {
    directory_url: String,
    credentials: AccountCredentials,
}

impl Acme {
    pub fn new(cfg: AcmeConfig, store: Arc<CertStore>) -> Self {
        Self::with_metrics(cfg, store, crate::metrics::ProxyMetrics::default())
    }

    /// As [`Acme::new`], counting orders in `metrics`.
    pub fn with_metrics(cfg: AcmeConfig, store: Arc<CertStore>, metrics: crate::metrics::ProxyMetrics) -> Self {
        Self {
            cfg,
            store,
            account: tokio::sync::OnceCell::new(),
            locks: Mutex::default(),
            failures: Mutex::default(),
            limiter: Mutex::new(OrderLimiter::new(OrderLimits::default(), Instant::now())),
            metrics,
        }
    }

    /// Replaces the limits on on-demand orders (buckets start full).
    pub fn set_order_limits(&self, limits: OrderLimits) {
        *lock(&self.limiter) = OrderLimiter::new(limits, Instant::now());
    }

    /// Names with an issuance lock, and names remembered as failed: both
    /// stay bounded.
    pub fn tracked_names(&self) -> (usize, usize) {
        (lock(&self.locks).len(), lock(&self.failures).len())
    }

    /// The certificate name that covers `host`: the host itself, or the
    /// wildcard of `domain` when DNS-01 is configured.
    pub fn certificate_name(&self, host: &str, domain: &str) -> String {
        if self.cfg.dns_hook.is_some() {
            format!("*.{domain}")
        } else {
            host.to_ascii_lowercase()
        }
    }

    pub fn uses_wildcard(&self) -> bool {
        self.cfg.dns_hook.is_some()
    }

    async fn account(&self) -> Result<&Account, AcmeError> {
        self.account
            .get_or_try_init(|| async {
                let builder = || match &self.cfg.root_ca {
                    Some(pem) => Account::builder_with_root(pem),
                    None => Account::builder(),
                };
                let path = self.cfg.state_dir.join("acme-account.json");
                if let Ok(text) = std::fs::read_to_string(&path) {
                    match serde_json::from_str::<SavedAccount>(&text) {
                        Ok(saved) if saved.directory_url == self.cfg.directory_url => {
                            return Ok(builder()?.from_credentials(saved.credentials).await?);
                        }
                        Ok(_) => tracing::info!("ACME directory changed; registering a new account"),
                        Err(e) => tracing::warn!(error = %e, path = %path.display(), "unreadable ACME account; registering a new one"),
                    }
                }
                let contact: Vec<&str> = self.cfg.contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder()?
                    .create(
                        &NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false },
                        self.cfg.directory_url.clone(),
                        None,
                    )
                    .await?;
                let saved = SavedAccount { directory_url: self.cfg.directory_url.clone(), credentials };
                let json = serde_json::to_vec_pretty(&saved).map_err(|e| AcmeError::Io(e.to_string()))?;
                std::fs::create_dir_all(&self.cfg.state_dir).map_err(|e| AcmeError::Io(e.to_string()))?;
                crate::tls::write_private(&path, &json)?;
                tracing::info!(directory = %self.cfg.directory_url, "registered an ACME account");
                Ok(account)
            })
            .await
    }

    /// Makes sure a valid certificate for `name` is in the store, issuing
    /// one if there is none (or it is due for renewal). Concurrent calls
    /// for one name share one issuance.
    pub async fn ensure(&self, name: &str) -> Result<(), AcmeError> {
        self.ensure_limited(name, None).await
    }

    /// [`Acme::ensure`] for a handshake: a new order also needs a token of
    /// `pod`'s bucket and of the global one ([`OrderLimits`]).
    pub async fn ensure_on_demand(&self, name: &str, pod: &str) -> Result<(), AcmeError> {
        self.ensure_limited(name, Some(pod)).await
    }

    async fn ensure_limited(&self, name: &str, pod: Option<&str>) -> Result<(), AcmeError> {
        let name = name.to_ascii_lowercase();
        let name_lock = Arc::clone(lock(&self.locks).entry(name.clone()).or_default());
        let result = self.ensure_locked(&name, &name_lock, pod).await;
        // the entry goes when no one else waits on it
        let mut locks = lock(&self.locks);
        if locks.get(&name).is_some_and(|l| Arc::ptr_eq(l, &name_lock)) && Arc::strong_count(&name_lock) == 2 {
            locks.remove(&name);
        }
        result
    }

    async fn ensure_locked(&self, name: &str, name_lock: &tokio::sync::Mutex<()>, pod: Option<&str>) -> Result<(), AcmeError> {
        let name = name.to_owned();
        let fresh = |store: &CertStore| {
            store
                .get(&name)
                .is_some_and(|c| !renewal_due(c.not_before, c.not_after, chrono::Utc::now().timestamp(), self.cfg.renew_before))
        };
        if fresh(&self.store) {
            return Ok(());
        }
        let _held = name_lock.lock().await;
        if fresh(&self.store) {
            return Ok(());
        }
        if lock(&self.failures).get(&name).is_some_and(|t| t.elapsed() < FAILURE_BACKOFF) {
            return Err(AcmeError::Backoff(name));
        }
        if let Some(pod) = pod {
            if !lock(&self.limiter).admit(pod, Instant::now()) {
                crate::metrics::ProxyMetrics::outcome(&self.metrics.certificates, "rate_limited");
                tracing::warn!(%name, %pod, "certificate order refused: too many orders lately");
                return Err(AcmeError::RateLimited(name));
            }
        }
        match self.issue(&name).await {
            Ok(()) => {
                crate::metrics::ProxyMetrics::outcome(&self.metrics.certificates, "issued");
                lock(&self.failures).remove(&name);
                Ok(())
            }
            Err(e) => {
                crate::metrics::ProxyMetrics::outcome(&self.metrics.certificates, "failed");
                remember_failure(&mut lock(&self.failures), &name, Instant::now());
                tracing::warn!(%name, error = %e, "certificate issuance failed");
                Err(e)
            }
        }
    }

    /// Orders, validates and installs a certificate for `name`.
    async fn issue(&self, name: &str) -> Result<(), AcmeError> {
        let started = Instant::now();
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(name.to_owned())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut cleanups: Vec<Cleanup> = Vec::new();
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz?;
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => return Err(AcmeError::Protocol(format!("authorization for {name} is {other:?}"))),
                }
                let kind = if self.cfg.dns_hook.is_some() || name.starts_with("*.") {
                    ChallengeType::Dns01
                } else {
                    match self.cfg.challenge {
                        ChallengeKind::Http01 => ChallengeType::Http01,
                        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
                    }
                };
                let mut challenge = authz
                    .challenge(kind.clone())
                    .ok_or_else(|| AcmeError::Protocol(format!("the CA offers no {kind:?} challenge for {name}")))?;
                let key_auth = challenge.key_authorization();
                let ident = challenge.identifier().identifier.clone();
                let Identifier::Dns(domain) = ident else {
                    return Err(AcmeError::Protocol("unexpected identifier type".into()));
                };
                let domain = domain.trim_start_matches("*.").to_owned();
                match kind {
                    ChallengeType::Http01 => {
                        self.store.set_http_challenge(&challenge.token, key_auth.as_str());
                        cleanups.push(Cleanup::Http(challenge.token.clone()));
                    }
                    ChallengeType::TlsAlpn01 => {
                        let mut params = rcgen::CertificateParams::new(vec![domain.clone()]).map_err(|e| AcmeError::Protocol(e.to_string()))?;
                        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(key_auth.digest().as_ref())];
                        let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Protocol(e.to_string()))?;
                        let cert = params.self_signed(&key).map_err(|e| AcmeError::Protocol(e.to_string()))?;
                        let answer = crate::tls::challenge_key(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?;
                        self.store.set_alpn_challenge(&domain, answer);
                        cleanups.push(Cleanup::Alpn(domain.clone()));
                    }
                    _ => {
                        let record = format!("_acme-challenge.{domain}");
                        let value = key_auth.dns_value();
                        self.run_hook("set", &record, &value).await?;
                        cleanups.push(Cleanup::Dns(record, value));
                    }
                }
                challenge.set_ready().await?;
            }
            let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
            let status = order.poll_ready(&retry).await?;
            if status != OrderStatus::Ready {
                let why = order.state().error.as_ref().map(|p| p.to_string()).unwrap_or_else(|| format!("{status:?}"));
                return Err(AcmeError::Protocol(format!("order for {name} not ready: {why}")));
            }
            let key_pem = order.finalize().await?;
            let chain_pem = order.poll_certificate(&retry).await?;
            Ok((chain_pem, key_pem))
        }
        .await;
        for cleanup in cleanups {
            match cleanup {
                Cleanup::Http(token) => self.store.clear_http_challenge(&token),
                Cleanup::Alpn(domain) => self.store.clear_alpn_challenge(&domain),
                Cleanup::Dns(record, value) => {
                    if let Err(e) = self.run_hook("clear", &record, &value).await {
                        tracing::warn!(error = %e, "DNS hook could not clear the challenge record");
                    }
                }
            }
        }
        let (chain_pem, key_pem) = result?;
        let cert = self.store.install(name, &chain_pem, &key_pem)?;
        tracing::info!(%name, serial = %cert.serial, not_after = cert.not_after, ms = started.elapsed().as_millis() as u64, "certificate issued");
        Ok(())
    }

    async fn run_hook(&self, verb: &str, record: &str, value: &str) -> Result<(), AcmeError> {
        let hook = self.cfg.dns_hook.as_ref().ok_or_else(|| AcmeError::Hook("a wildcard certificate needs --acme-dns-hook".into()))?;
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::process::Command::new(hook).args([verb, record, value]).kill_on_drop(true).output(),
        )
        .await
        .map_err(|_| AcmeError::Hook(format!("{} {verb} took over 120 s", hook.display())))?
        .map_err(|e| AcmeError::Hook(format!("running {}: {e}", hook.display())))?;
        if !out.status.success() {
            return Err(AcmeError::Hook(format!(
                "{} {verb} {record} failed ({}): {}",
                hook.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Renews every stored certificate that is due. Returns how many were
    /// renewed.
    pub async fn renew_due(&self) -> usize {
        let now = chrono::Utc::now().timestamp();
        let mut renewed = 0;
        for name in self.store.names() {
            let Some(cert) = self.store.get(&name) else { continue };
            if !renewal_due(cert.not_before, cert.not_after, now, self.cfg.renew_before) {
                continue;
            }
            match self.ensure(&name).await {
                Ok(()) => renewed += 1,
                Err(e) => tracing::warn!(%name, error = %e, "renewal failed; the current certificate stays in use"),
            }
        }
        renewed
    }

    /// Checks for due renewals every `every` until `shutdown`.
    pub async fn renew_periodically(self: Arc<Self>, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => { self.renew_due().await; }
                _ = &mut shutdown => return,
            }
        }
    }
}

/// Records a failed name, forgetting expired failures and, past
/// [`MAX_FAILURES`], the oldest.
fn remember_failure(failures: &mut HashMap<String, Instant>, name: &str, now: Instant) {
    failures.retain(|_, t| now.saturating_duration_since(*t) < FAILURE_BACKOFF);
    while failures.len() >= MAX_FAILURES {
        let Some(oldest) = failures.iter().min_by_key(|(_, t)| **t).map(|(n, _)| n.clone()) else { break };
        failures.remove(&oldest);
    }
    failures.insert(name.to_owned(), now);
}

enum Cleanup {
    Http(String),
    Alpn(String),
    Dns(String, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_in_the_last_third_or_the_configured_window() {
        let day = 86_400;
        let month = Duration::from_secs(30 * day as u64);
        // 90-day certificate, 30-day window: due from day 60
        assert!(!renewal_due(0, 90 * day, 59 * day, month));
        assert!(renewal_due(0, 90 * day, 60 * day, month));
        // 6-day certificate: the window shrinks to 2 days
        assert!(!renewal_due(0, 6 * day, 3 * day, month));
        assert!(renewal_due(0, 6 * day, 4 * day, month));
        // a short configured window wins
        assert!(!renewal_due(0, 90 * day, 80 * day, Duration::from_secs(7 * day as u64)));
        // expired, or a broken validity: due
        assert!(renewal_due(0, 10, 20, month));
        assert!(renewal_due(10, 0, 5, month));
    }

    #[test]
    fn on_demand_orders_are_limited_per_pod_and_globally() {
        let t0 = Instant::now();
        let limits = OrderLimits {
            per_pod: Rate { burst: 3, every: Duration::from_secs(600) },
            global: Rate { burst: 5, every: Duration::from_secs(10) },
            max_pods: 4,
        };
        let mut l = OrderLimiter::new(limits, t0);
        assert!((0..3).all(|_| l.admit("a", t0)));
        assert!(!l.admit("a", t0), "pod a spent its burst");
        assert!(l.admit("b", t0) && l.admit("b", t0));
        assert!(!l.admit("c", t0), "the global burst is spent");
        // a refused order takes no token: after 10 s the global bucket has one
        let t1 = t0 + Duration::from_secs(10);
        assert!(!l.admit("a", t1), "pod a refills only after 600 s");
        assert!(l.admit("c", t1));
        let t2 = t0 + Duration::from_secs(600);
        assert!(l.admit("a", t2));
        // the pod map is bounded: full buckets are forgotten, else new pods wait
        assert!(l.admit("d", t2 + Duration::from_secs(1)));
        assert_eq!(l.tracked(), 4);
        assert!(!l.admit("e", t2 + Duration::from_secs(5)), "four pods with spent tokens are tracked");
        let later = t2 + Duration::from_secs(3600);
        assert!(l.admit("e", later));
        assert!(l.tracked() <= 4);
    }

    #[test]
    fn failures_are_bounded_and_expire() {
        let t0 = Instant::now();
        let mut f = HashMap::new();
        for i in 0..MAX_FAILURES + 10 {
            remember_failure(&mut f, &format!("n{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(f.len(), MAX_FAILURES);
        assert!(!f.contains_key("n0") && f.contains_key(&format!("n{}", MAX_FAILURES + 9)));
        remember_failure(&mut f, "late", t0 + FAILURE_BACKOFF + Duration::from_secs(10));
        assert_eq!(f.len(), 1, "expired failures are dropped");
    }

    #[tokio::test]
    async fn failed_orders_leave_no_lock_behind_and_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AcmeConfig {
            // nothing listens there: every order fails at once
            directory_url: "https://127.0.0.1:1/dir".into(),
            root_ca: None,
            contact: vec![],
            challenge: ChallengeKind::TlsAlpn01,
            dns_hook: None,
            renew_before: Duration::from_secs(86_400),
            state_dir: dir.path().to_owned(),
        };
        let acme = Acme::new(cfg, Arc::new(CertStore::in_memory()));
        acme.set_order_limits(OrderLimits { per_pod: Rate { burst: 2, every: Duration::from_secs(3600) }, ..OrderLimits::default() });
        for i in 0..2 {
            assert!(matches!(acme.ensure_on_demand(&format!("n{i}.test"), "pod").await, Err(AcmeError::Protocol(_) | AcmeError::Io(_))));
        }
        assert_eq!(acme.tracked_names(), (0, 2), "locks are dropped after use; failures are remembered");
        assert!(matches!(acme.ensure_on_demand("n0.test", "pod").await, Err(AcmeError::Backoff(_))));
        assert!(matches!(acme.ensure_on_demand("n2.test", "pod").await, Err(AcmeError::RateLimited(_))));
        assert_eq!(acme.tracked_names().0, 0);
    }

    #[test]
    fn challenge_kinds_parse_with_a_clear_error() {
        assert_eq!("http-01".parse::<ChallengeKind>(), Ok(ChallengeKind::Http01));
        assert_eq!("tls-alpn-01".parse::<ChallengeKind>(), Ok(ChallengeKind::TlsAlpn01));
        assert!("dns-01".parse::<ChallengeKind>().unwrap_err().contains("http-01 or tls-alpn-01"));
    }
}
