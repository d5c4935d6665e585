//! The validated config: the types the rest of cutover uses. Every value
//! here has passed validation; defaults are filled in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
pub const DEFAULT_COOKIE_NAME: &str = "cutover_ticket";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Runtime worker threads; `None` means one per core.
    pub workers: Option<usize>,
    pub admin: AdminConfig,
    /// Where accepted changes are persisted; `None` keeps them in memory only.
    pub state_file: Option<PathBuf>,
    /// How long a graceful shutdown waits for in-flight work.
    pub shutdown_timeout: Duration,
    pub services: Vec<ServiceConfig>,
    /// Route 53 records and Elastic IPs kept pointing at cutover (`[edge]`).
    pub edge: Option<crate::edge::EdgeConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token the admin API requires. Required when `listen` is not loopback.
    pub token: Option<String>,
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
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(60),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    H2c,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendConfig {
    /// `host:port`; host is an IP address or a DNS name.
    pub addr: String,
    pub weight: u32,
    pub protocol: Protocol,
}
