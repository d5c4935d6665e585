//! `client_idle` on the downstream socket. hyper's server has no write
//! timeout, and a response body is not polled while hyper waits for the
//! socket, so a client that stopped reading is seen here, where hyper
//! writes: a write the socket cannot take (Pending) arms a timer, any byte
//! moved either way disarms it, and when it fires the write fails, hyper
//! drops the connection, and the request's guard (dropped with it)
//! counts the timeout on its pool.
//!
//! The same timer covers an HTTP/1.1 client that stopped sending a request
//! body: a read that finds nothing while a request is in progress (with
//! half-closed connections allowed, hyper reads mid-request only for the
//! body). Reads between requests are the watchdog's (`idle`,
//! `header_read`); an HTTP/2 connection reads all the time, so its reads
//! are not timed.
//!
//! Per call on the fast path (the socket ready): one plain store. The
//! timer is created on the first stall of a connection and moved with
//! `reset` afterwards (lock-free in tokio when it moves later).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ConnActivity;

pub(super) struct ClientIo<S> {
    inner: S,
    activity: Arc<ConnActivity>,
    limit: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A byte moved since the timer was last armed.
    moved: bool,
}

impl<S> ClientIo<S> {
    pub(super) fn new(inner: S, activity: Arc<ConnActivity>, limit: Duration) -> ClientIo<S> {
        ClientIo {
            inner,
            activity,
            limit,
            sleep: None,
            moved: true,
        }
    }

    /// The socket cannot make progress: an error once nothing has moved
    /// for `limit` (the connection is then dropped), else `Pending`.
    #[cold]
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
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
        if std::future::Future::poll(sleep.as_mut(), cx).is_pending() {
            return Poll::Pending;
        }
        tracing::debug!("client_idle: no progress for {limit:?}; dropping the connection");
        self.activity.mark_client_idle();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client made no progress for {limit:?} (client_idle)"),
        )))
    }

    #[inline]
    fn wrote(
        &mut self,
        polled: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.moved = true;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.activity.reading_body() => this.stalled(cx),
            Poll::Pending => Poll::Pending,
            ready => {
                this.moved = true;
                ready
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
