//! A tiny HTTP backend that says which pool it is: the blue and green of
//! `cutover demo`. (The tests' backends are in the `cutover-test-support`
//! crate, `test-support/src/backend/`.)

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Counters of one demo backend.
#[derive(Default)]
pub struct BackendStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
}

/// Answers every request with `<name>\n` and headers `x-pool: <name>` and
/// `x-backend: <addr>`, until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    name: String,
    stats: Arc<BackendStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let (name, addr, stats, builder) = (name.clone(), addr.clone(), stats.clone(), builder.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        stats.requests.fetch_add(1, Ordering::Relaxed);
                        let resp = Response::builder()
                            .header("x-pool", name.as_str())
                            .header("x-backend", addr.as_str())
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from(format!("{name}\n"))));
                        let _ = req;
                        async move { Ok::<_, Infallible>(resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))) }
                    });
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() { break; }
            }
        }
    }
}
