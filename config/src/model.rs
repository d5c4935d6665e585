//! The validated config: the types the rest of cutover uses. Every value
//! here has passed validation; defaults are filled in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Location;

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
pub const DEFAULT_COOKIE_NAME: &str = "cutover_ticket";
/// The longest `slow_start` window.
pub const MAX_SLOW_START: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Runtime worker threads; `None` means one per core.
    pub workers: Option<usize>,
    pub admin: AdminConfig,
    /// Where accepted changes are persisted; `None` keeps them in memory only.
    pub state_file: Option<PathBuf>,
    /// How long a graceful shutdown waits for in-flight work.
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long `/readyz` answers 503 while the listeners
    /// still accept, before they stop and the drain starts (zero: none).
    pub shutdown_delay: Duration,
    pub services: Vec<ServiceConfig>,
    /// Route 53 records and Elastic IPs kept pointing at cutover (`[edge]`).
    pub edge: Option<crate::edge::EdgeConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The single bearer token (an operator named `admin`). A token (this
    /// or `tokens`) is required when `listen` is not loopback.
    pub token: Option<String>,
    /// `[[admin.tokens]]`: named tokens with roles. Their secrets are read
    /// by [`crate::secrets::resolve`], after validation.
    pub tokens: Vec<AdminToken>,
    /// `/metrics` needs no token.
    pub metrics_public: bool,
    /// The audit log file; `None`: beside the state file (see
    /// [`Config::audit_log`]).
    pub audit_log: Option<PathBuf>,
    /// The audit log rotates when a line would take it over this size.
    pub audit_max_bytes: u64,
    /// Rotated audit files kept (`cutover-audit.jsonl.1` ... `.N`).
    pub audit_keep: usize,
}

pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_AUDIT_KEEP: usize = 5;
/// The audit log's name beside the state file when `audit_log` is unset.
pub const DEFAULT_AUDIT_FILE_NAME: &str = "cutover-audit.jsonl";

impl Config {
    /// Where the audit log goes: `admin.audit_log`, else
    /// `cutover-audit.jsonl` in the state file's directory, else nowhere
    /// (the last entries are kept in memory only).
    pub fn audit_log(&self) -> Option<PathBuf> {
        if let Some(p) = &self.admin.audit_log {
            return Some(p.clone());
        }
        let state = self.state_file.as_ref()?;
        let dir = state
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        Some(dir.join(DEFAULT_AUDIT_FILE_NAME))
    }
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every endpoint.
    Operator,
    /// Reads only: status, drain, audit, metrics (and health checks).
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

/// Where a token's secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the secret (one trailing newline is not part of it).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// One `[[admin.tokens]]` entry, validated but its secret not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub name: String,
    pub role: Role,
    pub secret: SecretSource,
    /// Where `secret_file`/`secret_env` is, for errors found when the
    /// secret is read.
    pub at: crate::error::Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    /// A random ticket per downstream connection.
    None,
    /// A hash of the client IP address.
    ClientIp,
    /// A ticket carried in a cookie, per request.
    Cookie,
}

impl Sticky {
    pub fn as_str(self) -> &'static str {
        match self {
            Sticky::None => "none",
            Sticky::ClientIp => "client_ip",
            Sticky::Cookie => "cookie",
        }
    }
}

/// What cutover's own error answers (502, 503, 504, 400) tell a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDetail {
    /// The status and a short cause, without backend addresses or error
    /// chains (the pool's name may appear).
    Short,
    /// The whole error with its causes, backend addresses included: for
    /// internal services whose clients are their operators.
    Full,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CookieConfig {
    pub name: String,
    pub max_age: Duration,
    pub secure: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// TCP connect to a backend.
    pub connect: Duration,
    /// From sending the request to receiving the response head.
    pub response_header: Duration,
    /// For a client to send a whole request head.
    pub header_read: Duration,
    /// An idle downstream keep-alive connection is closed after this.
    pub idle: Duration,
    /// How long the shared h2c connection to a backend may go without
    /// reading a frame before cutover sends a PING; `None` (`"0s"`): no
    /// PINGs.
    pub h2_ping_interval: Option<Duration>,
    /// A PING unanswered for this long closes the connection; the next
    /// request opens a new one.
    pub h2_ping_timeout: Duration,
    /// A response the client stopped reading (data waiting to be written,
    /// none accepted) or an HTTP/1.1 request body the client stopped
    /// sending is cut after this long without progress.
    pub client_idle: Duration,
    /// A response body the backend stopped sending (after its head) is
    /// cut after this long without a byte.
    pub backend_idle: Duration,
    /// A tunnel (upgraded or tcp listener connection) with no byte either
    /// way for this long is closed; `None` (`"0s"`): never.
    pub tunnel_idle: Option<Duration>,
    /// TCP keepalive on downstream and upstream sockets; `None`
    /// (`tcp_keepalive = "0s"`): off.
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// TCP keepalive: after `idle` without a byte either way the kernel sends
/// a probe every `interval`; `probes` unanswered ones reset the
/// connection, so a peer that vanished without a FIN is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpKeepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub probes: u32,
}

