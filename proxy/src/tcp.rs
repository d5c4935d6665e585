//! tcp listeners: each connection takes its ticket at accept, maps it to a
//! pool and a backend, and stays there as a tunnel (drained like one).

use std::net::SocketAddr;
use std::sync::Arc;

use cutover_config::Sticky;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::{error_chain, ErrorKind};
use crate::outlier::{self, Failure};
use crate::server::{Downstream, ListenerCtx};
use crate::ticket::Ticket;
use crate::tunnel::TunnelRoute;

/// Serves one accepted tcp-listener connection (after any PROXY header).
pub(crate) async fn serve_conn<S: Downstream>(
    mut stream: S,
    client: SocketAddr,
    ctx: Arc<ListenerCtx>,
) {
    let Some(service) = ctx.service_in(&ctx.shared.snapshot.load()).cloned() else {
        return;
    };
    let (pool_idx, ticket) = match &ctx.fixed_pool {
        Some(name) => match service.pool_index(name) {
            Some(i) => (i, None),
            None => return,
        },
        None => {
            let t = match service.config.sticky {
                Sticky::ClientIp => Ticket::from_ip(client.ip()),
                _ => Ticket::random(),
            };
            (service.pool_for(t), Some(t))
        }
    };
    let Some(pool) = service.pools.get(pool_idx).cloned() else {
        return;
    };
    // A down backend gets no new tunnel; a pool with every backend down
    // fails over (with `failover = true`, ticket-routed only) or closes.
    let (pool, backend) = match pool.pick().cloned() {
        Some(backend) => (pool, backend),
        None if pool.all_down() => {
            let failover = if ticket.is_some() {
                service.failover(pool_idx)
            } else {
                None
            };
            match failover {
                Some((_, to, backend)) => (to.clone(), backend.clone()),
                None => {
                    pool.metrics.count_error(ErrorKind::NoHealthyBackend);
                    tracing::warn!(listener = %ctx.label, "tcp: {}; closing", pool.down_message());
                    return;
                }
            }
        }
        None => {
            pool.metrics.count_error(ErrorKind::NoBackend);
            tracing::warn!(listener = %ctx.label, pool = %pool.name, "tcp: no backend to send to; closing");
            return;
        }
    };
    pool.metrics.tcp_connections.inc();
    // Registered before the connect: the drain status counts it from here,
    // and a switch while it connects drains it.
    let routed = TunnelRoute {
        service: service.name(),
        pool: pool.clone(),
        backend: &backend.addr,
        ticket,
    };
    let idle = service.config.timeouts.tunnel_idle;
    let guard = ctx.shared.tunnels.open(&ctx.shared.snapshot, routed, idle);
    let connect = tokio::time::timeout(
        service.config.timeouts.connect,
        TcpStream::connect(backend.addr.as_str()),
    )
    .await;
    // A connect is this backend's passive signal too.
    let mut upstream = match connect {
        Ok(Ok(s)) => {
            outlier::succeeded(&service, &backend);
            s
        }
        Ok(Err(e)) => {
            outlier::failed(&service, &backend, Some(Failure::of_connect(&e)));
            pool.metrics.count_error(ErrorKind::Connect);
            tracing::warn!(listener = %ctx.label, backend = %backend.addr, "tcp: connect failed: {}", error_chain(&e));
            return;
        }
        Err(_) => {
            outlier::failed(&service, &backend, Some(Failure::ConnectTimeout));
            pool.metrics.count_error(ErrorKind::Timeout);
            tracing::warn!(listener = %ctx.label, backend = %backend.addr, "tcp: connect timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    crate::sockopt::set_keepalive(&upstream, service.config.timeouts.tcp_keepalive.as_ref());
    if pool.send_proxy_protocol {
        let local = stream.tcp().local_addr().unwrap_or(client);
        let header = crate::proxy_protocol::encode_v2(client, local);
        if let Err(e) = upstream.write_all(&header).await {
            pool.metrics.count_error(ErrorKind::BadResponse);
            tracing::warn!(backend = %backend.addr, "tcp: cannot send the PROXY header: {e}");
            return;
        }
    }
    backend.enter();
    crate::tunnel::pump(&mut stream, upstream, guard, false, Default::default()).await;
    backend.leave();
}
