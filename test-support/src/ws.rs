//! A WebSocket client through the proxy, on a real socket or an HTTP/2
//! stream; every step bounded.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::client::{bounded, DEFAULT_TIMEOUT};

/// Any byte stream a WebSocket can run on (a socket, an HTTP/2 stream).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

pub struct Ws(WebSocketStream<Box<dyn Io>>);

/// What came back for one message.
#[derive(Debug, PartialEq)]
pub enum Echo {
    Text(String),
    Closed(Option<u16>),
    Error(String),
}

impl Ws {
    pub async fn connect(proxy: SocketAddr) -> Ws {
        Ws::connect_to(proxy, "/ws").await
    }

    /// A WebSocket to `path` (e.g. `/ws?delay=500`: the test backend
    /// answers the handshake 500 ms later).
    pub async fn connect_to(proxy: SocketAddr, path: &str) -> Ws {
        let stream: Box<dyn Io> = Box::new(crate::raw::connect(proxy).await);
        let (ws, resp) = bounded(
            "websocket handshake",
            DEFAULT_TIMEOUT,
            tokio_tungstenite::client_async(format!("ws://{proxy}{path}"), stream),
        )
        .await
        .expect("websocket handshake through the proxy");
        assert_eq!(resp.status(), 101);
        Ws(ws)
    }

    /// A WebSocket over HTTP/2 (RFC 8441 extended CONNECT) on a new h2c connection.
    pub async fn connect_h2(proxy: SocketAddr) -> Ws {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let io = TokioIo::new(crate::raw::connect(proxy).await);
        let (mut send, conn) = bounded(
            "HTTP/2 handshake",
            DEFAULT_TIMEOUT,
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(http::Method::CONNECT)
            .version(http::Version::HTTP_2)
            .uri(format!("http://{proxy}/ws"))
            .header("sec-websocket-version", "13")
            .extension(hyper::ext::Protocol::from_static("websocket"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let mut resp = bounded("extended CONNECT", DEFAULT_TIMEOUT, async {
            send.ready().await.expect("h2 ready");
            send.send_request(req).await.expect("CONNECT answered")
        })
        .await;
        assert_eq!(resp.status(), 200, "extended CONNECT through the proxy");
        let upgraded = bounded(
            "h2 stream upgrade",
            DEFAULT_TIMEOUT,
            hyper::upgrade::on(&mut resp),
        )
        .await
        .expect("h2 stream upgraded");
        let stream: Box<dyn Io> = Box::new(TokioIo::new(upgraded));
        let ws = WebSocketStream::from_raw_socket(
            stream,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        Ws(ws)
    }

    /// Sends `msg` and waits (at most 5 s) for what comes back.
    pub async fn echo(&mut self, msg: &str) -> Echo {
        if let Err(e) = self.0.send(Message::text(msg)).await {
            return Echo::Error(e.to_string());
        }
        self.next().await
    }

    /// The next thing from the server (at most 5 s).
    pub async fn next(&mut self) -> Echo {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.0.next()).await {
                Err(_) => return Echo::Error("no answer within 5s".into()),
                Ok(None) => return Echo::Closed(None),
                Ok(Some(Err(e))) => return Echo::Error(e.to_string()),
                Ok(Some(Ok(Message::Text(t)))) => return Echo::Text(t.to_string()),
                Ok(Some(Ok(Message::Close(f)))) => {
                    return Echo::Closed(f.map(|f: CloseFrame| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(DEFAULT_TIMEOUT, self.0.close(None)).await;
    }
}
