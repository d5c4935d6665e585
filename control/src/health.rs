//! Active health checks: one task per checked backend, in the control
//! plane, never on the request path. Every `interval` (jittered by ±10%,
//! the first at a random point of the first interval so that many backends
//! do not check in step) a check runs, bounded by `timeout`: an HTTP GET of
//! the pool's `path` over the backend's protocol (HTTP/1.1, or h2c with
//! prior knowledge), or a TCP connect when there is no path. Each check
//! opens its own connection (the proxy's pooled connections are left
//! alone, and a refused connect is seen as such).
//!
//! `unhealthy_threshold` failures in a row take a backend down,
//! `healthy_threshold` successes in a row bring it back; only a transition
//! touches the routing state, through [`Controller::set_health`] (a new
//! snapshot, same backends, same generation). Backends start up: a start
//! never refuses traffic before the first checks had their say. Every
//! passing check also lifts the backend's passive ejection, if any
//! ([`Controller::active_check_passed`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cutover_config::{HealthCheck, Protocol};
use cutover_proxy::time::later_tokio;
use cutover_proxy::upstream::tls::{UpStream, UpstreamTls};
use cutover_proxy::Health;
use http::{header, Request, Uri};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::IntCounter;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::controller::Controller;

/// One checked backend.
struct Target {
    service: String,
    pool: String,
    addr: String,
    protocol: Protocol,
    /// Its pool's TLS: checks shake hands as requests do.
    tls: Option<Arc<UpstreamTls>>,
    check: HealthCheck,
    ok: IntCounter,
    failed: IntCounter,
}

/// Runs the checks of every backend of every pool that has a
/// `health_check`, until `shutdown` turns true (or its sender goes).
/// After a config reload it re-reads its targets: new backends are
/// checked, removed ones no longer, and a backend whose check is the same
/// keeps its task (and its run of results).
pub async fn run(controller: Arc<Controller>, mut shutdown: watch::Receiver<bool>) {
    let mut reloads = controller.subscribe_reloads();
    let mut tasks = JoinSet::new();
    let mut running: Vec<(TargetKey, AbortHandle)> = Vec::new();
    loop {
        running = sync_targets(&controller, &mut tasks, running, &shutdown);
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            changed = reloads.changed() => if changed.is_err() { break },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// What makes a check task the same across a reload.
type TargetKey = (
    String,
    String,
    String,
    Protocol,
    HealthCheck,
    Option<cutover_config::UpstreamTlsConfig>,
);

fn key(t: &Target) -> TargetKey {
    (
        t.service.clone(),
        t.pool.clone(),
        t.addr.clone(),
        t.protocol,
        t.check.clone(),
        t.tls.as_ref().map(|t| t.config().clone()),
    )
}

/// Every backend the config in force checks.
fn targets(controller: &Controller) -> Vec<Target> {
    let config = controller.config();
    let metrics = controller.proxy_metrics();
    let snapshot = controller.snapshot().load_full();
    let tls_of = |service: &str, pool: &str, addr: &str| {
        let (_, s) = snapshot.service(service)?;
        let p = s.pools.iter().find(|p| p.name == pool)?;
        p.backends.iter().find(|b| b.addr == addr)?.tls().cloned()
    };
    let mut out = Vec::new();
    for sc in &config.services {
        for pc in &sc.pools {
            let Some(check) = &pc.health_check else {
                continue;
            };
            let pm = metrics.pool(&sc.name, &pc.name);
            for bc in &pc.backends {
                out.push(Target {
                    service: sc.name.clone(),
                    pool: pc.name.clone(),
                    addr: bc.addr.clone(),
                    protocol: bc.protocol,
                    tls: tls_of(&sc.name, &pc.name, &bc.addr),
                    check: check.clone(),
                    ok: pm.health_ok.clone(),
                    failed: pm.health_failed.clone(),
                });
            }
        }
    }
    out
}

/// Stops the tasks of targets the config no longer has and starts those
/// of new ones; returns what runs now.
fn sync_targets(
    controller: &Arc<Controller>,
    tasks: &mut JoinSet<()>,
    running: Vec<(TargetKey, AbortHandle)>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<(TargetKey, AbortHandle)> {
    let wanted = targets(controller);
    let keys: Vec<TargetKey> = wanted.iter().map(key).collect();
    let (mut kept, stopped): (Vec<_>, Vec<_>) =
        running.into_iter().partition(|(k, _)| keys.contains(k));
    for (_, handle) in &stopped {
        handle.abort();
    }
    let before = kept.len();
    for (target, k) in wanted.into_iter().zip(keys) {
        if kept.iter().any(|(r, _)| *r == k) {
            continue;
        }
        let handle = tasks.spawn(watch_backend(target, controller.clone(), shutdown.clone()));
        kept.push((k, handle));
    }
    let started = kept.len() - before;
    if started > 0 || !stopped.is_empty() {
        tracing::info!(
            backends = kept.len(),
            started,
            stopped = stopped.len(),
            "active health checks started"
        );
    }
    kept
}

/// `d` scaled by a random factor in [lo, hi).
/// (`mul_f64` would panic on an overflow: `d` itself then.)
fn jittered(d: Duration, lo: f64, hi: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * (lo + (hi - lo) * fastrand::f64())).unwrap_or(d)
}

async fn watch_backend(
    target: Target,
    controller: Arc<Controller>,
    mut shutdown: watch::Receiver<bool>,
) {
    let hc = &target.check;
    let mut state = Thresholds::new(hc.healthy_threshold, hc.unhealthy_threshold);
    // A task started by a reload picks up where the backend stands.
    state.up = controller.backend_is_up(&target.service, &target.pool, &target.addr);
    let mut next = later_tokio(Instant::now(), jittered(hc.interval, 0.0, 1.0));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        // Start to start: a slow check does not stretch the cadence.
        next = later_tokio(Instant::now(), jittered(hc.interval, 0.9, 1.1));
        let result = tokio::select! {
            r = check(&target, hc) => r,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match &result {
            Ok(()) => {
                target.ok.inc();
                // A passing check ends a passive ejection (as in Envoy).
                controller.active_check_passed(&target.service, &target.pool, &target.addr);
            }
            Err(_) => target.failed.inc(),
        }
        let Some(up) = state.record(result.is_ok()) else {
            continue;
        };
        let health = match result {
            Ok(()) => Health::Up,
            Err(reason) => Health::Down {
                reason,
                since: SystemTime::now(),
            },
        };
        if up {
            tracing::info!(service = %target.service, pool = %target.pool, backend = %target.addr, "backend up: {} good checks in a row", hc.healthy_threshold);
        } else if let Health::Down { reason, .. } = &health {
            tracing::warn!(service = %target.service, pool = %target.pool, backend = %target.addr, "backend down: {} failed checks in a row, the last: {reason}", hc.unhealthy_threshold);
        }
        controller.set_health(&target.service, &target.pool, &target.addr, health);
    }
}

/// Consecutive results against the current state, and the thresholds
/// that flip it. Starts up.
#[derive(Debug)]
struct Thresholds {
    up: bool,
    streak: u32,
    healthy: u32,
    unhealthy: u32,
}

impl Thresholds {
    fn new(healthy: u32, unhealthy: u32) -> Thresholds {
        Thresholds {
            up: true,
            streak: 0,
            healthy: healthy.max(1),
            unhealthy: unhealthy.max(1),
        }
    }

    /// Records one check; `Some(up)` when the state flips.
    fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up {
            self.unhealthy
        } else {
            self.healthy
        };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(ok)
    }
}

/// One check, bounded by the timeout; `Err` says why it failed.
async fn check(target: &Target, hc: &HealthCheck) -> Result<(), String> {
    match tokio::time::timeout(hc.timeout, probe(target, hc)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(hc.timeout)
        )),
    }
}

