//! Raw config -> validated [`Config`], collecting every error with its line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{ConfigError, ConfigErrors};
use crate::locate::{display_path, Locator, Seg};
use crate::model::*;
use crate::raw::*;

mod admin;
mod service;
pub use admin::LEGACY_TOKEN_NAME;
use admin::{validate_admin, ALLOWED_ADMIN_KEYS};
mod tls;
use service::validate_service;

const MAX_WEIGHT: i64 = 1_000_000;

const ALLOWED_HEALTH_CHECK_KEYS: &str =
    "path, host, expect, interval, timeout, healthy_threshold, unhealthy_threshold";

const ALLOWED_OUTLIER_KEYS: &str =
    "enabled, consecutive_failures, count_5xx, base_ejection, max_ejection, max_ejected_percent";

pub(crate) struct Errs<'a> {
    origin: &'a str,
    loc: Locator<'a>,
    list: Vec<ConfigError>,
}

impl Errs<'_> {
    /// How many errors so far (lets a caller see whether a part added any).
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The config's origin (its file, when loaded from one).
    pub(crate) fn origin(&self) -> &str {
        self.origin
    }

    /// Where `path` is, for an error found later.
    pub(crate) fn location(&self, path: &[Seg]) -> crate::error::Location {
        crate::error::Location {
            origin: self.origin.to_string(),
            line: self.loc.line(path),
            key: display_path(path),
        }
    }

    pub(crate) fn push(&mut self, path: &[Seg], message: impl Into<String>) {
        self.list.push(ConfigError {
            origin: self.origin.to_string(),
            line: self.loc.line(path),
            key: display_path(path),
            message: message.into(),
        });
    }
}

pub(crate) fn key(path: &[Seg], k: &str) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(Seg::Key(k.to_string()));
    p
}

pub(crate) fn idx(path: &[Seg], i: usize) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(Seg::Index(i));
    p
}

fn segs(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => idx(&segs(parent), *index),
        Path::Map { parent, key: k } => key(&segs(parent), k),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segs(parent),
    }
}

/// The keys allowed in the table that holds `path`'s last key.
fn allowed_keys(path: &[Seg]) -> &'static str {
    let shape: Vec<&str> = path
        .iter()
        .map(|s| match s {
            Seg::Key(k) => k.as_str(),
            Seg::Index(_) => "[]",
        })
        .collect();
    match shape.as_slice() {
        [_] => "workers, state_file, shutdown_timeout, shutdown_delay, admin, services, edge",
        ["edge", _] => crate::edge::ALLOWED_EDGE_KEYS,
        ["edge", "records", "[]", _] => crate::edge::ALLOWED_RECORD_KEYS,
        ["edge", "records", "[]", "alias", _] => crate::edge::ALLOWED_ALIAS_KEYS,
        ["edge", "elastic_ips", "[]", _] => crate::edge::ALLOWED_ELASTIC_IP_KEYS,
        ["edge", "elastic_ips", "[]", "candidates", _] => crate::edge::ALLOWED_CANDIDATES_KEYS,
        ["admin", _] => ALLOWED_ADMIN_KEYS,
        ["admin", "tokens", "[]", _] => admin::ALLOWED_TOKEN_KEYS,
        ["services", _, _] => "split, sticky, cookie, drain_timeout, override_header, override_token, access_log, timeouts, limits, health_check, failover, retries, outlier, allowed_upgrades, error_detail, slow_start, listeners, pools",
        ["services", _, "health_check", _] | ["services", _, "pools", _, "health_check", _] => {
            ALLOWED_HEALTH_CHECK_KEYS
        }
        ["services", _, "outlier", _] => ALLOWED_OUTLIER_KEYS,
        ["services", _, "cookie", _] => "name, max_age, secure",
        ["services", _, "timeouts", _] => "connect, response_header, header_read, idle, h2_ping_interval, h2_ping_timeout, client_idle, backend_idle, tunnel_idle, tcp_keepalive, tcp_keepalive_interval, tcp_keepalive_probes",
        ["services", _, "limits", _] => "max_connections, max_header_bytes, max_headers",
        ["services", _, "listeners", "[]", _] => "listen, pool, mode, proxy_protocol, trust_forwarded, tls",
        ["services", _, "listeners", "[]", "tls", _] => "certificates, alpn, default_certificate, handshake_timeout, min_version",
        ["services", _, "listeners", "[]", "tls", "certificates", "[]", _] => "cert, key",
        ["services", _, "pools", _, _] => "backends, protocol, send_proxy_protocol, health_check, tls",
        ["services", _, "pools", _, "tls", _] => "ca_file, server_name, cert, key, insecure_skip_verify",
        ["services", _, "pools", _, "backends", "[]", _] => "addr, weight, protocol",
        _ => "see docs/configuration.md",
    }
}

