//! One `[services.NAME]` table: one function per sub-table (pools, split,
//! stickiness and cookie, override, timeouts, limits, listeners), called in
//! the order the errors have always been reported in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::{
    bounded_duration, check_backend_addr, header_name_ok, idx, key, name_ok, parse_bounded,
    positive, protocol, socket_addr, Errs, MAX_COOKIE_AGE, MAX_INTERVAL, MAX_TIMEOUT, MAX_WEIGHT,
};
use crate::locate::Seg;
use crate::model::*;
use crate::raw::*;

pub(super) fn validate_service(
    name: &str,
    rs: &RawService,
    path: &[Seg],
    errs: &mut Errs<'_>,
    listen_seen: &mut HashMap<SocketAddr, String>,
) -> ServiceConfig {
    let mut pools = validate_pools(rs, path, errs);
    let split = validate_split(rs, path, &pools, errs);
    let sticky = validate_sticky(rs, path, errs);
    let cookie = validate_cookie(rs, path, errs);
    let drain_timeout = bounded_duration(
        errs,
        &key(path, "drain_timeout"),
        &rs.drain_timeout,
        Duration::from_secs(30),
        MAX_TIMEOUT,
    );
    let override_header = validate_override(rs, path, errs);
    let timeouts = validate_timeouts(rs, path, errs);
    let limits = validate_limits(rs, path, errs);
    let listeners = validate_listeners(name, rs, path, &pools, sticky, errs, listen_seen);
    validate_health_checks(rs, path, &mut pools, &listeners, errs);
    let outlier = rs
        .outlier
        .as_ref()
        .map(|raw| validate_outlier(raw, &key(path, "outlier"), errs))
        .unwrap_or_default();
    let slow_start = validate_slow_start(rs, path, errs);

    ServiceConfig {
        name: name.to_string(),
        pools,
        split,
        sticky,
        cookie,
        drain_timeout,
        override_header,
        override_token: rs.override_token.clone(),
        access_log: rs.access_log.unwrap_or(false),
        timeouts,
        limits,
        failover: rs.failover.unwrap_or(false),
        retries: validate_retries(rs, path, errs),
        outlier,
        slow_start,
        allowed_upgrades: validate_upgrades(rs, path, errs),
        error_detail: validate_error_detail(rs, path, errs),
        listeners,
    }
}

/// `error_detail`: `"short"` (default) or `"full"`.
fn validate_error_detail(rs: &RawService, path: &[Seg], errs: &mut Errs<'_>) -> ErrorDetail {
    match rs.error_detail.as_deref() {
        None | Some("short") => ErrorDetail::Short,
        Some("full") => ErrorDetail::Full,
        Some(other) => {
            errs.push(
                &key(path, "error_detail"),
                format!("`{other}` is not an error detail; allowed: \"short\" (status and cause, no backend addresses), \"full\" (the whole error)"),
            );
            ErrorDetail::Short
        }
    }
}

