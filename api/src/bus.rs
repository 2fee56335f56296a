//! What several API servers share through Redis (`--redis-url`): events
//! published to the other servers ([`Bus::publish`], [`Bus::spawn_listener`]),
//! single-use claims ([`Bus::claim_once`]) and token buckets
//! ([`Bus::take_tokens`]). Without Redis the bus is this process's alone
//! (`pinacle up`). What travels on it is the caller's business: see
//! [`crate::events`] for pod events.

use std::time::Duration;

use futures::StreamExt;
use uuid::Uuid;


/// The Redis channel pod events travel on.
const CHANNEL: &str = "pinacle:pod-events";

/// Token buckets in Redis: each key a hash {tokens, last (ms, Redis's own
/// clock, so servers' clocks do not matter)}, refilled at ARGV[1] tokens
/// per ms up to ARGV[2]; every bucket must hold a token or none is taken.
/// Answers 0, or the milliseconds until a token is there.
static TAKE_TOKENS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local have, wait = {}, 0
for i, key in ipairs(KEYS) do
  local b = redis.call('HMGET', key, 'tokens', 'last')
  local tokens, last = tonumber(b[1]), tonumber(b[2])
  if tokens == nil then tokens, last = burst, now end
  tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
  have[i] = tokens
  if tokens < 1 then wait = math.max(wait, math.ceil((1 - tokens) / rate)) end
end
if wait > 0 then return wait end
local ttl = math.ceil(burst / rate) + 1000
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 'tokens', tostring(have[i] - 1), 'last', tostring(now))
  redis.call('PEXPIRE', key, ttl)
end
return 0
",
    )
});

/// An event as it crosses Redis.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire<E> {
    /// The server that published it (which does not take it back).
    origin: Uuid,
    event: E,
}

/// Where events go beyond this process.
pub struct Bus {
    /// This server's id on the bus.
    origin: Uuid,
    redis: Option<Redis>,
}

struct Redis {
    client: redis::Client,
    publisher: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

/// How long one Redis command (or connecting) may take before the server
/// goes on without it.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

impl Redis {
    /// A connection to use now (cheap clones of one multiplexed connection;
    /// the lock is held only to make or replace it).
    async fn conn(&self) -> Option<redis::aio::MultiplexedConnection> {
        let mut guard = self.publisher.lock().await;
        if guard.is_none() {
            *guard = tokio::time::timeout(REDIS_TIMEOUT, self.client.get_multiplexed_async_connection()).await.ok().and_then(Result::ok);
        }
        guard.clone()
    }

    /// Drops the connection after a failure (the next use makes a new one).
    async fn broken(&self) {
        *self.publisher.lock().await = None;
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<redis::RedisResult<T>> {
        let mut conn = self.conn().await?;
        match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() => {
                self.broken().await;
                Some(Err(e))
            }
            Ok(r) => Some(r),
            Err(_) => {
                self.broken().await;
                None
            }
        }
    }
}

impl Bus {
    /// This process only.
    pub fn local() -> Self {
        Self { origin: Uuid::new_v4(), redis: None }
    }

    /// Through the Redis server at `url` (checked now: a wrong URL fails
    /// the start, with the password left out of the message).
    pub async fn redis(url: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let shown = crate::redact::redacted_url(url);
        let client = redis::Client::open(url).with_context(|| format!("--redis-url {shown}"))?;
        let conn = tokio::time::timeout(Duration::from_secs(10), client.get_multiplexed_async_connection())
            .await
            .with_context(|| format!("connecting to Redis at {shown}: no answer in 10 s"))?
            .with_context(|| format!("connecting to Redis at {shown}"))?;
        Ok(Self { origin: Uuid::new_v4(), redis: Some(Redis { client, publisher: tokio::sync::Mutex::new(Some(conn)) }) })
    }

