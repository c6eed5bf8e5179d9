//! Wall-clock time as the protocol counts it: Unix seconds (token `exp`,
//! `expire_at`) and the moment a grace delay after one. The one place the
//! crate reads the system clock for credentials.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The moment `grace` after the Unix second `at`.
pub(crate) fn after(at: i64, grace: Duration) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(at.max(0) as u64) + grace
}

/// How long from now until `at`, zero if it has passed.
pub(crate) fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or_default()
}
