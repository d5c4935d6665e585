//! Retries: a request that never reached its backend (the connect was
//! refused or timed out, the HTTP/2 handshake failed), or an idempotent one
//! without a body that got no byte of an answer, goes to another available
//! backend of the same pool: up to the service's `retries`, the first at
//! once, later ones after a short jittered backoff, all within the
//! request's `response_header` deadline. Never to another pool, never a
//! request whose body was streamed, never after a response head; a reset
//! is retried once at most. (A pooled connection found dead is sent again
//! on a fresh connection to the same backend, inside `upstream`.)

use std::sync::Arc;
use std::time::Duration;

use tokio::time::error::Elapsed;
use tokio::time::Instant;

use super::request;
use super::response::Received;
use crate::body::RequestGuard;
use crate::outlier;
use crate::snapshot::{Backend, Pool, Service};
use crate::upstream::{Again, RetryReason, SendError, UpstreamError};

/// The backoff before the second retry; it doubles for each one after,
/// and each is jittered by a factor in [0.5, 1.5).
const BACKOFF: Duration = Duration::from_millis(25);

/// The backends a request has tried so far, and why each gave nothing.
/// Made at the first retry: a request that is not retried never has one.
#[derive(Default)]
pub(super) struct Tried {
    pub backends: Vec<Arc<Backend>>,
    /// `ADDR ERROR` per backend tried, for the access log and the error.
    pub failures: Vec<String>,
    resets: u32,
}

/// A request's state at a retry: its service, the backend it is on (moved
/// to each new one), its books, whether it is an upgrade, its deadline.
pub(super) struct At<'a> {
    pub service: &'a Service,
    pub backend: &'a mut Arc<Backend>,
    pub guard: &'a mut RequestGuard,
    pub upgrade: bool,
    pub deadline: Instant,
}

/// The send failed and handed the request back (`failed`): tries it on
/// other backends of the pool while [`next`] allows. Returns the last
/// attempt's outcome and, when there were retries, their summary for the
/// error (see [`note`]). Only a failed send comes here: the first attempt
/// stays inline in `handle`, where a nested future would cost every
/// request a move.
pub(super) async fn again(
    at: At<'_>,
    failed: (UpstreamError, Box<Again>),
) -> (Result<Result<Received, SendError>, Elapsed>, Option<String>) {
    let (mut error, mut again) = failed;
    let mut tried = None;
    let sent = loop {
        let pool = at.guard.pool.clone();
        let Some(next) = next(
            at.service,
            &pool,
            at.backend,
            &error,
            &again,
            &mut tried,
            at.deadline,
        ) else {
            // The last attempt's failure is recorded with its outcome.
            break Ok(Err(SendError { error, again: None }));
        };
        // A passive signal of the backend left behind (see `outlier`).
        outlier::failed_upstream(at.service, at.backend, &error);
        let Again {
            mut head,
            body,
            mut fwd,
            ..
        } = *again;
        // Same protocol, so this cannot fail where the first prepare did
        // not; if it does, the request stops here with the first error.
        if request::retarget(&mut head, &mut fwd, at.backend, &next.backend).is_err() {
            break Ok(Err(SendError { error, again: None }));
        }
        if let Some(delay) = next.delay {
            tokio::time::sleep(delay).await;
        }
        at.guard.move_to(next.backend.clone());
        *at.backend = next.backend;
        let sent = tokio::time::timeout_at(
            at.deadline,
            at.backend.upstream.send(head, body, fwd, at.upgrade),
        )
        .await;
        match sent {
            Ok(Err(SendError {
                error: e,
                again: Some(a),
            })) => (error, again) = (e, a),
            sent => break sent,
        }
    };
    let summary = tried.and_then(|t| note(at.guard, *t));
    (sent, summary)
}

/// Where a failed attempt goes next: another backend, after `delay`.
pub(super) struct Next {
    pub backend: Arc<Backend>,
    pub delay: Option<Duration>,
}

/// Records the failed attempt on `failed` and picks the backend for the
/// next one; `None` when the request may not go again (retries used up,
/// a second reset, no other available backend of its protocol, or no
/// time left before `deadline`). Counted in `cutover_retries_total`.
#[cold]
#[inline(never)]
pub(super) fn next(
    service: &Service,
    pool: &Pool,
    failed: &Arc<Backend>,
    error: &UpstreamError,
    again: &Again,
    tried: &mut Option<Box<Tried>>,
    deadline: Instant,
) -> Option<Next> {
    let tried = tried.get_or_insert_with(Box::default);
    let retries_done = tried.backends.len() as u32;
    if retries_done >= service.config.retries
        || (again.reason == RetryReason::Reset && tried.resets > 0)
    {
        return None;
    }
    tried.backends.push(failed.clone());
    let picked = pool.pick_other(&tried.backends, failed.protocol).cloned();
    let delay = (retries_done > 0).then(|| backoff(retries_done));
    let Some(backend) = picked.filter(|_| delay.is_none_or(|d| Instant::now() + d < deadline))
    else {
        // The failed backend stays the request's last; not a retried one.
        tried.backends.pop();
        return None;
    };
    tried.failures.push(format!("{} {error}", failed.addr));
    if again.reason == RetryReason::Reset {
        tried.resets += 1;
    }
    pool.metrics.upstream.count_retry(again.reason);
    tracing::debug!(
        service = service.name(),
        pool = %pool.name,
        from = %failed.addr,
        to = %backend.addr,
        reason = again.reason.as_str(),
        "retrying on another backend: {error}"
    );
    Some(Next { backend, delay })
}

/// After the last attempt: the access log line shows the backends tried
/// before, and the summary (`after 2 failed attempts: A; B`) is returned
/// for the error, should the last attempt fail too.
#[cold]
#[inline(never)]
pub(super) fn note(guard: &mut RequestGuard, tried: Tried) -> Option<String> {
    if tried.failures.is_empty() {
        return None;
    }
    let summary = format!(
        "after {} failed attempt{} on other backends: {}",
        tried.failures.len(),
        if tried.failures.len() == 1 { "" } else { "s" },
        tried.failures.join("; ")
    );
    if let Some(access) = guard.access.as_mut() {
        access.retried = tried.failures;
    }
    Some(summary)
}

/// The delay before retry number `done + 1` (`done` >= 1): 25 ms, 50 ms,
/// 100 ms ... (capped at 1 s), each times a factor in [0.5, 1.5).
fn backoff(done: u32) -> Duration {
    let base = BACKOFF.saturating_mul(1 << done.saturating_sub(1).min(6));
    base.min(Duration::from_secs(1))
        .mul_f64(0.5 + fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(
                first >= Duration::from_micros(12_500) && first < Duration::from_micros(37_500)
            );
            let second = backoff(2);
            assert!(second >= Duration::from_millis(25) && second < Duration::from_millis(75));
            assert!(backoff(40) < Duration::from_millis(1500));
        }
    }
}
