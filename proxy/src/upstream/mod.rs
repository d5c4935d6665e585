//! Connections to one backend: pools of idle HTTP/1.1 keep-alive
//! connections (cutover's own client, [`h1`], for requests without a body;
//! hyper's `client::conn`, one connection task each, for the others), or one
//! shared HTTP/2 connection for `h2c` backends.
//!
//! Built by hand on hyper's connection API rather than hyper-util's
//! general-purpose client, because a proxy knows more than that client can:
//! there is exactly one destination per pool (no key hashing), a connection
//! goes back to the idle list when cutover has seen the end of its response
//! body (no extra task per request to wait for readiness), and a request that
//! finds no idle connection dials one for itself (no background dial racing
//! the checkout, which used to open 50-140 surplus connections at 256
//! clients).
//!
//! The shared HTTP/2 connection sends a PING whenever it has read nothing
//! for `h2_ping_interval`, idle or not, and is closed when one goes
//! unanswered for `h2_ping_timeout` ([`H2Ping`]): a backend host that
//! vanished without a RST costs one interval, not a `response_header`
//! timeout per request. The next request finds it closed and dials anew.
//!
//! Every connection is also recorded in a [`ConnRegistry`] with a duplicate
//! of its socket (`try_clone`, a second descriptor for the same socket),
//! whose only use is `shutdown(Both)`: cutover cuts a retired backend's
//! connections when its drain deadline passes. A cut connection's end of
//! stream and failures become [`DrainCut`] errors (a relaxed load of the
//! backend's cut count, on those only: a read that brings bytes costs a
//! length compare), so the request or body it fails is told apart from a
//! backend's failure.

pub mod h1;
pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cutover_config::Protocol;

use crate::headers::Forwarded;
use crate::metrics::UpstreamMetrics;
use http::{Request, Response};
use hyper::body::Incoming;

/// A request body as it goes to a backend.
pub type ReqBody = crate::body::RequestBody;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use tls::{UpStream, UpstreamTls};

/// An idle keep-alive connection is closed after this long unused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// At most this many idle connections are kept per backend; a connection
/// coming back to a full list is closed.
pub const MAX_IDLE: usize = 1024;
/// How many idle connections a checkout looks at that are still finishing
/// their previous exchange (a request body still being sent) before dialing.
const MAX_SKIPPED: usize = 4;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Idle connections of one backend, each with the time it went idle. Most
/// recently used at the back: checkouts take from the back, so surplus
/// connections sink to the front and time out there.
pub struct IdleList<C> {
    list: Mutex<VecDeque<(C, Instant)>>,
}

impl<C> Default for IdleList<C> {
    fn default() -> Self {
        IdleList {
            list: Mutex::new(VecDeque::new()),
        }
    }
}

impl<C> IdleList<C> {
    fn lock(&self) -> MutexGuard<'_, VecDeque<(C, Instant)>> {
        lock(&self.list)
    }

    /// Puts `conn` back, first dropping from the cold end connections past
    /// [`IDLE_TIMEOUT`] or no longer `alive`; a full list closes `conn`.
    fn push(&self, conn: C, alive: impl Fn(&C) -> bool) {
        let now = Instant::now();
        let mut list = self.lock();
        while list
            .front()
            .is_some_and(|(c, since)| !alive(c) || now.duration_since(*since) > IDLE_TIMEOUT)
        {
            list.pop_front();
        }
        if list.len() < MAX_IDLE {
            list.push_back((conn, now));
        }
    }

    /// Closes connections idle for longer than [`IDLE_TIMEOUT`] at `now`,
    /// and those no longer `alive`; returns how many remain.
    fn close_expired(&self, now: Instant, alive: impl Fn(&C) -> bool) -> usize {
        let mut list = self.lock();
        list.retain(|(c, since)| now.duration_since(*since) <= IDLE_TIMEOUT && alive(c));
        list.len()
    }

    /// Idle connections kept now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

/// A [`TrackedIo`]'s epoch when it cannot be cut: above any cut count.
const NEVER_CUT: u32 = u32::MAX;

