//! Listeners: `serve(listener, ...)` takes a bound `TcpListener` (tests bind
//! port 0), serves HTTP/1.1 and HTTP/2 (prior knowledge) on it, and on
//! shutdown stops accepting, lets connections finish until a deadline, then
//! closes what remains.
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
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cutover_config::{Limits, ListenerMode, Sticky, Timeouts};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::forward::{handle, ConnCtx};
use crate::metrics::ListenerMetrics;
use crate::ticket::{Ticket, Tickets};
use crate::Shared;

/// hyper's HTTP/1 header count limit when none is set.
const HYPER_MAX_HEADERS: usize = 100;

/// What a listener serves.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// The service this listener belongs to.
    pub service: String,
    /// A preview listener: always this pool.
    pub pool: Option<String>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// How long shutdown waits for open connections.
    pub drain_timeout: Duration,
    pub mode: ListenerMode,
    /// Read a PROXY protocol header first.
    pub proxy_protocol: bool,
}

pub(crate) struct ListenerCtx {
    pub shared: Arc<Shared>,
    pub service_index: usize,
    pub fixed_pool: Option<String>,
    pub label: String,
    pub metrics: ListenerMetrics,
    pub mode: ListenerMode,
    pub proxy_protocol: bool,
    pub header_read: Duration,
    /// Tickets for this listener's connections (and new cookies), in turn.
    pub tickets: Tickets,
    watched: Arc<Watched>,
}

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
    waker: atomic_waker::AtomicWaker,
}

