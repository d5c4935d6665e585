//! A backend that reads each request head, reports it, answers late, never,
//! or with a stalled body, and reports when the peer closes the connection:
//! for cancellation tests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the slow backend saw of one connection.
#[derive(Debug, PartialEq)]
pub enum Seen {
    Request,
    Closed,
}

/// How the slow backend answers.
#[derive(Clone, Copy)]
pub enum Answers {
    Never,
    After(Duration),
    /// A response head and the first chunk of a body, then nothing.
    Stalled,
}

pub struct SlowBackend {
    pub addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl SlowBackend {
    pub async fn start(answers: Answers) -> SlowBackend {
        SlowBackend::start_on(super::loopback().await, answers)
    }

    /// [`SlowBackend::start`] on a listener the caller bound.
    pub fn start_on(listener: TcpListener, answers: Answers) -> SlowBackend {
        let addr = listener.local_addr().expect("slow backend addr");
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => {
                                let _ = tx.send(Seen::Closed);
                                return;
                            }
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                        if head.windows(4).any(|w| w == b"\r\n\r\n") {
                            head.clear();
                            let _ = tx.send(Seen::Request);
                            let answer: &[u8] = match answers {
                                Answers::Never => continue,
                                Answers::After(d) => {
                                    tokio::time::sleep(d).await;
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow"
                                }
                                Answers::Stalled => {
                                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n"
                                }
                            };
                            let _ = s.write_all(answer).await;
                        }
                    }
                });
            }
        });
        SlowBackend { addr, seen }
    }

    /// The next thing seen, waiting at most `within`.
    pub async fn next_seen(&mut self, within: Duration) -> Option<Seen> {
        tokio::time::timeout(within, self.seen.recv())
            .await
            .ok()
            .flatten()
    }

    /// `["<addr>"]`: this backend as a TOML backend list.
    pub fn toml_list(&self) -> String {
        format!("[\"{}\"]", self.addr)
    }
}
