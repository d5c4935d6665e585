//! Test harness: in-process backends that say which pool they are, the real
//! cutover app on port 0, and real hyper clients. Everything on loopback.
//!
//! ```ignore
//! let h = Harness::new().blue(2).green(1).service("sticky = \"cookie\"").start().await;
//! ```
#![allow(dead_code)]

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
        let (name, conns, reqs) = (pool.to_string(), connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    a = listener.accept() => {
                        let Ok((stream, _)) = a else { continue };
                        conns.fetch_add(1, Ordering::Relaxed);
                        let (name, reqs) = (name.clone(), reqs.clone());
                        tokio::spawn(async move {
                            let svc = service_fn(move |req: Request<Incoming>| {
                                reqs.fetch_add(1, Ordering::Relaxed);
                                backend_answer(req, name.clone(), addr)
                            });
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
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
            requests,
            stop,
        }
    }

    /// Stops accepting (open connections finish their current request).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

async fn backend_answer(
    req: Request<Incoming>,
    pool: String,
    addr: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let q = req.uri().query().unwrap_or("");
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
        .body(Full::new(Bytes::from(format!("{pool}\n"))))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    Ok(resp)
}

pub struct Harness {
    blue: usize,
    green: usize,
    service_extra: String,
    top_extra: String,
    backends_override: Option<(String, String)>,
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
        }
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
        let mut backends = Vec::new();
        for _ in 0..self.blue {
            backends.push(TestBackend::start("blue").await);
        }
        for _ in 0..self.green {
            backends.push(TestBackend::start("green").await);
        }
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

[[services.web.listeners]]
listen = "127.0.0.1:0"
pool = "green"

[services.web.pools.blue]
backends = {blue_list}

[services.web.pools.green]
backends = {green_list}
"#,
            top = self.top_extra,
            extra = self.service_extra,
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
