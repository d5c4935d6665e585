//! The response body cutover sends downstream: either the backend's body,
//! streamed frame by frame with a guard that closes the request's books when
//! it ends (or is dropped), or a short body cutover wrote itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
        if self.conn.client_idle_expired() {
            self.pool.metrics.idle_timeouts.client.inc();
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
        Upstream { inner: UpstreamBody, guard: RequestGuard, idle: BodyIdle },
        Full { data: Option<Bytes> },
    }
}

/// `backend_idle` on a response body: a timer armed only when the
/// backend's body is pending (created on the first such poll, then moved
/// forward with `reset`, which tokio does without a lock), so a body that
/// never waits costs no timer.
pub(crate) struct BodyIdle {
    limit: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the timer was last armed.
    moved: bool,
    /// A gRPC exchange over HTTP/2 (request and answer): a drain cut ends
    /// it with gRPC trailers rather than a reset. Kept here, in this
    /// struct's padding, rather than in the [`RequestGuard`]: a word more
    /// there is a word more in every response body, which hyper moves
    /// several times per request.
    pub grpc: bool,
}

impl BodyIdle {
    pub fn new(limit: Duration) -> BodyIdle {
        BodyIdle {
            limit,
            sleep: None,
            moved: true,
            grpc: false,
        }
    }

    /// The backend's body is pending: ready once `limit` has passed
    /// since it last gave a frame (or since the first wait).
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.limit;
        let sleep = match &mut self.sleep {
            None => self.sleep.insert(Box::pin(tokio::time::sleep(limit))),
            Some(s) => {
                if self.moved {
                    let now = tokio::time::Instant::now();
                    s.as_mut().reset(crate::time::later_tokio(now, limit));
                }
                s
            }
        };
        self.moved = false;
        sleep.as_mut().poll(cx)
    }
}

/// Why a response body was cut: the backend sent nothing for
/// `backend_idle`.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent no byte of the response body for {0:?} (backend_idle)")]
pub(crate) struct BackendIdle(Duration);

impl ProxyBody {
    pub fn text(s: impl Into<Bytes>) -> ProxyBody {
        let data: Bytes = s.into();
        ProxyBody::Full {
            data: if data.is_empty() { None } else { Some(data) },
        }
    }
}

/// `backend_idle` passed: counted, the upstream connection dropped (and
/// closed, never kept), the client's response cut.
#[cold]
fn backend_idle(
    inner: &mut UpstreamBody,
    guard: &mut RequestGuard,
    limit: Duration,
) -> Box<dyn std::error::Error + Send + Sync> {
    tracing::debug!(pool = %guard.pool.name, "response body cut: the backend sent nothing for {limit:?} (backend_idle)");
    guard.pool.metrics.idle_timeouts.backend.inc();
    guard.upstream = None;
    inner.abandon();
    Box::new(BackendIdle(limit))
}

/// The backend's body failed because cutover cut its connection at the
/// pool's drain deadline: counted as such, the connection dropped. A gRPC
/// stream gets the trailers to end it with (`grpc-status: 14`); any other
/// response is cut as today (a reset, or an HTTP/1.1 connection closed).
#[cold]
fn drain_cut(guard: &mut RequestGuard, grpc: bool) -> Option<http::HeaderMap> {
    tracing::debug!(pool = %guard.pool.name, grpc, "response body cut at the pool's drain deadline");
    guard
        .pool
        .metrics
        .count_error(crate::error::ErrorKind::DrainCut);
    guard.upstream = None;
    grpc.then(|| crate::grpc::unavailable(&guard.pool.name))
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.as_mut().project() {
            ProxyBodyProj::Upstream { inner, guard, idle } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        idle.moved = true;
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
                    Poll::Ready(Some(Err(e))) if crate::upstream::is_drain_cut(&**e) => {
                        if let Some(trailers) = drain_cut(guard, idle.grpc) {
                            // The stream ends here; dropping the guard
                            // closes the request's books.
                            self.set(ProxyBody::Full { data: None });
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!(pool = %guard.pool.name, "response body from the backend failed: {e}");
                        guard
                            .pool
                            .metrics
                            .count_error(crate::error::ErrorKind::BadResponse);
                        guard.upstream = None;
                    }
                    Poll::Pending => {
                        if idle.poll_stalled(cx).is_ready() {
                            return Poll::Ready(Some(Err(backend_idle(inner, guard, idle.limit))));
                        }
                    }
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

/// A request body on its way to the backend. For an HTTP/2 client it
/// carries `client_idle`: a body the client stops sending fails after that
/// long without a frame, which hyper's client reports as the request
/// body's failure (a client error, never the backend's), and is counted.
/// (An HTTP/1.1 client's body is timed on its socket: `server::client_io`.)
/// The timer is armed only when the body is pending, as for [`BodyIdle`].
pub struct RequestBody {
    inner: hyper::body::Incoming,
    /// `client_idle` and its counter; `None`: not timed here.
    timed: Option<(BodyIdle, prometheus::IntCounter)>,
}

/// Why a request body was cut: the client sent nothing for `client_idle`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no byte of its request body for {0:?} (client_idle)")]
pub(crate) struct ClientIdle(Duration);

impl RequestBody {
    /// Not timed here.
    pub fn plain(inner: hyper::body::Incoming) -> RequestBody {
        RequestBody { inner, timed: None }
    }

    /// Timed by `limit`, each expiry counted on `counter`.
    pub(crate) fn timed(
        inner: hyper::body::Incoming,
        limit: Duration,
        counter: &prometheus::IntCounter,
    ) -> RequestBody {
        RequestBody {
            inner,
            timed: Some((BodyIdle::new(limit), counter.clone())),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if let Some((idle, counter)) = &mut this.timed {
                    if idle.poll_stalled(cx).is_ready() {
                        counter.inc();
                        return Poll::Ready(Some(Err(Box::new(ClientIdle(idle.limit)))));
                    }
                }
                Poll::Pending
            }
            Poll::Ready(frame) => {
                if let Some((idle, _)) = &mut this.timed {
                    idle.moved = true;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
