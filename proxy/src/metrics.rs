//! Data-plane metrics. A `prometheus::Registry` is passed in; handles are
//! resolved once per pool when a snapshot is built, never per request.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::error::ErrorKind;
use crate::upstream::RetryReason;

/// Every metric name cutover exports, in one place.
pub mod names {
    pub const REQUESTS_TOTAL: &str = "cutover_requests_total";
    pub const REQUEST_DURATION: &str = "cutover_request_duration_seconds";
    pub const IN_FLIGHT: &str = "cutover_in_flight_requests";
    pub const UPSTREAM_ERRORS: &str = "cutover_upstream_errors_total";
    pub const DOWNSTREAM_CONNECTIONS: &str = "cutover_downstream_connections";
    pub const DOWNSTREAM_REFUSED: &str = "cutover_downstream_refused_total";
    pub const DOWNSTREAM_CLIENT_GONE: &str = "cutover_downstream_client_gone_total";
    pub const ACCEPT_ERRORS: &str = "cutover_accept_errors_total";
    pub const SPLIT_WEIGHT: &str = "cutover_split_weight";
    pub const EFFECTIVE_SHARE: &str = "cutover_effective_share";
    pub const GENERATION: &str = "cutover_generation";
    pub const TUNNELS: &str = "cutover_tunnels";
    pub const DRAIN_CLOSED: &str = "cutover_drain_closed_total";
    pub const TCP_CONNECTIONS: &str = "cutover_tcp_connections_total";
    pub const ADMIN_REQUESTS: &str = "cutover_admin_requests_total";
    pub const CHANGES: &str = "cutover_changes_total";
    pub const UPSTREAM_CONNECTIONS: &str = "cutover_upstream_connections";
    pub const UPSTREAM_CONNECTIONS_OPENED: &str = "cutover_upstream_connections_opened_total";
    pub const UPSTREAM_CONNECTIONS_KEPT: &str = "cutover_upstream_connections_kept_total";
    pub const UPSTREAM_H2_PING_TIMEOUTS: &str = "cutover_upstream_h2_ping_timeouts_total";
    pub const BACKEND_UP: &str = "cutover_backend_up";
    pub const HEALTH_CHECKS: &str = "cutover_health_checks_total";
    pub const FAILOVERS: &str = "cutover_failovers_total";
    pub const RETRIES: &str = "cutover_retries_total";
    pub const EJECTIONS: &str = "cutover_ejections_total";
    pub const IDLE_TIMEOUTS: &str = "cutover_idle_timeouts_total";
    pub const ADMIN_AUTH_FAILURES: &str = "cutover_admin_auth_failures_total";
    pub const AUDIT_REFUSED_DROPPED: &str = "cutover_audit_refused_dropped_total";
    pub const AUDIT_WRITE_ERRORS: &str = "cutover_audit_write_errors_total";
    pub const TLS_HANDSHAKES: &str = "cutover_tls_handshakes_total";
    pub const TLS_RESUMED: &str = "cutover_tls_resumed_handshakes_total";
    pub const TLS_CERTIFICATE_EXPIRY: &str = "cutover_tls_certificate_expiry_seconds";
    pub const TLS_CERTIFICATE_RELOADS: &str = "cutover_tls_certificate_reloads_total";
    pub const CONFIG_RELOADS: &str = "cutover_config_reloads_total";
    pub const CONFIG_LAST_RELOAD_SUCCESS: &str = "cutover_config_last_reload_success";
}

/// Status classes used as the `code` label.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The data plane's metric families, registered by [`ProxyMetrics::new`];
/// one group per component.
pub struct ProxyMetrics {
    requests: RequestFamilies,
    downstream: DownstreamFamilies,
    tunnels: TunnelFamilies,
    upstream: UpstreamFamilies,
    health: HealthFamilies,
    tls: TlsFamilies,
}

