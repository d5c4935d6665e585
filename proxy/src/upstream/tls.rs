//! TLS from cutover to a pool's backends: a rustls client config per pool
//! (built when the snapshot is, never per connection), verifying against
//! the platform's root store (read with rustls-native-certs) or the pool's
//! `ca_file`, with SNI, an optional client certificate (mTLS), and ALPN
//! `h2` or `http/1.1` as the backend's protocol asks. Sessions are resumed
//! from rustls' in-memory client cache (one per pool config).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cutover_config::{ConfigError, Protocol, UpstreamTlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A pool's TLS to its backends: one client config per ALPN choice.
#[derive(Debug)]
pub struct UpstreamTls {
    http1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
    model: UpstreamTlsConfig,
    /// Why its files could not be loaded: every connect fails with this.
    failed: Option<String>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.model == other.model
    }
}

impl UpstreamTls {
    /// Reads the CA file (or the platform's roots) and the client
    /// certificate, and builds the configs.
    pub fn load(cfg: &UpstreamTlsConfig) -> Result<UpstreamTls, ConfigError> {
        let provider = crate::tls::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| cfg.ca_file_at.error(format!("TLS versions: {e}")))?;
        let builder = if cfg.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(accept_any())
        } else {
            builder.with_root_certificates(roots(cfg)?)
        };
        let config = match &cfg.client_certificate {
            None => builder.with_no_client_auth(),
            Some(files) => {
                let loaded = crate::tls::certs::load(files)?;
                let chain = loaded.key.cert.clone();
                let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&files.key)
                    .map_err(|e| files.key_at.error(format!("{}: {e}", files.key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| files.key_at.error(format!("client certificate: {e}")))?
            }
        };
        let with_alpn = |alpn: &[u8]| {
            let mut c = config.clone();
            c.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(c)
        };
        Ok(UpstreamTls {
            http1: with_alpn(b"http/1.1"),
            h2: with_alpn(b"h2"),
            model: cfg.clone(),
            failed: None,
        })
    }

    /// A TLS whose files could not be loaded: every connect fails with
    /// `why` (never plain TCP instead).
    pub fn failed(cfg: &UpstreamTlsConfig, why: String) -> UpstreamTls {
        let config = Arc::new(
            ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                })
                .unwrap_or_else(|_| {
                    ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                }),
        );
        UpstreamTls {
            http1: config.clone(),
            h2: config,
            model: cfg.clone(),
            failed: Some(why),
        }
    }

    /// The config it was built from.
    pub fn config(&self) -> &UpstreamTlsConfig {
        &self.model
    }

    /// The name to send by SNI and verify for a backend at `addr`
    /// (`host:port`): `server_name`, else the host.
    pub fn server_name(&self, addr: &str) -> Option<ServerName<'static>> {
        let host = match &self.model.server_name {
            Some(n) => n.as_str(),
            None => addr
                .rsplit_once(':')
                .map_or(addr, |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']'),
        };
        ServerName::try_from(host.to_string()).ok()
    }

    /// Shakes hands on `tcp` for a backend speaking `protocol`; for h2 the
    /// backend must agree to `h2` by ALPN.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        name: ServerName<'static>,
        protocol: Protocol,
    ) -> io::Result<TlsStream<TcpStream>> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(why.clone()));
        }
        let config = if protocol.is_h2() {
            self.h2.clone()
        } else {
            self.http1.clone()
        };
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        if protocol.is_h2() && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(io::Error::other(
                "the backend did not agree to HTTP/2 by ALPN (pool protocol h2)",
            ));
        }
        Ok(tls)
    }
}

fn roots(cfg: &UpstreamTlsConfig) -> Result<rustls::RootCertStore, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            let shown = path.display();
            let bytes = std::fs::read(path)
                .map_err(|e| cfg.ca_file_at.error(format!("cannot read {shown}: {e}")))?;
            for c in CertificateDer::pem_slice_iter(&bytes) {
                let c = c.map_err(|e| {
                    cfg.ca_file_at
                        .error(format!("{shown}: not a PEM certificate ({e})"))
                })?;
                roots.add(c).map_err(|e| {
                    cfg.ca_file_at
                        .error(format!("{shown}: not a usable CA certificate ({e})"))
                })?;
            }
            if roots.is_empty() {
                return Err(cfg
                    .ca_file_at
                    .error(format!("{shown} holds no certificate")));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(cfg.ca_file_at.error(
                    "no CA certificate found in the platform's store (install ca-certificates) and no `ca_file` given",
                ));
            }
        }
    }
    Ok(roots)
}

/// An upstream byte stream: TCP, or TLS over TCP.
pub enum UpStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpStream {
    /// The TCP socket underneath.
    #[inline]
    pub fn tcp(&self) -> &TcpStream {
        match self {
            UpStream::Plain(s) => s,
            UpStream::Tls(t) => t.get_ref().0,
        }
    }

    /// Still open, and nothing arrived since the last exchange. Does not
    /// wait and takes nothing that matters: a plain socket is read (a byte
    /// there means the connection is not usable anyway), a TLS one only
    /// peeked at underneath (any record, a close_notify alert say, makes
    /// it unusable).
    #[inline]
    pub fn usable(&self) -> bool {
        let outcome = match self {
            UpStream::Plain(s) => s.try_read(&mut [0u8; 1]),
            UpStream::Tls(t) => {
                let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
                socket2::SockRef::from(t.get_ref().0).peek(&mut probe)
            }
        };
        match outcome {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            // 0: closed; anything else: bytes nobody asked for.
            Ok(_) => false,
        }
    }
}

impl AsyncRead for UpStream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpStream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpStream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpStream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpStream::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            UpStream::Plain(s) => s.is_write_vectored(),
            UpStream::Tls(t) => t.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpStream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpStream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A verifier that accepts any certificate (signatures are still
/// checked): `insecure_skip_verify`, which validation allows only for pools
/// whose backends are all on loopback, and tests that look at which
/// certificate a server chose.
pub fn accept_any() -> Arc<dyn rustls::client::danger::ServerCertVerifier> {
    Arc::new(AcceptAny(crate::tls::provider()))
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
