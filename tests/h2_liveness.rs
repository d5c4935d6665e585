//! End-to-end: liveness PINGs on the shared h2c connection to a backend.
//! A backend that stops answering without closing (a relay in between
//! freezes the connection: no bytes either way, no FIN, no RST) costs one
//! PING interval plus timeout, not a `response_header` wait per request:
//! cutover closes the connection, counts it, and the next request gets a
//! new one. A healthy idle connection answers its PINGs and is kept.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cutover_test_support::relay::Relay;
use cutover_test_support::*;
use http::StatusCode;

/// PINGs after 200 ms without a frame, 200 ms to answer; `response_header`
/// far longer, so only a PING can end a wait within seconds.
const TIMEOUTS: &str = r#"timeouts = { response_header = "30s", h2_ping_interval = "200ms", h2_ping_timeout = "200ms" }"#;
const INTERVAL: Duration = Duration::from_millis(200);

const PING_TIMEOUTS: &str =
    "cutover_upstream_h2_ping_timeouts_total{pool=\"blue\",service=\"web\"}";
const OPENED: &str = "cutover_upstream_connections_opened_total{pool=\"blue\",service=\"web\"}";
const OPEN: &str = "cutover_upstream_connections{pool=\"blue\",service=\"web\"}";

/// An h2c blue backend behind a relay (and a green one without).
struct Setup {
    run: Running,
    relay: Relay,
    _backends: [TestBackend; 2],
}

async fn setup(timeouts: &str) -> Setup {
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let relay = Relay::start(blue.addr).await;
    let run = Harness::new()
        .blue(0)
        .green(0)
        .pools(r#"protocol = "h2c""#)
        .service(timeouts)
        .backends(&relay.toml_list(), &green.toml_list())
        .start()
        .await;
    Setup {
        run,
        relay,
        _backends: [blue, green],
    }
}

async fn value(s: &Setup, line: &str) -> f64 {
    metric(s.run.admin, line).await.unwrap_or(-1.0)
}

async fn get_blue(s: &Setup) {
    let a = get_once(s.run.proxy, "/", &[]).await.expect("an answer");
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.pool(), "blue");
    assert_eq!(a.header("x-seen-version"), Some("HTTP/2.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stops_answering_loses_its_connection_at_the_ping_timeout() {
    let s = setup(TIMEOUTS).await;
    get_blue(&s).await;
    assert_eq!(s.relay.accepted(), 1);
    assert_eq!(value(&s, PING_TIMEOUTS).await, 0.0);

    s.relay.freeze_open();
    let frozen = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || async {
            value(&s, PING_TIMEOUTS).await == 1.0 && value(&s, OPEN).await == 0.0
        })
        .await,
        "the silent connection was never closed for an unanswered PING"
    );
    // At most an interval (since the last frame read) plus the timeout,
    // with slack for a loaded machine: far from response_header's 30 s.
    let took = frozen.elapsed();
    assert!(
        took < 4 * (INTERVAL + INTERVAL),
        "closed {took:?} after the freeze"
    );

    // The connection is still frozen (never thawed): the next request can
    // only succeed on a new one.
    get_blue(&s).await;
    assert_eq!(s.relay.accepted(), 2, "a second connection to the backend");
    assert_eq!(value(&s, OPENED).await, 2.0);
    assert_eq!(value(&s, OPEN).await, 1.0);

    // Thawed, the relay sees that cutover closed the first connection.
    s.relay.thaw();
    assert!(
        eventually(Duration::from_secs(5), || async {
            s.relay.client_closed() == 1
        })
        .await,
        "cutover's end of the frozen connection is not closed"
    );
    get_blue(&s).await;
    assert_eq!(s.relay.accepted(), 2, "the new connection is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_on_a_silent_backend_ends_at_the_ping_timeout() {
    // The body names the cause in full only with error_detail = "full".
    let s = setup(&format!("{TIMEOUTS}\nerror_detail = \"full\"")).await;
    get_blue(&s).await;
    s.relay.freeze_open();

    // Sent on the frozen connection (cutover cannot know yet): without
    // PINGs this would wait response_header's 30 s.
    let sent = Instant::now();
    let a = get_once(s.run.proxy, "/", &[]).await.expect("an answer");
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    // 504 naming the backend, unless cutover retried it on a new
    // connection (an idempotent request without a body may be).
    if a.status == StatusCode::OK {
        assert_eq!(s.relay.accepted(), 2, "{a:?}");
    } else {
        assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{a:?}");
        assert!(a.body.contains("PING"), "{}", a.body);
        let timeouts = "cutover_upstream_errors_total{cause=\"timeout\",pool=\"blue\",service=\"web\",source=\"backend\"}";
        assert_eq!(value(&s, timeouts).await, 1.0);
    }
    assert_eq!(value(&s, PING_TIMEOUTS).await, 1.0);
    get_blue(&s).await;
    assert_eq!(s.relay.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_idle_connection_answers_its_pings_and_is_kept() {
    let s = setup(TIMEOUTS).await;
    get_blue(&s).await;
    let (up, down) = (s.relay.bytes_up(), s.relay.bytes_down());

    // Six ping intervals idle: PINGs go out and come back, nothing closes.
    assert!(
        holds_for(6 * INTERVAL, || async {
            value(&s, OPEN).await == 1.0 && value(&s, PING_TIMEOUTS).await == 0.0
        })
        .await,
        "a healthy idle connection was closed"
    );
    // A PING frame is 17 bytes; its ACK too. Expect a few of each.
    assert!(s.relay.bytes_up() >= up + 3 * 17, "no PINGs were sent");
    assert!(
        s.relay.bytes_down() >= down + 3 * 17,
        "no PINGs were answered"
    );
    get_blue(&s).await;
    assert_eq!(s.relay.accepted(), 1, "the same connection all along");
    assert_eq!(value(&s, OPENED).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pings_with_a_zero_interval() {
    let s = setup(r#"timeouts = { h2_ping_interval = "0s" }"#).await;
    // Two requests: the first one's SETTINGS ACK may go out just after its
    // answer; by the end of the second everything cutover had to say is out.
    get_blue(&s).await;
    get_blue(&s).await;
    let up = s.relay.bytes_up();
    assert!(
        holds_for(Duration::from_secs(1), || async {
            s.relay.bytes_up() == up
        })
        .await,
        "cutover sent bytes on an idle connection with h2_ping_interval = \"0s\""
    );
    get_blue(&s).await;
    assert_eq!(s.relay.accepted(), 1);
}