pub struct ConnRegistry {
    socks: Mutex<HashMap<u64, socket2::Socket>>,
    next: AtomicU64,
    /// How many times [`ConnRegistry::cut_all`] ran: a connection
    /// registered when it was lower has been cut (changed and read
    /// under the `socks` lock at registration and cut). 32 bits, so that
    /// a [`TrackedIo`] keeps its copy in the padding beside `registered`;
    /// it stops at [`NEVER_CUT`] - 1 (four billion cuts) rather than wrap.
    cuts: AtomicU32,
    metrics: UpstreamMetrics,
    /// A failed dup (out of descriptors) is logged through this.
    dup_log: crate::server::LogEvery,
}

impl ConnRegistry {
    pub fn new(metrics: UpstreamMetrics) -> ConnRegistry {
        ConnRegistry {
            socks: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            cuts: AtomicU32::new(0),
            metrics,
            dup_log: crate::server::LogEvery::new(),
        }
    }

    pub fn metrics(&self) -> &UpstreamMetrics {
        &self.metrics
    }

    /// Shuts down every open connection, marking them cut (see
    /// [`DrainCut`]); returns how many there were.
    pub fn cut_all(&self) -> usize {
        let socks = lock(&self.socks);
        let _ = self
            .cuts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                c.checked_add(1).filter(|&c| c < NEVER_CUT)
            });
        for s in socks.values() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        socks.len()
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.socks).len()
    }

    fn register(self: &Arc<Self>, stream: UpStream) -> TrackedIo {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.metrics.opened.inc();
        self.metrics.open.inc();
        // A failed dup only means this connection cannot be cut early
        // (nor counted by the drain status): said, at most once a second.
        let epoch = match socket2::SockRef::from(stream.tcp()).try_clone() {
            Ok(dup) => {
                let mut socks = lock(&self.socks);
                socks.insert(id, dup);
                self.cuts.load(Ordering::Relaxed)
            }
            Err(e) => {
                if let Some(held) = self.dup_log.allow() {
                    let peer = stream.tcp().peer_addr().ok();
                    tracing::warn!(?peer, suppressed = held, "cannot duplicate an upstream connection's descriptor ({e}): it cannot be cut at a drain deadline and the drain status does not count it");
                }
                // Never cut, so never failed as cut.
                NEVER_CUT
            }
        };
        TrackedIo {
            io: stream,
            id,
            epoch,
            registry: self.clone(),
            registered: true,
            reused: false,
        }
    }
}

/// Why an upstream connection failed: cutover cut it at its pool's drain
/// deadline ([`ConnRegistry::cut_all`]). Carried inside an `io::Error`
/// (kind `ConnectionAborted`) through hyper's and h2's errors; h2 keeps
/// only its text, so [`is_drain_cut`] knows it by either.
#[derive(Debug, thiserror::Error)]
#[error("{}", DrainCut::TEXT)]
pub struct DrainCut;

impl DrainCut {
    const TEXT: &'static str = "cutover cut the connection at the pool's drain deadline";

    pub(crate) fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, DrainCut)
    }
}

