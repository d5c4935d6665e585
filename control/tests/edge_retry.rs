//! What moto never does, injected by a loopback front that forwards to it:
//! Route 53 changes that stay PENDING (GetChange is polled until INSYNC,
//! bounded by the timeout), and throttling / 5xx answers (retried with
//! backoff; reported with AWS's code when they do not stop).

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]
#![cfg(feature = "edge")]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cutover_control::edge::{apply_with, plan_with, EdgeClients, EdgeError, PollPolicy};
use cutover_test_support::moto::front::Front;
use support::{create_zone, edge_config, find, list_records, values};
use support::{moto, sdk_config};

fn config(zone: &str) -> cutover_config::edge::EdgeConfig {
    edge_config(&format!(
        r#"
[edge]

[[edge.records]]
zone_id = "{zone}"
name = "www.example.com."
type = "A"
values = ["203.0.113.10"]

[[edge.records]]
zone_id = "{zone}"
name = "api.example.com."
type = "A"
values = ["203.0.113.11"]
"#
    ))
}

const FAST_POLL: PollPolicy = PollPolicy {
    initial: Duration::from_millis(20),
    max: Duration::from_millis(100),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_polls_get_change_until_insync() {
    let moto = moto();
    let direct = sdk_config(&moto.endpoint()).await;
    let r53 = aws_sdk_route53::Client::new(&direct);
    let zone = create_zone(&r53, "example.com.").await;
    let front = Front::start(moto.addr).await;
    let clients = EdgeClients::from_sdk_config(&sdk_config(&front.endpoint()).await)
        .with_poll_policy(FAST_POLL);
    let cfg = config(&zone);

    front.inj.pending_left.store(4, Ordering::SeqCst);
    let mut out = Vec::new();
    let code = apply_with(&clients, &cfg, Duration::from_secs(30), &mut out)
        .await
        .expect("apply waits through PENDING");
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, 0);
    // One batch for the zone; four PENDING answers, then moto's INSYNC.
    assert_eq!(front.inj.rrset_calls.load(Ordering::SeqCst), 1);
    assert_eq!(front.inj.get_change_calls.load(Ordering::SeqCst), 5);
    assert!(text.contains("2 record(s) upserted"), "{text}");
    assert!(text.contains("INSYNC"), "{text}");
    let sets = list_records(&r53, &zone).await;
    assert_eq!(
        values(find(&sets, "www.example.com.", None).unwrap()),
        ["203.0.113.10"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_stays_pending_fails_at_the_timeout() {
    let moto = moto();
    let r53 = aws_sdk_route53::Client::new(&sdk_config(&moto.endpoint()).await);
    let zone = create_zone(&r53, "example.com.").await;
    let front = Front::start(moto.addr).await;
    let clients = EdgeClients::from_sdk_config(&sdk_config(&front.endpoint()).await)
        .with_poll_policy(FAST_POLL);

    front.inj.pending_left.store(usize::MAX, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let err = apply_with(
        &clients,
        &config(&zone),
        Duration::from_millis(500),
        &mut Vec::new(),
    )
    .await
    .expect_err("never INSYNC");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
    let EdgeError::NotInSync { status, .. } = &err else {
        panic!("not a timeout: {err:?}");
    };
    assert_eq!(status, "PENDING");
    let shown = err.to_string();
    assert!(shown.contains(&format!("zone {zone}")), "{shown}");
    assert!(shown.contains("still PENDING"), "{shown}");
    assert!(front.inj.get_change_calls.load(Ordering::SeqCst) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_5xx_are_retried() {
    let moto = moto();
    let r53 = aws_sdk_route53::Client::new(&sdk_config(&moto.endpoint()).await);
    let zone = create_zone(&r53, "example.com.").await;
    let front = Front::start(moto.addr).await;
    let clients = EdgeClients::from_sdk_config(&sdk_config(&front.endpoint()).await)
        .with_poll_policy(FAST_POLL);
    let cfg = config(&zone);

    front.inj.error_500_left.store(1, Ordering::SeqCst);
    front.inj.throttle_rrset_left.store(2, Ordering::SeqCst);
    apply_with(&clients, &cfg, Duration::from_secs(60), &mut Vec::new())
        .await
        .expect("retries get through");
    // Two throttled ChangeResourceRecordSets, then the one moto answered.
    assert_eq!(front.inj.rrset_calls.load(Ordering::SeqCst), 3);
    // Two names listed, one of them retried after a 500.
    assert_eq!(front.inj.list_calls.load(Ordering::SeqCst), 3);
    let sets = list_records(&r53, &zone).await;
    assert_eq!(
        values(find(&sets, "api.example.com.", None).unwrap()),
        ["203.0.113.11"]
    );
    assert_eq!(
        plan_with(&clients, &cfg, false, &mut Vec::new())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_that_does_not_stop_is_reported_with_the_aws_code() {
    let moto = moto();
    let r53 = aws_sdk_route53::Client::new(&sdk_config(&moto.endpoint()).await);
    let zone = create_zone(&r53, "example.com.").await;
    let front = Front::start(moto.addr).await;
    let clients = EdgeClients::from_sdk_config(&sdk_config(&front.endpoint()).await)
        .with_poll_policy(FAST_POLL);

    front
        .inj
        .throttle_rrset_left
        .store(usize::MAX, Ordering::SeqCst);
    let err = apply_with(
        &clients,
        &config(&zone),
        Duration::from_secs(60),
        &mut Vec::new(),
    )
    .await
    .expect_err("always throttled");
    assert_eq!(err.aws_code(), Some("Throttling"), "{err}");
    assert_eq!(
        front.inj.rrset_calls.load(Ordering::SeqCst),
        cutover_control::edge::aws::MAX_ATTEMPTS as usize
    );
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("zone {zone} (www.example.com. A, api.example.com. A): AWS ChangeResourceRecordSets failed: Throttling: Rate exceeded")),
        "{shown}"
    );
}
