//! Time: wall-clock time as the protocol counts it (Unix seconds for token
//! `exp`, `expire_at`, and the moment a grace delay after one; the one
//! place the crate reads the system clock for credentials), and a token
//! bucket for rate limits on tokio's clock (so tests can pause it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix time in milliseconds.
pub(crate) fn unix_now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// `at` in Unix milliseconds (0 before 1970).
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The moment `grace` after the Unix second `at`.
pub(crate) fn after(at: i64, grace: Duration) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(at.max(0) as u64) + grace
}

/// How long from now until `at`, zero if it has passed.
pub(crate) fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or_default()
}

/// A token bucket: `rate` tokens a second, holding at most `rate` (one
/// second's burst).
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl TokenBucket {
    /// A full bucket refilled at `rate` a second.
    pub(crate) fn new(rate: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: tokio::time::Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_rate_and_refills_with_time() {
        let mut b = TokenBucket::new(10);
        assert_eq!((0..20).filter(|_| b.take()).count(), 10, "one second's burst");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            (0..20).filter(|_| b.take()).count(),
            5,
            "half a second refills half"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            (0..20).filter(|_| b.take()).count(),
            10,
            "never more than the burst"
        );
    }
}
