//! [`Relay`]: a TCP relay in front of a backend that can freeze the
//! connections it carries: they stop reading and writing both ways but stay
//! open, like a backend host that vanished without a RST (no FIN, no RST,
//! no bytes). New connections relay normally, so "the backend came back
//! on a new connection" is just the next accept.
//!
//! ```ignore
//! let relay = Relay::start(backend.addr).await;   // point cutover at relay.addr
//! relay.freeze_open();                            // every open connection goes silent
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::loopback;

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    /// Bytes relayed from the client (cutover) to the target.
    up: AtomicU64,
    /// Bytes relayed from the target to the client.
    down: AtomicU64,
    /// Connections whose client side ended (EOF or error): the client
    /// closed them.
    client_closed: AtomicU64,
}

/// A loopback relay to one target. Dropping it stops accepting and closes
/// every connection it carries, frozen ones included.
pub struct Relay {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    /// One freeze switch per connection accepted so far.
    switches: Arc<Mutex<Vec<watch::Sender<bool>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = loopback().await;
        let addr = listener.local_addr().expect("relay addr");
        let counts = Arc::new(Counts::default());
        let switches = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(accept_loop(
            listener,
            target,
            counts.clone(),
            switches.clone(),
        ));
        Relay {
            addr,
            counts,
            switches,
            accept,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    /// Bytes relayed from the client to the target so far.
    pub fn bytes_up(&self) -> u64 {
        self.counts.up.load(Ordering::Relaxed)
    }

    /// Bytes relayed from the target to the client so far.
    pub fn bytes_down(&self) -> u64 {
        self.counts.down.load(Ordering::Relaxed)
    }

    /// Connections the client closed (seen only while not frozen: a frozen
    /// connection reads nothing, an end included).
    pub fn client_closed(&self) -> u64 {
        self.counts.client_closed.load(Ordering::Relaxed)
    }

    /// Freezes every connection open now: from here on they relay nothing
    /// either way (at most one chunk already read is held back) and stay
    /// open. Connections accepted later are not frozen.
    pub fn freeze_open(&self) {
        for s in self.lock().iter() {
            s.send_replace(true);
        }
    }

    /// Lets every frozen connection relay again, held chunks first.
    pub fn thaw(&self) {
        for s in self.lock().iter() {
            s.send_replace(false);
        }
    }

    /// `["<addr>"]`: the relay as a TOML backend list.
    pub fn toml_list(&self) -> String {
        format!("[\"{}\"]", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<watch::Sender<bool>>> {
        self.switches.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        // Dropping the switches ends every pipe, frozen ones too.
        self.lock().clear();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    counts: Arc<Counts>,
    switches: Arc<Mutex<Vec<watch::Sender<bool>>>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(server) = TcpStream::connect(target).await else {
            continue;
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let (tx, rx) = watch::channel(false);
        switches.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        let (client_r, client_w) = client.into_split();
        let (server_r, server_w) = server.into_split();
        let c = counts.clone();
        let rx2 = rx.clone();
        tokio::spawn(async move {
            pipe(client_r, server_w, rx, &c.up).await;
            c.client_closed.fetch_add(1, Ordering::Relaxed);
        });
        let c = counts.clone();
        tokio::spawn(async move { pipe(server_r, client_w, rx2, &c.down).await });
    }
}

/// Copies `from` to `to` until `from` ends, holding still while frozen;
/// returns early (closing `to`) when the relay is dropped.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    count: &AtomicU64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Frozen: read nothing more (the peer's writes pile up in the
        // kernel) and write nothing.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let read = tokio::select! {
            r = from.read(&mut buf) => r,
            // Never true: this waits for the relay to be dropped.
            _ = frozen.wait_for(|_| false) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Frozen while reading: hold this chunk back.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}