/// What the watchdog asks of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
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

    fn request_close(&self) {
        self.close_requests.fetch_add(1, Ordering::Release);
        self.waker.wake();
    }

    fn mark_gone(&self) {
        self.gone.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn ask(&self, seen: u32) -> Option<Ask> {
        if self.gone.load(Ordering::Acquire) {
            return Some(Ask::Drop);
        }
        let n = self.close_requests.load(Ordering::Acquire);
        (n > seen).then_some(Ask::Close(n))
    }

    /// Ready once the client is gone, or the count of close requests
    /// exceeds `seen`.
    fn poll_ask(&self, seen: u32, cx: &mut Context<'_>) -> Poll<Ask> {
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
struct Watched {
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

    fn insert(
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
struct WatchEntry {
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
async fn watchdog(
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

struct ConnGauge(ListenerMetrics);

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for ConnGauge {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

/// Serves `tcp` until `shutdown` turns true (or its sender is dropped), then
/// drains open connections for up to `spec.drain_timeout`.
pub async fn serve(
    tcp: TcpListener,
    spec: ListenerSpec,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let label = tcp
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
    let service_index = match shared.snapshot.load().service(&spec.service) {
        Some((i, _)) => i,
        None => {
            tracing::error!(listener = %label, service = %spec.service, "listener's service is not in the routing snapshot; not serving");
            return;
        }
    };
    let ctx = Arc::new(ListenerCtx {
        metrics: shared.metrics.listener(&label),
        shared,
        service_index,
        fixed_pool: spec.pool.clone(),
        label: label.clone(),
        mode: spec.mode,
        proxy_protocol: spec.proxy_protocol,
        header_read: spec.timeouts.header_read,
        tickets: Tickets::new(),
        watched: Arc::default(),
    });
    // Aborted when `serve` returns, however it returns.
    let _watchdog = AbortOnDrop(tokio::spawn(watchdog(
        ctx.watched.clone(),
        spec.timeouts.idle,
        spec.timeouts.header_read,
        shutdown.clone(),
    )));
    let builder = Arc::new(http_builder(&spec.limits));
    let permits = Arc::new(Semaphore::new(spec.limits.max_connections));
    let mut conns = JoinSet::new();
    tracing::info!(listener = %label, service = %spec.service, pool = ?spec.pool, mode = spec.mode.as_str(), proxy_protocol = spec.proxy_protocol, "listening");
    if !*shutdown.borrow() {
        accept(&tcp, &ctx, &builder, &permits, &mut conns, &mut shutdown).await;
    }
    drop(tcp);
    drain(conns, &label, spec.drain_timeout).await;
}

/// hyper's server for a listener with these limits: HTTP/1.1 and HTTP/2.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No timer for HTTP/1: `header_read` is the watchdog's (see [`watchdog`]).
    builder
        .http1()
        // hyper would read the socket after every request head to see
        // whether the client left (and allocate a fresh read buffer for
        // it each time); the watchdog checks instead.
        .half_close(true)
        .max_buf_size(limits.max_header_bytes.max(8192));
    // hyper's own limit is 100 headers, on a stack array; naming any limit
    // makes it build (and copy) a fresh array per request instead, which
    // cost 4% of cutover's instructions per request. So only a limit other
    // than 100 is passed on.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .enable_connect_protocol();
    builder
}

/// Accepts connections on `tcp` and spawns their tasks into `conns`, up to
/// `permits`, until `shutdown` turns true (or its sender is dropped).
async fn accept(
    tcp: &TcpListener,
    ctx: &Arc<ListenerCtx>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    permits: &Arc<Semaphore>,
    conns: &mut JoinSet<()>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let label = &ctx.label;
    loop {
        tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok((stream, client)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        conns.spawn(serve_conn(stream, client, ctx.clone(), builder.clone(), shutdown.clone(), permit));
                    }
                    Err(_) => {
                        ctx.metrics.refused_limit.inc();
                        tracing::warn!(listener = %label, %client, "connection refused: max_connections reached");
                        drop(stream);
                    }
                },
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(listener = %label, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
}

/// Lets the connections in `conns` finish for up to `timeout`, then aborts
/// those still open.
async fn drain(mut conns: JoinSet<()>, label: &str, timeout: Duration) {
    let open = conns.len();
    if open > 0 {
        tracing::info!(listener = %label, open, "stopped accepting; draining connections");
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = conns.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                tracing::warn!(listener = %label, cut = conns.len(), "drain deadline passed; closing remaining connections");
                conns.abort_all();
                while conns.join_next().await.is_some() {}
                break;
            }
        }
    }
}

async fn serve_conn(
    mut stream: TcpStream,
    mut client: SocketAddr,
    ctx: Arc<ListenerCtx>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    ctx.metrics.connections.inc();
    let _gauge = ConnGauge(ctx.metrics.clone());
    let _ = stream.set_nodelay(true);
    if ctx.proxy_protocol {
        match read_proxy_header(&mut stream, client, &ctx).await {
            Some(c) => client = c,
            None => return,
        }
    }
    if ctx.mode == ListenerMode::Tcp {
        crate::tcp::serve_conn(stream, client, ctx).await;
        return;
    }
    serve_http(stream, client, ctx, builder, shutdown).await;
}

/// Reads the PROXY header at the start of `stream`: the client it names
/// (`client` when it names none), or `None` when there is no valid header
/// (counted and logged here; the connection is to be closed).
async fn read_proxy_header(
    stream: &mut TcpStream,
    client: SocketAddr,
    ctx: &ListenerCtx,
) -> Option<SocketAddr> {
    match crate::proxy_protocol::read_header(stream, ctx.header_read).await {
        Ok(h) => Some(h.source.unwrap_or(client)),
        Err(e) => {
            ctx.metrics.refused_proxy_protocol.inc();
            tracing::warn!(listener = %ctx.label, peer = %client, "closing connection without a valid PROXY header: {e}");
            None
        }
    }
}

/// Serves HTTP on a downstream connection until it ends, closing it when
/// the watchdog asks (or shutdown comes), dropping it when its client left
/// mid-request.
async fn serve_http(
    stream: TcpStream,
    client: SocketAddr,
    ctx: Arc<ListenerCtx>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<bool>,
) {
    let sticky = ctx
        .shared
        .snapshot
        .load()
        .services
        .get(ctx.service_index)
        .map(|s| s.config.sticky);
    let ticket = match sticky {
        Some(Sticky::ClientIp) => Ticket::from_ip(client.ip()),
        _ => ctx.tickets.next(),
    };
    let activity = Arc::new(ConnActivity::new());
    let conn_ctx = Arc::new(ConnCtx {
        client,
        client_value: crate::headers::client_value(client.ip()),
        ticket,
        listener: ctx.clone(),
        activity: activity.clone(),
    });
    let svc = service_fn(move |req| handle(req, conn_ctx.clone()));
    let socket = socket2::SockRef::from(&stream).try_clone().ok();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    // Registered before looking at `shutdown`: the watchdog either sees
    // this connection when shutdown comes, or shutdown is seen here.
    let _watch = ctx.watched.insert(activity.clone(), socket);
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    let mut seen = 0;
    loop {
        tokio::select! {
            biased;
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(listener = %ctx.label, %client, "connection ended with an error: {e}");
                }
                break;
            }
            ask = std::future::poll_fn(|cx| activity.poll_ask(seen, cx)) => {
                let Ask::Close(n) = ask else {
                    ctx.metrics.client_gone.inc();
                    tracing::debug!(listener = %ctx.label, %client, "client left with a request in progress; dropping its connection");
                    break;
                };
                seen = n;
                if closing {
                    // Asked again and still open between requests: a
                    // client stuck in a request head. Dropped.
                    tracing::debug!(listener = %ctx.label, %client, "closing a connection that did not close gracefully");
                    break;
                }
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}
