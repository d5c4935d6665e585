//! A listener's `tls` table: certificate files (named, not read: the proxy
//! loads them), ALPN, versions, the handshake timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{bounded_duration, idx, key, Errs, MAX_INTERVAL};
use crate::locate::Seg;
use crate::model::{
    BackendConfig, CertificateFiles, ListenerMode, Protocol, TlsConfig, TlsVersion,
    UpstreamTlsConfig,
};
use crate::raw::{RawPool, RawTls, RawUpstreamTls, RawUpstreamTlsTable};

/// The handshake timeout when none is set.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `alpn` may offer on an http listener.
const HTTP_ALPN: [&str; 2] = ["h2", "http/1.1"];

pub(super) fn validate_tls(
    rt: &RawTls,
    lp: &[Seg],
    mode: ListenerMode,
    errs: &mut Errs<'_>,
) -> Option<TlsConfig> {
    let tp = key(lp, "tls");
    let before = errs.len();
    let certificates = certificates(rt, &tp, errs);
    let alpn = alpn(rt, &tp, mode, errs);
    let default_certificate = match rt.default_certificate.as_deref().map(str::trim) {
        None => None,
        Some("") => {
            errs.push(
                &key(&tp, "default_certificate"),
                "must name a DNS name one of the certificates covers, like \"a.example.com\"",
            );
            None
        }
        Some(name) => Some(name.trim_end_matches('.').to_ascii_lowercase()),
    };
    let handshake_timeout = bounded_duration(
        errs,
        &key(&tp, "handshake_timeout"),
        &rt.handshake_timeout,
        DEFAULT_HANDSHAKE_TIMEOUT,
        MAX_INTERVAL,
    );
    let min_version = match rt.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::Tls12,
        Some("1.3") => TlsVersion::Tls13,
        Some(other) => {
            errs.push(
                &key(&tp, "min_version"),
                format!("`{other}` is not a TLS version cutover offers; allowed: \"1.2\", \"1.3\""),
            );
            TlsVersion::Tls12
        }
    };
    let default_certificate_at = errs.location(&key(&tp, "default_certificate"));
    (errs.len() == before).then_some(TlsConfig {
        certificates,
        alpn,
        default_certificate,
        default_certificate_at,
        handshake_timeout,
        min_version,
    })
}

fn certificates(rt: &RawTls, tp: &[Seg], errs: &mut Errs<'_>) -> Vec<CertificateFiles> {
    let cp = key(tp, "certificates");
    if rt.certificates.is_empty() {
        errs.push(
            tp,
            "no certificates: add at least one [[services.NAME.listeners.tls.certificates]] with `cert` and `key` (PEM files)",
        );
    }
    let base = Path::new(errs.origin()).parent().map(Path::to_path_buf);
    let mut out = Vec::new();
    for (i, rc) in rt.certificates.iter().enumerate() {
        let at = idx(&cp, i);
        let mut file = |name: &str, raw: &Option<String>| match raw.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Some(resolve(base.as_deref(), s)),
            _ => {
                errs.push(
                    &key(&at, name),
                    format!("a certificate needs `{name}`: the path of a PEM file (relative paths are relative to the config file)"),
                );
                None
            }
        };
        let (cert, pkey) = (file("cert", &rc.cert), file("key", &rc.key));
        if let (Some(cert), Some(kpath)) = (cert, pkey) {
            out.push(CertificateFiles {
                cert,
                key: kpath,
                cert_at: errs.location(&key(&at, "cert")),
                key_at: errs.location(&key(&at, "key")),
            });
        }
    }
    out
}

/// `path` as written when absolute, else under the config file's directory.
fn resolve(base: Option<&Path>, path: &str) -> PathBuf {
    let p = Path::new(path);
    match base {
        Some(b) if p.is_relative() && !b.as_os_str().is_empty() => b.join(p),
        _ => p.to_path_buf(),
    }
}

