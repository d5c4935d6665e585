//! Listeners: `serve(listener, ...)` takes a bound `TcpListener` (tests bind
//! port 0), serves HTTP/1.1 and HTTP/2 (prior knowledge) on it, and on
//! shutdown stops accepting, lets connections finish until a deadline, then
//! closes what remains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cutover_config::{Limits, ListenerMode, Sticky, Timeouts};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::body::ConnActivity;
use crate::forward::{handle, ConnCtx};
use crate::metrics::ListenerMetrics;
use crate::ticket::Ticket;
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
    pub idle: Duration,
    pub mode: ListenerMode,
    pub proxy_protocol: bool,
    pub header_read: Duration,
}

struct ConnGauge(ListenerMetrics);

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
        idle: spec.timeouts.idle,
        mode: spec.mode,
        proxy_protocol: spec.proxy_protocol,
        header_read: spec.timeouts.header_read,
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(spec.timeouts.header_read)
        .max_buf_size(spec.limits.max_header_bytes.max(8192));
    // hyper's own limit is 100 headers, on a stack array; naming any limit
    // makes it build (and copy) a fresh array per request instead, which
    // cost 4% of cutover's instructions per request. So only a limit other
    // than 100 is passed on.
    if spec.limits.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(spec.limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(spec.limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .enable_connect_protocol();
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(spec.limits.max_connections));
    let mut conns = JoinSet::new();
    tracing::info!(listener = %label, service = %spec.service, pool = ?spec.pool, mode = spec.mode.as_str(), proxy_protocol = spec.proxy_protocol, "listening");

    if !*shutdown.borrow() {
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
    drop(tcp);
    let open = conns.len();
    if open > 0 {
        tracing::info!(listener = %label, open, "stopped accepting; draining connections");
    }
    let deadline = tokio::time::sleep(spec.drain_timeout);
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
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    ctx.metrics.connections.inc();
    let _gauge = ConnGauge(ctx.metrics.clone());
    let _ = stream.set_nodelay(true);
    if ctx.proxy_protocol {
        match crate::proxy_protocol::read_header(&mut stream, ctx.header_read).await {
            Ok(h) => {
                if let Some(src) = h.source {
                    client = src;
                }
            }
            Err(e) => {
                ctx.metrics.refused_proxy_protocol.inc();
                tracing::warn!(listener = %ctx.label, peer = %client, "closing connection without a valid PROXY header: {e}");
                return;
            }
        }
    }
    if ctx.mode == ListenerMode::Tcp {
        crate::tcp::serve_conn(stream, client, ctx).await;
        return;
    }
    let sticky = ctx
        .shared
        .snapshot
        .load()
        .services
        .get(ctx.service_index)
        .map(|s| s.config.sticky);
    let ticket = match sticky {
        Some(Sticky::ClientIp) => Ticket::from_ip(client.ip()),
        _ => Ticket::random(),
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
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval((ctx.idle / 4).max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(listener = %ctx.label, %client, "connection ended with an error: {e}");
                }
                break;
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = tick.tick(), if !closing => {
                if activity.idle_for().is_some_and(|d| d >= ctx.idle) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
