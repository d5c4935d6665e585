//! One connection of this client, and its idle list.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;

use super::HEAD_READ;
use crate::upstream::{IdleList, TrackedIo};

/// One upstream HTTP/1.1 connection of this client.
pub struct Conn {
    pub(super) io: TrackedIo,
    /// Bytes read and not consumed yet; empty between exchanges.
    pub(super) buf: BytesMut,
}

impl Conn {
    pub fn new(io: TrackedIo) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Still open, and the backend has sent nothing since the last exchange.
    /// Does not wait; costs no system call when the socket has seen no event.
    pub(in crate::upstream) fn usable(&self) -> bool {
        self.io.stream().usable()
    }

    pub(in crate::upstream) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want / 4 {
            self.buf.reserve(want);
        }
        let polled =
            tokio_util::io::poll_read_buf(Pin::new(self.io.stream_mut()), cx, &mut self.buf);
        match polled {
            // The end of the stream or a failure: a drain cut's, maybe.
            Poll::Ready(Ok(0) | Err(_)) => self.io.unless_cut(polled),
            polled => polled,
        }
    }
}

/// The idle connections of this client for one backend.
pub type IdleConns = IdleList<Conn>;

impl IdleList<Conn> {
    /// The most recently used idle connection that is still usable.
    pub fn take(&self) -> Option<Conn> {
        loop {
            let (conn, _) = self.lock().pop_back()?;
            if conn.usable() {
                return Some(conn);
            }
        }
    }

    pub(super) fn give_back(&self, mut conn: Conn) {
        conn.io.reused = true;
        // An empty buffer of head size is kept (reused in place by the next
        // response when nothing else holds it); a larger one is not held
        // while idle.
        if conn.buf.capacity() > HEAD_READ {
            conn.buf = BytesMut::new();
        }
        self.push(conn, |_| true);
    }
}