/// `allowed_upgrades`: protocol names (tokens), default `["websocket"]`;
/// never `h2c` (a tunnel past cutover's header rewriting).
fn validate_upgrades(rs: &RawService, path: &[Seg], errs: &mut Errs<'_>) -> Vec<String> {
    let Some(list) = &rs.allowed_upgrades else {
        return vec!["websocket".to_string()];
    };
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let at = idx(&key(path, "allowed_upgrades"), i);
        let name = p.to_ascii_lowercase();
        // RFC 9110 7.8: protocol-name ["/" protocol-version], both tokens.
        let (proto, version) = name.split_once('/').unwrap_or((&name, "websocket"));
        if !header_name_ok(proto) || !header_name_ok(version) {
            errs.push(
                &at,
                format!("`{p}` is not a protocol name; write a name with an optional version, like \"websocket\" or \"foo/2\""),
            );
        } else if name == "h2c" || name.starts_with("h2c/") {
            errs.push(
                &at,
                "h2c cannot be allowed: an HTTP/2 connection upgraded through cutover would bypass its header rewriting; an `Upgrade: h2c` request is answered as a plain HTTP/1.1 request",
            );
        } else if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// At most this many retries per request.
const MAX_RETRIES: i64 = 10;

/// `retries`: 0 to [`MAX_RETRIES`], default 2.
fn validate_retries(rs: &RawService, path: &[Seg], errs: &mut Errs<'_>) -> u32 {
    match rs.retries {
        None => 2,
        Some(n) if (0..=MAX_RETRIES).contains(&n) => n as u32,
        Some(n) => {
            errs.push(
                &key(path, "retries"),
                format!("{n} is out of range; allowed: 0 (never retry) to {MAX_RETRIES}"),
            );
            2
        }
    }
}

/// `pools`, in file order.
fn validate_pools(rs: &RawService, path: &[Seg], errs: &mut Errs<'_>) -> Vec<PoolConfig> {
    let pools_path = key(path, "pools");
    if rs.pools.0.is_empty() {
        errs.push(
            &pools_path,
            "no pools: declare at least one [services.NAME.pools.POOL] with backends",
        );
    }
    let mut pools = Vec::new();
    for (pname, rp) in &rs.pools.0 {
        let ppath = key(&pools_path, pname);
        if !name_ok(pname) {
            errs.push(
                &ppath,
                format!("pool name `{pname}` may use only letters, digits, `-` and `_` (1 to 64)"),
            );
        }
        let pool_proto = protocol(
            errs,
            &key(&ppath, "protocol"),
            &rp.protocol,
            Protocol::Http1,
        );
        let backends = validate_backends(pname, rp, &ppath, pool_proto, errs);
        let tls = rp
            .tls
            .as_ref()
            .and_then(|t| super::tls::validate_upstream_tls(t, &ppath, &backends, errs));
        super::tls::check_protocols(&backends, tls.is_some(), rp, &ppath, errs);
        pools.push(PoolConfig {
            name: pname.clone(),
            backends,
            send_proxy_protocol: rp.send_proxy_protocol.unwrap_or(false),
            health_check: None,
            tls,
        });
    }
    pools
}

/// One pool's `backends`; `pool_proto` is the default for each backend.
fn validate_backends(
    pname: &str,
    rp: &RawPool,
    ppath: &[Seg],
    pool_proto: Protocol,
    errs: &mut Errs<'_>,
) -> Vec<BackendConfig> {
    let bpath = key(ppath, "backends");
    let mut backends = Vec::new();
    let list = match &rp.backends {
        None => {
            errs.push(
                ppath,
                "no `backends`: list at least one, like backends = [\"10.0.1.10:8080\"]",
            );
            return backends;
        }
        Some(list) if list.is_empty() => {
            errs.push(
                &bpath,
                "the backend list is empty: list at least one backend",
            );
            return backends;
        }
        Some(list) => list,
    };
    let mut seen = HashMap::new();
    for (i, rb) in list.iter().enumerate() {
        let bp = idx(&bpath, i);
        let Some(addr) = rb.addr.clone() else {
            errs.push(
                &bp,
                "a backend table needs `addr`, like { addr = \"10.0.1.10:8080\" }",
            );
            continue;
        };
        if let Err(e) = check_backend_addr(&addr) {
            errs.push(&bp, e);
        }
        if seen.insert(addr.clone(), i).is_some() {
            errs.push(
                &bp,
                format!("backend `{addr}` is listed twice in pool `{pname}`"),
            );
        }
        let weight = match rb.weight {
            None => 1,
            Some(w) if (0..=MAX_WEIGHT).contains(&w) => w as u32,
            Some(w) => {
                errs.push(
                    &key(&bp, "weight"),
                    format!("{w} is out of range; allowed: 0 to {MAX_WEIGHT}"),
                );
                1
            }
        };
        let protocol = protocol(errs, &key(&bp, "protocol"), &rb.protocol, pool_proto);
        backends.push(BackendConfig {
            addr,
            weight,
            protocol,
        });
    }
    if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
        errs.push(
            &bpath,
            "every backend has weight 0: give at least one a positive weight",
        );
    }
    backends
}