impl ProxyMetrics {
    pub fn new(registry: &Registry) -> Result<ProxyMetrics, prometheus::Error> {
        let metrics = ProxyMetrics {
            requests: RequestFamilies::new()?,
            downstream: DownstreamFamilies::new()?,
            tunnels: TunnelFamilies::new()?,
            upstream: UpstreamFamilies::new()?,
            health: HealthFamilies::new()?,
            tls: TlsFamilies::new()?,
        };
        metrics.tls.register(registry)?;
        metrics.health.register(registry)?;
        metrics.upstream.register(registry)?;
        metrics.tunnels.register(registry)?;
        metrics.requests.register(registry)?;
        metrics.downstream.register(registry)?;
        Ok(metrics)
    }

    /// Handles for one pool, resolved once.
    pub fn pool(&self, service: &str, pool: &str) -> PoolMetrics {
        let r = &self.requests;
        let t = &self.tunnels;
        PoolMetrics {
            requests: CLASSES.map(|c| r.requests.with_label_values(&[service, pool, c])),
            duration: r.duration.with_label_values(&[service, pool]),
            in_flight: r.in_flight.with_label_values(&[service, pool]),
            idle_timeouts: IdleTimeouts {
                client: r
                    .idle_timeouts
                    .with_label_values(&[service, pool, "client"]),
                backend: r
                    .idle_timeouts
                    .with_label_values(&[service, pool, "backend"]),
                tunnel: r
                    .idle_timeouts
                    .with_label_values(&[service, pool, "tunnel"]),
            },
            tunnels_open: t.tunnels.with_label_values(&[service, pool, "open"]),
            tunnels_draining: t.tunnels.with_label_values(&[service, pool, "draining"]),
            drain_finished: t
                .drain_closed
                .with_label_values(&[service, pool, "finished"]),
            drain_deadline: t
                .drain_closed
                .with_label_values(&[service, pool, "deadline"]),
            tcp_connections: t.tcp_connections.with_label_values(&[service, pool]),
            upstream: self.upstream.pool(service, pool),
            errors: ErrorKind::ALL.map(|k| {
                r.upstream_errors
                    .with_label_values(&[service, pool, k.blame().as_str(), k.cause()])
            }),
            health_ok: self.health.checks.with_label_values(&[service, pool, "ok"]),
            health_failed: self
                .health
                .checks
                .with_label_values(&[service, pool, "failed"]),
            ejections: self.health.ejections.with_label_values(&[service, pool]),
            backend_up: BackendUp {
                family: self.health.backend_up.clone(),
                service: service.into(),
                pool: pool.into(),
            },
        }
    }

    /// `cutover_failovers_total{service, from, to}`, resolved once per pair.
    /// Drops `cutover_backend_up` for a backend a reload removed (its
    /// last value would otherwise stay exported for ever).
    pub fn forget_backend(&self, service: &str, pool: &str, backend: &str) {
        let _ = self
            .health
            .backend_up
            .remove_label_values(&[service, pool, backend]);
    }

    pub fn failover(&self, service: &str, from: &str, to: &str) -> IntCounter {
        self.health
            .failovers
            .with_label_values(&[service, from, to])
    }

    /// Counts a request refused before it had a pool (a bad override header).
    pub fn unrouted(&self, service: &str, kind: ErrorKind, status: u16) {
        self.requests
            .requests
            .with_label_values(&[service, "none", CLASSES[class_index(status)]])
            .inc();
        self.requests
            .upstream_errors
            .with_label_values(&[service, "none", kind.blame().as_str(), kind.cause()])
            .inc();
    }