    /// Claims `key` until `expires_at` (Unix seconds) across every server:
    /// `true` for the first claim only (a single-use token used once in
    /// the whole deployment). Without Redis, `true` (this server's own
    /// record decides). With Redis unreachable, `false`: a single-use
    /// token is refused rather than risk a second use.
    pub async fn claim_once(&self, key: &str, expires_at: i64) -> bool {
        let Some(r) = &self.redis else { return true };
        let set = r.query::<Option<String>>(redis::cmd("SET").arg(format!("pinacle:once:{key}")).arg(1).arg("NX").arg("EXAT").arg(expires_at.max(1))).await;
        match set {
            Some(Ok(done)) => done.is_some(),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Redis failed: a single-use token is refused");
                false
            }
            None => {
                tracing::warn!("Redis unreachable: a single-use token is refused");
                false
            }
        }
    }

    /// Takes a token from every bucket in `keys` across every server (a
    /// token bucket per key in Redis, checked and taken atomically by one
    /// script): `Some(Ok)` if all had one, `Some(Err(wait))` if not;
    /// `None` without Redis, or when it cannot be asked (the caller's own
    /// limiter decides then).
    pub async fn take_tokens(&self, keys: &[String], limits: crate::ratelimit::Limits) -> Option<Result<(), Duration>> {
        let r = self.redis.as_ref()?;
        let mut conn = r.conn().await?;
        let mut invocation = TAKE_TOKENS.prepare_invoke();
        for k in keys {
            invocation.key(format!("pinacle:rate:{k}"));
        }
        invocation.arg(f64::from(limits.per_minute) / 60_000.0).arg(limits.burst);
        match tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(0)) => Some(Ok(())),
            Ok(Ok(wait_ms)) => Some(Err(Duration::from_millis(wait_ms.max(1) as u64))),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Redis failed: rate limits are this server's own for now");
                r.broken().await;
                None
            }
            Err(_) => {
                tracing::warn!("Redis did not answer: rate limits are this server's own for now");
                r.broken().await;
                None
            }
        }
    }

    /// Whether events reach other servers.
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Sends `event` to the other servers (best effort: a server that
    /// misses it still has it in the database, where every event list and
    /// stream starts).
    pub async fn publish<E: serde::Serialize>(&self, event: &E) {
        let Some(r) = &self.redis else { return };
        let Ok(payload) = serde_json::to_string(&Wire { origin: self.origin, event }) else { return };
        match r.query::<i64>(redis::cmd("PUBLISH").arg(CHANNEL).arg(&payload)).await {
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "publishing a pod event to Redis failed"),
            None => tracing::warn!("Redis unreachable: a pod event was not shared with the other servers"),
        }
    }

    /// Hands every event the other servers publish to `deliver` until the
    /// process ends (subscribing again after Redis drops the connection);
    /// `None` without Redis.
    pub fn spawn_listener<E, F>(&self, deliver: F) -> Option<tokio::task::JoinHandle<()>>
    where
        E: serde::de::DeserializeOwned,
        F: Fn(E) + Send + 'static,
    {
        let r = self.redis.as_ref()?;
        let (client, origin) = (r.client.clone(), self.origin);
        Some(tokio::spawn(async move {
            let mut pause = Duration::from_millis(200);
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => match pubsub.subscribe(CHANNEL).await {
                        Ok(()) => {
                            pause = Duration::from_millis(200);
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                let Ok(payload) = msg.get_payload::<String>() else { continue };
                                match serde_json::from_str::<Wire<E>>(&payload) {
                                    Ok(w) if w.origin != origin => deliver(w.event),
                                    Ok(_) => {}
                                    Err(e) => tracing::warn!(error = %e, "an unreadable pod event on the bus"),
                                }
                            }
                            tracing::warn!("the Redis subscription ended; subscribing again");
                        }
                        Err(e) => tracing::warn!(error = %e, "subscribing to pod events in Redis failed"),
                    },
                    Err(e) => tracing::warn!(error = %e, "Redis unreachable; pod events of other servers wait"),
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }))
    }
}
