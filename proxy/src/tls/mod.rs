//! TLS termination with rustls: a listener's certificates (chosen by SNI),
//! ALPN, TLS 1.2 and 1.3, session resumption by tickets and by IDs, and the
//! handshake under `handshake_timeout`. One crypto provider for the whole
//! program: aws-lc-rs (the AWS SDK's client uses it too).
//!
//! Plain HTTP sent to a TLS port gets a short 400 and a close; a client
//! that sends something else that is not TLS is closed. Every handshake is
//! counted by result in `cutover_tls_handshakes_total`.

pub mod certs;
mod sni;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use cutover_config::{ConfigError, TlsConfig, TlsVersion};
use rustls::crypto::CryptoProvider;
use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub use certs::CertInfo;
use sni::SniResolver;

use crate::metrics::TlsMetrics;

/// TLS sessions a listener remembers for resumption by session ID (TLS
/// 1.2 clients without tickets); tickets need no server memory.
const SESSION_CACHE: usize = 16 * 1024;

/// Installs aws-lc-rs as the process's crypto provider (once, at start;
/// a second call changes nothing).
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The process's crypto provider: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// A listener's TLS, ready to accept with: what `cutover check` and start
/// load from a [`TlsConfig`].
pub struct Loaded {
    config: Arc<ServerConfig>,
    resolver: Arc<SniResolver>,
    /// Each pair's chain, to tell a rotation from a rewrite of the same files.
    chains: Vec<Vec<rustls_pki_types::CertificateDer<'static>>>,
    pub certs: Vec<CertInfo>,
    /// Expired certificates: served all the same, reported.
    pub warnings: Vec<ConfigError>,
}

/// Reads and checks every certificate of `cfg` and builds the rustls
/// server config. All errors, not the first.
pub fn load(cfg: &TlsConfig) -> Result<Loaded, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut loaded = Vec::new();
    for files in &cfg.certificates {
        match certs::load(files) {
            Ok(c) => loaded.push((c, files)),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let certs: Vec<certs::LoadedCert> = loaded.iter().map(|(c, _)| c.clone()).collect();
    let mut default = 0;
    if let Some(name) = &cfg.default_certificate {
        let probe = SniResolver::new(&certs, 0);
        match probe.find(name) {
            Some(i) => default = i,
            None => {
                return Err(vec![cfg
                    .default_certificate_at
                    .error(format!("no certificate of this listener covers `{name}`"))]);
            }
        }
    }
    let now = SystemTime::now();
    let warnings = loaded
        .iter()
        .filter(|(c, _)| c.info.expired_at(now))
        .map(|(c, files)| {
            files.cert_at.error(format!(
                "{} expired (not valid after {}); clients will refuse it",
                files.cert.display(),
                humantime::format_rfc3339_seconds(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(c.info.not_after.max(0) as u64)
                )
            ))
        })
        .collect();
    let resolver = Arc::new(SniResolver::new(&certs, default));
    let config = server_config(cfg, resolver.clone()).map_err(|e| {
        let at = cfg
            .certificates
            .first()
            .map(|f| f.cert_at.clone())
            .unwrap_or_default();
        vec![at.error(format!("cannot build the TLS configuration: {e}"))]
    })?;
    Ok(Loaded {
        config,
        resolver,
        chains: certs.iter().map(|c| c.key.cert.clone()).collect(),
        certs: certs.into_iter().map(|c| c.info).collect(),
        warnings,
    })
}

fn server_config(
    cfg: &TlsConfig,
    resolver: Arc<SniResolver>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match cfg.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = cfg.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// A listener's TLS at run time. The loaded configuration sits behind an
/// `ArcSwap` so a rotation can replace it; a handshake reads it once.
pub struct ListenerTls {
    current: ArcSwap<Loaded>,
    handshake_timeout: Duration,
    metrics: TlsMetrics,
    /// Why the last rotation attempt was refused, until one succeeds.
    last_error: std::sync::Mutex<Option<String>>,
}

/// What a reload of a listener's certificate files did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files hold the certificates in use.
    Unchanged,
    /// New certificates: new handshakes use them.
    Rotated,
    /// A bad or expired pair: the old certificates stay. Why.
    Refused(String),
}

/// How a handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Ok,
    NoSniMatch,
    BadVersion,
    Timeout,
    NotTls,
    Error,
    /// Closed before sending a byte (a TCP health check): not counted.
    Closed,
}

/// Two listeners' TLS are the same only if they are the same object (a
/// listener's settings compare equal while they share it).
impl PartialEq for ListenerTls {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("certs", &self.current.load().certs)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl ListenerTls {
    pub fn new(loaded: Loaded, cfg: &TlsConfig, metrics: TlsMetrics) -> ListenerTls {
        let names = expiry_series(&loaded.certs);
        metrics.set_expiry(&names, &[]);
        ListenerTls {
            current: ArcSwap::from_pointee(loaded),
            handshake_timeout: cfg.handshake_timeout,
            metrics,
            last_error: Default::default(),
        }
    }

