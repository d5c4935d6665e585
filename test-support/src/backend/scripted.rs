//! The scripted backend: raw TCP, answers each request with exactly the
//! bytes it is given for its path, and records every request as it read it
//! (request line, headers, body, which connection).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest request head (or chunk-size line) the backend reads.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// One canned answer: the exact bytes to write, and whether the backend
/// closes the connection after writing them (else it reads the next request).
#[derive(Clone)]
pub struct Canned {
    pub bytes: Vec<u8>,
    pub close: bool,
}

/// An answer after which the backend keeps the connection open.
pub fn keep_open(bytes: impl Into<Vec<u8>>) -> Canned {
    Canned {
        bytes: bytes.into(),
        close: false,
    }
}

/// An answer after which the backend closes the connection.
pub fn then_close(bytes: impl Into<Vec<u8>>) -> Canned {
    Canned {
        bytes: bytes.into(),
        close: true,
    }
}

/// A response: status line, header lines, blank line, then `body` as is
/// (no framing is added: the header lines say what the body is).
pub fn raw_response(status_line: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{status_line}\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A request as the backend read it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which accepted connection it came on (0 for the first).
    pub conn: u64,
    /// The request line, as sent (`GET /x HTTP/1.1`).
    pub line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Scripted {
    pub addr: SocketAddr,
    accepts: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    /// Listens on loopback and answers each request with the canned answer
    /// of its path (query left out); unknown paths get a 404.
    pub async fn start(script: Vec<(&str, Canned)>) -> Scripted {
        Scripted::start_on(super::loopback().await, script)
    }

    /// [`Scripted::start`] on a listener the caller bound.
    pub fn start_on(listener: TcpListener, script: Vec<(&str, Canned)>) -> Scripted {
        let addr = listener.local_addr().expect("scripted backend address");
        let script: Arc<HashMap<String, Canned>> = Arc::new(
            script
                .into_iter()
                .map(|(p, c)| (p.to_string(), c))
                .collect(),
        );
        let accepts = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (accepts.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, conn, script.clone(), log.clone()));
            }
        });
        Scripted {
            addr,
            accepts,
            seen,
        }
    }

    /// `["<addr>"]`: this backend as a TOML backend list.
    pub fn toml_list(&self) -> String {
        format!("[\"{}\"]", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> u64 {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Requests read so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last request read.
    pub fn last(&self) -> Seen {
        self.seen()
            .pop()
            .expect("the backend has read at least one request")
    }
}

/// One backend connection: request after request until the peer closes, an
/// answer closes, or the peer sends something unreadable.
async fn serve(
    mut s: TcpStream,
    conn: u64,
    script: Arc<HashMap<String, Canned>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(line) = read_line(&mut s, &mut buf).await else {
            return;
        };
        let mut headers = Vec::new();
        let mut head_len = line.len();
        loop {
            let Some(h) = read_line(&mut s, &mut buf).await else {
                return;
            };
            head_len += h.len() + 2;
            if head_len > MAX_REQUEST_HEAD {
                return;
            }
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let Some(body) = read_body(&mut s, &mut buf, &headers).await else {
            return;
        };
        let path = target_path(&line).to_string();
        seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
            conn,
            line,
            headers,
            body,
        });
        let canned = script.get(&path).cloned().unwrap_or_else(|| {
            keep_open(raw_response(
                "HTTP/1.1 404 Not Found",
                &["Content-Length: 10"],
                b"not found\n",
            ))
        });
        if s.write_all(&canned.bytes).await.is_err() {
            return;
        }
        if canned.close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// Reads more bytes into `buf`; false at EOF or on an error.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// The next CRLF-terminated line (without the CRLF), taken out of `buf`.
async fn read_line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).to_string();
            buf.drain(..i + 2);
            return Some(line);
        }
        if buf.len() > MAX_REQUEST_HEAD || !read_more(s, buf).await {
            return None;
        }
    }
}

/// The next `n` bytes, taken out of `buf`.
async fn read_exact(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Option<Vec<u8>> {
    while buf.len() < n {
        if !read_more(s, buf).await {
            return None;
        }
    }
    Some(buf.drain(..n).collect())
}

/// A request body, framed by `Transfer-Encoding: chunked` or
/// `Content-Length` (none: empty).
async fn read_body(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    headers: &[(String, String)],
) -> Option<Vec<u8>> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let size_line = read_line(s, buf).await?;
            let size = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).ok()?;
            if size == 0 {
                // Trailers, up to the blank line.
                while !read_line(s, buf).await?.is_empty() {}
                return Some(body);
            }
            body.extend(read_exact(s, buf, size).await?);
            if read_exact(s, buf, 2).await? != b"\r\n" {
                return None;
            }
        }
    }
    match get("content-length") {
        Some(n) => read_exact(s, buf, n.parse().ok()?).await,
        None => Some(Vec::new()),
    }
}

/// The path of a request line's target, without the query; an absolute-form
/// target (`http://host/path`) gives its path too, so that answers do not
/// depend on the form (the origin-form tests check the form itself).
pub fn target_path(line: &str) -> &str {
    let target = line.split(' ').nth(1).unwrap_or("/");
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    target.split('?').next().unwrap_or(target)
}
