//! Listeners: `serve(listener, ...)` takes a bound `TcpListener` (tests bind
//! port 0), serves HTTP/1.1 and HTTP/2 (prior knowledge) on it, and on
//! shutdown stops accepting, lets connections finish until a deadline, then
//! closes what remains.
//!
//! Timeouts between requests, a client that left mid-request, and the close
//! requests of shutdown are the business of one watchdog task per listener
//! (`watchdog.rs`, which says why).

mod client_io;
mod watchdog;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover_config::{Limits, ListenerMode, Sticky, Timeouts};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::forward::{handle, ConnCtx};
use crate::metrics::ListenerMetrics;
use crate::snapshot::{Service, Snapshot};
use crate::ticket::{Ticket, Tickets};
use crate::tls::ListenerTls;
use crate::Shared;

pub(crate) use watchdog::ConnActivity;
use watchdog::{watchdog, Ask, Watched};

/// hyper's HTTP/1 header count limit when none is set.
const HYPER_MAX_HEADERS: usize = 100;

/// What a listener serves.
#[derive(Debug, Clone, PartialEq)]
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
    /// Append to a client's `X-Forwarded-For` rather than replace it.
    pub trust_forwarded: bool,
    /// TLS termination (its certificates loaded and checked at start).
    pub tls: Option<Arc<ListenerTls>>,
}

pub(crate) struct ListenerCtx {
    pub shared: Arc<Shared>,
    /// The service this listener serves, by name: a reload may add or
    /// remove services, which moves the others in the snapshot.
    pub service: String,
    /// Where `service` was in the snapshot last time it was looked up.
    service_index: AtomicUsize,
    pub fixed_pool: Option<String>,
    pub label: String,
    pub metrics: ListenerMetrics,
    pub mode: ListenerMode,
    pub proxy_protocol: bool,
    /// Append to a client's `X-Forwarded-For` rather than replace it.
    pub trust_forwarded: bool,
    pub header_read: Duration,
    pub tcp_keepalive: Option<cutover_config::TcpKeepalive>,
    pub client_idle: Duration,
    /// TLS termination; `None`: plain TCP.
    pub tls: Option<Arc<ListenerTls>>,
    /// `X-Forwarded-Proto`: `https` on a TLS listener.
    pub proto: &'static str,
    /// Tickets for this listener's connections (and new cookies), in turn.
    pub tickets: Tickets,
    watched: Arc<Watched>,
    /// Descriptor trouble (failed accepts, failed dups) is logged through
    /// this: at most once per second per listener.
    fd_log: LogEvery,
}

impl ListenerCtx {
    /// This listener's service in `snap`: where it was last time (a
    /// relaxed load and a name compare, no allocation), else looked up by
    /// name (after a reload that moved it). `None` once it is gone.
    #[inline]
    pub(crate) fn service_in<'a>(&self, snap: &'a Snapshot) -> Option<&'a Arc<Service>> {
        let i = self.service_index.load(Ordering::Relaxed);
        match snap.services.get(i) {
            Some(s) if s.config.name == self.service => Some(s),
            _ => self.find_service(snap),
        }
    }

    #[cold]
    #[inline(never)]
    fn find_service<'a>(&self, snap: &'a Snapshot) -> Option<&'a Arc<Service>> {
        let (i, s) = snap.service(&self.service)?;
        self.service_index.store(i, Ordering::Relaxed);
        Some(s)
    }
}

/// Lets a message through at most once per [`LogEvery::PERIOD`], and
/// counts those it held back. Shared by a listener's tasks; touched only
/// on errors, never on the request path.
pub(crate) struct LogEvery {
    start: std::time::Instant,
    /// Milliseconds since `start` of the next message let through.
    next_ms: std::sync::atomic::AtomicU64,
    held: std::sync::atomic::AtomicU64,
}

impl LogEvery {
    const PERIOD: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> LogEvery {
        LogEvery {
            start: std::time::Instant::now(),
            next_ms: Default::default(),
            held: Default::default(),
        }
    }

    /// `Some(held back since the last one)` when a message may go out now.
    pub(crate) fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        let period = Self::PERIOD.as_millis() as u64;
        if now < next
            || self
                .next_ms
                .compare_exchange(next, now + period, Relaxed, Relaxed)
                .is_err()
        {
            self.held.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.held.swap(0, Relaxed))
    }
}

