//! A listener's `tls` table: certificate files (named, not read: the proxy
//! loads them), ALPN, versions, the handshake timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{bounded_duration, idx, key, Errs, MAX_INTERVAL};
use crate::locate::Seg;
use crate::model::{CertificateFiles, ListenerMode, TlsConfig, TlsVersion};
use crate::raw::RawTls;

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
    let default_certificate_at = errs.place(&key(&tp, "default_certificate"));
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
                cert_at: errs.place(&key(&at, "cert")),
                key_at: errs.place(&key(&at, "key")),
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
}