/// `split`, aligned with `pools`.
fn validate_split(
    rs: &RawService,
    path: &[Seg],
    pools: &[PoolConfig],
    errs: &mut Errs<'_>,
) -> Vec<u32> {
    let split_path = key(path, "split");
    let mut split = vec![0u32; pools.len()];
    let Some(raw_split) = &rs.split else {
        errs.push(
            path,
            "no `split`: give every pool a weight, like split = { blue = 100, green = 0 }",
        );
        return split;
    };
    for (pname, w) in &raw_split.0 {
        let sp = key(&split_path, pname);
        let Some(i) = pools.iter().position(|p| &p.name == pname) else {
            let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
            errs.push(
                &sp,
                format!(
                    "the split names pool `{pname}`, which does not exist; pools: {}",
                    names.join(", ")
                ),
            );
            continue;
        };
        if !(0..=MAX_WEIGHT).contains(w) {
            errs.push(
                &sp,
                format!("weight {w} is out of range; allowed: 0 to {MAX_WEIGHT}"),
            );
            continue;
        }
        split[i] = *w as u32;
    }
    for p in pools {
        if !raw_split.0.iter().any(|(n, _)| n == &p.name) {
            errs.push(
                &split_path,
                format!(
                    "pool `{}` is missing from the split; give it a weight (0 for none)",
                    p.name
                ),
            );
        }
    }
    if !raw_split.0.is_empty() && raw_split.0.iter().all(|(_, w)| *w == 0) {
        errs.push(
            &split_path,
            "all weights are zero: at least one pool needs a positive weight",
        );
    }
    split
}

/// `slow_start`: a duration from 0s (off, as when absent) to
/// [`MAX_SLOW_START`].
fn validate_slow_start(rs: &RawService, path: &[Seg], errs: &mut Errs<'_>) -> Option<Duration> {
    let raw = rs.slow_start.as_ref()?;
    let allowed = format!(
        "allowed: \"0s\" (off) to \"{}\", like slow_start = \"30s\"",
        humantime::format_duration(MAX_SLOW_START)
    );
    match crate::parse_duration(raw) {
        Ok(d) if d.is_zero() => None,
        Ok(d) if d > MAX_SLOW_START => {
            errs.push(
                &key(path, "slow_start"),
                format!("`{raw}` is too long; {allowed}"),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errs.push(&key(path, "slow_start"), format!("{e}; {allowed}"));
            None
        }
    }
}

/// `sticky`.
fn validate_sticky(rs: &RawService, path: &[Seg], errs: &mut Errs<'_>) -> Sticky {
    match rs.sticky.as_deref() {
        None | Some("none") => Sticky::None,
        Some("client_ip") => Sticky::ClientIp,
        Some("cookie") => Sticky::Cookie,
        Some(other) => {
            errs.push(&key(path, "sticky"), format!("`{other}` is not a stickiness mode; allowed: \"none\", \"client_ip\", \"cookie\""));
            Sticky::None
        }
    }
}

/// `cookie`.
fn validate_cookie(rs: &RawService, path: &[Seg], errs: &mut Errs<'_>) -> CookieConfig {
    let cpath = key(path, "cookie");
    let rc = rs.cookie.as_ref();
    let cookie_name = rc
        .and_then(|c| c.name.clone())
        .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_string());
    if !header_name_ok(&cookie_name) {
        errs.push(
            &key(&cpath, "name"),
            format!("`{cookie_name}` is not a valid cookie name; use letters, digits, `-` and `_`"),
        );
    }
    CookieConfig {
        name: cookie_name,
        max_age: bounded_duration(
            errs,
            &key(&cpath, "max_age"),
            &rc.and_then(|c| c.max_age.clone()),
            Duration::from_secs(24 * 3600),
            MAX_COOKIE_AGE,
        ),
        secure: rc.and_then(|c| c.secure).unwrap_or(false),
    }
}

/// `override_header` and `override_token`; returns the header, lower case.
fn validate_override(rs: &RawService, path: &[Seg], errs: &mut Errs<'_>) -> Option<String> {
    let override_header = rs.override_header.as_ref().and_then(|h| {
        if header_name_ok(h) {
            Some(h.to_ascii_lowercase())
        } else {
            errs.push(
                &key(path, "override_header"),
                format!("`{h}` is not a valid header name"),
            );
            None
        }
    });
    if rs.override_token.is_some() && rs.override_header.is_none() {
        errs.push(
            &key(path, "override_token"),
            "override_token needs override_header to be set",
        );
    }
    override_header
}

