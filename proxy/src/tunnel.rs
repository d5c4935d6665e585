//! Tunnels: connections bound to one backend for their lifetime (HTTP
//! upgrades such as WebSocket, and every connection of a tcp listener).
//! Hyper stops tracking a connection once it is upgraded, so cutover keeps
//! its own registry. After a routing change, a tunnel whose ticket now maps
//! to another pool (or whose backend left its pool) is marked draining: it
//! may finish by itself until the service's drain deadline, then cutover
//! closes both sides (for WebSocket, with a close frame 1001 to each side
//! whose byte stream is at a frame boundary: unmasked to the client,
//! masked to the backend).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
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
    /// Checks the tunnel against `snap`: it drains (deadline `since` plus
    /// the service's `drain_timeout`) when its ticket now maps to another
    /// pool, its backend left its pool or its service is gone; it stops
    /// draining when it belongs again.
    fn evaluate(&mut self, snap: &Snapshot, since: Instant, gone_drain: Option<Duration>) {
        let Some((_, service)) = snap.service(&self.service) else {
            // Its service is gone (a reload removed it): drains under the
            // old service's `drain_timeout` (`gone_drain`), else at once.
            if !self.draining {
                let deadline = gone_drain.map_or(since, |d| crate::time::later_tokio(since, d));
                self.set_draining(true, Some(deadline));
            }
            return;
        };
        let target = match self.ticket {
            Some(t) => service.pools.get(service.pool_for(t)),
            None => service.pools.iter().find(|p| p.name == self.pool.name),
        };
        let stays = target.is_some_and(|p| {
            p.name == self.pool.name && p.backends.iter().any(|b| b.addr == self.backend)
        });
        if stays {
            if self.draining {
                self.set_draining(false, None);
            }
        } else if !self.draining {
            let drain_timeout = service.config.drain_timeout;
            self.set_draining(true, Some(crate::time::later_tokio(since, drain_timeout)));
        }
    }

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
    entries: Mutex<Registry>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Registry {
    entries: HashMap<u64, Entry>,
    /// The generation [`Tunnels::rebalance`] last saw change, and when: a
    /// tunnel that registers after a change it missed drains from then.
    changed: Option<(u64, Instant)>,
}

/// Where a tunnel was routed: its service, pool, backend address and
/// ticket (None for tunnels pinned to a pool: preview listeners, the
/// override header).
pub struct TunnelRoute<'a> {
    pub service: &'a str,
    pub pool: Arc<Pool>,
    pub backend: &'a str,
    pub ticket: Option<Ticket>,
}