/// `EMFILE` and `ENFILE` (the same numbers on Linux, the BSDs and macOS).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// How long the accept loop rests after a failed accept. With no
/// descriptor left the listener stays readable (the connection waits in
/// the queue), so retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
const ACCEPT_BACKOFF_NO_FD: Duration = Duration::from_millis(50);

/// Counts and (at most once a second) logs a failed accept; how long to
/// rest before the next.
fn accept_failed(ctx: &ListenerCtx, e: &std::io::Error) -> Duration {
    let (counter, no_fd) = match e.raw_os_error() {
        Some(EMFILE) => (&ctx.metrics.accept_emfile, true),
        Some(ENFILE) => (&ctx.metrics.accept_enfile, true),
        _ => (&ctx.metrics.accept_other, false),
    };
    counter.inc();
    if let Some(held) = ctx.fd_log.allow() {
        if no_fd {
            tracing::error!(listener = %ctx.label, suppressed = held, "accept failed: {e}; out of file descriptors (raise LimitNOFILE / ulimit -n, or lower max_connections); new connections wait in the queue");
        } else {
            tracing::warn!(listener = %ctx.label, suppressed = held, "accept failed: {e}");
        }
    }
    if no_fd {
        ACCEPT_BACKOFF_NO_FD
    } else {
        ACCEPT_BACKOFF
    }
}

struct ConnGauge(ListenerMetrics);

/// What a downstream connection holds of its listener: a permit of
/// `max_connections` and a place in `cutover_downstream_connections`. Shared
/// with the tunnels the connection becomes (an upgrade hands the socket
/// over to a tunnel, which holds them until it closes).
pub(crate) struct ConnHold {
    _permit: OwnedSemaphorePermit,
    _gauge: ConnGauge,
}

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
    shutdown: watch::Receiver<bool>,
) {
    let drain = spec.drain_timeout;
    let (close_tx, close) = watch::channel(None);
    let mut stop = shutdown.clone();
    // The one signal does both: stop accepting, then close and drain.
    let _forward = AbortOnDrop(tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        close_tx.send_replace(Some(drain));
    }));
    serve_with(
        tcp,
        spec,
        shared,
        ListenerControl {
            stop_accepting: shutdown,
            close,
        },
    )
    .await
}

/// How a listener's owner stops it (a config reload, the shutdown).
pub struct ListenerControl {
    /// Turns true (or its sender goes): stop accepting. The connections
    /// open go on with the settings they started with (a reload that
    /// restarts the accept loop with new settings uses this alone).
    pub stop_accepting: watch::Receiver<bool>,
    /// Turns `Some(deadline)` (or its sender goes: the spec's
    /// `drain_timeout`): stop accepting, close open connections
    /// gracefully, and cut those still open after `deadline`.
    pub close: watch::Receiver<Option<Duration>>,
}