/// `timeouts`.
fn validate_timeouts(rs: &RawService, path: &[Seg], errs: &mut Errs<'_>) -> Timeouts {
    let d = Timeouts::default();
    let tpath = key(path, "timeouts");
    let rt = rs.timeouts.as_ref();
    let (h2_ping_interval, h2_ping_timeout) = h2_ping(rt, &tpath, errs);
    Timeouts {
        connect: bounded_duration(
            errs,
            &key(&tpath, "connect"),
            &rt.and_then(|t| t.connect.clone()),
            d.connect,
            MAX_TIMEOUT,
        ),
        response_header: bounded_duration(
            errs,
            &key(&tpath, "response_header"),
            &rt.and_then(|t| t.response_header.clone()),
            d.response_header,
            MAX_TIMEOUT,
        ),
        header_read: bounded_duration(
            errs,
            &key(&tpath, "header_read"),
            &rt.and_then(|t| t.header_read.clone()),
            d.header_read,
            MAX_TIMEOUT,
        ),
        idle: bounded_duration(
            errs,
            &key(&tpath, "idle"),
            &rt.and_then(|t| t.idle.clone()),
            d.idle,
            MAX_TIMEOUT,
        ),
        h2_ping_interval,
        h2_ping_timeout,
        client_idle: bounded_duration(
            errs,
            &key(&tpath, "client_idle"),
            &rt.and_then(|t| t.client_idle.clone()),
            d.client_idle,
            MAX_TIMEOUT,
        ),
        backend_idle: bounded_duration(
            errs,
            &key(&tpath, "backend_idle"),
            &rt.and_then(|t| t.backend_idle.clone()),
            d.backend_idle,
            MAX_TIMEOUT,
        ),
        tunnel_idle: match rt.and_then(|t| t.tunnel_idle.as_ref()) {
            None => d.tunnel_idle,
            Some(s) => match parse_bounded(s, MAX_TIMEOUT) {
                Ok(v) if v.is_zero() => None,
                Ok(v) => Some(v),
                Err(e) => {
                    errs.push(&key(&tpath, "tunnel_idle"), e);
                    d.tunnel_idle
                }
            },
        },
        tcp_keepalive: tcp_keepalive(rt, &tpath, errs),
    }
}

/// The most keepalive probes Linux allows (`TCP_KEEPCNT`).
const MAX_KEEPALIVE_PROBES: i64 = 127;

/// `timeouts.tcp_keepalive` (the idle time; `"0s"`: off),
/// `tcp_keepalive_interval` and `tcp_keepalive_probes`. The kernel counts
/// whole seconds: each time from 1s to 1 hour.
fn tcp_keepalive(
    rt: Option<&RawTimeouts>,
    tpath: &[Seg],
    errs: &mut Errs<'_>,
) -> Option<TcpKeepalive> {
    let d = TcpKeepalive::default();
    let secs = |errs: &mut Errs<'_>, k: &str, raw: Option<&String>, default: Duration| {
        let Some(s) = raw else {
            return Some(default);
        };
        match parse_bounded(s, MAX_INTERVAL) {
            Ok(v) if v.is_zero() => None,
            Ok(v) if v.subsec_nanos() != 0 => {
                errs.push(
                    &key(tpath, k),
                    format!("`{s}` is not a whole number of seconds; the kernel counts keepalive times in seconds, like \"10s\""),
                );
                Some(default)
            }
            Ok(v) => Some(v),
            Err(e) => {
                errs.push(&key(tpath, k), e);
                Some(default)
            }
        }
    };
    let idle = secs(
        errs,
        "tcp_keepalive",
        rt.and_then(|t| t.tcp_keepalive.as_ref()),
        d.idle,
    );
    let raw_interval = rt.and_then(|t| t.tcp_keepalive_interval.as_ref());
    let interval = secs(errs, "tcp_keepalive_interval", raw_interval, d.interval);
    if interval.is_none() {
        errs.push(
            &key(tpath, "tcp_keepalive_interval"),
            "must be greater than zero; to turn keepalive off, set tcp_keepalive = \"0s\"",
        );
    }
    let probes = match rt.and_then(|t| t.tcp_keepalive_probes) {
        None => d.probes,
        Some(n) if (1..=MAX_KEEPALIVE_PROBES).contains(&n) => n as u32,
        Some(n) => {
            errs.push(
                &key(tpath, "tcp_keepalive_probes"),
                format!("{n} is out of range; allowed: 1 to {MAX_KEEPALIVE_PROBES}"),
            );
            d.probes
        }
    };
    Some(TcpKeepalive {
        idle: idle?,
        interval: interval.unwrap_or(d.interval),
        probes,
    })
}

