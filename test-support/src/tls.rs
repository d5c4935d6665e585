//! TLS for tests: a certificate authority and leaf certificates made on the
//! fly with rcgen (ECDSA P-256 unless asked; no private key is checked in),
//! written as PEM files, and a TLS client over a loopback socket that says
//! which certificate the server chose.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::client::{bounded, DEFAULT_TIMEOUT};

/// A test certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names` (DNS names, wildcards allowed), valid now.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, KeyPair::generate().expect("leaf key"), None)
    }

    /// A leaf whose validity ended in 2020.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(
            names,
            KeyPair::generate().expect("leaf key"),
            Some((2019, 2020)),
        )
    }

    /// A leaf valid from 2020 until January 1st of `year`, 00:00 UTC (a
    /// rotation then shows in the expiry that status reports).
    pub fn leaf_until(&self, names: &[&str], year: i32) -> Leaf {
        self.leaf_with(
            names,
            KeyPair::generate().expect("leaf key"),
            Some((2020, year)),
        )
    }

    /// `years`: valid from January 1st of the first until that of the
    /// second; `None`: rcgen's default (1975 to 4096).
    fn leaf_with(&self, names: &[&str], key: KeyPair, years: Option<(i32, i32)>) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        if let Some(n) = names.first() {
            params.distinguished_name.push(DnType::CommonName, n);
        }
        if let Some((from, until)) = years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(until, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Leaf {
    /// Writes `STEM.pem` and `STEM.key` in `dir`; their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// A listener's `tls` inline table serving the `(cert, key)` pairs, with
/// `extra` keys (`, handshake_timeout = "300ms"`).
pub fn listener_table(pairs: &[(PathBuf, PathBuf)], extra: &str) -> String {
    let certs: Vec<String> = pairs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                c.display().to_string(),
                k.display().to_string()
            )
        })
        .collect();
    format!("tls = {{ certificates = [{}]{extra} }}", certs.join(", "))
}

/// A client config that trusts `ca_pem` and offers `alpn`.
pub fn client_config(ca_pem: &str, alpn: &[&str]) -> Arc<ClientConfig> {
    client_config_for(ca_pem, alpn, rustls::DEFAULT_VERSIONS)
}

/// [`client_config`] speaking only TLS 1.2.
pub fn client_config_tls12(ca_pem: &str) -> Arc<ClientConfig> {
    client_config_for(ca_pem, &[], &[&rustls::version::TLS12])
}

fn client_config_for(
    ca_pem: &str,
    alpn: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.expect("CA PEM"))
            .expect("CA into the root store");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A client config that accepts any certificate (to see which one a
/// server picks for a name it does not cover, or without SNI).
pub fn any_cert_config(alpn: &[&str]) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(cutover_proxy::upstream::tls::accept_any())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS connection to `addr` with SNI `sni` (`None`: no SNI; the client
/// then names the server by its IP address, which sends none).
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    sni: Option<&str>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string())
            .map_err(|e| std::io::Error::other(format!("bad SNI name {n}: {e}")))?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = crate::raw::connect(addr).await;
    bounded(
        "TLS handshake",
        DEFAULT_TIMEOUT,
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
}

/// The DNS names of the certificate the server presented on `tls`.
pub fn served_names(tls: &TlsStream<TcpStream>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let (_, conn) = tls.get_ref();
    let Some(der) = conn.peer_certificates().and_then(|c| c.first()) else {
        return Vec::new();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    names
}

/// Whether `tls`'s handshake resumed an earlier session.
pub fn resumed(tls: &TlsStream<TcpStream>) -> bool {
    let (_, conn) = tls.get_ref();
    conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

/// The protocol ALPN agreed on `tls`, if any.
pub fn alpn(tls: &TlsStream<TcpStream>) -> Option<String> {
    let (_, conn) = tls.get_ref();
    conn.alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

/// A backend that speaks only TLS (HTTP/1.1 and HTTP/2 by ALPN) with
/// `leaf`; answers with its pool and the version it saw.
pub async fn backend(leaf: &Leaf, pool: &'static str) -> SocketAddr {
    TlsBackend::start(leaf, pool).await.addr
}

/// A TLS backend (see [`backend`]) that counts the handshakes it completed,
/// full and resumed, and can close the connections it has open. It can
/// resume: TLS 1.3 tickets from a ticketer, TLS 1.2 session IDs from
/// rustls' default in-memory session store.
pub struct TlsBackend {
    pub addr: SocketAddr,
    full: Arc<AtomicU64>,
    resumed: Arc<AtomicU64>,
    open: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl TlsBackend {
    pub async fn start(leaf: &Leaf, pool: &'static str) -> TlsBackend {
        let acceptor = tokio_rustls::TlsAcceptor::from(backend_config(leaf));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test TLS backend");
        let b = TlsBackend {
            addr: listener.local_addr().expect("test TLS backend"),
            full: Arc::default(),
            resumed: Arc::default(),
            open: Arc::default(),
        };
        let (full, resumed, open) = (b.full.clone(), b.resumed.clone(), b.open.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let (full, resumed) = (full.clone(), resumed.clone());
                let task = tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let kind = tls.get_ref().1.handshake_kind();
                    let counter = if kind == Some(rustls::HandshakeKind::Resumed) {
                        resumed
                    } else {
                        full
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    serve_backend(tls, pool).await;
                });
                let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
                open.retain(|t| !t.is_finished());
                open.push(task);
            }
        });
        b
    }

    /// Handshakes completed so far: `(full, resumed)`.
    pub fn handshakes(&self) -> (u64, u64) {
        (
            self.full.load(Ordering::SeqCst),
            self.resumed.load(Ordering::SeqCst),
        )
    }

    /// Closes every connection it has open (its socket goes away, no
    /// close_notify: a backend restarting) and returns once they are
    /// closed. It keeps accepting.
    pub async fn close_connections(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(|p| p.into_inner()));
        for t in open {
            t.abort();
            // Cancelled (or already done): its stream is dropped either way.
            let _ = t.await;
        }
    }
}

fn backend_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("test TLS backend");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("test TLS backend");
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("test TLS backend")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("test TLS backend");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().expect("test TLS backend");
    Arc::new(config)
}

/// HTTP/1.1 or HTTP/2 on `tls` until the client closes it.
async fn serve_backend(tls: tokio_rustls::server::TlsStream<TcpStream>, pool: &'static str) {
    use bytes::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let svc = hyper::service::service_fn(
        move |req: http::Request<hyper::body::Incoming>| async move {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header("x-pool", pool)
                    .header("x-seen-version", format!("{:?}", req.version()))
                    .body(http_body_util::Full::new(Bytes::from_static(
                        b"tls backend\n",
                    )))
                    .expect("test TLS backend"),
            )
        },
    );
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), svc)
        .await;
}

/// Replaces `dir/name` with `text` as deploy tools do: written to a hidden
/// temporary file beside it, then renamed over it (one event naming it).
pub fn replace_file(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.new"));
    std::fs::write(&tmp, text).expect("write the replacement");
    std::fs::rename(&tmp, dir.join(name)).expect("rename it over the file");
}

/// A harness whose one listener serves a certificate for `a.test` from
/// `dir/a.pem` and `dir/a.key` (signed by `ca`): the set-up of the
/// certificate rotation tests.
#[cfg(feature = "harness")]
pub async fn a_test_harness(ca: &TestCa, dir: &Path) -> crate::Running {
    let pair = ca.leaf(&["a.test"]).write(dir, "a");
    crate::Harness::new()
        .listener(&listener_table(&[pair], ""))
        .start()
        .await
}
