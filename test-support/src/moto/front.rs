//! A small HTTP front on loopback that forwards every request to moto and
//! injects the answers moto never gives: Route 53 changes that stay PENDING
//! for a while, and throttling / 5xx errors.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Counters and knobs; each `*_left` is decremented per injected answer.
#[derive(Default)]
pub struct Injections {
    /// GetChange answers PENDING this many times, then moto answers.
    pub pending_left: AtomicUsize,
    /// ChangeResourceRecordSets answers 400 Throttling this many times.
    pub throttle_rrset_left: AtomicUsize,
    /// DescribeAddresses answers 503 RequestLimitExceeded this many times.
    pub throttle_ec2_left: AtomicUsize,
    /// ListResourceRecordSets answers 500 this many times.
    pub error_500_left: AtomicUsize,
    pub get_change_calls: AtomicUsize,
    pub rrset_calls: AtomicUsize,
    pub describe_addresses_calls: AtomicUsize,
    pub list_calls: AtomicUsize,
}

pub struct Front {
    pub addr: SocketAddr,
    pub inj: Arc<Injections>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    pub async fn start(upstream: SocketAddr) -> Front {
        Front::start_on(crate::backend::loopback().await, upstream)
    }

    /// [`Front::start`] on a listener the caller bound.
    pub fn start_on(listener: TcpListener, upstream: SocketAddr) -> Front {
        let addr = listener.local_addr().expect("front addr");
        let inj = Arc::new(Injections::default());
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let state = inj.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let client = client.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(req, upstream, client.clone(), state.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Front { addr, inj, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn take(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

fn xml(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    inj: Arc<Injections>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let is_get_change = parts.method == http::Method::GET && path.contains("/change/");
    let is_rrset =
        parts.method == http::Method::POST && path.trim_end_matches('/').ends_with("/rrset");
    let is_list =
        parts.method == http::Method::GET && path.trim_end_matches('/').ends_with("/rrset");
    let is_describe_addresses = body
        .windows(b"Action=DescribeAddresses".len())
        .any(|w| w == b"Action=DescribeAddresses");

    if is_get_change {
        inj.get_change_calls.fetch_add(1, Ordering::SeqCst);
        if take(&inj.pending_left) {
            let id = path.rsplit('/').next().unwrap_or("C1");
            return Ok(xml(
                StatusCode::OK,
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?>
<GetChangeResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeInfo><Id>/change/{id}</Id><Status>PENDING</Status><SubmittedAt>2024-01-01T00:00:00.000Z</SubmittedAt></ChangeInfo></GetChangeResponse>"#
                ),
            ));
        }
    }
    if is_rrset {
        inj.rrset_calls.fetch_add(1, Ordering::SeqCst);
        if take(&inj.throttle_rrset_left) {
            return Ok(xml(
                StatusCode::BAD_REQUEST,
                r#"<?xml version="1.0" encoding="UTF-8"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>front-1</RequestId></ErrorResponse>"#
                    .to_string(),
            ));
        }
    }
    if is_list {
        inj.list_calls.fetch_add(1, Ordering::SeqCst);
        if take(&inj.error_500_left) {
            return Ok(xml(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"<?xml version="1.0" encoding="UTF-8"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>Internal failure</Message></Error><RequestId>front-2</RequestId></ErrorResponse>"#
                    .to_string(),
            ));
        }
    }
    if is_describe_addresses {
        inj.describe_addresses_calls.fetch_add(1, Ordering::SeqCst);
        if take(&inj.throttle_ec2_left) {
            return Ok(xml(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>front-3</RequestID></Response>"#
                    .to_string(),
            ));
        }
    }

    // Forward to moto.
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let mut fwd = Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://{upstream}{pq}"));
    for (k, v) in &parts.headers {
        if k != http::header::HOST {
            fwd = fwd.header(k, v);
        }
    }
    let Ok(fwd) = fwd.body(Full::new(body)) else {
        return Ok(xml(StatusCode::BAD_GATEWAY, "bad request".to_string()));
    };
    let resp = match client.request(fwd).await {
        Ok(r) => r,
        Err(e) => return Ok(xml(StatusCode::BAD_GATEWAY, format!("front: {e}"))),
    };
    let (rparts, rbody) = resp.into_parts();
    let mut rbody = rbody
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if is_rrset && inj.pending_left.load(Ordering::SeqCst) > 0 {
        // Real Route 53 answers a change PENDING; moto says INSYNC at once.
        let s = String::from_utf8_lossy(&rbody).replace("INSYNC", "PENDING");
        rbody = Bytes::from(s);
    }
    let mut out = Response::from_parts(rparts, Full::new(rbody.clone()));
    out.headers_mut().remove(http::header::CONTENT_LENGTH);
    out.headers_mut().remove(http::header::TRANSFER_ENCODING);
    Ok(out)
}
