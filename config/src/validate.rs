//! Raw config -> validated [`Config`], collecting every error with its line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{ConfigError, ConfigErrors};
use crate::locate::{display_path, Locator, Seg};
use crate::model::*;
use crate::raw::*;

const MAX_WEIGHT: i64 = 1_000_000;

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

fn segs(path: &serde_ignored::Path) -> Vec<Seg> {
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
        [_] => "workers, state_file, shutdown_timeout, admin, services, edge",
        ["edge", _] => crate::edge::ALLOWED_EDGE_KEYS,
        ["edge", "records", "[]", _] => crate::edge::ALLOWED_RECORD_KEYS,
        ["edge", "records", "[]", "alias", _] => crate::edge::ALLOWED_ALIAS_KEYS,
        ["edge", "elastic_ips", "[]", _] => crate::edge::ALLOWED_ELASTIC_IP_KEYS,
        ["edge", "elastic_ips", "[]", "candidates", _] => crate::edge::ALLOWED_CANDIDATES_KEYS,
        ["admin", _] => "listen, token",
        ["services", _, _] => "split, sticky, cookie, drain_timeout, override_header, override_token, access_log, timeouts, limits, listeners, pools",
        ["services", _, "cookie", _] => "name, max_age, secure",
        ["services", _, "timeouts", _] => "connect, response_header, header_read, idle",
        ["services", _, "limits", _] => "max_connections, max_header_bytes, max_headers",
        ["services", _, "listeners", "[]", _] => "listen, pool, mode, proxy_protocol",
        ["services", _, "pools", _, _] => "backends, protocol, send_proxy_protocol",
        ["services", _, "pools", _, "backends", "[]", _] => "addr, weight, protocol",
        _ => "see the configuration reference in the README",
    }
}

pub fn parse_and_validate(origin: &str, text: &str) -> Result<Config, ConfigErrors> {
    let mut errs = Errs {
        origin,
        loc: Locator::new(text),
        list: Vec::new(),
    };
    let syntax_error = |errs: &Errs, e: toml::de::Error| {
        let line = e.span().map(|s| errs.loc.line_of_offset(s.start));
        ConfigErrors(vec![ConfigError {
            origin: origin.to_string(),
            line,
            key: String::new(),
            message: e.message().trim().to_string(),
        }])
    };
    let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(&errs, e))?;
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

