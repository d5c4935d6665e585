//! Passive outlier detection, the data-plane half. Each backend counts its
//! requests' consecutive failures in relaxed atomics ([`Passive`], on the
//! `Backend` that snapshots share); the request path records each
//! attempt's outcome ([`answered`], [`failed`]) and nothing else. When a
//! count reaches the service's `consecutive_failures` it wakes the control
//! plane's ejector through the process's one [`Signal`]; the ejector
//! decides (the `max_ejected_percent` cap, never a pool's last available
//! backend) and ejects by swapping in a new snapshot whose pool holds the
//! [`Ejection`]. The data plane never ejects by itself and never blocks.
//!
//! Per request: one relaxed load on success (a store only when a failure
//! streak ends), a relaxed store and a relaxed add on failure; no lock, no
//! allocation.

use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::SystemTime;

use http::StatusCode;
use tokio::sync::Notify;

use crate::snapshot::{Backend, Service};
use crate::upstream::{h1::H1Error, UpstreamError};

/// Why an attempt counted as a failure of its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    ConnectRefused,
    /// Any other connect failure (unreachable, an HTTP/2 handshake).
    ConnectFailed,
    ConnectTimeout,
    /// Reset or closed before a response head.
    NoResponse,
    /// A response head that does not parse.
    InvalidResponse,
    /// No response head within `response_header`.
    ResponseTimeout,
    /// A 5xx answer (with `count_5xx = true`).
    Status(u16),
}

impl Failure {
    /// As the ejection's reason says it: `5 consecutive failures: <this>`.
    pub fn describe(self) -> String {
        match self {
            Failure::ConnectRefused => "connect refused".into(),
            Failure::ConnectFailed => "connect failed".into(),
            Failure::ConnectTimeout => "connect timed out".into(),
            Failure::NoResponse => "closed or reset before a response head".into(),
            Failure::InvalidResponse => "invalid response head".into(),
            Failure::ResponseTimeout => "no response head in time".into(),
            Failure::Status(s) => format!("answered {s}"),
        }
    }

    /// The failure an upstream error counts as; `None` when the backend
    /// is not to blame (the client's request body failed, or cutover cut
    /// the connection at a drain deadline).
    pub fn of(err: &UpstreamError) -> Option<Failure> {
        Some(match err {
            // cutover cut it (the drain deadline): not the backend's doing.
            e if crate::upstream::is_drain_cut(e) => return None,
            UpstreamError::ConnectTimeout(_) => Failure::ConnectTimeout,
            UpstreamError::Connect(io) => Failure::of_connect(io),
            UpstreamError::Handshake(_) | UpstreamError::Tls(_) => Failure::ConnectFailed,
            UpstreamError::Request(e) if e.is_user() => return None,
            UpstreamError::Request(e) if e.is_parse() => Failure::InvalidResponse,
            UpstreamError::Request(_) => Failure::NoResponse,
            UpstreamError::H1(H1Error::Parse(_) | H1Error::Invalid(_) | H1Error::HeadTooLarge) => {
                Failure::InvalidResponse
            }
            UpstreamError::H1(_) => Failure::NoResponse,
        })
    }

    /// The failure a failed TCP connect counts as.
    pub fn of_connect(err: &std::io::Error) -> Failure {
        match err.kind() {
            std::io::ErrorKind::ConnectionRefused => Failure::ConnectRefused,
            std::io::ErrorKind::TimedOut => Failure::ConnectTimeout,
            _ => Failure::ConnectFailed,
        }
    }

    /// Packed in a `u16` for [`Passive`]: kinds below 100, statuses as is.
    fn code(self) -> u16 {
        match self {
            Failure::ConnectRefused => 1,
            Failure::ConnectFailed => 2,
            Failure::ConnectTimeout => 3,
            Failure::NoResponse => 4,
            Failure::InvalidResponse => 5,
            Failure::ResponseTimeout => 6,
            Failure::Status(s) => s,
        }
    }

    fn from_code(c: u16) -> Option<Failure> {
        Some(match c {
            1 => Failure::ConnectRefused,
            2 => Failure::ConnectFailed,
            3 => Failure::ConnectTimeout,
            4 => Failure::NoResponse,
            5 => Failure::InvalidResponse,
            6 => Failure::ResponseTimeout,
            100..=999 => Failure::Status(c),
            _ => return None,
        })
    }
}

/// One backend's passive counters.
#[derive(Debug, Default)]
pub struct Passive {
    /// Failures since the last success (or since the ejector looked).
    failures: AtomicU32,
    /// The last failure, as [`Failure::code`]; 0 before any.
    last: AtomicU16,
}

impl Passive {
    /// A success ends a failure streak. A load first: no cache-line write
    /// per request while there is no streak.
    #[inline]
    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; the one that reaches `threshold` wakes the ejector.
    #[inline]
    pub fn failure(&self, f: Failure, threshold: u32, signal: &Signal) {
        self.last.store(f.code(), Ordering::Relaxed);
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        if n == threshold {
            signal.wake();
        }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn last_failure(&self) -> Option<Failure> {
        Failure::from_code(self.last.load(Ordering::Relaxed))
    }

    /// Starts counting again (the ejector has acted on the streak).
    pub fn reset(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }
}

/// The data plane's wake-up call to the control plane's ejector: one per
/// process (the controller makes it), held by every snapshot's services.
/// A wake with nobody waiting is kept until the ejector next waits.
#[derive(Debug, Default)]
pub struct Signal {
    notify: Notify,
}

impl Signal {
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Until the next [`Signal::wake`] (or at once if one is pending).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }
}