/// Whether `err`, or an error in its source chain, is a [`DrainCut`].
/// Walks the chain: for the error path only.
#[cold]
pub fn is_drain_cut(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<DrainCut>() {
            return true;
        }
        // `io::Error::source` skips the error it wraps, and `h2::Error`
        // has no source: look inside both.
        let io = match e.downcast_ref::<h2::Error>() {
            Some(h2) => h2.get_io(),
            None => e.downcast_ref::<std::io::Error>(),
        };
        if let Some(inner) = io.and_then(|io| io.get_ref()) {
            if inner.is::<DrainCut>() || inner.to_string() == DrainCut::TEXT {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// An upstream socket that leaves the registry when it closes. hyper's
/// connections get it as `TokioIo<TrackedIo>`.
pub struct TrackedIo {
    io: UpStream,
    id: u64,
    /// The registry's cut count when this connection was registered.
    epoch: u32,
    registry: Arc<ConnRegistry>,
    registered: bool,
    /// Has finished an exchange before (set by cutover's HTTP/1.1 client,
    /// [`h1::Conn`]). Kept here, in this struct's padding, rather than in
    /// `h1::Conn`: a word more there is a word more in every response body,
    /// which hyper moves several times per request.
    pub(crate) reused: bool,
}

impl TrackedIo {
    /// Cut at a drain deadline (and still registered: a tunnel's
    /// connection, forgotten, is never cut with its backend).
    pub(crate) fn was_cut(&self) -> bool {
        self.registered && self.registry.cuts.load(Ordering::Relaxed) > self.epoch
    }

    /// `polled` (the end of the stream or a failure), or a [`DrainCut`]
    /// error if the connection was cut.
    #[cold]
    pub(crate) fn unless_cut<T>(
        &self,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(_) if self.was_cut() => Poll::Ready(Err(DrainCut::io())),
            polled => polled,
        }
    }

    fn stream(&self) -> &UpStream {
        &self.io
    }

    fn stream_mut(&mut self) -> &mut UpStream {
        &mut self.io
    }

    /// A failed write's error: a [`DrainCut`] if the connection was cut.
    #[cold]
    pub(crate) fn cut_or(&self, e: std::io::Error) -> std::io::Error {
        if self.was_cut() {
            DrainCut::io()
        } else {
            e
        }
    }

    /// Leaves the registry: this connection is no longer cut with its backend
    /// nor counted as an upstream connection (an upgraded connection,
    /// drained and counted as a tunnel instead).
    pub fn forget(&mut self) {
        if std::mem::take(&mut self.registered) {
            lock(&self.registry.socks).remove(&self.id);
            self.registry.metrics.open.dec();
        }
    }
}

impl Drop for TrackedIo {
    fn drop(&mut self) {
        self.forget();
    }
}

impl tokio::io::AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        match polled {
            // Bytes came, or not yet: nothing more to do.
            Poll::Ready(Ok(())) if buf.filled().len() > before => polled,
            Poll::Pending => polled,
            // The end of the stream or a failure: a drain cut's, maybe.
            polled => self.unless_cut(polled),
        }
    }
}

impl tokio::io::AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.cut_or(e))),
            polled => polled,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.cut_or(e))),
            polled => polled,
        }
    }
}

/// Why a request got no response from the backend.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("{0}")]
    Request(#[source] hyper::Error),
    #[error("{0}")]
    H1(#[source] h1::H1Error),
}

/// A response body from a backend: hyper's (HTTP/2, and HTTP/1.1 requests
/// with a body or an upgrade) or cutover's own HTTP/1.1 client's.
pub enum UpstreamBody {
    Hyper(Incoming),
    H1(h1::Body),
}

impl UpstreamBody {
    /// The backend stalled mid-body: its connection is closed when the
    /// body is dropped, never kept or reused.
    pub fn abandon(&mut self) {
        if let UpstreamBody::H1(b) = self {
            b.abandon();
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::H1(b) => b.size_hint(),
        }
    }
}

/// A request a pooled connection could not send: given back when the
/// connection closed before any of it was written (the backend's keep-alive
/// timeout, just as the request was handed over), to be sent on a fresh
/// connection instead; otherwise the error.
fn unsent(mut e: TrySendError<Request<ReqBody>>) -> Result<Request<ReqBody>, UpstreamError> {
    e.take_message()
        .ok_or_else(|| UpstreamError::Request(e.into_error()))
}

/// Why a request may go to another backend of its pool: the label of
/// `cutover_retries_total`. (`StaleConnection` is the one retry on the same
/// backend: a pooled connection found dead is replaced by a fresh one.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connect failed (refused, unreachable): nothing was sent.
    ConnectFailed = 0,
    /// The connect timed out: nothing was sent.
    ConnectTimeout,
    /// The HTTP/2 handshake on a fresh connection failed: nothing was sent.
    HandshakeFailed,
    /// An idempotent request without a body got a reset or a close before
    /// any byte of a response.
    Reset,
    /// A pooled connection was found closed; sent again on a fresh one.
    StaleConnection,
}

