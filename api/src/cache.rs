//! Short-lived read caches for the hot read paths (who a bearer token is,
//! the pod list). Every write in this process that could change a cached
//! answer clears the cache at once; the time limit bounds how stale an
//! answer can be after a write by *another* process (a separate host agent
//! or API server) to at most [`ReadCache::ttl`].

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most entries a cache holds; a full cache starts over (simple, bounded).
pub const MAX_ENTRIES: usize = 10_000;

/// A map whose entries expire after a fixed time. A zero `ttl` disables it.
pub struct ReadCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (Instant, V)>>,
    /// Bumped by every [`ReadCache::clear`]: a value read before a clear
    /// is not stored after it.
    generation: std::sync::atomic::AtomicU64,
}

impl<K: Eq + Hash, V: Clone> ReadCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()), generation: std::sync::atomic::AtomicU64::new(0) }
    }

    /// How long an entry may be served.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The entry for `key` if it is younger than the time limit.
    pub fn get(&self, key: &K) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.lock();
        map.get(key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v.clone())
    }

    /// How many times the cache was cleared: a value computed from this
    /// cache's data is stale once this moves.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Where a read starts: pass it to [`ReadCache::insert`] with the value.
    pub fn begin_read(&self) -> (u64, Instant) {
        (self.generation.load(std::sync::atomic::Ordering::SeqCst), Instant::now())
    }

    /// Stores `value` for `key`, read at `read` (from [`ReadCache::begin_read`]):
    /// stamped with the read's start, so a slow read cannot stretch its
    /// life, and dropped if the cache was cleared since (the value may be
    /// older than the write that cleared it).
    pub fn insert(&self, key: K, value: V, read: (u64, Instant)) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) != read.0 {
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (read.1, value));
    }

    /// Forgets everything (after a write that may change any entry).
    pub fn clear(&self) {
        let mut map = self.lock();
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_clear() {
        let c = ReadCache::new(Duration::from_millis(50));
        c.insert("a", 1, c.begin_read());
        assert_eq!(c.get(&"a"), Some(1));
        c.clear();
        assert_eq!(c.get(&"a"), None);
        let (generation, _) = c.begin_read();
        c.insert("a", 1, (generation, Instant::now() - Duration::from_millis(60)));
        assert_eq!(c.get(&"a"), None, "stamped when read: already too old");
        let off = ReadCache::new(Duration::ZERO);
        off.insert("a", 1, off.begin_read());
        assert_eq!(off.get(&"a"), None);
    }

    #[test]
    fn a_read_that_overlaps_a_clear_is_not_stored() {
        let c = ReadCache::new(Duration::from_secs(60));
        let read = c.begin_read();
        c.clear(); // a write lands while the read runs
        c.insert("a", "stale", read);
        assert_eq!(c.get(&"a"), None);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let c = ReadCache::new(Duration::from_secs(60));
        for i in 0..MAX_ENTRIES {
            c.insert(i, i, c.begin_read());
        }
        c.insert(MAX_ENTRIES, 0, c.begin_read());
        assert_eq!(c.get(&0), None);
        assert_eq!(c.get(&MAX_ENTRIES), Some(0));
    }
}
