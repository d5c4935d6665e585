//! A WebSocket client through the proxy, on a real socket.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub struct Ws(WebSocketStream<TcpStream>);

/// What came back for one message.
#[derive(Debug, PartialEq)]
pub enum Echo {
    Text(String),
    Closed(Option<u16>),
    Error(String),
}

impl Ws {
    pub async fn connect(proxy: SocketAddr) -> Ws {
        let stream = TcpStream::connect(proxy).await.expect("connect");
        let (ws, resp) = tokio_tungstenite::client_async(format!("ws://{proxy}/ws"), stream)
            .await
            .expect("websocket handshake through the proxy");
        assert_eq!(resp.status(), 101);
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
        let _ = self.0.close(None).await;
    }
}