impl RetryReason {
    pub const ALL: [RetryReason; 5] = [
        RetryReason::ConnectFailed,
        RetryReason::ConnectTimeout,
        RetryReason::HandshakeFailed,
        RetryReason::Reset,
        RetryReason::StaleConnection,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::ConnectFailed => "connect_failed",
            RetryReason::ConnectTimeout => "connect_timeout",
            RetryReason::HandshakeFailed => "handshake_failed",
            RetryReason::Reset => "reset",
            RetryReason::StaleConnection => "stale_connection",
        }
    }
}

/// A request that got no response, and, when it may go to another backend
/// of the pool, the request itself, as it was before [`Upstream::send`]:
/// nothing of it reached the backend (or it is idempotent, has no body and
/// no byte of a response came back).
pub struct SendError {
    pub error: UpstreamError,
    pub again: Option<Box<Again>>,
}

/// A request handed back for another backend, and why.
pub struct Again {
    pub reason: RetryReason,
    pub head: http::request::Parts,
    pub body: ReqBody,
    pub fwd: Forwarded,
}

impl SendError {
    fn fatal(error: UpstreamError) -> SendError {
        SendError { error, again: None }
    }

    /// A failure of hyper's client before anything was sent: the connect
    /// (refused, timed out) or the HTTP/2 handshake. `fwd`, applied to the
    /// request's headers, is taken out again.
    #[cold]
    fn unsent(error: UpstreamError, req: Request<ReqBody>, fwd: Forwarded) -> SendError {
        let reason = match &error {
            UpstreamError::Connect(_) => RetryReason::ConnectFailed,
            UpstreamError::ConnectTimeout(_) => RetryReason::ConnectTimeout,
            UpstreamError::Handshake(_) | UpstreamError::Tls(_) => RetryReason::HandshakeFailed,
            _ => return SendError::fatal(error),
        };
        let (mut head, body) = req.into_parts();
        fwd.unapply(&mut head.headers);
        SendError {
            error,
            again: Some(Box::new(Again {
                reason,
                head,
                body,
                fwd,
            })),
        }
    }
}

/// An HTTP/1.1 connection out of the idle list, for one request; it goes
/// back with [`Upstream::give_back`] once its response has been read whole.
pub type H1Conn = http1::SendRequest<ReqBody>;

/// Liveness PINGs on a shared HTTP/2 connection: sent once nothing was read
/// for `interval` (idle or not); one unanswered for `timeout` closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Ping {
    pub interval: Duration,
    pub timeout: Duration,
}

/// How an [`Upstream`] connects. A backend is reused across snapshots only
/// while these stay equal.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// TLS to the backend (its pool's `tls`); `None`: plain TCP.
    pub tls: Option<Arc<UpstreamTls>>,
    pub connect_timeout: Duration,
    /// `None`: no PINGs (`h2_ping_interval = "0s"`).
    pub h2_ping: Option<H2Ping>,
    /// `None`: no TCP keepalive (`tcp_keepalive = "0s"`).
    pub tcp_keepalive: Option<cutover_config::TcpKeepalive>,
}

impl UpstreamSettings {
    /// The settings a service's `timeouts` give its backends.
    pub fn from_timeouts(t: &cutover_config::Timeouts) -> UpstreamSettings {
        UpstreamSettings {
            tls: None,
            connect_timeout: t.connect,
            h2_ping: t.h2_ping_interval.map(|interval| H2Ping {
                interval,
                timeout: t.h2_ping_timeout,
            }),
            tcp_keepalive: t.tcp_keepalive,
        }
    }
}

pub struct Upstream {
    addr: String,
    /// `addr` parsed once when it is an IP address (no resolver on the
    /// request path); host names are resolved per connect.
    socket_addr: Option<SocketAddr>,
    /// The name TLS sends by SNI and verifies (pools with `tls`).
    tls_name: Option<rustls::pki_types::ServerName<'static>>,
    protocol: Protocol,
    settings: UpstreamSettings,
    registry: Arc<ConnRegistry>,
    /// Idle connections of hyper's client (requests with a body).
    idle: IdleList<H1Conn>,
    /// Idle connections of cutover's own HTTP/1.1 client ([`h1`]).
    direct: Arc<h1::IdleConns>,
    h2: Mutex<Option<http2::SendRequest<ReqBody>>>,
}