fn alpn(rt: &RawTls, tp: &[Seg], mode: ListenerMode, errs: &mut Errs<'_>) -> Vec<String> {
    let ap = key(tp, "alpn");
    let Some(list) = &rt.alpn else {
        return match mode {
            ListenerMode::Http => HTTP_ALPN.iter().map(|s| s.to_string()).collect(),
            ListenerMode::Tcp => Vec::new(),
        };
    };
    let mut out: Vec<String> = Vec::new();
    for p in list {
        let ok = match mode {
            ListenerMode::Http => HTTP_ALPN.contains(&p.as_str()),
            ListenerMode::Tcp => !p.is_empty() && p.len() <= 255 && p.is_ascii(),
        };
        if !ok {
            let allowed = match mode {
                ListenerMode::Http => "\"h2\", \"http/1.1\"",
                ListenerMode::Tcp => "protocol names of 1 to 255 ASCII characters",
            };
            errs.push(
                &ap,
                format!("`{p}` cannot be offered here; allowed: {allowed}"),
            );
        } else if out.contains(p) {
            errs.push(&ap, format!("`{p}` is listed twice"));
        } else {
            out.push(p.clone());
        }
    }
    if list.is_empty() && mode == ListenerMode::Http {
        errs.push(
            &ap,
            "an empty list offers nothing; leave `alpn` out for [\"h2\", \"http/1.1\"]",
        );
    }
    out
}

/// A pool's `tls`: `true`, `false`, or a table.
pub(super) fn validate_upstream_tls(
    raw: &RawUpstreamTls,
    ppath: &[Seg],
    backends: &[BackendConfig],
    errs: &mut Errs<'_>,
) -> Option<UpstreamTlsConfig> {
    let tp = key(ppath, "tls");
    let t = match raw {
        RawUpstreamTls::On(false) => return None,
        RawUpstreamTls::On(true) => RawUpstreamTlsTable::default(),
        RawUpstreamTls::Table(t) => t.clone(),
    };
    let before = errs.len();
    let base = Path::new(errs.origin()).parent().map(Path::to_path_buf);
    let path_of = |raw: &Option<String>| {
        raw.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| resolve(base.as_deref(), s))
    };
    let ca_file = path_of(&t.ca_file);
    if t.ca_file.is_some() && ca_file.is_none() {
        errs.push(
            &key(&tp, "ca_file"),
            "must name a PEM file of CA certificates",
        );
    }
    let server_name = match t.server_name.as_deref().map(str::trim) {
        None => None,
        Some(n) if rustls_name_ok(n) => Some(n.to_ascii_lowercase()),
        Some(n) => {
            errs.push(
                &key(&tp, "server_name"),
                format!("`{n}` is not a DNS name or an IP address"),
            );
            None
        }
    };
    let client_certificate = match (path_of(&t.cert), path_of(&t.key)) {
        (Some(cert), Some(kpath)) => Some(CertificateFiles {
            cert,
            key: kpath,
            cert_at: errs.location(&key(&tp, "cert")),
            key_at: errs.location(&key(&tp, "key")),
        }),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            errs.push(
                &tp,
                "a client certificate needs both `cert` and `key` (PEM files), or neither",
            );
            None
        }
    };
    let insecure_skip_verify = t.insecure_skip_verify.unwrap_or(false);
    if insecure_skip_verify {
        if let Some(b) = backends.iter().find(|b| !on_loopback(&b.addr)) {
            errs.push(
                &key(&tp, "insecure_skip_verify"),
                format!(
                    "refused: backend {} is not on loopback; verify its certificate (ca_file, server_name) instead",
                    b.addr
                ),
            );
        }
        if ca_file.is_some() {
            errs.push(
                &key(&tp, "insecure_skip_verify"),
                "contradicts `ca_file`: remove one",
            );
        }
    }
    let ca_file_at = errs.location(&key(&tp, "ca_file"));
    (errs.len() == before).then_some(UpstreamTlsConfig {
        ca_file,
        server_name,
        client_certificate,
        insecure_skip_verify,
        ca_file_at,
    })
}

