//! The response body cutover sends downstream: either the backend's body,
//! streamed frame by frame with a guard that closes the request's books when
//! it ends (or is dropped), or a short body cutover wrote itself.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::upstream::UpstreamBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::server::ConnActivity;
use crate::snapshot::{Backend, Pool};
use crate::upstream::H1Conn;

/// What the access log line needs beyond the guard's own fields.
pub(crate) struct AccessInfo {
    pub client: std::net::SocketAddr,
    pub service: String,
    pub method: http::Method,
    pub path: String,
    pub status: u16,
    /// Backends tried before the one that answered (or failed last), each
    /// with why it got nothing: `127.0.0.1:9001 connect failed: ...`.
    pub retried: Vec<String>,
    /// cutover's own error, in full, when the request failed.
    pub error: Option<String>,
}

/// Held from routing until the response body ends: in-flight counts,
/// duration, the access log line.
pub(crate) struct RequestGuard {
    pub pool: Arc<Pool>,
    pub backend: Option<Arc<Backend>>,
    pub start: Instant,
    pub conn: Arc<ConnActivity>,
    pub access: Option<Box<AccessInfo>>,
    pub bytes: u64,
    /// The HTTP/1.1 upstream connection of this request, back to the
    /// backend's idle list once the response body has been read whole.
    pub upstream: Option<H1Conn>,
}

impl RequestGuard {
    pub fn new(
        pool: Arc<Pool>,
        backend: Arc<Backend>,
        start: Instant,
        conn: Arc<ConnActivity>,
    ) -> RequestGuard {
        pool.metrics.in_flight.inc();
        backend.enter();
        RequestGuard {
            pool,
            backend: Some(backend),
            start,
            conn,
            access: None,
            bytes: 0,
            upstream: None,
        }
    }

    /// The request goes to `backend` instead (a retry): it leaves the one
    /// it was counted on.
    pub fn move_to(&mut self, backend: Arc<Backend>) {
        backend.enter();
        if let Some(old) = self.backend.replace(backend) {
            old.leave();
        }
    }

    /// The response body was read to its end: its connection can be reused.
    pub fn response_complete(&mut self) {
        if let (Some(conn), Some(b)) = (self.upstream.take(), &self.backend) {
            b.upstream.give_back(conn);
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        self.pool.metrics.in_flight.dec();
        if self.conn.client_gone() {
            self.pool
                .metrics
                .count_error(crate::error::ErrorKind::ClientAborted);
        }
        self.pool.metrics.duration.observe(elapsed.as_secs_f64());
        if let Some(b) = &self.backend {
            b.leave();
        }
        self.conn.end_at(now);
        if let Some(a) = &self.access {
            tracing::info!(
                target: "cutover::access",
                client = %a.client,
                service = %a.service,
                pool = %self.pool.name,
                backend = self.backend.as_ref().map(|b| b.addr.as_str()).unwrap_or("-"),
                method = %a.method,
                path = %a.path,
                status = a.status,
                attempts = a.retried.len() + 1,
                retried = %a.retried.join("; "),
                error = a.error.as_deref().unwrap_or(""),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                bytes = self.bytes,
            );
        }
    }
}

pin_project_lite::pin_project! {
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        Upstream { inner: UpstreamBody, guard: RequestGuard },
        Full { data: Option<Bytes> },
    }
}

impl ProxyBody {
    pub fn text(s: impl Into<Bytes>) -> ProxyBody {
        let data: Bytes = s.into();
        ProxyBody::Full {
            data: if data.is_empty() { None } else { Some(data) },
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ProxyBodyProj::Upstream { inner, guard } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            guard.bytes += d.len() as u64;
                        }
                        // hyper stops polling once the body says it ended.
                        if inner.is_end_stream() {
                            guard.response_complete();
                        }
                    }
                    Poll::Ready(None) => guard.response_complete(),
                    // The backend's body failed (cut short, badly framed, reset):
                    // the client's response is cut too, and it counts as a
                    // bad response. Its connection is unusable: dropped.
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!(pool = %guard.pool.name, "response body from the backend failed: {e}");
                        guard
                            .pool
                            .metrics
                            .count_error(crate::error::ErrorKind::BadResponse);
                        guard.upstream = None;
                    }
                    Poll::Pending => {}
                }
                polled
            }
            ProxyBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
            ProxyBody::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
            ProxyBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