    /// A TLS listener's handshake counters, resolved once.
    pub fn tls(&self, listener: &str) -> TlsMetrics {
        let h = |result: &str| self.tls.handshakes.with_label_values(&[listener, result]);
        TlsMetrics {
            ok: h("ok"),
            no_sni_match: h("no_sni_match"),
            bad_version: h("bad_version"),
            timeout: h("timeout"),
            not_tls: h("not_tls"),
            error: h("error"),
            resumed: self.tls.resumed.with_label_values(&[listener]),
            reload_ok: self.tls.reloads.with_label_values(&[listener, "ok"]),
            reload_error: self.tls.reloads.with_label_values(&[listener, "error"]),
            expiry: self.tls.expiry.clone(),
            listener: listener.to_string(),
        }
    }

    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        let d = &self.downstream;
        ListenerMetrics {
            connections: d.connections.with_label_values(&[listener]),
            refused_limit: d.refused.with_label_values(&[listener, "max_connections"]),
            refused_proxy_protocol: d.refused.with_label_values(&[listener, "proxy_protocol"]),
            client_gone: d.client_gone.with_label_values(&[listener]),
            accept_emfile: d.accept_errors.with_label_values(&[listener, "emfile"]),
            accept_enfile: d.accept_errors.with_label_values(&[listener, "enfile"]),
            accept_other: d.accept_errors.with_label_values(&[listener, "other"]),
            accept_no_dup: d.accept_errors.with_label_values(&[listener, "no_dup"]),
        }
    }
}

/// TLS handshakes by result, and when each listener's certificates expire.
struct TlsFamilies {
    handshakes: IntCounterVec,
    resumed: IntCounterVec,
    expiry: IntGaugeVec,
    reloads: IntCounterVec,
}

impl TlsFamilies {
    fn new() -> Result<TlsFamilies, prometheus::Error> {
        Ok(TlsFamilies {
            handshakes: IntCounterVec::new(
                Opts::new(
                    names::TLS_HANDSHAKES,
                    "TLS handshakes on TLS listeners, by result: ok, no_sni_match, bad_version, timeout, not_tls, error",
                ),
                &["listener", "result"],
            )?,
            resumed: IntCounterVec::new(
                Opts::new(
                    names::TLS_RESUMED,
                    "TLS handshakes on TLS listeners that resumed a session (ticket or session ID) instead of a full handshake",
                ),
                &["listener"],
            )?,
            expiry: IntGaugeVec::new(
                Opts::new(
                    names::TLS_CERTIFICATE_EXPIRY,
                    "When each certificate a TLS listener serves stops being valid, in seconds since the Unix epoch",
                ),
                &["listener", "name"],
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    names::TLS_CERTIFICATE_RELOADS,
                    "Reloads of a TLS listener's certificate files that changed them, by result: ok (rotated) or error (refused; the old ones stay)",
                ),
                &["listener", "result"],
            )?,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.handshakes.clone()))?;
        registry.register(Box::new(self.resumed.clone()))?;
        registry.register(Box::new(self.expiry.clone()))?;
        registry.register(Box::new(self.reloads.clone()))?;
        Ok(())
    }
}

/// Requests answered, their duration, those in flight, failures, and
/// exchanges cut for want of progress after the response head.
struct RequestFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    upstream_errors: IntCounterVec,
    idle_timeouts: IntCounterVec,
}

impl RequestFamilies {
    fn new() -> Result<RequestFamilies, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                names::REQUESTS_TOTAL,
                "Requests answered, by service, pool and status class",
            ),
            &["service", "pool", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                names::REQUEST_DURATION,
                "Time from request head to the end of the response body",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["service", "pool"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                names::IN_FLIGHT,
                "Requests in flight (head received, body not finished)",
            ),
            &["service", "pool"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                names::UPSTREAM_ERRORS,
                "Failed proxied requests, by who caused them (client, backend, cutover) and cause",
            ),
            &["service", "pool", "source", "cause"],
        )?;
        let idle_timeouts = IntCounterVec::new(
            Opts::new(
                names::IDLE_TIMEOUTS,
                "Exchanges cut for want of progress, by reason: client (client_idle: a client that stopped reading a response or sending a request body), backend (backend_idle: a response body that stalled), tunnel (tunnel_idle: no byte either way)",
            ),
            &["service", "pool", "reason"],
        )?;
        Ok(RequestFamilies {
            requests,
            duration,
            in_flight,
            upstream_errors,
            idle_timeouts,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.duration.clone()))?;
        registry.register(Box::new(self.in_flight.clone()))?;
        registry.register(Box::new(self.upstream_errors.clone()))?;
        registry.register(Box::new(self.idle_timeouts.clone()))?;
        Ok(())
    }
}

