//! Flow control between the publishers and subscribers of a load run
//! (`crier bench`, the peer clients), and the run's shared counters. Everything here is atomics plus one
//! `Notify`: subscribers touch it once per frame, so it must never take a
//! lock on their path or wake anyone more than once per wait.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Flow control between publishers and subscribers, and the run's shared
/// counters. Publishers may not run ahead of deliveries by more than the
/// window: the server answers a publication once it is queued, so pacing by
/// answers alone would let its per-client queues fill until it disconnects
/// the subscribers as slow (3008) — measuring that is not this tool's job.
pub struct Flow {
    /// Publications written to the server so far.
    sent: AtomicU64,
    /// Deliveries owed by publications written and not refused.
    owed: AtomicU64,
    /// Deliveries counted by all subscribers so far.
    delivered: AtomicU64,
    /// Outstanding deliveries allowed before publishers wait.
    limit: u64,
    /// A waiter wants to be woken when outstanding deliveries fall to
    /// `resume`; subscribers check it after each frame.
    waiting: AtomicBool,
    resume: AtomicU64,
    caught_up: Notify,
    /// A subscriber is gone, so deliveries can no longer catch up: pace by
    /// the server's answers only.
    degraded: AtomicBool,
}

impl Flow {
    /// A flow that lets at most `limit` deliveries be outstanding.
    pub fn new(limit: u64) -> Flow {
        Flow {
            sent: AtomicU64::new(0),
            owed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            limit,
            waiting: AtomicBool::new(false),
            resume: AtomicU64::new(0),
            caught_up: Notify::new(),
            degraded: AtomicBool::new(false),
        }
    }

    fn outstanding(&self) -> u64 {
        let delivered = self.delivered.load(Ordering::SeqCst);
        self.owed.load(Ordering::SeqCst).saturating_sub(delivered)
    }

    /// Publications written so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Deliveries counted so far.
    pub fn delivered_so_far(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Publishing is over and `deliveries` is exactly what is owed now.
    pub fn owe_exactly(&self, deliveries: u64) {
        self.owed.store(deliveries, Ordering::SeqCst);
    }

    /// A publisher wrote publications worth `deliveries`.
    pub fn written(&self, publications: u64, deliveries: u64) {
        self.owed.fetch_add(deliveries, Ordering::SeqCst);
        self.sent.fetch_add(publications, Ordering::Relaxed);
    }

    /// The server refused a publication worth `deliveries`.
    pub fn refused(&self, deliveries: u64) {
        self.owed.fetch_sub(deliveries, Ordering::SeqCst);
    }

    /// A subscriber counted `n` deliveries. One atomic add, plus two loads
    /// while someone waits; the wake-up happens once per wait.
    pub fn delivered(&self, n: u64) {
        let delivered = self.delivered.fetch_add(n, Ordering::SeqCst) + n;
        if self.waiting.load(Ordering::SeqCst) {
            let outstanding = self.owed.load(Ordering::SeqCst).saturating_sub(delivered);
            if outstanding <= self.resume.load(Ordering::SeqCst) && self.waiting.swap(false, Ordering::SeqCst)
            {
                self.caught_up.notify_waiters();
            }
        }
    }

    /// A subscriber stopped receiving before the end.
    pub fn subscriber_gone(&self) {
        self.degraded.store(true, Ordering::SeqCst);
        self.caught_up.notify_waiters();
    }

    /// Waits until publications worth `deliveries` fit in the window.
    /// False when `until` passed first.
    pub async fn room_for(&self, deliveries: u64, until: Instant) -> bool {
        if self.outstanding() + deliveries <= self.limit {
            return true;
        }
        // Resume at half the window (or whatever fits), so a waiting
        // publisher is woken once per half window, not once per frame.
        let resume = (self.limit / 2).min(self.limit.saturating_sub(deliveries));
        self.wait_outstanding(resume, until).await
    }

    /// Waits until at most `at_most` deliveries are outstanding, or the flow
    /// is degraded. False when `until` passed first.
    pub async fn wait_outstanding(&self, at_most: u64, until: Instant) -> bool {
        loop {
            if self.degraded.load(Ordering::SeqCst) || self.outstanding() <= at_most {
                return true;
            }
            let notified = self.caught_up.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.resume.store(at_most, Ordering::SeqCst);
            self.waiting.store(true, Ordering::SeqCst);
            if self.degraded.load(Ordering::SeqCst) || self.outstanding() <= at_most {
                return true;
            }
            // A wake-up can be lost only if another waiter reset `resume`
            // meanwhile; re-check now and then rather than trust it.
            let recheck = (Instant::now() + Duration::from_millis(50)).min(until);
            if tokio::time::timeout_at(recheck, notified).await.is_err() && Instant::now() >= until {
                return self.outstanding() <= at_most;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishers_wait_for_deliveries_to_catch_up() {
        let flow = Flow::new(10);
        flow.written(1, 10);
        let until = Instant::now() + Duration::from_secs(5);
        assert!(flow.room_for(0, until).await);
        // 5 more fit only once 5 of the 10 owed have been delivered.
        let waiter = async { flow.room_for(5, until).await };
        let deliverer = async {
            // Deliveries arrive while the publisher waits.
            tokio::task::yield_now().await;
            flow.delivered(5);
        };
        let (room, ()) = tokio::join!(waiter, deliverer);
        assert!(room);
        assert_eq!(flow.outstanding(), 5);
    }
}