/// Serves `tcp` until `control` says to stop accepting, then lets the
/// open connections run until they end or `control` closes them.
pub async fn serve_with(
    tcp: TcpListener,
    spec: ListenerSpec,
    shared: Arc<Shared>,
    control: ListenerControl,
) {
    let ListenerControl {
        mut stop_accepting,
        mut close,
    } = control;
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
    // What the connections and the watchdog watch: true once closing.
    let (closing_tx, shutdown) = watch::channel(close.borrow().is_some());
    let mut close2 = close.clone();
    let _closing = AbortOnDrop(tokio::spawn(async move {
        let _ = close2.wait_for(Option::is_some).await;
        closing_tx.send_replace(true);
    }));
    let ctx = Arc::new(ListenerCtx {
        metrics: shared.metrics.listener(&label),
        shared,
        service: spec.service.clone(),
        service_index: AtomicUsize::new(service_index),
        fixed_pool: spec.pool.clone(),
        label: label.clone(),
        mode: spec.mode,
        proxy_protocol: spec.proxy_protocol,
        trust_forwarded: spec.trust_forwarded,
        header_read: spec.timeouts.header_read,
        tcp_keepalive: spec.timeouts.tcp_keepalive,
        client_idle: spec.timeouts.client_idle,
        proto: if spec.tls.is_some() { "https" } else { "http" },
        tls: spec.tls.clone(),
        tickets: Tickets::new(),
        watched: Arc::default(),
        fd_log: LogEvery::new(),
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
    let mut shutdown2 = shutdown.clone();
    if !*stop_accepting.borrow() && !*shutdown.borrow() {
        let stop = async {
            tokio::select! {
                _ = stop_accepting.wait_for(|s| *s) => {}
                _ = shutdown2.wait_for(|s| *s) => {}
            }
        };
        accept(&tcp, &ctx, &builder, &permits, &mut conns, &shutdown, stop).await;
    }
    drop(tcp);
    finish(conns, &mut close, &label, spec.drain_timeout).await;
}

/// After the accept loop: the connections it accepted run until they end,
/// or until the owner closes them (then they drain until its deadline;
/// `default_drain` when the owner went).
async fn finish(
    mut conns: JoinSet<()>,
    close: &mut watch::Receiver<Option<Duration>>,
    label: &str,
    default_drain: Duration,
) {
    let deadline = loop {
        if let Some(d) = *close.borrow() {
            break d;
        }
        tokio::select! {
            next = conns.join_next() => if next.is_none() { return },
            changed = close.changed() => if changed.is_err() { break default_drain },
        }
    };
    drain(conns, label, deadline).await;
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
/// `permits`, until `stop` completes. Connections get `shutdown` (closing).
async fn accept(
    tcp: &TcpListener,
    ctx: &Arc<ListenerCtx>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    permits: &Arc<Semaphore>,
    conns: &mut JoinSet<()>,
    shutdown: &watch::Receiver<bool>,
    stop: impl std::future::Future<Output = ()>,
) {
    let label = &ctx.label;
    tokio::pin!(stop);
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
                Err(e) => tokio::time::sleep(accept_failed(ctx, &e)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = &mut stop => break,
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
    permit: OwnedSemaphorePermit,
) {
    ctx.metrics.connections.inc();
    let hold = Arc::new(ConnHold {
        _permit: permit,
        _gauge: ConnGauge(ctx.metrics.clone()),
    });
    let _ = stream.set_nodelay(true);
    crate::sockopt::set_keepalive(&stream, ctx.tcp_keepalive.as_ref());
    if ctx.proxy_protocol {
        match read_proxy_header(&mut stream, client, &ctx).await {
            Some(c) => client = c,
            None => return,
        }
    }
    let conn = Conn {
        client,
        ctx,
        builder,
        shutdown,
        hold,
    };
    match conn.ctx.tls.clone() {
        None => conn.serve(stream).await,
        Some(tls) => {
            if let Some(stream) = tls.accept(stream).await {
                conn.serve(stream).await;
            }
        }
    }
}

/// A downstream connection's byte stream: a TCP socket, or TLS over one.
pub(crate) trait Downstream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;
}

impl Downstream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Downstream for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// An accepted connection, past its PROXY header, about to be served.
struct Conn {
    client: SocketAddr,
    ctx: Arc<ListenerCtx>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<bool>,
    hold: Arc<ConnHold>,
}

impl Conn {
    async fn serve<S: Downstream>(self, stream: S) {
        let Conn {
            client,
            ctx,
            builder,
            shutdown,
            hold,
        } = self;
        if ctx.mode == ListenerMode::Tcp {
            crate::tcp::serve_conn(stream, client, ctx).await;
            return;
        }
        serve_http(stream, client, ctx, builder, shutdown, hold).await;
    }
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
async fn serve_http<S: Downstream>(
    stream: S,
    client: SocketAddr,
    ctx: Arc<ListenerCtx>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<bool>,
    hold: Arc<ConnHold>,
) {
    let sticky = ctx
        .service_in(&ctx.shared.snapshot.load())
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
        hold,
    });
    let svc = service_fn(move |req| handle(req, conn_ctx.clone()));
    let socket = match socket2::SockRef::from(stream.tcp()).try_clone() {
        Ok(s) => Some(s),
        Err(e) => {
            // Served all the same, but the watchdog cannot peek at it.
            ctx.metrics.accept_no_dup.inc();
            if let Some(held) = ctx.fd_log.allow() {
                tracing::warn!(listener = %ctx.label, %client, suppressed = held, "cannot duplicate the connection's descriptor ({e}): a client that leaves mid-request will not be noticed on it");
            }
            None
        }
    };
    let io = client_io::ClientIo::new(stream, activity.clone(), ctx.client_idle);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
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