/// Downstream connections: open, refused at accept, dropped mid-request,
/// failed accepts.
struct DownstreamFamilies {
    connections: IntGaugeVec,
    refused: IntCounterVec,
    client_gone: IntCounterVec,
    accept_errors: IntCounterVec,
}

impl DownstreamFamilies {
    fn new() -> Result<DownstreamFamilies, prometheus::Error> {
        let downstream_connections = IntGaugeVec::new(
            Opts::new(names::DOWNSTREAM_CONNECTIONS, "Open downstream connections"),
            &["listener"],
        )?;
        let downstream_refused = IntCounterVec::new(
            Opts::new(
                names::DOWNSTREAM_REFUSED,
                "Downstream connections closed at accept",
            ),
            &["listener", "reason"],
        )?;
        let downstream_client_gone = IntCounterVec::new(
            Opts::new(
                names::DOWNSTREAM_CLIENT_GONE,
                "HTTP/1 downstream connections dropped because the client left with a request in progress",
            ),
            &["listener"],
        )?;
        let accept_errors = IntCounterVec::new(
            Opts::new(
                names::ACCEPT_ERRORS,
                "Failed accepts and accepted connections short of a descriptor, by reason",
            ),
            &["listener", "reason"],
        )?;
        Ok(DownstreamFamilies {
            connections: downstream_connections,
            refused: downstream_refused,
            client_gone: downstream_client_gone,
            accept_errors,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.connections.clone()))?;
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.client_gone.clone()))?;
        registry.register(Box::new(self.accept_errors.clone()))?;
        Ok(())
    }
}

/// Tunnels (upgraded connections and tcp listener connections), how
/// draining ones ended, and tcp listener connections accepted.
struct TunnelFamilies {
    tunnels: IntGaugeVec,
    drain_closed: IntCounterVec,
    tcp_connections: IntCounterVec,
}

impl TunnelFamilies {
    fn new() -> Result<TunnelFamilies, prometheus::Error> {
        let tunnels = IntGaugeVec::new(
            Opts::new(
                names::TUNNELS,
                "Open tunnels (upgraded connections, tcp listener connections), by state: open or draining",
            ),
            &["service", "pool", "state"],
        )?;
        let drain_closed = IntCounterVec::new(
            Opts::new(
                names::DRAIN_CLOSED,
                "Draining tunnels that ended, by reason: finished (closed by itself) or deadline (closed by cutover)",
            ),
            &["service", "pool", "reason"],
        )?;
        let tcp_connections = IntCounterVec::new(
            Opts::new(
                names::TCP_CONNECTIONS,
                "Connections accepted on tcp listeners, by pool",
            ),
            &["service", "pool"],
        )?;
        Ok(TunnelFamilies {
            tunnels,
            drain_closed,
            tcp_connections,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.tunnels.clone()))?;
        registry.register(Box::new(self.drain_closed.clone()))?;
        registry.register(Box::new(self.tcp_connections.clone()))?;
        Ok(())
    }
}

/// Backend health: available or not per backend, active checks by
/// result, passive ejections, and requests sent to another pool because
/// theirs had no backend up.
struct HealthFamilies {
    backend_up: IntGaugeVec,
    checks: IntCounterVec,
    ejections: IntCounterVec,
    failovers: IntCounterVec,
}