pub fn parse_and_validate(origin: &str, text: &str) -> Result<Config, ConfigErrors> {
    let mut errs = Errs {
        origin,
        loc: Locator::lines_only(text),
        list: Vec::new(),
    };
    let syntax_error = |errs: &Errs<'_>, e: toml::de::Error| {
        let line = e.span().map(|s| errs.loc.line_of_offset(s.start));
        ConfigErrors(vec![ConfigError {
            origin: origin.to_string(),
            line,
            key: String::new(),
            message: e.message().trim().to_string(),
        }])
    };
    let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(&errs, e))?;
    // Valid TOML: now toml_edit may read it for the spans of keys.
    errs.loc = Locator::new(text);
    let mut unknown = Vec::new();
    let raw: RawConfig = serde_ignored::deserialize(de, |p| unknown.push(segs(&p)))
        .map_err(|e| syntax_error(&errs, e))?;
    for path in unknown {
        let allowed = allowed_keys(&path);
        errs.push(&path, format!("unknown key; allowed here: {allowed}"));
    }
    let config = validate(&raw, &mut errs);
    if errs.list.is_empty() {
        Ok(config)
    } else {
        errs.list.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        Err(ConfigErrors(errs.list))
    }
}

/// The longest a duration key may be: its bound and how the error says it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Max {
    pub limit: Duration,
    pub says: &'static str,
}

/// Timeouts and deadlines (`connect`, `response_header`, `idle`,
/// `drain_timeout`, `shutdown_timeout`, ...): at most 7 days.
pub(crate) const MAX_TIMEOUT: Max = Max {
    limit: Duration::from_secs(7 * 24 * 3600),
    says: "7 days (\"7d\")",
};

/// Cadences of checks and what they decide (health check intervals and
/// timeouts, h2 PINGs, outlier ejections, the edge's intervals): at most
/// 1 hour.
pub(crate) const MAX_INTERVAL: Max = Max {
    limit: Duration::from_secs(3600),
    says: "1 hour (\"1h\")",
};

/// A cookie's `Max-Age`: browsers cap it at 400 days (RFC 6265bis).
pub(crate) const MAX_COOKIE_AGE: Max = Max {
    limit: Duration::from_secs(400 * 24 * 3600),
    says: "400 days (\"400d\"), the most browsers keep a cookie",
};

/// Parses a duration key, refusing one longer than `max` (a huge value
/// would overflow the clock arithmetic it feeds). Zero passes: callers
/// decide what it means.
pub(crate) fn parse_bounded(s: &str, max: Max) -> Result<Duration, String> {
    let d = crate::parse_duration(s)?;
    if d > max.limit {
        return Err(format!("`{s}` is too long; allowed: at most {}", max.says));
    }
    Ok(d)
}

/// A duration key greater than zero and at most `max`; `default` when
/// unset (or wrong, with the error pushed).
pub(crate) fn bounded_duration(
    errs: &mut Errs<'_>,
    path: &[Seg],
    raw: &Option<String>,
    default: Duration,
    max: Max,
) -> Duration {
    match raw {
        None => default,
        Some(s) => match parse_bounded(s, max) {
            Ok(d) if d.is_zero() => {
                errs.push(path, "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                errs.push(path, e);
                default
            }
        },
    }
}

fn socket_addr(errs: &mut Errs<'_>, path: &[Seg], s: &str) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                path,
                format!("`{s}` is not a socket address; write IP:PORT, like \"0.0.0.0:8080\" or \"[::1]:8080\""),
            );
            None
        }
    }
}

fn positive(
    errs: &mut Errs<'_>,
    path: &[Seg],
    raw: Option<i64>,
    default: usize,
    max: i64,
) -> usize {
    match raw {
        None => default,
        Some(n) if n >= 1 && n <= max => n as usize,
        Some(n) => {
            errs.push(path, format!("{n} is out of range; allowed: 1 to {max}"));
            default
        }
    }
}

