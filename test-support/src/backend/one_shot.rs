//! A backend that answers one request per connection, then holds the
//! connection open (without `Connection: close`) until told to close it:
//! for "the backend closed a pooled connection" races.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub struct OneShot {
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    close: Arc<Notify>,
}

impl OneShot {
    pub async fn start() -> OneShot {
        OneShot::start_on(super::loopback().await)
    }

    /// [`OneShot::start`] on a listener the caller bound.
    pub fn start_on(listener: TcpListener) -> OneShot {
        let addr = listener.local_addr().expect("one-shot backend addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let close = Arc::new(Notify::new());
        let (count, close2) = (accepted.clone(), close.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                let close = close2.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let closed = close.notified();
                    tokio::pin!(closed);
                    closed.as_mut().enable();
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                        .await;
                    closed.await;
                    // Dropped: closed.
                });
            }
        });
        OneShot {
            addr,
            accepted,
            close,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Closes every connection that has answered and waits for the cue.
    pub fn close_idle(&self) {
        self.close.notify_waiters();
    }

    /// `["<addr>"]`: this backend as a TOML backend list.
    pub fn toml_list(&self) -> String {
        format!("[\"{}\"]", self.addr)
    }
}