impl HealthFamilies {
    fn new() -> Result<HealthFamilies, prometheus::Error> {
        let backend_up = IntGaugeVec::new(
            Opts::new(
                names::BACKEND_UP,
                "1 while a backend is available (may get new requests and tunnels), 0 while it is down by its active checks or ejected by passive ones",
            ),
            &["service", "pool", "backend"],
        )?;
        let checks = IntCounterVec::new(
            Opts::new(
                names::HEALTH_CHECKS,
                "Active health checks, by result: ok or failed",
            ),
            &["service", "pool", "result"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                names::EJECTIONS,
                "Backends ejected by passive outlier detection (consecutive failures)",
            ),
            &["service", "pool"],
        )?;
        let failovers = IntCounterVec::new(
            Opts::new(
                names::FAILOVERS,
                "Requests and tcp connections sent to another pool because every backend of theirs was down (failover = true)",
            ),
            &["service", "from", "to"],
        )?;
        Ok(HealthFamilies {
            backend_up,
            checks,
            ejections,
            failovers,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.backend_up.clone()))?;
        registry.register(Box::new(self.checks.clone()))?;
        registry.register(Box::new(self.ejections.clone()))?;
        registry.register(Box::new(self.failovers.clone()))?;
        Ok(())
    }
}

/// HTTP connections to backends: open, opened, kept by finishing a body
/// the client stopped reading, and h2c ones closed for an unanswered PING.
struct UpstreamFamilies {
    connections: IntGaugeVec,
    opened: IntCounterVec,
    kept: IntCounterVec,
    retries: IntCounterVec,
    ping_timeouts: IntCounterVec,
}

impl UpstreamFamilies {
    fn new() -> Result<UpstreamFamilies, prometheus::Error> {
        let upstream_connections = IntGaugeVec::new(
            Opts::new(
                names::UPSTREAM_CONNECTIONS,
                "Open HTTP connections to backends, idle or in use (upgraded ones count as tunnels)",
            ),
            &["service", "pool"],
        )?;
        let upstream_opened = IntCounterVec::new(
            Opts::new(
                names::UPSTREAM_CONNECTIONS_OPENED,
                "Connections opened to backends; with keep-alive working this barely moves under steady load",
            ),
            &["service", "pool"],
        )?;
        let upstream_kept = IntCounterVec::new(
            Opts::new(
                names::UPSTREAM_CONNECTIONS_KEPT,
                "Connections kept by reading to its end, in the background, a response body the client stopped reading",
            ),
            &["service", "pool"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                names::RETRIES,
                "Requests sent again because nothing of them reached a backend (or an idempotent one without a body got no byte of an answer): on another backend of the same pool, or on a fresh connection for a dead pooled one (stale_connection)",
            ),
            &["service", "pool", "reason"],
        )?;
        let ping_timeouts = IntCounterVec::new(
            Opts::new(
                names::UPSTREAM_H2_PING_TIMEOUTS,
                "h2c connections to backends closed because a PING got no answer within h2_ping_timeout",
            ),
            &["service", "pool"],
        )?;
        Ok(UpstreamFamilies {
            connections: upstream_connections,
            opened: upstream_opened,
            kept: upstream_kept,
            retries,
            ping_timeouts,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.kept.clone()))?;
        registry.register(Box::new(self.connections.clone()))?;
        registry.register(Box::new(self.opened.clone()))?;
        registry.register(Box::new(self.retries.clone()))?;
        registry.register(Box::new(self.ping_timeouts.clone()))?;
        Ok(())
    }

    fn pool(&self, service: &str, pool: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            open: self.connections.with_label_values(&[service, pool]),
            opened: self.opened.with_label_values(&[service, pool]),
            kept: self.kept.with_label_values(&[service, pool]),
            retries: RetryReason::ALL
                .map(|r| self.retries.with_label_values(&[service, pool, r.as_str()])),
            ping_timeouts: self.ping_timeouts.with_label_values(&[service, pool]),
        }
    }
}

