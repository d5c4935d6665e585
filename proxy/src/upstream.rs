//! The upstream connector: hyper-util's `HttpConnector`, plus a registry of
//! the connections it made, so that cutover can cut a retired backend's
//! connections when its drain deadline passes (hyper's pool gives no handle
//! on them). Each registered connection keeps a duplicate of its socket
//! (`try_clone`, a second descriptor for the same socket), whose only use is
//! `shutdown(Both)`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Default)]
pub struct ConnRegistry {
    socks: Mutex<HashMap<u64, socket2::Socket>>,
    next: AtomicU64,
}

impl ConnRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, socket2::Socket>> {
        self.socks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shuts down every open connection; returns how many there were.
    pub fn cut_all(&self) -> usize {
        let socks = self.lock();
        for s in socks.values() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        socks.len()
    }

    pub fn open(&self) -> usize {
        self.lock().len()
    }
}

#[derive(Clone)]
pub struct TrackingConnector {
    inner: HttpConnector,
    registry: Arc<ConnRegistry>,
}

impl TrackingConnector {
    pub fn new(inner: HttpConnector, registry: Arc<ConnRegistry>) -> TrackingConnector {
        TrackingConnector { inner, registry }
    }
}

pub struct TrackedIo {
    io: TokioIo<TcpStream>,
    id: u64,
    registry: Arc<ConnRegistry>,
}

impl TrackedIo {
    /// Leaves the registry: this connection is no longer cut with its backend
    /// (an upgraded connection, drained as a tunnel instead).
    pub fn forget(&self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Drop for TrackedIo {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for TrackingConnector {
    type Response = TrackedIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TrackedIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = tower_service::Service::<Uri>::call(&mut self.inner, uri);
        let registry = self.registry.clone();
        Box::pin(async move {
            let io = connecting.await?;
            let id = registry.next.fetch_add(1, Ordering::Relaxed);
            // A failed dup only means this connection cannot be cut early.
            if let Ok(dup) = socket2::SockRef::from(io.inner()).try_clone() {
                registry.lock().insert(id, dup);
            }
            Ok(TrackedIo { io, id, registry })
        })
    }
}

impl Connection for TrackedIo {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
