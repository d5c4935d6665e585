//! A health endpoint: answers 200 `ready` to every request while up; while
//! stopped it still holds its port (no other process can take it, and it
//! comes back on the same address without rebinding) but closes every
//! connection unanswered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct HealthServer {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl HealthServer {
    pub async fn start() -> HealthServer {
        HealthServer::start_on(super::loopback().await)
    }

    /// [`HealthServer::start`] on a listener the caller bound.
    pub fn start_on(listener: TcpListener) -> HealthServer {
        let addr = listener.local_addr().expect("health server addr");
        let up = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(serve(listener, up.clone()));
        HealthServer { addr, up, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// From now on, connections are closed without an answer.
    pub fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
    }

    /// Answers again, on the same address.
    pub fn restart(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, up: Arc<AtomicBool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if !up.load(Ordering::SeqCst) {
            drop(stream);
            continue;
        }
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ready"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