#[derive(Clone)]
pub struct PoolMetrics {
    requests: [IntCounter; 6],
    pub duration: Histogram,
    pub in_flight: IntGauge,
    pub idle_timeouts: IdleTimeouts,
    pub tunnels_open: IntGauge,
    pub tunnels_draining: IntGauge,
    pub drain_finished: IntCounter,
    pub drain_deadline: IntCounter,
    pub tcp_connections: IntCounter,
    pub upstream: UpstreamMetrics,
    errors: [IntCounter; ErrorKind::ALL.len()],
    /// Active health checks of this pool's backends that passed.
    pub health_ok: IntCounter,
    /// Active health checks of this pool's backends that failed.
    pub health_failed: IntCounter,
    /// Passive ejections of this pool's backends (the control plane's
    /// ejector counts them).
    pub ejections: IntCounter,
    backend_up: BackendUp,
}

/// `cutover_idle_timeouts_total` for one pool, by reason.
#[derive(Clone)]
pub struct IdleTimeouts {
    pub client: IntCounter,
    pub backend: IntCounter,
    pub tunnel: IntCounter,
}

/// `cutover_backend_up` for one pool's backends (set when a snapshot's
/// pool is built, never per request).
#[derive(Clone)]
struct BackendUp {
    family: IntGaugeVec,
    service: String,
    pool: String,
}

/// A pool's upstream connection counts, shared by its backends.
#[derive(Clone)]
pub struct UpstreamMetrics {
    pub open: IntGauge,
    pub opened: IntCounter,
    pub kept: IntCounter,
    retries: [IntCounter; RetryReason::ALL.len()],
    /// h2c connections closed because a PING went unanswered.
    pub ping_timeouts: IntCounter,
}

impl UpstreamMetrics {
    /// Counts one retry in `cutover_retries_total`.
    pub fn count_retry(&self, reason: RetryReason) {
        self.retries[reason as usize].inc();
    }
}

impl PoolMetrics {
    pub fn count_status(&self, status: u16) {
        self.requests[class_index(status)].inc();
    }

    pub fn count_error(&self, kind: ErrorKind) {
        self.errors[kind as usize].inc();
    }

    /// Sets `cutover_backend_up` for one of this pool's backends: whether
    /// it is available (up and not ejected).
    pub fn set_backend_up(&self, backend: &str, up: bool) {
        let b = &self.backend_up;
        b.family
            .with_label_values(&[b.service.as_str(), b.pool.as_str(), backend])
            .set(i64::from(up));
    }
}

/// One TLS listener's handshake results.
#[derive(Clone)]
pub struct TlsMetrics {
    pub ok: IntCounter,
    /// Done with the default certificate: the client's SNI name matched none.
    pub no_sni_match: IntCounter,
    /// No protocol version or cipher suite in common.
    pub bad_version: IntCounter,
    pub timeout: IntCounter,
    /// Not TLS at all (plain HTTP to a TLS port gets a 400).
    pub not_tls: IntCounter,
    pub error: IntCounter,
    /// Successful handshakes that resumed a session.
    pub resumed: IntCounter,
    pub reload_ok: IntCounter,
    pub reload_error: IntCounter,
    expiry: IntGaugeVec,
    listener: String,
}

impl TlsMetrics {
    /// Sets the expiry gauge of each of `names` to `not_after`, and removes
    /// the series of `gone` (names no certificate covers any more).
    pub fn set_expiry(&self, names: &[(String, i64)], gone: &[String]) {
        for n in gone {
            let _ = self.expiry.remove_label_values(&[&self.listener, n]);
        }
        for (n, at) in names {
            self.expiry.with_label_values(&[&self.listener, n]).set(*at);
        }
    }
}

#[derive(Clone)]
pub struct ListenerMetrics {
    pub connections: IntGauge,
    pub refused_limit: IntCounter,
    pub refused_proxy_protocol: IntCounter,
    pub client_gone: IntCounter,
    /// `accept` failed: no descriptor left in the process (EMFILE), in the
    /// system (ENFILE), or another error.
    pub accept_emfile: IntCounter,
    pub accept_enfile: IntCounter,
    pub accept_other: IntCounter,
    /// An accepted connection's duplicate descriptor (the watchdog's, to
    /// notice a client that left) could not be made.
    pub accept_no_dup: IntCounter,
}

fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}