/// The shortest `h2_ping_interval` other than `"0s"`: PINGs more often
/// than this are noise, and look like abuse to some servers.
const MIN_H2_PING_INTERVAL: Duration = Duration::from_millis(100);

/// `timeouts.h2_ping_interval` (`"0s"`: no PINGs) and `h2_ping_timeout`
/// (greater than zero while PINGs are on).
fn h2_ping(
    rt: Option<&RawTimeouts>,
    tpath: &[Seg],
    errs: &mut Errs<'_>,
) -> (Option<Duration>, Duration) {
    let d = Timeouts::default();
    let parse = |errs: &mut Errs<'_>, k: &str, raw: Option<&String>| {
        raw.and_then(|s| match parse_bounded(s, MAX_INTERVAL) {
            Ok(v) => Some(v),
            Err(e) => {
                errs.push(&key(tpath, k), e);
                None
            }
        })
    };
    let raw_interval = rt.and_then(|t| t.h2_ping_interval.as_ref());
    let interval = match parse(errs, "h2_ping_interval", raw_interval) {
        None => d.h2_ping_interval,
        Some(v) if v.is_zero() => None,
        Some(v) if v < MIN_H2_PING_INTERVAL => {
            errs.push(
                &key(tpath, "h2_ping_interval"),
                format!(
                    "must be \"0s\" (no PINGs) or at least {}",
                    humantime::format_duration(MIN_H2_PING_INTERVAL)
                ),
            );
            d.h2_ping_interval
        }
        Some(v) => Some(v),
    };
    let raw_timeout = rt.and_then(|t| t.h2_ping_timeout.as_ref());
    let timeout = match (parse(errs, "h2_ping_timeout", raw_timeout), interval) {
        (Some(v), Some(every)) if v.is_zero() => {
            errs.push(
                &key(tpath, "h2_ping_timeout"),
                format!(
                    "must be greater than zero while PINGs are on (h2_ping_interval = \"{}\"); \
                     write a duration like \"5s\", or set h2_ping_interval = \"0s\" to send none",
                    humantime::format_duration(every)
                ),
            );
            d.h2_ping_timeout
        }
        (Some(v), _) => v,
        (None, _) => d.h2_ping_timeout,
    };
    (interval, timeout)
}

/// `limits`.
fn validate_limits(rs: &RawService, path: &[Seg], errs: &mut Errs<'_>) -> Limits {
    let dl = Limits::default();
    let lpath = key(path, "limits");
    let rl = rs.limits.as_ref();
    Limits {
        max_connections: positive(
            errs,
            &key(&lpath, "max_connections"),
            rl.and_then(|l| l.max_connections),
            dl.max_connections,
            1_000_000,
        ),
        max_header_bytes: positive(
            errs,
            &key(&lpath, "max_header_bytes"),
            rl.and_then(|l| l.max_header_bytes),
            dl.max_header_bytes,
            1 << 20,
        ),
        max_headers: positive(
            errs,
            &key(&lpath, "max_headers"),
            rl.and_then(|l| l.max_headers),
            dl.max_headers,
            1000,
        ),
    }
}

/// `listeners`. `listen_seen` holds every listen address so far (admin and
/// earlier services), so a clash names the first user.
fn validate_listeners(
    name: &str,
    rs: &RawService,
    path: &[Seg],
    pools: &[PoolConfig],
    sticky: Sticky,
    errs: &mut Errs<'_>,
    listen_seen: &mut HashMap<SocketAddr, String>,
) -> Vec<ListenerConfig> {
    let lspath = key(path, "listeners");
    if rs.listeners.is_empty() {
        errs.push(
            path,
            "no listeners: add at least one [[services.NAME.listeners]] with `listen`",
        );
    }
    let mut listeners = Vec::new();
    for (i, rl) in rs.listeners.iter().enumerate() {
        let lp = idx(&lspath, i);
        let Some(listen_raw) = &rl.listen else {
            errs.push(
                &lp,
                "a listener needs `listen`, like listen = \"0.0.0.0:8080\"",
            );
            continue;
        };
        let Some(listen) = socket_addr(errs, &key(&lp, "listen"), listen_raw) else {
            continue;
        };
        let here = format!("services.{name}.listeners[{i}].listen");
        // Port 0 asks the OS for a free port: never a clash.
        let first = listen_seen.get(&listen).filter(|_| listen.port() != 0);
        if let Some(first) = first {
            errs.push(
                &key(&lp, "listen"),
                format!(
                    "{listen} is already used by `{first}`; every listen address must be unique"
                ),
            );
        } else if listen.port() != 0 {
            listen_seen.insert(listen, here);
        }
        let pool = listener_pool(rl, &lp, pools, errs);
        let mode = listener_mode(rl, &lp, sticky, errs);
        let trust_forwarded = rl.trust_forwarded.unwrap_or(false);
        if trust_forwarded && mode == ListenerMode::Tcp {
            errs.push(
                &key(&lp, "trust_forwarded"),
                "trust_forwarded applies to http listeners only: a tcp listener forwards no headers (remove it, or set mode = \"http\")",
            );
        }
        let tls = rl
            .tls
            .as_ref()
            .and_then(|rt| super::tls::validate_tls(rt, &lp, mode, errs));
        listeners.push(ListenerConfig {
            listen,
            pool,
            mode,
            proxy_protocol: rl.proxy_protocol.unwrap_or(false),
            trust_forwarded,
            tls,
        });
    }
    listeners
}

