//! Loopback backends. Each is started on a listener the test already
//! holds bound (or binds port 0 itself), so no port is ever picked and
//! bound later.
//!
//! - [`TestBackend::start`]: HTTP/1.1 and h2c (auto-detected) that says
//!   which pool it is, with slow, streaming, status-only and WebSocket
//!   echo paths;
//! - [`TestBackend::start_tcp`]: a TCP echo that greets with its pool;
//! - [`scripted::Scripted`]: raw socket, answers exactly the bytes given;
//! - [`slow::SlowBackend`]: reads requests, answers late or never, and
//!   reports when the peer closes;
//! - [`one_shot::OneShot`]: one answer per connection, closes on cue;
//! - [`health::HealthServer`]: a `/readyz` that can stop answering.

pub mod health;
pub mod one_shot;
pub mod scripted;
pub mod slow;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A loopback listener on port 0 for a backend.
pub async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback listener")
}

/// A loopback port held bound but not listening: connections to it are
/// refused, and no other socket can take it while this lives. For "the
/// backend is down" tests.
pub struct DownPort {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl DownPort {
    pub fn new() -> DownPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind a loopback port");
        let addr = socket.local_addr().expect("bound address");
        DownPort {
            addr,
            _socket: socket,
        }
    }
}

impl Default for DownPort {
    fn default() -> Self {
        DownPort::new()
    }
}

/// A loopback backend. Paths: `/` answers with the pool name; `/slow?ms=N`
/// waits first; `/health` answers the status [`TestBackend::set_health`]
/// set (200 at first), for active health checks. Every answer carries `x-pool`, `x-backend` and echoes
/// `x-seen-xff` / `x-seen-host` / `x-seen-xfh` (what cutover forwarded).
pub struct TestBackend {
    pub pool: String,
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    /// Connections open right now (HTTP backends).
    pub open: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    /// What `/health` answers.
    health: Arc<AtomicU16>,
    stop: watch::Sender<bool>,
    kill: watch::Sender<bool>,
}

impl TestBackend {
    pub async fn start(pool: &str) -> TestBackend {
        TestBackend::start_on(loopback().await, pool)
    }

    /// [`TestBackend::start`] on a listener the caller bound.
    pub fn start_on(listener: TcpListener, pool: &str) -> TestBackend {
        let addr = listener.local_addr().expect("backend addr");
        let (stop, mut rx) = watch::channel(false);
        let (kill, killed) = watch::channel(false);
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let health = Arc::new(AtomicU16::new(200));
        let (name, conns, reqs, open2, health2) = (
            pool.to_string(),
            connections.clone(),
            requests.clone(),
            open.clone(),
            health.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    a = listener.accept() => {
                        let Ok((stream, _)) = a else { continue };
                        conns.fetch_add(1, Ordering::Relaxed);
                        open2.fetch_add(1, Ordering::Relaxed);
                        let (name, reqs, open3, health3) =
                            (name.clone(), reqs.clone(), open2.clone(), health2.clone());
                        let mut killed = killed.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req: Request<Incoming>| {
                                let health = (req.uri().path() == "/health")
                                    .then(|| health3.load(Ordering::Relaxed));
                                if health.is_none() {
                                    reqs.fetch_add(1, Ordering::Relaxed);
                                }
                                let name = name.clone();
                                async move {
                                    match health {
                                        Some(code) => Ok(health_answer(code)),
                                        None => backend_answer(req, name, addr).await,
                                    }
                                }
                            });
                            let builder = auto::Builder::new(TokioExecutor::new());
                            let serve = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc);
                            // A kill drops the connection, requests in flight and all.
                            tokio::select! {
                                _ = serve => {}
                                _ = killed.wait_for(|k| *k) => {}
                            }
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
            health,
            stop,
            kill,
        }
    }

    /// From now on `/health` answers `code` (not counted in `requests`).
    pub fn set_health(&self, code: u16) {
        self.health.store(code, Ordering::Relaxed);
    }

    /// A raw TCP backend: greets each connection with `<pool>\n` (after
    /// any PROXY header it was sent, which it reports as `proxy <src>\n`),
    /// then echoes.
    pub async fn start_tcp(pool: &str) -> TestBackend {
        TestBackend::start_tcp_on(loopback().await, pool)
    }

    /// [`TestBackend::start_tcp`] on a listener the caller bound.
    pub fn start_tcp_on(listener: TcpListener, pool: &str) -> TestBackend {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
            health: Arc::new(AtomicU16::new(200)),
            stop,
            kill: watch::channel(false).0,
        }
    }

    /// Stops accepting (open connections finish their current request).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// A backend on `addr` again, once a stopped one there has let it go
    /// (its listener closes when its task sees the stop): binds within 2 s,
    /// or panics.
    pub async fn restart_on(addr: SocketAddr, pool: &str) -> TestBackend {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return TestBackend::start_on(l, pool),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("cannot bind {addr} again: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Like a crashed process: stops accepting and drops every open
    /// connection at once, requests in flight included (HTTP backends).
    pub fn kill(&self) {
        self.stop.send_replace(true);
        self.kill.send_replace(true);
    }

    /// `["<addr>"]`: this backend as a TOML backend list.
    pub fn toml_list(&self) -> String {
        format!("[\"{}\"]", self.addr)
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

/// `/health`: an empty answer with `code`.
fn health_answer(code: u16) -> Response<BackendBody> {
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::new())));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

async fn backend_answer(
    mut req: Request<Incoming>,
    pool: String,
    addr: SocketAddr,
) -> Result<Response<BackendBody>, Infallible> {
    let q = req.uri().query().unwrap_or("").to_string();
    if req.uri().path() == "/ws" {
        // `delay=MS`: the 101 comes that much later.
        let delay = query_num(&q, "delay", 0);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
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
    if req.uri().path() == "/echo" {
        // The request body back, as received (at most 1 MiB).
        let body = match http_body_util::Limited::new(req.into_body(), 1 << 20)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::from_static(b"body too large or broken"),
        };
        let resp = Response::builder()
            .header("x-pool", pool.as_str())
            .header("x-backend", addr.to_string())
            .body(BodyExt::boxed(Full::new(body)))
            .unwrap_or_else(|_| Response::new(BodyExt::boxed(Full::new(Bytes::new()))));
        return Ok(resp);
    }
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
        // HTTP/2 carries the name in `:authority`, HTTP/1.1 in `Host`.
        .header(
            "x-seen-host",
            h.get("host")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_default(),
        )
        .header("x-seen-host-header", echo("host"))
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
