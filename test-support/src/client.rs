//! Clients: a keep-alive HTTP/1.1 or h2c connection ([`Conn`]) and one-shot
//! helpers on top of it (a GET, an admin API call). Every network step is
//! bounded: a step that takes longer than the connection's timeout
//! ([`DEFAULT_TIMEOUT`] unless set) panics with what it was waiting for, so
//! a hung proxy fails the test instead of hanging it. Protocol failures (a
//! reset, a malformed answer) are `Err` values the test can assert on.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};

/// How long any one network step of a client may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The host name [`Conn::get`] asks for.
pub const HOST: &str = "www.example.test";

/// `f`, or a panic naming `what` if it takes longer than `limit`.
pub async fn bounded<F: Future>(what: &str, limit: Duration, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {limit:?}"),
    }
}

/// One answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The version on the status line (HTTP/1.1 connections) or HTTP/2.
    pub version: Version,
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// The body's exact bytes.
    pub bytes: Bytes,
}

impl Answer {
    /// The `x-pool` header the test backends set ("" when absent).
    pub fn pool(&self) -> &str {
        self.header("x-pool").unwrap_or("")
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Reads a response whole; Err when the body fails.
pub async fn read(resp: Response<Incoming>) -> Result<Answer, String> {
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| format!("{} head, then the body failed: {e}", parts.status))?
        .to_bytes();
    Ok(Answer {
        version: parts.version,
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).to_string(),
        bytes,
    })
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// A keep-alive HTTP/1.1 or HTTP/2 (prior knowledge) connection.
pub struct Conn {
    sender: Sender,
    timeout: Duration,
}

/// A TCP connection to `addr`, from `from` (any port) when given.
pub async fn connect_stream(addr: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    let connect = async {
        match from {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let sock = TcpSocket::new_v4()?;
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(addr).await
            }
        }
    };
    bounded(&format!("connect to {addr}"), DEFAULT_TIMEOUT, connect)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr} from {from:?}: {e}"))
}

impl Conn {
    pub async fn h1(addr: SocketAddr) -> Conn {
        Conn::h1_from(addr, None).await
    }

    /// An HTTP/1.1 connection from the address `from` (a loopback alias).
    pub async fn h1_from(addr: SocketAddr, from: Option<IpAddr>) -> Conn {
        let io = TokioIo::new(connect_stream(addr, from).await);
        let (send, conn) = bounded(
            "HTTP/1.1 handshake",
            DEFAULT_TIMEOUT,
            hyper::client::conn::http1::handshake(io),
        )
        .await
        .expect("h1 handshake");
        tokio::spawn(conn);
        Conn {
            sender: Sender::H1(send),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub async fn h2(addr: SocketAddr) -> Conn {
        let io = TokioIo::new(connect_stream(addr, None).await);
        let (send, conn) = bounded(
            "HTTP/2 handshake",
            DEFAULT_TIMEOUT,
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        Conn {
            sender: Sender::H2(send),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The longest one request on this connection may take (head and body).
    pub fn with_timeout(mut self, timeout: Duration) -> Conn {
        self.timeout = timeout;
        self
    }

    pub fn is_http2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }

    /// The server has closed the connection, as far as this client knows.
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Sends `req` and reads the response whole; Err when the request or
    /// the response (head or body) fails; panics past the timeout.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, String> {
        let what = format!("{} {}", req.method(), req.uri());
        let exchange = async {
            let resp = match &mut self.sender {
                Sender::H1(s) => {
                    s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                    s.send_request(req).await
                }
                Sender::H2(s) => {
                    s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                    s.send_request(req).await
                }
            }
            .map_err(|e| format!("no response: {e}"))?;
            read(resp).await
        };
        bounded(&what, self.timeout, exchange).await
    }

    /// A GET of `path` for [`HOST`] (unless `headers` name another `host`)
    /// with these extra headers.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
        let mut b = Request::builder().uri(path);
        if self.is_http2() {
            b = b
                .uri(format!("http://{HOST}{path}"))
                .version(Version::HTTP_2);
        } else {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
                b = b.header("host", HOST);
            }
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        self.send(req).await
    }
}

/// A GET on a new connection; None when nothing listens there (yet) or
/// nothing answers within [`DEFAULT_TIMEOUT`].
pub async fn probe(addr: SocketAddr, path: &str) -> Option<Answer> {
    let attempt = async {
        let io = TokioIo::new(TcpStream::connect(addr).await.ok()?);
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        let req = Request::builder()
            .uri(path)
            .header("host", "probe")
            .body(Full::new(Bytes::new()))
            .ok()?;
        read(send.send_request(req).await.ok()?).await.ok()
    };
    tokio::time::timeout(DEFAULT_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
}

/// A GET on a new connection.
pub async fn get_once(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    Conn::h1(addr).await.get(path, headers).await
}

/// Admin API call without a token: (status, JSON body, or the body as a
/// JSON string when it is not JSON).
pub async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    admin_with_token(addr, None, method, path, body).await
}

/// Admin API call with `Authorization: Bearer <token>` when given.
pub async fn admin_with_token(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut conn = Conn::h1(addr).await;
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        // Its own address: the admin API refuses other names (DNS rebinding).
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let req = b
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .expect("admin request");
    let a = conn
        .send(req)
        .await
        .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"));
    let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::String(a.body.clone()));
    (a.status, v)
}

/// Switches service `web` to pool `to`; asserts it is accepted.
pub async fn switch(addr: SocketAddr, to: &str) -> Value {
    let (s, v) = admin(
        addr,
        "POST",
        "/v1/services/web/switch",
        Some(&format!(r#"{{"to":"{to}"}}"#)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "switch to {to}: {v}");
    v
}

/// Sets service `web`'s split; asserts it is accepted.
pub async fn set_split(addr: SocketAddr, blue: u32, green: u32) -> Value {
    let body = format!(r#"{{"split":{{"blue":{blue},"green":{green}}}}}"#);
    let (s, v) = admin(addr, "PUT", "/v1/services/web/split", Some(&body)).await;
    assert_eq!(s, StatusCode::OK, "split {blue}/{green}: {v}");
    v
}

/// The routing generation in `/v1/status`.
pub async fn generation(addr: SocketAddr) -> u64 {
    let (_, v) = admin(addr, "GET", "/v1/status", None).await;
    v["generation"].as_u64().expect("generation in status")
}