/// A listener's preview `pool`, as an index into `pools`.
fn listener_pool(
    rl: &RawListener,
    lp: &[Seg],
    pools: &[PoolConfig],
    errs: &mut Errs<'_>,
) -> Option<usize> {
    let p = rl.pool.as_ref()?;
    match pools.iter().position(|x| &x.name == p) {
        Some(i) => Some(i),
        None => {
            let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
            errs.push(
                &key(lp, "pool"),
                format!(
                    "preview pool `{p}` does not exist; pools: {}",
                    names.join(", ")
                ),
            );
            None
        }
    }
}

/// A listener's `mode`, checked against the service's stickiness.
fn listener_mode(
    rl: &RawListener,
    lp: &[Seg],
    sticky: Sticky,
    errs: &mut Errs<'_>,
) -> ListenerMode {
    let mode = match rl.mode.as_deref() {
        None | Some("http") => ListenerMode::Http,
        Some("tcp") => ListenerMode::Tcp,
        Some(other) => {
            errs.push(
                &key(lp, "mode"),
                format!("`{other}` is not a listener mode; allowed: \"http\", \"tcp\""),
            );
            ListenerMode::Http
        }
    };
    if mode == ListenerMode::Tcp && sticky == Sticky::Cookie {
        errs.push(
            &key(lp, "mode"),
            "a tcp listener cannot carry a cookie: use sticky = \"client_ip\" or \"none\" for a service with tcp listeners",
        );
    }
    mode
}

/// `health_check`, and each pool's override of it: sets every pool's
/// effective check. A key a pool does not set comes from the service's
/// table (else its default); an error is reported once, at the table that
/// wrote the key. A service whose listeners are all tcp checks with a TCP
/// connect whatever `path` says.
fn validate_health_checks(
    rs: &RawService,
    path: &[Seg],
    pools: &mut [PoolConfig],
    listeners: &[ListenerConfig],
    errs: &mut Errs<'_>,
) {
    let hpath = key(path, "health_check");
    let service_check = rs
        .health_check
        .as_ref()
        .map(|raw| health_check(raw, &hpath, &HealthCheck::default(), errs));
    let tcp_only = !listeners.is_empty() && listeners.iter().all(|l| l.mode == ListenerMode::Tcp);
    let pools_path = key(path, "pools");
    for pool in pools.iter_mut() {
        let raw_pool = rs.pools.0.iter().find(|(n, _)| *n == pool.name);
        let over = raw_pool.and_then(|(_, rp)| rp.health_check.as_ref());
        let mut check = match (over, &service_check) {
            (Some(raw), base) => {
                let ppath = key(&key(&pools_path, &pool.name), "health_check");
                let base = base.clone().unwrap_or_default();
                Some(health_check(raw, &ppath, &base, errs))
            }
            (None, base) => base.clone(),
        };
        if tcp_only {
            if let Some(c) = check.as_mut() {
                c.path = None;
                c.host = None;
            }
        }
        pool.health_check = check;
    }
}