impl Default for TcpKeepalive {
    fn default() -> Self {
        TcpKeepalive {
            idle: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            probes: 3,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(60),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            h2_ping_interval: Some(Duration::from_secs(10)),
            h2_ping_timeout: Duration::from_secs(5),
            client_idle: Duration::from_secs(60),
            backend_idle: Duration::from_secs(60),
            tunnel_idle: Some(Duration::from_secs(3600)),
            tcp_keepalive: Some(TcpKeepalive::default()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Open downstream connections per listener.
    pub max_connections: usize,
    /// Size of a request head (request line and headers).
    pub max_header_bytes: usize,
    /// Number of request headers.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    /// Pools in file order: the ticket order.
    pub pools: Vec<PoolConfig>,
    /// Weight per pool, aligned with `pools`.
    pub split: Vec<u32>,
    pub sticky: Sticky,
    pub cookie: CookieConfig,
    pub drain_timeout: Duration,
    /// Lower-case header name that forces a pool, if enabled.
    pub override_header: Option<String>,
    /// When set, the override header counts only on requests whose
    /// `x-cutover-token` header equals this value.
    pub override_token: Option<String>,
    pub access_log: bool,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// When every backend of a request's pool is down, send the request to
    /// the next pool (in ticket order) with a share and a backend up,
    /// instead of answering 503.
    pub failover: bool,
    /// How many times a request that never reached its backend is tried
    /// on another backend of the same pool (0 = never).
    pub retries: u32,
    /// Passive ejection of backends that fail requests.
    pub outlier: Outlier,
    /// Slow start: a change that gives traffic to a pool that had none (or
    /// is still ramping up), and a backend that comes back up, get their
    /// share ramped linearly over this window. `None`: off, every change
    /// applies at once.
    pub slow_start: Option<Duration>,
    /// The protocols an HTTP/1.1 `Upgrade` may switch to (lower case),
    /// tunnelled to the backend; a request asking for another one is
    /// forwarded as a plain request, without its `Upgrade`. Never `h2c`.
    pub allowed_upgrades: Vec<String>,
    /// What cutover's own error answers tell a client.
    pub error_detail: ErrorDetail,
    pub listeners: Vec<ListenerConfig>,
}

impl ServiceConfig {
    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub listen: SocketAddr,
    /// A preview listener: always this pool (an index into the service's pools).
    pub pool: Option<usize>,
    pub mode: ListenerMode,
    /// Read a PROXY protocol v1/v2 header before anything else.
    pub proxy_protocol: bool,
    /// Keep the `X-Forwarded-For` list a client sends and append to it
    /// (behind a load balancer that sets it); else cutover replaces it
    /// with the client's address. `X-Forwarded-Proto` and `-Host` are
    /// always cutover's own.
    pub trust_forwarded: bool,
    /// TLS termination; `None`: plain TCP.
    pub tls: Option<TlsConfig>,
}

/// A listener's TLS: certificates chosen by SNI, ALPN, versions. The files
/// are only named here; the proxy loads and checks them (a config stays
/// pure data).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// In config order; the first is the default unless
    /// `default_certificate` names another.
    pub certificates: Vec<CertificateFiles>,
    /// Protocols offered by ALPN, in order of preference.
    pub alpn: Vec<String>,
    /// A DNS name one certificate covers: the certificate for clients
    /// without SNI or with a name no certificate covers.
    pub default_certificate: Option<String>,
    /// Where `default_certificate` is written (for the error when no
    /// certificate covers it).
    pub default_certificate_at: Location,
    /// A handshake not done by then is closed.
    pub handshake_timeout: Duration,
    pub min_version: TlsVersion,
}

/// A certificate chain and its private key, PEM, with where they are
/// named in the config (for errors found when they are loaded).
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateFiles {
    /// Resolved against the config file's directory when relative.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Where `cert` and `key` are written
    /// (`services.web.listeners[0].tls.certificates[1].cert` and its line).
    pub cert_at: Location,
    pub key_at: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerMode {
    /// HTTP/1.1 and HTTP/2, routed request by request.
    Http,
    /// Raw TCP: each connection is routed once, at accept.
    Tcp,
}

impl ListenerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerMode::Http => "http",
            ListenerMode::Tcp => "tcp",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub backends: Vec<BackendConfig>,
    /// Send a PROXY protocol v2 header to backends on TCP connections.
    pub send_proxy_protocol: bool,
    /// Active health checks of this pool's backends (the service's
    /// `health_check` with the pool's overrides); `None`: no checks, every
    /// backend counts as up.
    pub health_check: Option<HealthCheck>,
    /// TLS to the backends; `None`: plain TCP.
    pub tls: Option<UpstreamTlsConfig>,
}

/// TLS from cutover to a pool's backends (files named, not read).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTlsConfig {
    /// Trust these CA certificates (PEM) instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The name to send by SNI and to verify the certificate against;
    /// `None`: the backend's host (a DNS name, or an IP address: no SNI).
    pub server_name: Option<String>,
    /// A client certificate for mTLS.
    pub client_certificate: Option<CertificateFiles>,
    /// Accept any certificate: only for pools whose backends are all on
    /// loopback (tests), refused otherwise.
    pub insecure_skip_verify: bool,
    /// Where `ca_file` is written.
    pub ca_file_at: Location,
}

/// Active health checks: every `interval` (jittered), a GET of `path` (or
/// a TCP connect), bounded by `timeout`; `unhealthy_threshold` failures in
/// a row take a backend down, `healthy_threshold` successes bring it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path (and query) to GET; `None`: a TCP connect check (always for
    /// a service whose listeners are all tcp).
    pub path: Option<String>,
    /// The `Host` header; `None`: the backend's address.
    pub host: Option<String>,
    /// Statuses that count as healthy: inclusive ranges.
    pub expect: Vec<(u16, u16)>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: None,
            host: None,
            expect: vec![(200, 399)],
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

impl HealthCheck {
    /// Whether an answer with `status` counts as healthy.
    pub fn expects(&self, status: u16) -> bool {
        self.expect
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// Passive ejection (`[services.NAME.outlier]`): a backend whose requests
/// fail `consecutive_failures` times in a row (connect refused or timed
/// out, reset or no answer before a response head, and 5xx answers with
/// `count_5xx`) is ejected for `base_ejection`, doubling with each repeat
/// up to `max_ejection`; at most `max_ejected_percent` of a pool's
/// backends are ejected at once, and never its last available one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlier {
    /// On unless the table says `enabled = false`.
    pub enabled: bool,
    pub consecutive_failures: u32,
    /// 5xx answers count as failures (else they count as successes).
    pub count_5xx: bool,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// 0 to 100.
    pub max_ejected_percent: u8,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            enabled: true,
            consecutive_failures: 5,
            count_5xx: false,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// Parses status ranges: `"200-399"`, `"200,302"`, `"200-299, 302"`; each
/// status from 100 to 599, each range low to high.
pub fn parse_status_ranges(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let bad = || {
        format!("`{s}` is not a list of status ranges; write statuses from 100 to 599 and ranges like \"200-399\", separated by commas, like \"200-299,302\"")
    };
    let status = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n))
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let range = match part.split_once('-') {
            Some((lo, hi)) => (status(lo), status(hi)),
            None => (status(part), status(part)),
        };
        match range {
            (Some(lo), Some(hi)) if lo <= hi => out.push((lo, hi)),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    /// HTTP/2 in cleartext (prior knowledge).
    H2c,
    /// HTTP/2 over TLS, agreed by ALPN (a pool with `tls`).
    H2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::H2 => "h2",
        }
    }

    /// HTTP/2, with or without TLS.
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::H2)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendConfig {
    /// `host:port`; host is an IP address or a DNS name.
    pub addr: String,
    pub weight: u32,
    pub protocol: Protocol,
}
