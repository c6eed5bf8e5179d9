//! Time as the hub sees it: milliseconds since the Unix epoch, behind a trait
//! so history TTLs can be tested without waiting. Never sleeps, never polls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock milliseconds, used for history TTLs and epochs.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to: for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    // Current time in milliseconds; shared by every reader.
    now: AtomicU64,
}

impl ManualClock {
    /// A clock that starts at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now: AtomicU64::new(start_ms),
        }
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_the_wall_clock_in_milliseconds() {
        let ms = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_millis() as u64
        };
        let before = ms();
        let now = SystemClock.now_ms();
        let after = ms();
        assert!(before <= now && now <= after, "{before} <= {now} <= {after}");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_is_shared_through_an_arc() {
        let clock = std::sync::Arc::new(ManualClock::new(1_000));
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(250);
        assert_eq!(Clock::now_ms(&clock), 1_250);
    }
}
