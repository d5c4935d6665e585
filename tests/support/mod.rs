//! Test harness: in-process backends that say which pool they are, the real
//! cutover app on port 0, and real hyper clients. Everything on loopback.
//!
//! ```ignore
//! let h = Harness::new().blue(2).green(1).service("sticky = \"cookie\"").start().await;
//! ```
#![allow(dead_code)]

pub mod ws;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cutover::App;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// A loopback backend. Paths: `/` answers with the pool name; `/slow?ms=N`
/// waits first. Every answer carries `x-pool`, `x-backend` and echoes
/// `x-seen-xff` / `x-seen-host` / `x-seen-xfh` (what cutover forwarded).
pub struct TestBackend {
    pub pool: String,
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    /// Connections open right now (HTTP backends).
    pub open: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
}

impl TestBackend {
    pub async fn start(pool: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let (stop, mut rx) = watch::channel(false);
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let (name, conns, reqs, open2) = (
            pool.to_string(),
            connections.clone(),
            requests.clone(),
            open.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    a = listener.accept() => {
                        let Ok((stream, _)) = a else { continue };
                        conns.fetch_add(1, Ordering::Relaxed);
                        open2.fetch_add(1, Ordering::Relaxed);
                        let (name, reqs, open3) = (name.clone(), reqs.clone(), open2.clone());
                        tokio::spawn(async move {
                            let svc = service_fn(move |req: Request<Incoming>| {
                                reqs.fetch_add(1, Ordering::Relaxed);
                                backend_answer(req, name.clone(), addr)
                            });
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                            open3.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    _ = rx.changed() => break,
                }
            }
        });
        TestBackend {
            pool: pool.to_string(),
            addr,
            connections,
            open,
            requests,
            stop,
        }
    }

    /// A raw TCP backend: greets each connection with `<pool>\n` (after
    /// any PROXY header it was sent, which it reports as `proxy <src>\n`),
    /// then echoes.
    pub async fn start_tcp(pool: &str) -> TestBackend {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tcp backend");
        let addr = listener.local_addr().expect("backend addr");
        let (stop, mut rx) = watch::channel(false);
        let connections = Arc::new(AtomicU64::new(0));
        let (name, conns) = (pool.to_string(), connections.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    a = listener.accept() => {
                        let Ok((mut stream, _)) = a else { continue };
                        conns.fetch_add(1, Ordering::Relaxed);
                        let name = name.clone();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 4096];
                            let mut first = true;
                            if stream.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                                return;
                            }
                            loop {
                                let n = match stream.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                let mut data = &buf[..n];
                                if first && data.starts_with(b"\r\n\r\n\0\r\nQUIT\n") {
                                    if let Ok(Some((h, used))) = cutover_proxy::proxy_protocol::parse(data) {
                                        let src = h.source.map(|s| s.to_string()).unwrap_or_default();
                                        let _ = stream.write_all(format!("proxy {src}\n").as_bytes()).await;
                                        data = &data[used..];
                                    }
                                }
                                first = false;
                                if stream.write_all(data).await.is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    _ = rx.changed() => break,
                }
            }
        });
        TestBackend {
            pool: pool.to_string(),
            addr,
            connections,
            open: Arc::new(AtomicU64::new(0)),
            requests: Arc::new(AtomicU64::new(0)),
            stop,
        }
    }

    /// Stops accepting (open connections finish their current request).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

type BackendBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A body fed from a channel: one frame per message.
struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|m| m.map(|b| Ok(http_body::Frame::data(b))))
    }
}

fn query_num(q: &str, key: &str, default: u64) -> u64 {
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(default)
}

async fn backend_answer(
    mut req: Request<Incoming>,
    pool: String,
    addr: SocketAddr,
) -> Result<Response<BackendBody>, Infallible> {
    let q = req.uri().query().unwrap_or("").to_string();
    if req.uri().path() == "/ws" {
        return Ok(websocket_echo(&mut req, pool));
    }
    if req.uri().path() == "/stream" {
        // `chunks` chunks of `<pool> <i>\n`, one every `ms` milliseconds.
        let (chunks, ms) = (query_num(&q, "chunks", 20), query_num(&q, "ms", 100));
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let p = pool.clone();
        tokio::spawn(async move {
            for i in 0..chunks {
                if tx.send(Bytes::from(format!("{p} {i}\n"))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        });
        let resp = Response::builder()
            .header("x-pool", pool.as_str())
            .body(BodyExt::boxed(ChanBody(rx)))
            .unwrap_or_else(|_| Response::new(BodyExt::boxed(Full::new(Bytes::new()))));
        return Ok(resp);
    }
    let q = q.as_str();
    if req.uri().path() == "/status" {
        // An answer with this status and no body (204, 304...).
        let code = StatusCode::from_u16(query_num(q, "code", 204) as u16)
            .unwrap_or(StatusCode::NO_CONTENT);
        let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::new())));
        *r.status_mut() = code;
        return Ok(r);
    }
    if req.uri().path() == "/slow" {
        let ms: u64 = q
            .strip_prefix("ms=")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let h = req.headers();
    let echo = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let resp = Response::builder()
        .header("x-pool", pool.as_str())
        .header("x-backend", addr.to_string())
        .header("x-seen-xff", echo("x-forwarded-for"))
        .header("x-seen-host", echo("host"))
        .header("x-seen-xfh", echo("x-forwarded-host"))
        .header("x-seen-xfp", echo("x-forwarded-proto"))
        .header("x-seen-connection", echo("connection"))
        .header("x-seen-version", format!("{:?}", req.version()))
        .body(BodyExt::boxed(Full::new(Bytes::from(format!("{pool}\n")))))
        .unwrap_or_else(|_| Response::new(BodyExt::boxed(Full::new(Bytes::new()))));
    Ok(resp)
}