/// A DNS name (letters, digits, `-`, dots) or an IP address.
fn rustls_name_ok(n: &str) -> bool {
    n.parse::<std::net::IpAddr>().is_ok()
        || (!n.is_empty()
            && n.len() <= 253
            && n.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

fn on_loopback(addr: &str) -> bool {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => addr
            .rsplit_once(':')
            .is_some_and(|(h, _)| h.eq_ignore_ascii_case("localhost")),
    }
}

/// `h2` needs the pool's TLS; `h2c` is cleartext and refuses it.
pub(super) fn check_protocols(
    backends: &[BackendConfig],
    tls: bool,
    rp: &RawPool,
    ppath: &[Seg],
    errs: &mut Errs<'_>,
) {
    for (i, b) in backends.iter().enumerate() {
        let why = match (b.protocol, tls) {
            (Protocol::H2, false) => {
                "h2 is HTTP/2 over TLS: give the pool `tls = true` (or use h2c for HTTP/2 in cleartext)"
            }
            (Protocol::H2c, true) => {
                "h2c is HTTP/2 in cleartext: with the pool's tls, use h2 (HTTP/2 agreed by ALPN)"
            }
            _ => continue,
        };
        let at = if rp.protocol.is_some() {
            key(ppath, "protocol")
        } else {
            key(&idx(&key(ppath, "backends"), i), "protocol")
        };
        errs.push(&at, why);
        if rp.protocol.is_some() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::*;

    /// A config whose first listener has `tls` lines after `[...tls]`.
    fn with_tls(tls: &str) -> String {
        format!(
            r#"
[services.web]
split = {{ blue = 100 }}

[[services.web.listeners]]
listen = "127.0.0.1:8443"

[services.web.listeners.tls]
{tls}

[services.web.pools.blue]
backends = ["10.0.1.10:8080"]
"#
        )
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match parse("/etc/cutover/t.toml", text) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.0,
        }
    }

    fn has(errs: &[ConfigError], line: usize, key: &str, fragment: &str) {
        assert!(
            errs.iter()
                .any(|e| e.line == Some(line) && e.key == key && e.message.contains(fragment)),
            "no error at line {line} key `{key}` containing `{fragment}` in:\n{}",
            ConfigErrors(errs.to_vec())
        );
    }

    const PAIR: &str = r#"certificates = [{ cert = "a.pem", key = "/keys/a.key" }]"#;

    #[test]
    fn defaults_and_paths_relative_to_the_config_file() {
        let c = parse("/etc/cutover/t.toml", &with_tls(PAIR)).unwrap();
        let tls = c.services[0].listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.alpn, ["h2", "http/1.1"]);
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert_eq!(tls.handshake_timeout, std::time::Duration::from_secs(10));
        assert_eq!(tls.default_certificate, None);
        let pair = &tls.certificates[0];
        assert_eq!(pair.cert, std::path::Path::new("/etc/cutover/a.pem"));
        assert_eq!(pair.key, std::path::Path::new("/keys/a.key"));
        assert_eq!(
            pair.cert_at.key,
            "services.web.listeners[0].tls.certificates[0].cert"
        );
        assert_eq!(pair.cert_at.line, Some(9));
        // No tls table: plain TCP.
        let plain = with_tls("").replace("[services.web.listeners.tls]", "");
        let c = parse("t.toml", &plain).unwrap();
        assert!(c.services[0].listeners[0].tls.is_none());
    }

    #[test]
    fn every_tls_key_is_checked_with_its_line() {
        let p = "services.web.listeners[0].tls";
        has(&errors(&with_tls("")), 8, p, "no certificates");
        has(
            &errors(&with_tls(r#"certificates = [{ cert = "a.pem" }]"#)),
            9,
            &format!("{p}.certificates[0].key"),
            "needs `key`",
        );
        let errs = errors(&with_tls(&format!(
            "{PAIR}\nalpn = [\"h3\", \"h2\", \"h2\"]\nmin_version = \"1.1\"\nhandshake_timeout = \"2h\"\ndefault_certificate = \"\"\nsni = true"
        )));
        has(
            &errs,
            10,
            &format!("{p}.alpn"),
            "`h3` cannot be offered here",
        );
        has(&errs, 10, &format!("{p}.alpn"), "`h2` is listed twice");
        has(
            &errs,
            11,
            &format!("{p}.min_version"),
            "allowed: \"1.2\", \"1.3\"",
        );
        has(
            &errs,
            12,
            &format!("{p}.handshake_timeout"),
            "at most 1 hour",
        );
        has(
            &errs,
            13,
            &format!("{p}.default_certificate"),
            "must name a DNS name",
        );
        has(
            &errs,
            14,
            &format!("{p}.sni"),
            "allowed here: certificates, alpn",
        );
        has(
            &errors(&with_tls(&format!("{PAIR}\nalpn = []"))),
            10,
            &format!("{p}.alpn"),
            "offers nothing",
        );
    }

    #[test]
    fn a_tcp_listener_offers_any_alpn_it_names_and_none_by_default() {
        let tcp = |tls: &str| {
            with_tls(tls).replace(
                "listen = \"127.0.0.1:8443\"",
                "listen = \"127.0.0.1:8443\"\nmode = \"tcp\"",
            )
        };
        let c = parse("t.toml", &tcp(PAIR)).unwrap();
        assert!(c.services[0].listeners[0]
            .tls
            .as_ref()
            .unwrap()
            .alpn
            .is_empty());
        let c = parse("t.toml", &tcp(&format!("{PAIR}\nalpn = [\"imap\"]"))).unwrap();
        assert_eq!(
            c.services[0].listeners[0].tls.as_ref().unwrap().alpn,
            ["imap"]
        );
    }

    /// A pool table of `[services.web.pools.blue]` with `lines`, and
    /// `backends`.
    fn pool(lines: &str, backends: &str) -> String {
        format!(
            r#"
[services.web]
split = {{ blue = 100 }}

[[services.web.listeners]]
listen = "127.0.0.1:8080"

[services.web.pools.blue]
backends = {backends}
{lines}
"#
        )
    }

    #[test]
    fn a_pool_takes_tls_as_true_or_a_table_and_h2_needs_it() {
        let c = parse(
            "/etc/cutover/t.toml",
            &pool("tls = true", r#"["10.0.1.10:443"]"#),
        )
        .unwrap();
        let t = c.services[0].pools[0].tls.as_ref().unwrap();
        assert_eq!((t.ca_file.as_ref(), t.insecure_skip_verify), (None, false));
        let c = parse(
            "/etc/cutover/t.toml",
            &pool(
                "protocol = \"h2\"\n[services.web.pools.blue.tls]\nca_file = \"ca.pem\"\nserver_name = \"api.internal\"",
                r#"["10.0.1.10:443"]"#,
            ),
        )
        .unwrap();
        let p = &c.services[0].pools[0];
        let t = p.tls.as_ref().unwrap();
        assert_eq!(
            t.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/cutover/ca.pem"))
        );
        assert_eq!(t.server_name.as_deref(), Some("api.internal"));
        assert_eq!(p.backends[0].protocol, Protocol::H2);
        assert!(parse("t.toml", &pool("tls = false", r#"["10.0.1.10:80"]"#))
            .unwrap()
            .services[0]
            .pools[0]
            .tls
            .is_none());
        let p = "services.web.pools.blue";
        has(
            &errors(&pool("protocol = \"h2\"", r#"["10.0.1.10:443"]"#)),
            10,
            &format!("{p}.protocol"),
            "h2 is HTTP/2 over TLS",
        );
        has(
            &errors(&pool(
                "protocol = \"h2c\"\ntls = true",
                r#"["10.0.1.10:443"]"#,
            )),
            10,
            &format!("{p}.protocol"),
            "h2c is HTTP/2 in cleartext",
        );
    }

    #[test]
    fn insecure_skip_verify_is_for_loopback_backends_only() {
        let skip = "tls = { insecure_skip_verify = true }";
        assert!(parse(
            "t.toml",
            &pool(skip, r#"["127.0.0.1:8443", "localhost:8444"]"#)
        )
        .is_ok());
        has(
            &errors(&pool(skip, r#"["127.0.0.1:8443", "10.0.1.10:443"]"#)),
            10,
            "services.web.pools.blue.tls.insecure_skip_verify",
            "10.0.1.10:443 is not on loopback",
        );
        has(
            &errors(&pool("tls = { cert = \"c.pem\" }", r#"["10.0.1.10:443"]"#)),
            10,
            "services.web.pools.blue.tls",
            "needs both `cert` and `key`",
        );
        has(
            &errors(&pool(
                "tls = { server_name = \"not a name\" }",
                r#"["10.0.1.10:443"]"#,
            )),
            10,
            "services.web.pools.blue.tls.server_name",
            "not a DNS name",
        );
    }
}
