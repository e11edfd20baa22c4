//! Token-bucket rate limiting keyed by client (IP or user).
//!
//! The bucket arithmetic is pure ([`TokenBucket`]); [`KeyedLimiter`] keeps buckets in memory for
//! one process. A shared store (Redis) implements [`RateLimiter`] the same way for many nodes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quota {
    /// Burst size: requests allowed at once from a full bucket.
    pub capacity: f64,
    /// Tokens added per second.
    pub refill_per_sec: f64,
}

impl Quota {
    pub fn per_second(n: u32) -> Option<Quota> {
        (n > 0).then(|| Quota { capacity: f64::from(n), refill_per_sec: f64::from(n) })
    }

    pub fn per_minute(n: u32) -> Option<Quota> {
        (n > 0).then(|| Quota { capacity: f64::from(n), refill_per_sec: f64::from(n) / 60.0 })
    }
}

#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn full(quota: Quota, now: Instant) -> Self {
        Self { tokens: quota.capacity, updated: now }
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, quota: Quota, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * quota.refill_per_sec).min(quota.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(missing / quota.refill_per_sec))
        }
    }

    fn is_full(&self, quota: Quota, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * quota.refill_per_sec >= quota.capacity
    }
}

pub trait RateLimiter: Send + Sync + 'static {
    /// `Err(wait)` when `key` has no token left.
    fn check(&self, key: &str) -> Result<(), Duration>;
}

/// In-process buckets. Full buckets are forgotten now and then so memory tracks active clients.
pub struct KeyedLimiter {
    quota: Quota,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

const PRUNE_ABOVE: usize = 10_000;

impl KeyedLimiter {
    pub fn new(quota: Quota) -> Self {
        Self { quota, buckets: Mutex::new(HashMap::new()) }
    }

    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() > PRUNE_ABOVE {
            let quota = self.quota;
            buckets.retain(|_, b| !b.is_full(quota, now));
        }
        match buckets.get_mut(key) {
            Some(bucket) => bucket.try_take(self.quota, now),
            None => {
                let mut bucket = TokenBucket::full(self.quota, now);
                let result = bucket.try_take(self.quota, now);
                buckets.insert(key.to_owned(), bucket);
                result
            }
        }
    }
}

impl RateLimiter for KeyedLimiter {
    fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let quota = Quota::per_minute(10).unwrap();
        let limiter = KeyedLimiter::new(quota);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check_at("ip:1", t0).is_ok());
        }
        let wait = limiter.check_at("ip:1", t0).unwrap_err();
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(6), "{wait:?}");
        assert!(limiter.check_at("ip:2", t0).is_ok(), "other clients are unaffected");
        assert!(limiter.check_at("ip:1", t0 + Duration::from_secs(6)).is_ok(), "one token after 6s");
        assert!(limiter.check_at("ip:1", t0 + Duration::from_secs(6)).is_err());
    }

    #[test]
    fn zero_disables_the_quota() {
        assert!(Quota::per_second(0).is_none());
        assert!(Quota::per_minute(0).is_none());
    }

    #[test]
    fn bucket_never_exceeds_capacity() {
        let quota = Quota::per_second(2).unwrap();
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(quota, t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(bucket.try_take(quota, later).is_ok());
        assert!(bucket.try_take(quota, later).is_ok());
        assert!(bucket.try_take(quota, later).is_err());
    }
}