/// Answers a WebSocket handshake and echoes every message as `<pool>: <msg>`.
fn websocket_echo(req: &mut Request<Incoming>, pool: String) -> Response<BackendBody> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role, Message};
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    let Some(accept) = key else {
        let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from(
            "not a websocket request",
        ))));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                eprintln!("test backend: websocket upgrade failed: {e}");
                return;
            }
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) => Message::text(format!("{pool}: {t}")),
                Message::Close(_) => return,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(BodyExt::boxed(Full::new(Bytes::new())))
        .unwrap_or_else(|_| Response::new(BodyExt::boxed(Full::new(Bytes::new()))))
}

pub struct Harness {
    blue: usize,
    green: usize,
    service_extra: String,
    top_extra: String,
    backends_override: Option<(String, String)>,
    tcp: bool,
    proxy_protocol: bool,
    pool_extra: String,
}

pub struct Running {
    pub app: Option<App>,
    pub proxy: SocketAddr,
    pub preview: SocketAddr,
    pub admin: SocketAddr,
    pub backends: Vec<TestBackend>,
    pub config_text: String,
}

impl Harness {
    pub fn new() -> Harness {
        Harness {
            blue: 1,
            green: 1,
            service_extra: String::new(),
            top_extra: String::new(),
            backends_override: None,
            tcp: false,
            proxy_protocol: false,
            pool_extra: String::new(),
        }
    }

    /// Both listeners in `mode = "tcp"`, with TCP echo backends.
    pub fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }

    /// The main listener reads a PROXY protocol header first.
    pub fn proxy_protocol(mut self) -> Self {
        self.proxy_protocol = true;
        self
    }

    /// Extra TOML lines in both pools' tables.
    pub fn pools(mut self, toml: &str) -> Self {
        self.pool_extra.push_str(toml);
        self.pool_extra.push('\n');
        self
    }

    pub fn blue(mut self, n: usize) -> Self {
        self.blue = n;
        self
    }

    pub fn green(mut self, n: usize) -> Self {
        self.green = n;
        self
    }

    /// Extra TOML lines inside `[services.web]` (split defaults to 100/0).
    pub fn service(mut self, toml: &str) -> Self {
        self.service_extra.push_str(toml);
        self.service_extra.push('\n');
        self
    }

    /// Extra top-level TOML lines (before any table).
    pub fn top(mut self, toml: &str) -> Self {
        self.top_extra.push_str(toml);
        self.top_extra.push('\n');
        self
    }

    /// Use these backend lists (TOML arrays) instead of started backends.
    pub fn backends(mut self, blue: &str, green: &str) -> Self {
        self.backends_override = Some((blue.into(), green.into()));
        self
    }

    pub async fn start(self) -> Running {
        // Logs in test output when RUST_LOG is set (e.g. RUST_LOG=cutover=debug).
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let mut backends = Vec::new();
        for (pool, n) in [("blue", self.blue), ("green", self.green)] {
            for _ in 0..n {
                backends.push(if self.tcp {
                    TestBackend::start_tcp(pool).await
                } else {
                    TestBackend::start(pool).await
                });
            }
        }
        let mode = if self.tcp { "mode = \"tcp\"\n" } else { "" };
        let pp = if self.proxy_protocol {
            "proxy_protocol = true\n"
        } else {
            ""
        };
        let list = |pool: &str| {
            let v: Vec<String> = backends
                .iter()
                .filter(|b| b.pool == pool)
                .map(|b| format!("\"{}\"", b.addr))
                .collect();
            format!("[{}]", v.join(", "))
        };
        let (blue_list, green_list) = self
            .backends_override
            .clone()
            .unwrap_or_else(|| (list("blue"), list("green")));
        let split = if self.service_extra.contains("split") {
            String::new()
        } else {
            "split = { blue = 100, green = 0 }\n".to_string()
        };
        let text = format!(
            r#"{top}
shutdown_timeout = "2s"

[admin]
listen = "127.0.0.1:0"

[services.web]
{split}{extra}
[[services.web.listeners]]
listen = "127.0.0.1:0"
{mode}{pp}
[[services.web.listeners]]
listen = "127.0.0.1:0"
pool = "green"
{mode}
[services.web.pools.blue]
backends = {blue_list}
{pool_extra}
[services.web.pools.green]
backends = {green_list}
{pool_extra}
"#,
            top = self.top_extra,
            extra = self.service_extra,
            pool_extra = self.pool_extra,
        );
        let config = cutover_config::parse("harness.toml", &text)
            .unwrap_or_else(|e| panic!("harness config:\n{e}\n{text}"));
        let app = App::start(config).await.expect("app starts");
        Running {
            proxy: app.listener("web", 0).expect("proxy listener"),
            preview: app.listener("web", 1).expect("preview listener"),
            admin: app.admin_addr,
            app: Some(app),
            backends,
            config_text: text,
        }
    }
}