    /// Reads `cfg`'s files again. A new set that loads whole, with no
    /// expired certificate, replaces the old one (handshakes under way
    /// and established connections keep theirs); anything else keeps the
    /// old set, is counted and stays in [`ListenerTls::last_error`].
    pub fn reload(&self, cfg: &TlsConfig) -> Reloaded {
        let outcome = match load(cfg) {
            Err(errors) => Err(errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")),
            Ok(loaded) if !loaded.warnings.is_empty() => Err(loaded
                .warnings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")),
            Ok(loaded) => Ok(loaded),
        };
        let mut last_error = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Err(why) => {
                self.metrics.reload_error.inc();
                *last_error = Some(why.clone());
                Reloaded::Refused(why)
            }
            Ok(loaded) if loaded.chains == self.current.load().chains => {
                *last_error = None;
                Reloaded::Unchanged
            }
            Ok(loaded) => {
                let old = expiry_series(&self.current.load().certs);
                let new = expiry_series(&loaded.certs);
                let gone: Vec<String> = old
                    .into_iter()
                    .map(|(n, _)| n)
                    .filter(|n| !new.iter().any(|(m, _)| m == n))
                    .collect();
                self.metrics.set_expiry(&new, &gone);
                self.current.store(Arc::new(loaded));
                self.metrics.reload_ok.inc();
                *last_error = None;
                Reloaded::Rotated
            }
        }
    }

    /// Why the last reload was refused (None once one succeeds).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Status: the certificates served and the last reload error.
    pub fn status_json(&self) -> serde_json::Value {
        let certs: Vec<serde_json::Value> = self
            .current
            .load()
            .certs
            .iter()
            .map(CertInfo::to_json)
            .collect();
        serde_json::json!({ "certificates": certs, "last_error": self.last_error() })
    }

    /// The certificates served now.
    pub fn certs(&self) -> Vec<CertInfo> {
        self.current.load().certs.clone()
    }

    /// Terminates TLS on `stream`: the TLS stream, or `None` (counted and
    /// closed) when the handshake failed.
    pub async fn accept(&self, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        let loaded = self.current.load_full();
        let (result, out) =
            match tokio::time::timeout(self.handshake_timeout, handshake(stream, &loaded)).await {
                Ok(done) => done,
                Err(_) => (Handshake::Timeout, None),
            };
        let counter = match result {
            Handshake::Ok => &self.metrics.ok,
            Handshake::NoSniMatch => &self.metrics.no_sni_match,
            Handshake::BadVersion => &self.metrics.bad_version,
            Handshake::Timeout => &self.metrics.timeout,
            Handshake::NotTls => &self.metrics.not_tls,
            Handshake::Error => &self.metrics.error,
            Handshake::Closed => return None,
        };
        counter.inc();
        if let Some(tls) = &out {
            if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                self.metrics.resumed.inc();
            }
        }
        out
    }
}

/// (name, not_after) for the expiry gauge: every name of every certificate.
fn expiry_series(certs: &[CertInfo]) -> Vec<(String, i64)> {
    certs
        .iter()
        .flat_map(|c| c.names.iter().map(|n| (n.clone(), c.not_after)))
        .collect()
}

/// The answer to plain HTTP on a TLS port.
const NOT_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 48\r\nconnection: close\r\n\r\nThis port speaks TLS: use https:// to reach it.\n";

/// A TLS record of type handshake starts every ClientHello.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

async fn handshake(
    mut stream: TcpStream,
    loaded: &Loaded,
) -> (Handshake, Option<TlsStream<TcpStream>>) {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) | Err(_) => return (Handshake::Closed, None),
        Ok(_) => {}
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        if first[0].is_ascii_uppercase() {
            // An HTTP method: say what went wrong, briefly.
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(NOT_TLS)).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        }
        return (Handshake::NotTls, None);
    }
    let acceptor = TlsAcceptor::from(loaded.config.clone());
    match acceptor.accept(stream).await {
        Ok(tls) => {
            let (_, conn) = tls.get_ref();
            let matched = conn
                .server_name()
                .is_none_or(|n| loaded.resolver.find(n).is_some());
            let result = if matched {
                Handshake::Ok
            } else {
                Handshake::NoSniMatch
            };
            (result, Some(tls))
        }
        Err(e) => {
            let result = match e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::PeerIncompatible(_)) => Handshake::BadVersion,
                _ => Handshake::Error,
            };
            tracing::debug!("TLS handshake failed: {e}");
            (result, None)
        }
    }
}