async fn probe(target: &Target, hc: &HealthCheck) -> Result<(), String> {
    let (addr, protocol) = (target.addr.as_str(), target.protocol);
    let stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect refused".to_string(),
        _ => format!("connect failed: {e}"),
    })?;
    let _ = stream.set_nodelay(true);
    let stream = match &target.tls {
        None => UpStream::Plain(stream),
        Some(tls) => {
            let name = tls
                .server_name(addr)
                .ok_or_else(|| "no TLS name to verify the backend by".to_string())?;
            let tls = tls
                .connect(stream, name, protocol)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            UpStream::Tls(Box::new(tls))
        }
    };
    let Some(path) = &hc.path else {
        return Ok(());
    };
    let host = hc.host.as_deref().unwrap_or(addr);
    let io = TokioIo::new(stream);
    let failed = |e: hyper::Error| format!("request failed: {e}");
    let status = match protocol {
        Protocol::Http1 => {
            let req = Request::get(path.as_str())
                .header(header::HOST, host)
                .header(header::USER_AGENT, "cutover-health-check")
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("bad request: {e}"))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(failed)?;
            answer(send.send_request(req), conn).await?
        }
        Protocol::H2c | Protocol::H2 => {
            let scheme = if protocol == Protocol::H2 {
                "https"
            } else {
                "http"
            };
            let uri: Uri = format!("{scheme}://{host}{path}")
                .parse()
                .map_err(|e| format!("bad request: {e}"))?;
            let req = Request::get(uri)
                .header(header::USER_AGENT, "cutover-health-check")
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("bad request: {e}"))?;
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(failed)?;
            answer(send.send_request(req), conn).await?
        }
    };
    if hc.expects(status.as_u16()) {
        Ok(())
    } else {
        Err(format!("answered {}", status.as_u16()))
    }
}

/// The status of the answer to `response`, while `conn` (the connection
/// the request went out on, HTTP/1.1 or HTTP/2) is driven beside it.
async fn answer<R, C>(response: R, conn: C) -> Result<http::StatusCode, String>
where
    R: std::future::Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>>,
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = response => r.map(|resp| resp.status()).map_err(|e| format!("request failed: {e}")),
        r = &mut conn => Err(match r {
            Ok(()) => "the connection closed before an answer".to_string(),
            Err(e) => format!("request failed: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_flip_after_runs_in_a_row_only() {
        let mut t = Thresholds::new(2, 3);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a success breaks the run");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false), "third failure in a row");
        assert_eq!(t.record(false), None, "already down");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true), "second success in a row");
        let mut once = Thresholds::new(1, 1);
        assert_eq!(once.record(false), Some(false));
        assert_eq!(once.record(true), Some(true));
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let d = Duration::from_millis(1000);
        for _ in 0..1000 {
            let j = jittered(d, 0.9, 1.1);
            assert!(j >= Duration::from_millis(900) && j < Duration::from_millis(1100));
        }
    }
}
