//! Deadlines from configured durations. Validation bounds every duration
//! key (at most 7 days for timeouts), but an `Instant + Duration` that
//! overflows panics, and a panic on the request path kills a worker's
//! task on every request: every deadline built from a configured duration
//! goes through [`later`], which cannot overflow.

use std::time::{Duration, Instant};

/// What [`later`] gives for a duration too long to add: about 30 years
/// ahead, as tokio does for its own far-future timers.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + d`, or a far-future instant when that overflows.
#[inline]
pub fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// [`later`] for tokio's clock.
#[inline]
pub fn later_tokio(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(later(now.into_std(), d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_duration_gives_a_far_future_instant_not_a_panic() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let far = later(now, Duration::MAX);
        assert!(far >= now + Duration::from_secs(86_400 * 365));
        let t = tokio::time::Instant::now();
        assert!(later_tokio(t, Duration::MAX) > t);
    }
}