/// Held by a tunnel's task; deregisters on drop.
pub struct TunnelGuard {
    id: u64,
    tunnels: Arc<Tunnels>,
    deadline: watch::Receiver<Option<Instant>>,
    closed_at_deadline: bool,
    /// Its bytes started to flow ([`pump`] began). A tunnel that never
    /// opened (its connect failed) is not counted as a drain that ended.
    pumped: bool,
    /// The downstream connection's listener permit and gauge, held until
    /// the tunnel closes (an upgraded connection counts against
    /// `max_connections` like any other).
    _conn: Option<Arc<crate::server::ConnHold>>,
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
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Entries are replaced whole; a poisoned lock holds no torn state.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a tunnel routed to `backend` of `pool`; `idle` is its
    /// service's `tunnel_idle`. Call it before the await that opens the
    /// tunnel (the connect, the upgrade): from here on the drain status
    /// counts it. It is checked against the snapshot in force now, under
    /// the registry's lock, so a switch that happened since it was routed
    /// drains it even when [`Tunnels::rebalance`] for that switch already ran.
    pub fn open(
        self: &Arc<Self>,
        current: &ArcSwap<Snapshot>,
        route: TunnelRoute<'_>,
        idle: Option<Duration>,
    ) -> TunnelGuard {
        let TunnelRoute {
            service,
            pool,
            backend,
            ticket,
        } = route;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        pool.metrics.tunnels_open.inc();
        let mut entry = Entry {
            service: service.to_string(),
            pool: pool.clone(),
            backend: backend.to_string(),
            ticket,
            draining: false,
            deadline: tx,
        };
        {
            let mut reg = self.lock();
            let snap = current.load();
            let now = Instant::now();
            // Drains from the change it missed, when rebalance saw it.
            let since = match reg.changed {
                Some((generation, at)) if generation == snap.generation => at,
                _ => now,
            };
            entry.evaluate(&snap, since, None);
            reg.entries.insert(id, entry);
        }
        TunnelGuard {
            id,
            tunnels: self.clone(),
            deadline: rx,
            closed_at_deadline: false,
            pumped: false,
            _conn: None,
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
        let mut reg = self.lock();
        if reg.changed.map(|(g, _)| g) != Some(snap.generation) {
            reg.changed = Some((snap.generation, now));
        }
        for e in reg.entries.values_mut() {
            let gone = prev
                .service(&e.service)
                .map(|(_, s)| s.config.drain_timeout);
            e.evaluate(snap, now, gone);
        }
    }

    /// Shutdown: every tunnel drains with the same deadline.
    pub fn drain_all(&self, deadline: Instant) {
        for e in self.lock().entries.values_mut() {
            let d = (*e.deadline.borrow()).map_or(deadline, |d| d.min(deadline));
            e.set_draining(true, Some(d));
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts for one service's pool.
    pub fn counts(&self, service: &str, pool: &str) -> TunnelCounts {
        let mut c = TunnelCounts::default();
        for e in self.lock().entries.values() {
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
    /// Holds the downstream connection's permit and gauge until the
    /// tunnel closes.
    pub(crate) fn holding(mut self, conn: Arc<crate::server::ConnHold>) -> TunnelGuard {
        self._conn = Some(conn);
        self
    }

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
        let Some(e) = self.tunnels.lock().entries.remove(&self.id) else {
            return;
        };
        if e.draining {
            e.pool.metrics.tunnels_draining.dec();
            if !self.pumped {
                // Never opened: no drain to count.
            } else if self.closed_at_deadline {
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

/// Tracks WebSocket frame boundaries in one direction's byte stream (masked
/// client-to-server frames or unmasked server-to-client ones), so that a
/// close frame is only ever injected between frames.
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

/// The same close frame (1001) as a client sends it to a server: masked
/// with `key` (RFC 6455 5.3: every client-to-server frame is masked, with
/// a fresh key each).
pub fn ws_close_going_away_masked(key: [u8; 4]) -> [u8; 8] {
    let code = [0x03, 0xe9];
    [
        0x88,
        0x80 | 0x02,
        key[0],
        key[1],
        key[2],
        key[3],
        code[0] ^ key[0],
        code[1] ^ key[1],
    ]
}

/// One direction of a tunnel: copies `from` to `to` until `from` ends or
/// `to` fails, then shuts `to` down. `writing` is true while a write is
/// under way; with `frames`, the bytes written are fed to it (WebSocket).
async fn copy_one_way<R, W>(
    from: &mut R,
    to: &mut W,
    writing: &mut bool,
    mut frames: Option<&mut WsFrames>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        *writing = true;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        *writing = false;
        if let Some(f) = frames.as_deref_mut() {
            f.feed(&buf[..n]);
        }
    }
    let _ = to.shutdown().await;
}

/// Ends one side of a tunnel cut by cutover: `close_frame` first when
/// given (the side's stream is between WebSocket frames), then a shutdown,
/// each write given at most a second.
async fn close_side<W: AsyncWrite + Unpin>(to: &mut W, close_frame: Option<&[u8]>) {
    const LIMIT: Duration = Duration::from_secs(1);
    if let Some(frame) = close_frame {
        let _ = tokio::time::timeout(LIMIT, to.write_all(frame)).await;
    }
    let _ = tokio::time::timeout(LIMIT, to.shutdown()).await;
}

/// Pumps bytes both ways until both directions end, the drain deadline
/// passes, or nothing was read either way for the tunnel's `tunnel_idle`
/// (counted in `cutover_idle_timeouts_total{reason="tunnel"}`). Half-closes are passed on. With `websocket`, a close frame 1001
/// goes to each side at the deadline whose stream is between frames: to
/// the client as a server sends it, to the backend masked as a client does.
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
    guard.pumped = true;
    let (cr, mut cw) = tokio::io::split(client);
    let (br, mut bw) = tokio::io::split(backend);
    let activity = Activity::new();
    let (mut cr, mut br) = (activity.watch(cr), activity.watch(br));
    // Per direction: frame boundaries (WebSocket) and a write under way.
    let (mut down_frames, mut up_frames) = (WsFrames::default(), WsFrames::default());
    let (mut down_writing, mut up_writing) = (false, false);
    let ended = {
        let up_tracked = websocket.then_some(&mut up_frames);
        let up = copy_one_way(&mut cr, &mut bw, &mut up_writing, up_tracked);
        let down = async {
            if !prefix.is_empty() {
                down_writing = true;
                if cw.write_all(&prefix).await.is_err() {
                    let _ = cw.shutdown().await;
                    return;
                }
                down_writing = false;
                if websocket {
                    down_frames.feed(&prefix);
                }
            }
            let tracked = websocket.then_some(&mut down_frames);
            copy_one_way(&mut br, &mut cw, &mut down_writing, tracked).await;
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
        let to_client = websocket && !down_writing && down_frames.at_boundary();
        let to_backend = websocket && !up_writing && up_frames.at_boundary();
        let masked = ws_close_going_away_masked(fastrand::u32(..).to_ne_bytes());
        tokio::join!(
            close_side(&mut cw, to_client.then_some(&WS_CLOSE_GOING_AWAY[..])),
            close_side(&mut bw, to_backend.then_some(&masked[..])),
        );
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

    #[test]
    fn the_close_frame_to_a_backend_is_masked_and_says_1001() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let frame = ws_close_going_away_masked(key);
        assert_eq!(frame[0], 0x88, "FIN and opcode close");
        assert_eq!(frame[1], 0x82, "masked, 2 payload bytes");
        assert_eq!(&frame[2..6], &key);
        let code = [frame[6] ^ key[0], frame[7] ^ key[1]];
        assert_eq!(u16::from_be_bytes(code), 1001);
        let mut f = WsFrames::default();
        f.feed(&frame);
        assert!(f.at_boundary(), "one whole frame");
    }
}