pub(crate) fn duration(
    errs: &mut Errs,
    path: &[Seg],
    raw: &Option<String>,
    default: Duration,
) -> Duration {
    match raw {
        None => default,
        Some(s) => match crate::parse_duration(s) {
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

fn socket_addr(errs: &mut Errs, path: &[Seg], s: &str) -> Option<SocketAddr> {
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

fn positive(errs: &mut Errs, path: &[Seg], raw: Option<i64>, default: usize, max: i64) -> usize {
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

fn protocol(errs: &mut Errs, path: &[Seg], raw: &Option<String>, default: Protocol) -> Protocol {
    match raw.as_deref() {
        None => default,
        Some("http1") => Protocol::Http1,
        Some("h2c") => Protocol::H2c,
        Some(other) => {
            errs.push(
                path,
                format!("`{other}` is not an upstream protocol; allowed: \"http1\", \"h2c\""),
            );
            default
        }
    }
}

fn validate(raw: &RawConfig, errs: &mut Errs) -> Config {
    let root: Vec<Seg> = Vec::new();
    let workers = raw
        .workers
        .map(|_| positive(errs, &key(&root, "workers"), raw.workers, 1, 1024));
    let shutdown_timeout = duration(
        errs,
        &key(&root, "shutdown_timeout"),
        &raw.shutdown_timeout,
        Duration::from_secs(30),
    );
    let state_file = raw.state_file.as_ref().and_then(|s| {
        if s.trim().is_empty() {
            errs.push(&key(&root, "state_file"), "must be a file path, not empty");
            None
        } else {
            Some(PathBuf::from(s))
        }
    });

    let admin_path = key(&root, "admin");
    let raw_admin = raw.admin.as_ref();
    let listen_raw = raw_admin
        .and_then(|a| a.listen.clone())
        .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_string());
    let admin_listen =
        socket_addr(errs, &key(&admin_path, "listen"), &listen_raw).unwrap_or_else(|| {
            DEFAULT_ADMIN_LISTEN
                .parse()
                .expect("default admin address parses")
        });
    let token = raw_admin.and_then(|a| a.token.clone());
    if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        errs.push(&key(&admin_path, "token"), "must not be empty");
    }
    if !admin_listen.ip().is_loopback() && token.is_none() {
        errs.push(
            &key(&admin_path, "listen"),
            format!("{admin_listen} is not a loopback address: set admin.token so the admin API requires a bearer token"),
        );
    }

    let mut listen_seen: HashMap<SocketAddr, String> = HashMap::new();
    listen_seen.insert(admin_listen, "admin.listen".to_string());

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
        admin: AdminConfig {
            listen: admin_listen,
            token,
        },
        state_file,
        shutdown_timeout,
        services,
    }
}

fn validate_service(
    name: &str,
    rs: &RawService,
    path: &[Seg],
    errs: &mut Errs,
    listen_seen: &mut HashMap<SocketAddr, String>,
) -> ServiceConfig {
    // Pools, in file order.
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
        let bpath = key(&ppath, "backends");
        let mut backends = Vec::new();
        match &rp.backends {
            None => errs.push(
                &ppath,
                "no `backends`: list at least one, like backends = [\"10.0.1.10:8080\"]",
            ),
            Some(list) if list.is_empty() => errs.push(
                &bpath,
                "the backend list is empty: list at least one backend",
            ),
            Some(list) => {
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
            }
        }
        pools.push(PoolConfig {
            name: pname.clone(),
            backends,
            send_proxy_protocol: rp.send_proxy_protocol.unwrap_or(false),
        });
    }

    // Split, aligned with pools.
    let split_path = key(path, "split");
    let mut split = vec![0u32; pools.len()];
    match &rs.split {
        None => errs.push(
            path,
            "no `split`: give every pool a weight, like split = { blue = 100, green = 0 }",
        ),
        Some(raw_split) => {
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
            for p in &pools {
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
        }
    }

    let sticky = match rs.sticky.as_deref() {
        None | Some("none") => Sticky::None,
        Some("client_ip") => Sticky::ClientIp,
        Some("cookie") => Sticky::Cookie,
        Some(other) => {
            errs.push(&key(path, "sticky"), format!("`{other}` is not a stickiness mode; allowed: \"none\", \"client_ip\", \"cookie\""));
            Sticky::None
        }
    };
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
    let cookie = CookieConfig {
        name: cookie_name,
        max_age: duration(
            errs,
            &key(&cpath, "max_age"),
            &rc.and_then(|c| c.max_age.clone()),
            Duration::from_secs(24 * 3600),
        ),
        secure: rc.and_then(|c| c.secure).unwrap_or(false),
    };

    let drain_timeout = duration(
        errs,
        &key(path, "drain_timeout"),
        &rs.drain_timeout,
        Duration::from_secs(30),
    );
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

    let d = Timeouts::default();
    let tpath = key(path, "timeouts");
    let rt = rs.timeouts.as_ref();
    let timeouts = Timeouts {
        connect: duration(
            errs,
            &key(&tpath, "connect"),
            &rt.and_then(|t| t.connect.clone()),
            d.connect,
        ),
        response_header: duration(
            errs,
            &key(&tpath, "response_header"),
            &rt.and_then(|t| t.response_header.clone()),
            d.response_header,
        ),
        header_read: duration(
            errs,
            &key(&tpath, "header_read"),
            &rt.and_then(|t| t.header_read.clone()),
            d.header_read,
        ),
        idle: duration(
            errs,
            &key(&tpath, "idle"),
            &rt.and_then(|t| t.idle.clone()),
            d.idle,
        ),
    };
    let dl = Limits::default();
    let lpath = key(path, "limits");
    let rl = rs.limits.as_ref();
    let limits = Limits {
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
    };

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
        let pool = match &rl.pool {
            None => None,
            Some(p) => match pools.iter().position(|x| &x.name == p) {
                Some(i) => Some(i),
                None => {
                    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
                    errs.push(
                        &key(&lp, "pool"),
                        format!(
                            "preview pool `{p}` does not exist; pools: {}",
                            names.join(", ")
                        ),
                    );
                    None
                }
            },
        };
        let mode = match rl.mode.as_deref() {
            None | Some("http") => ListenerMode::Http,
            Some("tcp") => ListenerMode::Tcp,
            Some(other) => {
                errs.push(
                    &key(&lp, "mode"),
                    format!("`{other}` is not a listener mode; allowed: \"http\", \"tcp\""),
                );
                ListenerMode::Http
            }
        };
        if mode == ListenerMode::Tcp && sticky == Sticky::Cookie {
            errs.push(
                &key(&lp, "mode"),
                "a tcp listener cannot carry a cookie: use sticky = \"client_ip\" or \"none\" for a service with tcp listeners",
            );
        }
        listeners.push(ListenerConfig {
            listen,
            pool,
            mode,
            proxy_protocol: rl.proxy_protocol.unwrap_or(false),
        });
    }

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
        listeners,
    }
}