impl Upstream {
    pub fn new(
        addr: &str,
        protocol: Protocol,
        settings: UpstreamSettings,
        registry: Arc<ConnRegistry>,
    ) -> Upstream {
        Upstream {
            addr: addr.to_string(),
            socket_addr: addr.parse().ok(),
            tls_name: settings.tls.as_ref().and_then(|t| t.server_name(addr)),
            protocol,
            settings,
            registry,
            idle: IdleList::default(),
            direct: Arc::default(),
            h2: Mutex::new(None),
        }
    }

    /// Idle HTTP/1.1 connections kept now.
    pub fn idle(&self) -> usize {
        self.idle.count() + self.direct.count()
    }

    /// Sends `req` (its hop-by-hop headers removed, except those of an
    /// `upgrade`), on a pooled connection if one is free. A request without
    /// a body or upgrade to an HTTP/1.1 backend goes through cutover's own
    /// client ([`h1`]), whose body returns its connection by itself.
    /// Otherwise, for HTTP/1.1 hyper's connection comes back with the
    /// response: hand it to [`Upstream::give_back`] when the response body
    /// has been read to its end, or drop it (which closes it) if it was not.
    ///
    /// `fwd` holds the headers cutover adds (see [`Forwarded`]): written
    /// after `head`'s own by cutover's client, inserted into them for
    /// hyper's.
    pub async fn send(
        &self,
        mut head: http::request::Parts,
        body: ReqBody,
        fwd: Forwarded,
        upgrade: bool,
    ) -> Result<(Response<UpstreamBody>, Option<H1Conn>), SendError> {
        if self.protocol == Protocol::Http1 && !upgrade && h1::can_send(&head, &body) {
            // No body: the head is all there is to send.
            return match self.send_direct(&head, &fwd).await {
                Ok(resp) => Ok((resp.map(UpstreamBody::H1), None)),
                Err(e) => Err(SendError::direct(e, head, body, fwd)),
            };
        }
        fwd.apply(&mut head.headers);
        let req = Request::from_parts(head, body);
        match self.protocol {
            Protocol::Http1 => match self.send_h1(req).await {
                Ok((resp, conn)) => Ok((resp.map(UpstreamBody::Hyper), conn)),
                Err(Failure::Unsent(e, req)) => Err(SendError::unsent(e, *req, fwd)),
                Err(Failure::Sent(e)) => Err(SendError::fatal(e)),
            },
            Protocol::H2c | Protocol::H2 => match self.send_h2(req).await {
                Ok(resp) => Ok((resp.map(UpstreamBody::Hyper), None)),
                Err(Failure::Unsent(e, req)) => Err(SendError::unsent(e, *req, fwd)),
                Err(Failure::Sent(e)) => Err(SendError::fatal(e)),
            },
        }
    }

    async fn send_direct(
        &self,
        head: &http::request::Parts,
        fwd: &Forwarded,
    ) -> Result<Response<h1::Body>, DirectError> {
        if let Some(conn) = self.direct.take() {
            match h1::send(conn, head, fwd, &self.direct).await {
                Ok(resp) => return Ok(resp),
                // A connection cut at the drain deadline is not replaced.
                Err(e) if e.retry && !is_drain_cut(&e.error) => {
                    self.registry
                        .metrics
                        .count_retry(RetryReason::StaleConnection);
                    tracing::debug!(backend = %self.addr, "idle connection failed before an answer ({}); sending on a new one", e.error)
                }
                Err(e) => return Err(DirectError::h1(e)),
            }
        }
        // Boxed, as every dial is: a new connection is rare, and its
        // (TLS) future would otherwise make every request's future larger.
        let conn = match Box::pin(self.connect()).await {
            Ok(io) => h1::Conn::new(io),
            Err(error) => {
                return Err(DirectError {
                    error,
                    unanswered: true,
                })
            }
        };
        h1::send(conn, head, fwd, &self.direct)
            .await
            .map_err(DirectError::h1)
    }

