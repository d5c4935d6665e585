//! The watchdog of a listener, and what it watches: each connection's
//! activity.
//!
//! Timeouts of a connection between requests (`idle`, and `header_read` for
//! HTTP/1.1) are kept by one watchdog task per listener, which looks at every
//! connection a few times per timeout and asks those past it to close. A
//! connection's task then polls one atomic flag per wake-up, instead of a
//! timer and the shutdown channel (and hyper's per-request header timer),
//! which together cost ~6% of cutover's instructions per request.
//!
//! The watchdog also notices an HTTP/1 client that left while its request
//! was in progress (hyper's server is told to allow half-closed
//! connections, so it no longer reads the socket mid-request to find out):
//! a request still in progress at two consecutive looks has its client's
//! socket peeked, and on end-of-stream or an error the connection is
//! dropped with its request, so the backend's work is cancelled. hyper's own
//! check (a read after every request head) made it allocate a fresh 8 KiB
//! read buffer per request while the head still shared the old one; that
//! cost ~8% of throughput at 256 connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Per downstream connection: requests in progress, when the last one
/// ended, and close requests from the listener's watchdog.
pub(crate) struct ConnActivity {
    base: Instant,
    active: AtomicUsize,
    last_ms: AtomicU64,
    /// Has carried an HTTP/2 request: only `idle` applies between requests.
    h2: AtomicBool,
    close_requests: AtomicU32,
    /// The client left with a request in progress: drop the connection.
    gone: AtomicBool,
    /// `client_idle` passed: the connection is being dropped.
    client_idle: AtomicBool,
    waker: atomic_waker::AtomicWaker,
}

/// What the watchdog asks of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// Close gracefully; the count of close requests so far.
    Close(u32),
    /// The client left mid-request: drop the connection now.
    Drop,
}

impl ConnActivity {
    pub fn new() -> ConnActivity {
        ConnActivity {
            base: Instant::now(),
            active: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            close_requests: AtomicU32::new(0),
            gone: AtomicBool::new(false),
            client_idle: AtomicBool::new(false),
            waker: atomic_waker::AtomicWaker::new(),
        }
    }

    /// A request starts (no clock read: a connection with a request in
    /// progress is not idle, whenever it started).
    pub fn begin(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end(&self) {
        self.end_at(Instant::now());
    }

    /// A request ended at `now` (the caller's clock read, shared).
    pub fn end_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.base).as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn mark_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    /// How long the connection has had no request in progress (since it
    /// opened, if it never had one).
    pub fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = self.last_ms.load(Ordering::Relaxed);
        let now = self.base.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(last)))
    }

    /// The client left while a request was in progress (its request is
    /// counted as `client_aborted` when it is dropped).
    pub fn client_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// `client_idle` passed on this connection: its requests, dropped with
    /// it, count the timeout.
    pub(super) fn mark_client_idle(&self) {
        self.client_idle.store(true, Ordering::Relaxed);
    }

    pub fn client_idle_expired(&self) -> bool {
        self.client_idle.load(Ordering::Relaxed)
    }

    /// An HTTP/1 request is in progress: a read now is for its body.
    pub(super) fn reading_body(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0 && !self.h2.load(Ordering::Relaxed)
    }

    fn request_close(&self) {
        self.close_requests.fetch_add(1, Ordering::Release);
        self.waker.wake();
    }

    fn mark_gone(&self) {
        self.gone.store(true, Ordering::Release);
        self.waker.wake();
    }

    #[inline]
    fn ask(&self, seen: u32) -> Option<Ask> {
        if self.gone.load(Ordering::Acquire) {
            return Some(Ask::Drop);
        }
        let n = self.close_requests.load(Ordering::Acquire);
        (n > seen).then_some(Ask::Close(n))
    }

    /// Ready once the client is gone, or the count of close requests
    /// exceeds `seen`.
    /// Polled every time its connection's task wakes: inlined.
    #[inline]
    pub(super) fn poll_ask(&self, seen: u32, cx: &mut Context<'_>) -> Poll<Ask> {
        if let Some(a) = self.ask(seen) {
            return Poll::Ready(a);
        }
        self.waker.register(cx.waker());
        match self.ask(seen) {
            Some(a) => Poll::Ready(a),
            None => Poll::Pending,
        }
    }

    /// `last_ms` while a request is in progress: unchanged between two
    /// looks means no request ended in between (an HTTP/1 connection's
    /// requests come one at a time, so it is the same request).
    fn busy_mark(&self) -> Option<u64> {
        (self.active.load(Ordering::Relaxed) > 0).then(|| self.last_ms.load(Ordering::Relaxed))
    }
}

