//! The reconciler keeps `weight_from` records on the live split: a change
//! of the routing generation with a new split triggers a pass at once (the
//! interval is an hour here), and metrics and status say what happened.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]
#![cfg(feature = "edge")]

mod support;

use std::sync::{Arc, Mutex};

use cutover_control::edge::reconcile::PassResult;
use cutover_control::edge::{ReconcilerOptions, SplitsFn};
use cutover_test_support::Metrics;
use support::{create_zone, edge_config, find, list_records, reconciler};
use support::{moto, sdk_config};

type Split = Vec<(String, String, u32, u32)>;

fn split(blue: u32, green: u32) -> Split {
    vec![
        ("web".into(), "blue".into(), blue, blue + green),
        ("web".into(), "green".into(), green, blue + green),
    ]
}

async fn weights(r53: &aws_sdk_route53::Client, zone: &str) -> (Option<i64>, Option<i64>) {
    let sets = list_records(r53, zone).await;
    (
        find(&sets, "app.example.com.", Some("blue")).and_then(|r| r.weight()),
        find(&sets, "app.example.com.", Some("green")).and_then(|r| r.weight()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_from_follows_the_split_after_a_switch() {
    let moto = moto();
    let sdk = sdk_config(&moto.endpoint()).await;
    let r53 = aws_sdk_route53::Client::new(&sdk);
    let zone = create_zone(&r53, "example.com.").await;
    let cfg = edge_config(&format!(
        r#"
[edge]
interval = "1h"

[[edge.records]]
zone_id = "{zone}"
name = "app.example.com."
type = "A"
values = ["203.0.113.20"]
set_identifier = "blue"
weight_from = "web.blue"

[[edge.records]]
zone_id = "{zone}"
name = "app.example.com."
type = "A"
values = ["203.0.113.30"]
set_identifier = "green"
weight_from = "web.green"
"#
    ));

    let live = Arc::new(Mutex::new(split(90, 10)));
    let source = live.clone();
    let splits: SplitsFn = Arc::new(move || source.lock().map(|s| s.clone()).unwrap_or_default());
    let (gen_tx, gen_rx) = tokio::sync::watch::channel(1u64);
    let mut rec = reconciler::start(cfg, &sdk, ReconcilerOptions::default(), splits, gen_rx);

    // The first pass runs at once and creates both records from the split.
    rec.wait_status("the first pass", |s| s.passes >= 1).await;
    let s = rec.handle.status();
    assert_eq!(s.last_result, Some(PassResult::Applied), "{s:?}");
    assert_eq!(s.last_error, None);
    assert_eq!(s.drift_records, 2);
    assert_eq!(s.generation, 1);
    assert_eq!(weights(&r53, &zone).await, (Some(230), Some(26)));

    // An admin switch: all traffic to green, new generation.
    *live.lock().unwrap() = split(0, 100);
    gen_tx.send_replace(2);
    rec.wait_status("a pass after the switch", |s| s.generation == 2)
        .await;
    assert_eq!(weights(&r53, &zone).await, (Some(0), Some(255)));
    let s = rec.handle.status();
    assert_eq!(
        s.passes, 2,
        "the trigger, not the 1h interval, ran it: {s:?}"
    );
    assert_eq!(s.last_result, Some(PassResult::Applied));
    assert_eq!(s.last_changes.len(), 2);
    assert!(s.last_success_at.is_some());
    let json = serde_json::to_value(&s).expect("status serialises");
    assert_eq!(json["last_result"], "applied");

    assert_eq!(
        Metrics::from_registry(&rec.registry)
            .value("cutover_edge_reconcile_total", &[("result", "applied")]),
        Some(2.0)
    );
    assert_eq!(
        Metrics::from_registry(&rec.registry)
            .value("cutover_edge_reconcile_total", &[("result", "error")]),
        Some(0.0)
    );
    assert_eq!(
        Metrics::from_registry(&rec.registry).value("cutover_edge_drift", &[("kind", "record")]),
        Some(2.0)
    );
    assert!(Metrics::from_registry(&rec.registry)
        .value("cutover_edge_last_success_timestamp_seconds", &[])
        .is_some_and(|v| v > 1.6e9));
    // docs/metrics.md's edge section lists exactly these families.
    let docs = cutover_test_support::documented(include_str!("../../docs/metrics.md"));
    assert_eq!(
        docs.get("Edge sync"),
        Some(&Metrics::from_registry(&rec.registry).families()),
        "docs/metrics.md's Edge sync table and the reconciler's metrics differ"
    );

    // Shutdown stops the loop.
    rec.stop().await;
}
