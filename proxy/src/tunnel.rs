//! Tunnels: connections bound to one backend for their lifetime (HTTP
//! upgrades such as WebSocket, and every connection of a tcp listener).
//! Hyper stops tracking a connection once it is upgraded, so cutover keeps
//! its own registry. After a routing change, a tunnel whose ticket now maps
//! to another pool (or whose backend left its pool) is marked draining: it
//! may finish by itself until the service's drain deadline, then cutover
//! closes both sides (for WebSocket, with a close frame 1001 to the client
//! when the byte stream is at a frame boundary).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::snapshot::{Pool, Snapshot};
use crate::ticket::Ticket;

struct Entry {
    service: String,
    pool: Arc<Pool>,
    backend: String,
    /// None for tunnels pinned to a pool (preview listeners, override header).
    ticket: Option<Ticket>,
    draining: bool,
    deadline: watch::Sender<Option<Instant>>,
}

impl Entry {
    fn set_draining(&mut self, draining: bool, deadline: Option<Instant>) {
        if self.draining != draining {
            if draining {
                self.pool.metrics.tunnels_open.dec();
                self.pool.metrics.tunnels_draining.inc();
            } else {
                self.pool.metrics.tunnels_draining.dec();
                self.pool.metrics.tunnels_open.inc();
            }
            self.draining = draining;
        }
        self.deadline.send_replace(deadline);
    }
}

/// The registry of open tunnels.
#[derive(Default)]
pub struct Tunnels {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
}

/// Held by a tunnel's task; deregisters on drop.
pub struct TunnelGuard {
    id: u64,
    tunnels: Arc<Tunnels>,
    deadline: watch::Receiver<Option<Instant>>,
    closed_at_deadline: bool,
    /// The service's `tunnel_idle`: closed after this long without a byte
    /// either way; `None`: never.
    idle: Option<Duration>,
    pool: Arc<Pool>,
}

/// Per pool: tunnels open and draining right now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TunnelCounts {
    pub open: u64,
    pub draining: u64,
}

impl Tunnels {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Entries are replaced whole; a poisoned lock holds no torn state.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a tunnel; `idle` is its service's `tunnel_idle`.
    pub fn open(
        self: &Arc<Self>,
        service: &str,
        pool: Arc<Pool>,
        backend: &str,
        ticket: Option<Ticket>,
        idle: Option<Duration>,
    ) -> TunnelGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        pool.metrics.tunnels_open.inc();
        self.lock().insert(
            id,
            Entry {
                service: service.to_string(),
                pool: pool.clone(),
                backend: backend.to_string(),
                ticket,
                draining: false,
                deadline: tx,
            },
        );
        TunnelGuard {
            id,
            tunnels: self.clone(),
            deadline: rx,
            closed_at_deadline: false,
            idle,
            pool,
        }
    }

    /// Re-evaluates every tunnel against a new snapshot: tunnels that now
    /// belong elsewhere start draining; tunnels that belong again stop.
    /// A tunnel whose service `snap` no longer has (a config reload
    /// removed it) drains under that service's `drain_timeout` in `prev`
    /// (at once when `prev` does not have it either).
    pub fn rebalance(&self, prev: &Snapshot, snap: &Snapshot) {
        let now = Instant::now();
        for e in self.lock().values_mut() {
            let Some((_, service)) = snap.service(&e.service) else {
                if !e.draining {
                    let deadline = prev.service(&e.service).map_or(now, |(_, s)| {
                        crate::time::later_tokio(now, s.config.drain_timeout)
                    });
                    e.set_draining(true, Some(deadline));
                }
                continue;
            };
            let drain_timeout = service.config.drain_timeout;
            let target = match e.ticket {
                Some(t) => service.pools.get(service.pool_for(t)),
                None => service.pools.iter().find(|p| p.name == e.pool.name),
            };
            let stays = target.is_some_and(|p| {
                p.name == e.pool.name && p.backends.iter().any(|b| b.addr == e.backend)
            });
            if stays {
                if e.draining {
                    e.set_draining(false, None);
                }
            } else if !e.draining {
                e.set_draining(true, Some(crate::time::later_tokio(now, drain_timeout)));
            }
        }
    }

    /// Shutdown: every tunnel drains with the same deadline.
    pub fn drain_all(&self, deadline: Instant) {
        for e in self.lock().values_mut() {
            let d = (*e.deadline.borrow()).map_or(deadline, |d| d.min(deadline));
            e.set_draining(true, Some(d));
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts for one service's pool.
    pub fn counts(&self, service: &str, pool: &str) -> TunnelCounts {
        let mut c = TunnelCounts::default();
        for e in self.lock().values() {
            if e.service == service && e.pool.name == pool {
                if e.draining {
                    c.draining += 1;
                } else {
                    c.open += 1;
                }
            }
        }
        c
    }
}

impl TunnelGuard {
    /// Resolves when the tunnel's drain deadline passes.
    pub async fn deadline(&mut self) {
        loop {
            let d = *self.deadline.borrow_and_update();
            match d {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => return,
                        changed = self.deadline.changed() => if changed.is_err() { return },
                    }
                }
                None => {
                    if self.deadline.changed().await.is_err() {
                        // The registry entry is gone: nothing will ever set a deadline.
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        let Some(e) = self.tunnels.lock().remove(&self.id) else {
            return;
        };
        if e.draining {
            e.pool.metrics.tunnels_draining.dec();
            if self.closed_at_deadline {
                e.pool.metrics.drain_deadline.inc();
            } else {
                e.pool.metrics.drain_finished.inc();
            }
        } else {
            e.pool.metrics.tunnels_open.dec();
        }
    }
}

/// How a tunnel's pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Both directions ended by themselves.
    Finished,
    /// Its drain deadline passed.
    Deadline,
    /// `tunnel_idle` passed without a byte either way.
    Idle,
}

/// When a tunnel last read a byte, either way: milliseconds since `base`
/// (one relaxed store per read; the idle timer re-arms from it).
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn watch<R>(&self, inner: R) -> Watched<'_, R> {
        Watched {
            inner,
            activity: self,
        }
    }

    /// Resolves once nothing was read for `limit` (never for `None`).
    async fn idle_for(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            let since = self.base + Duration::from_millis(last);
            tokio::time::sleep_until(crate::time::later_tokio(since, limit)).await;
            if self.last_ms.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}

/// A reader that notes in its [`Activity`] each read that brought bytes.
struct Watched<'a, R> {
    inner: R,
    activity: &'a Activity,
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let a = self.activity;
            let ms = a.base.elapsed().as_millis() as u64;
            a.last_ms.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

/// Tracks WebSocket frame boundaries in the server-to-client byte stream, so
/// that a close frame is only ever injected between frames.
#[derive(Debug, Default)]
pub struct WsFrames {
    /// Bytes of the current frame header seen so far.
    header: Vec<u8>,
    /// Payload bytes still to come in the current frame.
    remaining: u64,
}

impl WsFrames {
    pub fn at_boundary(&self) -> bool {
        self.header.is_empty() && self.remaining == 0
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header.push(data[0]);
            data = &data[1..];
            if let Some(len) = Self::header_complete(&self.header) {
                self.header.clear();
                self.remaining = len;
            }
        }
    }

    /// Payload length once the header is whole (RFC 6455 5.2).
    fn header_complete(h: &[u8]) -> Option<u64> {
        let b1 = *h.get(1)?;
        let masked = b1 & 0x80 != 0;
        let mask_len = if masked { 4 } else { 0 };
        let (len, ext) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes([*h.get(2)?, *h.get(3)?])), 2),
            127 => {
                let mut b = [0u8; 8];
                for (i, x) in b.iter_mut().enumerate() {
                    *x = *h.get(2 + i)?;
                }
                (u64::from_be_bytes(b), 8)
            }
            n => (u64::from(n), 0),
        };
        (h.len() == 2 + ext + mask_len).then_some(len)
    }
}

