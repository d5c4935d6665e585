//! Raw sockets for what a real HTTP client will not send or read: exact
//! bytes, half requests, PROXY headers. Every read is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::client::{bounded, DEFAULT_TIMEOUT};

/// A TCP connection to `addr` (panics if it cannot connect within
/// [`DEFAULT_TIMEOUT`]).
pub async fn connect(addr: SocketAddr) -> TcpStream {
    bounded(
        &format!("connect to {addr}"),
        DEFAULT_TIMEOUT,
        TcpStream::connect(addr),
    )
    .await
    .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Reads until the peer closes, at most `within`: (the bytes read, whether
/// the peer closed or reset within the time).
pub async fn read_to_close(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (out, closed)
}

/// Waits (bounded by `within`) for the peer to close `s`; true if it did.
pub async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    read_to_close(s, within).await.1
}

/// Reads what is there now (one read, at most `within`); empty at EOF or on
/// a timeout.
pub async fn read_some(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; 16 * 1024];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(n)) => {
            buf.truncate(n);
            buf
        }
        _ => Vec::new(),
    }
}

/// On a new connection: writes `bytes`, then reads until the peer closes
/// (at most 5 s) and returns what came back as (lossy) text.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = connect(addr).await;
    // A write may fail once the peer has refused what it read: tests of
    // refusals read what came back all the same.
    let _ = s.write_all(bytes).await;
    let (out, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// A header's value in a raw HTTP/1.1 response (first match, any case).
pub fn header_value<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// A line-based TCP session (the TCP echo backends greet with their pool's
/// name, then echo lines).
pub struct Lines(pub BufReader<TcpStream>);

impl Lines {
    /// Connects and reads the greeting line (at most 5 s): (session,
    /// greeting without its newline).
    pub async fn connect(addr: SocketAddr) -> (Lines, String) {
        let mut r = BufReader::new(connect(addr).await);
        let mut greeting = String::new();
        tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut greeting))
            .await
            .expect("greeting in time")
            .expect("greeting read");
        (Lines(r), greeting.trim().to_string())
    }

    /// Sends `msg` and a newline, reads one line back (at most 5 s); None
    /// when the write fails, the peer closes or nothing comes.
    pub async fn echo(&mut self, msg: &str) -> Option<String> {
        self.0
            .get_mut()
            .write_all(format!("{msg}\n").as_bytes())
            .await
            .ok()?;
        self.line().await
    }

    /// The next line (at most 5 s), without its newline.
    pub async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(5), self.0.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => Some(line.trim().to_string()),
            _ => None,
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.0.get_mut()
    }
}