    async fn send_h1(
        &self,
        req: Request<ReqBody>,
    ) -> Result<(Response<Incoming>, Option<H1Conn>), Failure> {
        let mut req = req;
        if let Some(mut conn) = self.take_idle() {
            match conn.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Some(conn))),
                Err(e) => req = unsent(e).map_err(Failure::Sent)?,
            }
            self.registry
                .metrics
                .count_retry(RetryReason::StaleConnection);
        }
        let mut conn = match Box::pin(self.dial_h1()).await {
            Ok(conn) => conn,
            Err(e) => return Err(Failure::Unsent(e, Box::new(req))),
        };
        match conn.send_request(req).await {
            Ok(resp) => Ok((resp, Some(conn))),
            Err(e) => Err(Failure::Sent(UpstreamError::Request(e))),
        }
    }

    /// The most recently used idle connection that is ready for a request.
    fn take_idle(&self) -> Option<H1Conn> {
        let mut idle = self.idle.lock();
        let mut skipped = Vec::new();
        let mut found = None;
        while let Some(c) = idle.pop_back() {
            if c.0.is_closed() {
                continue;
            }
            if c.0.is_ready() {
                found = Some(c.0);
                break;
            }
            // Still finishing its last exchange; keep it for later.
            skipped.push(c);
            if skipped.len() >= MAX_SKIPPED {
                break;
            }
        }
        idle.extend(skipped.into_iter().rev());
        found
    }

    /// Takes back a connection whose response was read to its end. Closed
    /// connections are dropped, and so are idle ones past [`IDLE_TIMEOUT`]
    /// at the cold end of the list.
    pub fn give_back(&self, conn: H1Conn) {
        if !conn.is_closed() {
            self.idle.push(conn, |c| !c.is_closed());
        }
    }

    /// Closes idle connections unused for longer than [`IDLE_TIMEOUT`] at
    /// `now`, and forgets closed ones; called periodically, so a backend
    /// that gets no more traffic does not keep its idle connections open.
    /// Returns how many idle connections remain.
    pub fn close_expired(&self, now: Instant) -> usize {
        self.idle.close_expired(now, |c| !c.is_closed())
            + self.direct.close_expired(now, h1::Conn::usable)
    }

    async fn connect(&self) -> Result<TrackedIo, UpstreamError> {
        let connecting = async {
            match self.socket_addr {
                Some(a) => TcpStream::connect(a).await,
                None => TcpStream::connect(self.addr.as_str()).await,
            }
        };
        let limit = self.settings.connect_timeout;
        let started = tokio::time::Instant::now();
        let stream = tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(limit))?
            .map_err(UpstreamError::Connect)?;
        // Requests and responses are written whole; do not wait for ACKs.
        let _ = stream.set_nodelay(true);
        crate::sockopt::set_keepalive(&stream, self.settings.tcp_keepalive.as_ref());
        let stream = match &self.settings.tls {
            None => UpStream::Plain(stream),
            // The TLS handshake shares the connect timeout.
            Some(tls) => {
                let name = self.tls_name.clone().ok_or_else(|| {
                    UpstreamError::Tls(std::io::Error::other(format!(
                        "no name to verify {} by: set the pool's tls.server_name",
                        self.addr
                    )))
                })?;
                let handshake = tls.connect(stream, name, self.protocol);
                let tls =
                    tokio::time::timeout_at(crate::time::later_tokio(started, limit), handshake)
                        .await
                        .map_err(|_| UpstreamError::ConnectTimeout(limit))?
                        .map_err(UpstreamError::Tls)?;
                UpStream::Tls(Box::new(tls))
            }
        };
        Ok(self.registry.register(stream))
    }

    async fn dial_h1(&self) -> Result<H1Conn, UpstreamError> {
        let io = self.connect().await?;
        // The HTTP/1 handshake does no I/O; it only sets up the connection.
        let (conn, task) = http1::Builder::new()
            .handshake::<_, ReqBody>(TokioIo::new(io))
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = task.with_upgrades().await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(conn)
    }

    async fn send_h2(&self, req: Request<ReqBody>) -> Result<Response<Incoming>, Failure> {
        let shared = lock(&self.h2).as_ref().filter(|c| !c.is_closed()).cloned();
        let mut req = req;
        if let Some(mut conn) = shared {
            match conn.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(e) => req = unsent(e).map_err(Failure::Sent)?,
            }
            self.registry
                .metrics
                .count_retry(RetryReason::StaleConnection);
        }
        let mut conn = match Box::pin(self.dial_h2()).await {
            Ok(conn) => conn,
            Err(e) => return Err(Failure::Unsent(e, Box::new(req))),
        };
        conn.send_request(req)
            .await
            .map_err(|e| Failure::Sent(UpstreamError::Request(e)))
    }

    /// A new HTTP/2 connection, its task spawned, shared by the requests
    /// that follow. The task ends when the connection does; a PING that
    /// went unanswered is logged and counted there, and the handle reports
    /// `is_closed` from then on.
    async fn dial_h2(&self) -> Result<http2::SendRequest<ReqBody>, UpstreamError> {
        let io = self.connect().await?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        if let Some(ping) = self.settings.h2_ping {
            builder
                .keep_alive_interval(ping.interval)
                .keep_alive_timeout(ping.timeout)
                .keep_alive_while_idle(true);
        }
        let (conn, task) = builder
            .handshake::<_, ReqBody>(TokioIo::new(io))
            .await
            .map_err(UpstreamError::Handshake)?;
        let (addr, timeouts) = (
            self.addr.clone(),
            self.registry.metrics.ping_timeouts.clone(),
        );
        let ping_timeout = self.settings.h2_ping.map_or(Duration::ZERO, |p| p.timeout);
        tokio::spawn(async move {
            match task.await {
                Err(e) if e.is_timeout() => {
                    timeouts.inc();
                    tracing::warn!(
                        backend = %addr,
                        "HTTP/2 connection to backend {addr} closed: a PING got no answer within {ping_timeout:?}; the next request opens a new connection"
                    );
                }
                Err(e) => tracing::debug!(backend = %addr, "upstream HTTP/2 connection ended: {e}"),
                Ok(_) => {}
            }
        });
        // Concurrent first requests may each dial; the last one stays shared
        // and the others close when their streams are done.
        *lock(&self.h2) = Some(conn.clone());
        Ok(conn)
    }
}