/// Checks `host:port` where host is an IP (IPv6 in brackets) or a DNS name.
pub fn check_backend_addr(s: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{s}` is not a backend address ({why}); write HOST:PORT, like \"10.0.1.10:8080\", \"[::1]:8080\" or \"app.internal:8080\""
        ))
    };
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return bad("no port");
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return bad("the port must be a number from 1 to 65535"),
        Ok(_) => {}
    }
    if host.is_empty() {
        return bad("no host");
    }
    if host.starts_with('[') {
        return bad("not a valid IPv6 address");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return bad("the host is neither an IP address nor a DNS name");
    }
    Ok(())
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn header_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn protocol(
    errs: &mut Errs<'_>,
    path: &[Seg],
    raw: &Option<String>,
    default: Protocol,
) -> Protocol {
    match raw.as_deref() {
        None => default,
        Some("http1") => Protocol::Http1,
        Some("h2c") => Protocol::H2c,
        Some("h2") => Protocol::H2,
        Some(other) => {
            errs.push(
                path,
                format!("`{other}` is not an upstream protocol; allowed: \"http1\", \"h2c\" (HTTP/2 in cleartext), \"h2\" (HTTP/2 over TLS, with the pool's tls)"),
            );
            default
        }
    }
}

fn validate(raw: &RawConfig, errs: &mut Errs<'_>) -> Config {
    let root: Vec<Seg> = Vec::new();
    let workers = raw
        .workers
        .map(|_| positive(errs, &key(&root, "workers"), raw.workers, 1, 1024));
    let shutdown_timeout = bounded_duration(
        errs,
        &key(&root, "shutdown_timeout"),
        &raw.shutdown_timeout,
        Duration::from_secs(30),
        MAX_TIMEOUT,
    );
    let shutdown_delay = shutdown_delay(errs, &key(&root, "shutdown_delay"), &raw.shutdown_delay);
    let state_file = raw.state_file.as_ref().and_then(|s| {
        if s.trim().is_empty() {
            errs.push(&key(&root, "state_file"), "must be a file path, not empty");
            None
        } else {
            Some(PathBuf::from(s))
        }
    });

    let admin = validate_admin(raw.admin.as_ref(), &key(&root, "admin"), errs);

    let mut listen_seen: HashMap<SocketAddr, String> = HashMap::new();
    listen_seen.insert(admin.listen, "admin.listen".to_string());

    if raw.services.0.is_empty() {
        errs.push(
            &key(&root, "services"),
            "no services: declare at least one [services.NAME] with pools, a split and listeners",
        );
    }
    let mut services = Vec::new();
    for (name, rs) in &raw.services.0 {
        let path = key(&key(&root, "services"), name);
        if !name_ok(name) {
            errs.push(
                &path,
                format!(
                    "service name `{name}` may use only letters, digits, `-` and `_` (1 to 64)"
                ),
            );
        }
        services.push(validate_service(name, rs, &path, errs, &mut listen_seen));
    }

    let edge = raw
        .edge
        .as_ref()
        .map(|e| crate::edge::validate_edge(e, &key(&root, "edge"), &services, errs));

    Config {
        workers,
        edge,
        admin,
        state_file,
        shutdown_timeout,
        shutdown_delay,
        services,
    }
}

/// The longest `shutdown_delay`: a load balancer's health-check interval
/// times its threshold is well under this.
pub(crate) const MAX_SHUTDOWN_DELAY: Duration = Duration::from_secs(600);

/// `shutdown_delay`: zero (the default) up to [`MAX_SHUTDOWN_DELAY`].
fn shutdown_delay(errs: &mut Errs<'_>, path: &[Seg], raw: &Option<String>) -> Duration {
    let Some(s) = raw else {
        return Duration::ZERO;
    };
    match crate::parse_duration(s) {
        Ok(d) if d <= MAX_SHUTDOWN_DELAY => d,
        Ok(_) => {
            errs.push(
                path,
                format!(
                    "`{s}` is too long; allowed: \"0s\" (no delay) to \"{}\"",
                    humantime::format_duration(MAX_SHUTDOWN_DELAY)
                ),
            );
            Duration::ZERO
        }
        Err(e) => {
            errs.push(path, e);
            Duration::ZERO
        }
    }
}