/// WebSocket close frame, status 1001 (going away), server to client (unmasked).
pub const WS_CLOSE_GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xe9];

/// Pumps bytes both ways until both directions end, the drain deadline
/// passes, or nothing was read either way for the tunnel's `tunnel_idle`
/// (counted in `cutover_idle_timeouts_total{reason="tunnel"}`). Half-closes are passed on. With `websocket`, a close frame 1001
/// goes to the client at the deadline when the stream is between frames.
/// `prefix` holds bytes the backend already sent that were read before the
/// tunnel began (hyper's read buffer at the upgrade); they go to the client first.
pub async fn pump<C, B>(
    client: C,
    backend: B,
    mut guard: TunnelGuard,
    websocket: bool,
    prefix: bytes::Bytes,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (cr, mut cw) = tokio::io::split(client);
    let (br, mut bw) = tokio::io::split(backend);
    let activity = Activity::new();
    let (mut cr, mut br) = (activity.watch(cr), activity.watch(br));
    let mut frames = WsFrames::default();
    let mut writing = false;
    let ended = {
        let up = async {
            let _ = tokio::io::copy(&mut cr, &mut bw).await;
            let _ = bw.shutdown().await;
        };
        let down = async {
            if !prefix.is_empty() {
                writing = true;
                if cw.write_all(&prefix).await.is_err() {
                    let _ = cw.shutdown().await;
                    return;
                }
                writing = false;
                if websocket {
                    frames.feed(&prefix);
                }
            }
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match br.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                writing = true;
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                writing = false;
                if websocket {
                    frames.feed(&buf[..n]);
                }
            }
            let _ = cw.shutdown().await;
        };
        let idle = guard.idle;
        tokio::select! {
            _ = async { tokio::join!(up, down) } => Ended::Finished,
            _ = guard.deadline() => Ended::Deadline,
            _ = activity.idle_for(idle) => Ended::Idle,
        }
    };
    tracing::debug!(?ended, websocket, "tunnel ended");
    if ended != Ended::Finished {
        if ended == Ended::Deadline {
            guard.closed_at_deadline = true;
        } else {
            guard.pool.metrics.idle_timeouts.tunnel.inc();
        }
        if websocket && !writing && frames.at_boundary() {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), cw.write_all(&WS_CLOSE_GOING_AWAY))
                    .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), cw.shutdown()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), bw.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_are_tracked_across_split_reads() {
        let mut f = WsFrames::default();
        assert!(f.at_boundary());
        // Text frame "hello" (unmasked), then a 300-byte binary frame (16-bit length).
        let mut stream = vec![0x81, 0x05];
        stream.extend_from_slice(b"hello");
        stream.extend_from_slice(&[0x82, 126, 0x01, 0x2c]);
        stream.extend(std::iter::repeat_n(7u8, 300));
        for cut in 0..stream.len() {
            let mut f = WsFrames::default();
            f.feed(&stream[..cut]);
            let boundary = cut == 0 || cut == 7 || cut == stream.len();
            assert_eq!(f.at_boundary(), boundary, "cut at {cut}");
            f.feed(&stream[cut..]);
            assert!(f.at_boundary());
        }
        // Masked frame with 64-bit length 1.
        f.feed(&[0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]);
        assert!(!f.at_boundary());
        f.feed(&[9]);
        assert!(f.at_boundary());
    }
}