/// Why hyper's client sent no request: with the request when none of it
/// was written (the connect or the handshake failed).
enum Failure {
    Unsent(UpstreamError, Box<Request<ReqBody>>),
    Sent(UpstreamError),
}

/// Why cutover's own client got no response, and whether any byte of one
/// arrived.
struct DirectError {
    error: UpstreamError,
    unanswered: bool,
}

impl DirectError {
    fn h1(e: h1::SendError) -> DirectError {
        DirectError {
            unanswered: e.unanswered,
            error: UpstreamError::H1(e.error),
        }
    }
}

impl SendError {
    /// A request without a body that cutover's own client could not send:
    /// another backend may have it when the connect failed, or when no byte
    /// of a response came back and the method is idempotent.
    #[cold]
    fn direct(
        e: DirectError,
        head: http::request::Parts,
        body: ReqBody,
        fwd: Forwarded,
    ) -> SendError {
        let reason = match &e.error {
            UpstreamError::Connect(_) => RetryReason::ConnectFailed,
            UpstreamError::ConnectTimeout(_) => RetryReason::ConnectTimeout,
            // Cut at the drain deadline: the pool is done, not retried.
            _ if is_drain_cut(&e.error) => return SendError::fatal(e.error),
            _ if e.unanswered && h1::idempotent(&head.method) => RetryReason::Reset,
            _ => return SendError::fatal(e.error),
        };
        SendError {
            error: e.error,
            again: Some(Box::new(Again {
                reason,
                head,
                body,
                fwd,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(addr: &str) -> Upstream {
        let reg = prometheus::Registry::new();
        let m = crate::ProxyMetrics::new(&reg).expect("metrics");
        Upstream::new(
            addr,
            Protocol::Http1,
            UpstreamSettings {
                tls: None,
                connect_timeout: Duration::from_secs(1),
                h2_ping: None,
                tcp_keepalive: Some(cutover_config::TcpKeepalive::default()),
            },
            Arc::new(ConnRegistry::new(m.pool("s", "p").upstream)),
        )
    }

    #[tokio::test]
    async fn a_dialed_connection_has_tcp_keepalive_with_the_services_times() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let up = upstream(&listener.local_addr().expect("addr").to_string());
        let io = up.connect().await.expect("dial");
        let s = socket2::SockRef::from(io.stream().tcp());
        let want = cutover_config::TcpKeepalive::default();
        assert!(s.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(s.tcp_keepalive_time().expect("idle"), want.idle);
        assert_eq!(s.tcp_keepalive_interval().expect("interval"), want.interval);
        assert_eq!(s.tcp_keepalive_retries().expect("probes"), want.probes);
    }

    #[tokio::test]
    async fn a_cut_connection_fails_as_a_drain_cut_and_a_later_one_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let up = upstream(&listener.local_addr().expect("addr").to_string());
        let cut = up.connect().await.expect("dial");
        let mut cut_too = up.connect().await.expect("dial");
        assert!(!cut.was_cut());
        assert_eq!(up.registry.cut_all(), 2);
        assert!(cut.was_cut());
        // cutover's own client's read...
        let mut conn = h1::Conn::new(cut);
        let err = std::future::poll_fn(|cx| conn.poll_fill(cx, 64))
            .await
            .expect_err("a read once cut fails");
        assert!(is_drain_cut(&err), "{err}");
        // ... and hyper's (through `AsyncRead`).
        let mut buf = [0u8; 8];
        let err = cut_too.read(&mut buf).await.expect_err("cut");
        assert!(is_drain_cut(&err), "{err}");
        // Opened after the cut: not cut.
        let mut later = up.connect().await.expect("dial");
        assert!(!later.was_cut());
        // The backend's side of `later` is the third one accepted.
        let _first = listener.accept().await.expect("accept");
        let _second = listener.accept().await.expect("accept");
        let (mut peer, _) = listener.accept().await.expect("accept");
        let _ = peer.shutdown().await;
        drop(peer);
        let mut buf = [0u8; 8];
        let n = later.read(&mut buf).await;
        assert!(matches!(n, Ok(0) | Err(_)));
        assert!(!later.was_cut(), "a backend's close is not a cut");
    }

    #[test]
    fn a_drain_cut_is_found_through_hyper_and_h2_errors() {
        use std::error::Error as _;
        let io = DrainCut::io();
        assert!(is_drain_cut(&io));
        let h1 = UpstreamError::H1(h1::H1Error::Read(DrainCut::io()));
        assert!(is_drain_cut(&h1));
        assert!(h1.source().is_some());
        // h2 keeps an io error's text only, in an io error of its own (its
        // `get_io`, as it has no `source`): tests/drain_cut.rs goes through h2.
        let text = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, DrainCut::TEXT);
        assert!(is_drain_cut(&text));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert!(!is_drain_cut(&other));
        assert!(!is_drain_cut(&UpstreamError::H1(h1::H1Error::Closed)));
    }

    #[tokio::test]
    async fn idle_connections_past_the_timeout_are_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        // The peer: accept and hold connections, noting when one closes.
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = closed_tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = tx.send(());
                });
            }
        });
        let up = upstream(&addr);
        let (a, b) = (
            up.dial_h1().await.expect("dial"),
            up.dial_h1().await.expect("dial"),
        );
        up.give_back(a);
        up.give_back(b);
        assert_eq!(up.idle(), 2);
        assert_eq!(up.registry.open(), 2);

        let now = Instant::now();
        assert_eq!(up.close_expired(now), 2, "fresh idle connections stay");
        assert_eq!(
            up.close_expired(now + IDLE_TIMEOUT + Duration::from_secs(1)),
            0
        );
        // Dropping the handles closes the sockets: the peer sees both go.
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(5), closed_rx.recv())
                .await
                .expect("the peer sees the idle connection close")
                .expect("peer task alive");
        }
    }
}
