//! A key-value cache for read-mostly data (product pages): in-process by default, Redis when
//! `EMPORIUM_REDIS_URL` is set so every node shares one cache and one invalidation.
//!
//! A cache is an optimisation, never a source of truth: a failing Redis makes reads miss and
//! writes log a warning, it never fails a request. Entries expire after a TTL, which also bounds
//! how stale a node can be if an invalidation is lost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[async_trait::async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Option<Vec<u8>>;
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration);
    async fn delete(&self, key: &str);
    /// `memory` or `redis`, for logs and readiness.
    fn kind(&self) -> &'static str;
    /// Readiness: whether the cache answers (an in-process one always does).
    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Bounded in-process cache. When full, expired entries go first, then an arbitrary half:
/// simple, and hot keys come straight back.
pub struct MemoryCache {
    capacity: usize,
    entries: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

impl MemoryCache {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), entries: Mutex::new(HashMap::new()) }
    }
}

#[async_trait::async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut entries = self.entries.lock().expect("cache lock");
        match entries.get(key) {
            Some((expires, value)) if *expires > Instant::now() => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            let now = Instant::now();
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= self.capacity {
                let keep = self.capacity / 2;
                let mut kept = 0;
                entries.retain(|_, _| {
                    kept += 1;
                    kept <= keep
                });
            }
        }
        entries.insert(key.to_owned(), (Instant::now() + ttl, value));
    }

    async fn delete(&self, key: &str) {
        self.entries.lock().expect("cache lock").remove(key);
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// An in-process copy of a small table that rarely changes (a shop's warehouses), for hot paths
/// that would otherwise read it whole on every call. It is reloaded once older than `max_age`,
/// which bounds how long a change made on another node goes unseen; this node's own changes call
/// [`Snapshot::forget`], so they show at once here.
pub struct Snapshot<T> {
    max_age: Duration,
    state: Mutex<SnapshotState<T>>,
}

struct SnapshotState<T> {
    current: Option<(Instant, std::sync::Arc<T>)>,
    /// Bumped by `forget`: a load that began before it may have read the old rows, so it is
    /// answered but not kept.
    generation: u64,
}

impl<T> Snapshot<T> {
    pub fn new(max_age: Duration) -> Self {
        Self { max_age, state: Mutex::new(SnapshotState { current: None, generation: 0 }) }
    }

    /// The copy if it is fresh, otherwise what `load` reads (kept for the next callers). Callers
    /// that miss at the same moment each load: a small table is cheaper to read twice than to
    /// make every reader wait on one.
    pub async fn get_or_load<E, F>(&self, load: impl FnOnce() -> F) -> Result<std::sync::Arc<T>, E>
    where
        F: std::future::Future<Output = Result<T, E>>,
    {
        let generation = {
            let state = self.state.lock().expect("snapshot lock");
            if let Some((at, value)) = &state.current
                && at.elapsed() < self.max_age
            {
                return Ok(value.clone());
            }
            state.generation
        };
        let loaded_at = Instant::now();
        let value = std::sync::Arc::new(load().await?);
        let mut state = self.state.lock().expect("snapshot lock");
        if state.generation == generation {
            state.current = Some((loaded_at, value.clone()));
        }
        Ok(value)
    }

    /// The table changed here: the next caller reads it again.
    pub fn forget(&self) {
        let mut state = self.state.lock().expect("snapshot lock");
        state.current = None;
        state.generation += 1;
    }
}

/// Redis-backed cache; keys are `<prefix>:<key>`.
pub struct RedisCache {
    connection: redis::aio::ConnectionManager,
    prefix: String,
}

impl RedisCache {
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<RedisCache> {
        use anyhow::Context;
        let client = redis::Client::open(url).context("parsing EMPORIUM_REDIS_URL")?;
        let connection = tokio::time::timeout(Duration::from_secs(5), redis::aio::ConnectionManager::new(client))
            .await
            .context("connecting to Redis timed out (is it running? check EMPORIUM_REDIS_URL)")?
            .context("connecting to Redis (is it running? check EMPORIUM_REDIS_URL)")?;
        Ok(RedisCache { connection, prefix: prefix.to_owned() })
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }
}

#[async_trait::async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut connection = self.connection.clone();
        match redis::cmd("GET").arg(self.key(key)).query_async::<Option<Vec<u8>>>(&mut connection).await {
            Ok(value) => value,
            Err(err) => {
                tracing::warn!(error = %err, "redis cache read failed; reading through");
                None
            }
        }
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        let mut connection = self.connection.clone();
        let result = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async::<()>(&mut connection)
            .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "redis cache write failed");
        }
    }

    async fn delete(&self, key: &str) {
        let mut connection = self.connection.clone();
        if let Err(err) = redis::cmd("DEL").arg(self.key(key)).query_async::<()>(&mut connection).await {
            tracing::warn!(error = %err, "redis cache invalidation failed; the entry expires with its TTL");
        }
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async::<String>(&mut connection).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The cache the settings ask for.
pub async fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<std::sync::Arc<dyn Cache>> {
    Ok(match &settings.redis_url {
        Some(url) => std::sync::Arc::new(RedisCache::connect(url.expose(), &settings.redis_prefix).await?),
        None => std::sync::Arc::new(MemoryCache::new(50_000)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_cache_expires_and_stays_bounded() {
        let cache = MemoryCache::new(4);
        cache.set("a", b"1".to_vec(), Duration::from_secs(60)).await;
        assert_eq!(cache.get("a").await.as_deref(), Some(&b"1"[..]));
        cache.set("gone", b"x".to_vec(), Duration::ZERO).await;
        assert_eq!(cache.get("gone").await, None);
        for i in 0..10 {
            cache.set(&format!("k{i}"), vec![i], Duration::from_secs(60)).await;
        }
        assert!(cache.entries.lock().unwrap().len() <= 4);
        cache.delete("k9").await;
        assert_eq!(cache.get("k9").await, None);
    }

    #[tokio::test]
    async fn a_snapshot_loads_once_while_fresh_and_again_when_forgotten_or_old() {
        let loads = std::sync::atomic::AtomicU32::new(0);
        let load = || async { Ok::<_, ()>(loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1) };
        let fresh = Snapshot::new(Duration::from_secs(60));
        assert_eq!(*fresh.get_or_load(load).await.unwrap(), 1);
        assert_eq!(*fresh.get_or_load(load).await.unwrap(), 1, "fresh: not read again");
        fresh.forget();
        assert_eq!(*fresh.get_or_load(load).await.unwrap(), 2, "forgotten: read again");
        let unneeded = fresh.get_or_load(|| async { Err::<u32, _>("down") }).await;
        assert_eq!(unneeded.map(|v| *v), Ok(2), "a fresh copy answers without loading");

        let aged = Snapshot::new(Duration::ZERO);
        assert_eq!(*aged.get_or_load(load).await.unwrap(), 3);
        assert_eq!(*aged.get_or_load(load).await.unwrap(), 4, "too old: read again");
    }

    #[tokio::test]
    async fn a_load_overtaken_by_forget_is_answered_but_not_kept() {
        let snapshot = Snapshot::new(Duration::from_secs(60));
        let stale = snapshot
            .get_or_load(|| async {
                // The table changes (and this node says so) while the old rows are being read.
                snapshot.forget();
                Ok::<_, ()>("old rows")
            })
            .await
            .unwrap();
        assert_eq!(*stale, "old rows");
        let next = snapshot.get_or_load(|| async { Ok::<_, ()>("new rows") }).await.unwrap();
        assert_eq!(*next, "new rows");
    }
}