/// A backend taken out of its pool by passive signals until `until`, or
/// until an active health check of it passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejection {
    /// `5 consecutive failures: connect refused`.
    pub reason: String,
    pub since: SystemTime,
    pub until: SystemTime,
}

/// Records an attempt that got a response head: a success, or with
/// `count_5xx` a 5xx is a failure. On the request path: one relaxed load
/// (see [`Passive::success`]); the rest is out of line.
#[inline]
pub(crate) fn answered(service: &Service, backend: &Backend, status: StatusCode) {
    let o = &service.config.outlier;
    if o.enabled {
        if o.count_5xx && status.is_server_error() {
            failed(service, backend, Some(Failure::Status(status.as_u16())));
        } else {
            backend.passive.success();
        }
    }
}

/// Records a success that is not an answer (a tcp listener's connect).
#[inline]
pub(crate) fn succeeded(service: &Service, backend: &Backend) {
    if service.config.outlier.enabled {
        backend.passive.success();
    }
}

/// Records an attempt that got no response head (or a 5xx that counts):
/// `None` when that was not the backend's doing (it neither counts nor
/// ends a streak). Out of line: failures are the rare path.
#[cold]
#[inline(never)]
pub(crate) fn failed(service: &Service, backend: &Backend, failure: Option<Failure>) {
    let o = &service.config.outlier;
    if let (true, Some(f)) = (o.enabled, failure) {
        backend
            .passive
            .failure(f, o.consecutive_failures, &service.outlier);
    }
}

/// [`failed`] for an upstream error, classified out of line.
#[cold]
#[inline(never)]
pub(crate) fn failed_upstream(service: &Service, backend: &Backend, err: &UpstreamError) {
    failed(service, backend, Failure::of(err));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_failure_that_reaches_the_threshold_wakes_the_ejector_once() {
        let (p, s) = (Passive::default(), Signal::default());
        assert_eq!(p.last_failure(), None);
        p.failure(Failure::ConnectRefused, 3, &s);
        p.failure(Failure::ConnectRefused, 3, &s);
        p.success();
        assert_eq!(p.failures(), 0, "a success ends the streak");
        p.failure(Failure::NoResponse, 3, &s);
        p.failure(Failure::NoResponse, 3, &s);
        let woken = tokio::time::timeout(Duration::from_millis(50), s.woken()).await;
        assert!(woken.is_err(), "two in a row do not wake it");
        p.failure(Failure::Status(503), 3, &s);
        assert_eq!(p.failures(), 3);
        assert_eq!(p.last_failure(), Some(Failure::Status(503)));
        let woken = tokio::time::timeout(Duration::from_secs(5), s.woken()).await;
        assert!(woken.is_ok(), "the third wakes it (kept until it waits)");
        p.failure(Failure::ConnectRefused, 3, &s);
        let again = tokio::time::timeout(Duration::from_millis(50), s.woken()).await;
        assert!(again.is_err(), "past the threshold: no second wake");
        p.reset();
        for _ in 0..3 {
            p.failure(Failure::ConnectTimeout, 3, &s);
        }
        let woken = tokio::time::timeout(Duration::from_secs(5), s.woken()).await;
        assert!(woken.is_ok(), "after a reset a new streak wakes it again");
    }

    #[test]
    fn upstream_errors_are_classified_and_the_clients_are_not_counted() {
        use std::io::{Error, ErrorKind};
        let of = |e| Failure::of(&e);
        assert_eq!(
            of(UpstreamError::Connect(Error::from(
                ErrorKind::ConnectionRefused
            ))),
            Some(Failure::ConnectRefused)
        );
        assert_eq!(
            of(UpstreamError::Connect(Error::from(ErrorKind::TimedOut))),
            Some(Failure::ConnectTimeout)
        );
        assert_eq!(
            of(UpstreamError::ConnectTimeout(Duration::from_secs(1))),
            Some(Failure::ConnectTimeout)
        );
        assert_eq!(
            of(UpstreamError::H1(H1Error::Closed)),
            Some(Failure::NoResponse)
        );
        assert_eq!(
            of(UpstreamError::H1(H1Error::Invalid("x"))),
            Some(Failure::InvalidResponse)
        );
        for f in [
            Failure::ConnectRefused,
            Failure::ConnectFailed,
            Failure::ConnectTimeout,
            Failure::NoResponse,
            Failure::InvalidResponse,
            Failure::ResponseTimeout,
            Failure::Status(502),
        ] {
            assert_eq!(Failure::from_code(f.code()), Some(f));
        }
        assert_eq!(Failure::Status(503).describe(), "answered 503");
        assert_eq!(Failure::ConnectRefused.describe(), "connect refused");
    }
}