/// One `health_check` table over `base` (the defaults, or the service's
/// check for a pool's override).
fn health_check(
    raw: &RawHealthCheck,
    hpath: &[Seg],
    base: &HealthCheck,
    errs: &mut Errs<'_>,
) -> HealthCheck {
    let mut hc = base.clone();
    if let Some(p) = &raw.path {
        if !p.starts_with('/') {
            errs.push(
                &key(hpath, "path"),
                format!("`{p}` must start with `/`, like \"/healthz\""),
            );
        } else if !p.bytes().all(|b| b.is_ascii_graphic()) {
            errs.push(
                &key(hpath, "path"),
                format!("`{p}` is not a request path: no spaces or control characters"),
            );
        } else {
            hc.path = Some(p.clone());
        }
    }
    if let Some(h) = &raw.host {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic()) {
            errs.push(
                &key(hpath, "host"),
                format!("`{h}` is not a Host header value; write a name like \"web.internal\""),
            );
        } else {
            hc.host = Some(h.clone());
        }
    }
    if let Some(e) = &raw.expect {
        match parse_status_ranges(e) {
            Ok(ranges) => hc.expect = ranges,
            Err(msg) => errs.push(&key(hpath, "expect"), msg),
        }
    }
    hc.interval = bounded_duration(
        errs,
        &key(hpath, "interval"),
        &raw.interval,
        base.interval,
        MAX_INTERVAL,
    );
    hc.timeout = bounded_duration(
        errs,
        &key(hpath, "timeout"),
        &raw.timeout,
        base.timeout,
        MAX_INTERVAL,
    );
    let threshold = |errs: &mut Errs<'_>, k: &str, raw: Option<i64>, default: u32| {
        positive(errs, &key(hpath, k), raw, default as usize, 1000) as u32
    };
    hc.healthy_threshold = threshold(
        errs,
        "healthy_threshold",
        raw.healthy_threshold,
        base.healthy_threshold,
    );
    hc.unhealthy_threshold = threshold(
        errs,
        "unhealthy_threshold",
        raw.unhealthy_threshold,
        base.unhealthy_threshold,
    );
    if hc.timeout > hc.interval {
        // Reported at the key this table wrote; a clash this table only
        // inherited was reported where it was written.
        let at = if raw.timeout.is_some() {
            Some("timeout")
        } else if raw.interval.is_some() {
            Some("interval")
        } else {
            None
        };
        if let Some(k) = at {
            errs.push(
                &key(hpath, k),
                format!(
                    "the timeout ({}) must not exceed the interval ({})",
                    humantime::format_duration(hc.timeout),
                    humantime::format_duration(hc.interval)
                ),
            );
        }
    }
    hc
}

/// `outlier`: every key optional, each checked on its own, then
/// `base_ejection` against `max_ejection` (reported at the key the table
/// wrote; with neither written the defaults agree).
fn validate_outlier(raw: &RawOutlier, opath: &[Seg], errs: &mut Errs<'_>) -> Outlier {
    let d = Outlier::default();
    let consecutive_failures = positive(
        errs,
        &key(opath, "consecutive_failures"),
        raw.consecutive_failures,
        d.consecutive_failures as usize,
        1000,
    ) as u32;
    let max_ejected_percent = match raw.max_ejected_percent {
        None => d.max_ejected_percent,
        Some(p) if (0..=100).contains(&p) => p as u8,
        Some(p) => {
            errs.push(
                &key(opath, "max_ejected_percent"),
                format!("{p} is out of range; allowed: 0 to 100 (a share of the pool's backends, in percent)"),
            );
            d.max_ejected_percent
        }
    };
    let before = errs.len();
    let base_ejection = bounded_duration(
        errs,
        &key(opath, "base_ejection"),
        &raw.base_ejection,
        d.base_ejection,
        MAX_INTERVAL,
    );
    let max_ejection = bounded_duration(
        errs,
        &key(opath, "max_ejection"),
        &raw.max_ejection,
        d.max_ejection,
        MAX_INTERVAL,
    );
    if errs.len() == before && base_ejection > max_ejection {
        let at = if raw.base_ejection.is_some() {
            "base_ejection"
        } else {
            "max_ejection"
        };
        errs.push(
            &key(opath, at),
            format!(
                "base_ejection ({}) must not exceed max_ejection ({})",
                humantime::format_duration(base_ejection),
                humantime::format_duration(max_ejection)
            ),
        );
    }
    Outlier {
        enabled: raw.enabled.unwrap_or(true),
        consecutive_failures,
        count_5xx: raw.count_5xx.unwrap_or(false),
        base_ejection,
        max_ejection,
        max_ejected_percent,
    }
}
