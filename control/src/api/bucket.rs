//! A token bucket: `burst` tokens, refilled at `per_minute`. The API's
//! per-principal rate limit and the edge's per-address failed-authentication
//! throttle both count with it.

use std::time::{Duration, Instant};

/// One bucket's state.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

/// How a kind of bucket fills.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Tokens a full bucket holds (at least 1).
    pub burst: f64,
    /// Tokens added per minute.
    pub per_minute: f64,
}

impl Rate {
    /// From configuration values.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_minute: f64::from(per_minute),
        }
    }

    /// A full bucket.
    pub fn full(&self, now: Instant) -> Bucket {
        Bucket {
            tokens: self.burst,
            at: now,
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_minute / 60.0;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
    }

    /// Takes a token if there is one.
    pub fn take(&self, b: &mut Bucket, now: Instant) -> bool {
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes a token whether or not there is one (never below empty).
    pub fn spend(&self, b: &mut Bucket, now: Instant) {
        self.refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }

    /// How long until the bucket holds a token; `None` when it holds one.
    pub fn wait(&self, b: &mut Bucket, now: Instant) -> Option<Duration> {
        self.refill(b, now);
        if b.tokens >= 1.0 {
            return None;
        }
        let per_s = self.per_minute / 60.0;
        Some(if per_s > 0.0 {
            Duration::from_secs_f64(((1.0 - b.tokens) / per_s).ceil().max(1.0))
        } else {
            Duration::from_secs(3600)
        })
    }

    /// Whether the bucket is full (an idle source can be forgotten).
    pub fn is_full(&self, b: &Bucket) -> bool {
        b.tokens >= self.burst
    }

    /// When the bucket was last touched.
    pub fn last(b: &Bucket) -> Instant {
        b.at
    }
}
