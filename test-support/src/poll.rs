//! Bounded polls: the only way a test here waits for something to happen
//! (or to keep not happening). No test sleeps a fixed time and hopes.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often the polls below look.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Polls `f` every [`POLL_EVERY`] until it is true (returns true) or
/// `within` passes (returns false). Callers assert on the result with a
/// message saying what did not happen:
///
/// ```ignore
/// assert!(eventually(Duration::from_secs(2), || async { cond().await }).await, "what");
/// ```
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The other side of [`eventually`]: polls `f` every [`POLL_EVERY`] for
/// `during` and returns false as soon as it is false, true if it held the
/// whole time. For "nothing happens before the deadline" checks.
pub async fn holds_for<F, Fut>(during: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + during;
    loop {
        if !f().await {
            return false;
        }
        if Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
