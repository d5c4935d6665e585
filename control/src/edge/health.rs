//! Health checks of Elastic IP candidates: an HTTP GET of the expanded
//! `health_url`; a 2xx answer within the timeout is healthy.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A small HTTP client for health checks. New connection per check (no
/// pooling), so a candidate that went away is seen at once.
#[derive(Clone)]
pub struct HealthChecker {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for HealthChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthChecker {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        HealthChecker { client }
    }

    /// `Ok(status)` on a 2xx answer within `timeout`, else `Err` saying what
    /// happened (refused, timed out, which status).
    pub async fn check(&self, url: &str, timeout: Duration) -> Result<u16, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
        let req = http::Request::get(uri)
            .header(http::header::USER_AGENT, "cutover-edge-health")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build a request for `{url}`: {e}"))?;
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(format!("GET {url}: no answer within {timeout:?}")),
            Ok(Err(e)) => {
                let mut msg = format!("GET {url}: {e}");
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                Err(msg)
            }
            Ok(Ok(resp)) if resp.status().is_success() => Ok(resp.status().as_u16()),
            Ok(Ok(resp)) => Err(format!("GET {url}: answered {}", resp.status())),
        }
    }
}