/// Whether the peer of `socket` (a duplicate of a client's socket) has
/// closed or reset it. A peek: nothing is taken from the socket, and data
/// waiting (a pipelined request) means the client is still there.
fn peer_gone(socket: &socket2::Socket) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ),
    }
}

/// A listener's open HTTP connections, for its watchdog.
#[derive(Default)]
pub(super) struct Watched {
    conns: Mutex<HashMap<u64, WatchedConn>>,
    next: AtomicU64,
}

struct WatchedConn {
    activity: Arc<ConnActivity>,
    /// A duplicate of the client's socket (its own descriptor, so the
    /// watchdog never touches one the connection may have closed), to see
    /// whether the client left; None if it could not be made.
    socket: Option<socket2::Socket>,
    /// `busy_mark` at the last look.
    busy: Option<u64>,
}

impl Watched {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, WatchedConn>> {
        crate::upstream::lock(&self.conns)
    }

    pub(super) fn insert(
        self: &Arc<Self>,
        activity: Arc<ConnActivity>,
        socket: Option<socket2::Socket>,
    ) -> WatchEntry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            WatchedConn {
                activity,
                socket,
                busy: None,
            },
        );
        WatchEntry {
            watched: self.clone(),
            id,
        }
    }
}

/// A connection's place in [`Watched`], left when dropped.
pub(super) struct WatchEntry {
    watched: Arc<Watched>,
    id: u64,
}

impl Drop for WatchEntry {
    fn drop(&mut self) {
        self.watched.lock().remove(&self.id);
    }
}

/// The longest time between two looks of a watchdog: a client that left
/// mid-request is noticed within two.
const WATCH_EVERY_MAX: Duration = Duration::from_secs(1);

/// Asks connections to close: those idle (no request in progress) for
/// `idle`, or, unless they carried HTTP/2, for `header_read` (the time an
/// HTTP/1.1 client has for its next request head, including the first);
/// and all of them once `shutdown` turns true. A connection still open
/// at the next look after such a request is closed outright (a client
/// stuck halfway through a request head). An HTTP/1 connection whose
/// request was in progress at the last look too has its client's socket
/// peeked, and is dropped if the client left.
pub(super) async fn watchdog(
    watched: Arc<Watched>,
    idle: Duration,
    header_read: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let h1_limit = idle.min(header_read);
    let every = (h1_limit / 4).clamp(Duration::from_millis(50), WATCH_EVERY_MAX);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for w in watched.lock().values_mut() {
                    look(w, idle, h1_limit);
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    for w in watched.lock().values() {
                        w.activity.request_close();
                    }
                    return;
                }
            }
        }
    }
}

/// One look at one connection (see [`watchdog`]).
fn look(w: &mut WatchedConn, idle: Duration, h1_limit: Duration) {
    let a = &w.activity;
    let h2 = a.h2.load(Ordering::Relaxed);
    if let Some(d) = a.idle_for() {
        w.busy = None;
        if d >= if h2 { idle } else { h1_limit } {
            a.request_close();
        }
        return;
    }
    // HTTP/2 clients cancel streams themselves, and hyper sees a closed
    // HTTP/2 connection.
    if h2 {
        return;
    }
    let mark = a.busy_mark();
    if mark.is_some() && mark == w.busy {
        if w.socket.as_ref().is_some_and(peer_gone) {
            a.mark_gone();
        }
    } else {
        w.busy = mark;
    }
}