/// One answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn pool(&self) -> &str {
        self.headers
            .get("x-pool")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn read(resp: Response<Incoming>) -> Result<Answer, String> {
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).to_string(),
    })
}

/// A keep-alive HTTP/1.1 or HTTP/2 (prior knowledge) connection.
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

pub async fn connect_stream(addr: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    match from {
        None => TcpStream::connect(addr).await.expect("connect"),
        Some(ip) => {
            let sock = TcpSocket::new_v4().expect("socket");
            sock.bind(SocketAddr::new(ip, 0))
                .expect("bind client source");
            sock.connect(addr).await.expect("connect")
        }
    }
}

impl Conn {
    pub async fn h1(addr: SocketAddr) -> Conn {
        Conn::h1_from(addr, None).await
    }

    pub async fn h1_from(addr: SocketAddr, from: Option<IpAddr>) -> Conn {
        let io = TokioIo::new(connect_stream(addr, from).await);
        let (send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        Conn::H1(send)
    }

    pub async fn h2(addr: SocketAddr) -> Conn {
        let io = TokioIo::new(connect_stream(addr, None).await);
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        Conn::H2(send)
    }

    /// The server has closed the connection, as far as this client knows.
    pub fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
        let mut b = Request::builder().uri(path);
        match self {
            Conn::H1(_) => b = b.header("host", "www.example.test"),
            Conn::H2(_) => {
                b = b
                    .uri(format!("http://www.example.test{path}"))
                    .version(http::Version::HTTP_2)
            }
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let resp = match self {
            Conn::H1(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
            Conn::H2(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
        }
        .map_err(|e| e.to_string())?;
        read(resp).await
    }
}

/// A GET on a new connection; None when nothing listens there (yet).
pub async fn probe(addr: SocketAddr, path: &str) -> Option<Answer> {
    let io = TokioIo::new(TcpStream::connect(addr).await.ok()?);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", "probe")
        .body(Full::new(Bytes::new()))
        .ok()?;
    read(send.send_request(req).await.ok()?).await.ok()
}

/// A GET on a new connection.
pub async fn get_once(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    Conn::h1(addr).await.get(path, headers).await
}

/// Admin API call: (status, JSON body).
pub async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut conn = Conn::h1(addr).await;
    let Conn::H1(send) = &mut conn else {
        unreachable!()
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .expect("admin request");
    send.ready().await.expect("admin ready");
    let resp = send.send_request(req).await.expect("admin answers");
    let a = read(resp).await.expect("admin body");
    let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::String(a.body.clone()));
    (a.status, v)
}

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

pub async fn set_split(addr: SocketAddr, blue: u32, green: u32) -> Value {
    let body = format!(r#"{{"split":{{"blue":{blue},"green":{green}}}}}"#);
    let (s, v) = admin(addr, "PUT", "/v1/services/web/split", Some(&body)).await;
    assert_eq!(s, StatusCode::OK, "split {blue}/{green}: {v}");
    v
}

pub async fn generation(addr: SocketAddr) -> u64 {
    let (_, v) = admin(addr, "GET", "/v1/status", None).await;
    v["generation"].as_u64().expect("generation in status")
}

/// The value of the first metric line starting with `line_start`.
pub async fn metric(admin_addr: SocketAddr, line_start: &str) -> Option<f64> {
    let m = get_once(admin_addr, "/metrics", &[]).await.ok()?.body;
    m.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `f` every 20 ms until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
