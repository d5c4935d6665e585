//! `cutover edge plan` / `apply` against moto: creates on an empty zone,
//! idempotence, drift repair, undeclared records left alone, AWS errors.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]
#![cfg(feature = "edge")]

mod support;

use std::time::Duration;

use cutover_control::edge::{apply_with, plan_with, EdgeClients, EdgeError};
use support::{create_zone, edge_config, find, list_records, upsert_a, values};
use support::{moto, sdk_config};

fn config(zone: &str, endpoint: &str) -> cutover_config::edge::EdgeConfig {
    edge_config(&format!(
        r#"
[edge]
region = "us-east-1"
endpoint_url = "{endpoint}"

[[edge.records]]
zone_id = "/hostedzone/{zone}"
name = "www.example.com."
type = "A"
alias = {{ dns_name = "proxy-nlb-123.elb.us-east-1.amazonaws.com.", zone_id = "Z26RNL4JYFTOTI", evaluate_target_health = true }}

[[edge.records]]
zone_id = "{zone}"
name = "api.example.com."
type = "A"
values = ["203.0.113.10", "203.0.113.11"]
ttl = 60

[[edge.records]]
zone_id = "{zone}"
name = "split.example.com."
type = "A"
values = ["203.0.113.20"]
set_identifier = "blue"
weight_from = "web.blue"

[[edge.records]]
zone_id = "{zone}"
name = "split.example.com."
type = "A"
values = ["203.0.113.30"]
set_identifier = "green"
weight_from = "web.green"
"#
    ))
}

async fn plan_text(clients: &EdgeClients, cfg: &cutover_config::edge::EdgeConfig) -> (i32, String) {
    let mut out = Vec::new();
    let code = plan_with(clients, cfg, false, &mut out)
        .await
        .expect("plan succeeds");
    (code, String::from_utf8(out).expect("utf-8"))
}

fn row<'a>(table: &'a str, id_fragment: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(id_fragment))
        .unwrap_or_else(|| panic!("no row with `{id_fragment}` in:\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_on_empty_zone_creates_apply_makes_it_true_and_second_plan_is_clean() {
    let moto = moto();
    let sdk = sdk_config(&moto.endpoint()).await;
    let r53 = aws_sdk_route53::Client::new(&sdk);
    let zone = create_zone(&r53, "example.com.").await;
    let cfg = config(&zone, &moto.endpoint());
    let clients = EdgeClients::from_sdk_config(&sdk);

    // Plan: every declared record is a create; exit code 2.
    let (code, table) = plan_text(&clients, &cfg).await;
    assert_eq!(code, 2, "{table}");
    assert!(table.starts_with("KIND"), "{table}");
    let www = row(&table, "www.example.com.");
    assert!(www.starts_with("record"), "{www}");
    assert!(
        www.contains("ALIAS proxy-nlb-123.elb.us-east-1.amazonaws.com."),
        "{www}"
    );
    assert!(www.ends_with("create"), "{www}");
    assert!(row(&table, "api.example.com.").contains("203.0.113.10,203.0.113.11 ttl 60"));
    // The config split is blue 100 / green 0: weights 255 and 0.
    assert!(row(&table, "[blue]").contains("weight 255"), "{table}");
    assert!(row(&table, "[green]").contains("weight 0"), "{table}");
    assert!(
        table.contains("4 of 4 item(s) would change: 4 create."),
        "{table}"
    );

    // The same plan as JSON.
    let mut out = Vec::new();
    assert_eq!(plan_with(&clients, &cfg, true, &mut out).await.unwrap(), 2);
    let json: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!(json["changes_pending"], true);
    let items = json["items"].as_array().expect("items");
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["kind"], "record");
    assert_eq!(items[0]["action"], "create");
    assert_eq!(items[0]["actual"], serde_json::Value::Null);

    // Nothing was changed by planning.
    assert!(find(&list_records(&r53, &zone).await, "www.example.com.", None).is_none());

    // Apply creates them.
    let mut out = Vec::new();
    let code = apply_with(&clients, &cfg, Duration::from_secs(30), &mut out)
        .await
        .expect("apply succeeds");
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("4 record(s) upserted"), "{text}");
    let sets = list_records(&r53, &zone).await;
    let www = find(&sets, "www.example.com.", None).expect("www created");
    let alias = www.alias_target().expect("an alias record");
    assert_eq!(
        alias.dns_name().trim_end_matches('.'),
        "proxy-nlb-123.elb.us-east-1.amazonaws.com"
    );
    assert!(alias.evaluate_target_health());
    let api = find(&sets, "api.example.com.", None).expect("api created");
    assert_eq!(values(api), ["203.0.113.10", "203.0.113.11"]);
    assert_eq!(api.ttl(), Some(60));
    assert_eq!(
        find(&sets, "split.example.com.", Some("blue")).and_then(|r| r.weight()),
        Some(255)
    );
    assert_eq!(
        find(&sets, "split.example.com.", Some("green")).and_then(|r| r.weight()),
        Some(0)
    );

    // A second plan has nothing to do: exit 0.
    let (code, table) = plan_text(&clients, &cfg).await;
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("Nothing to do: AWS matches the config (4 item(s))."),
        "{table}"
    );
    assert!(row(&table, "www.example.com.").ends_with("none"));

    // And a second apply changes nothing.
    let mut out = Vec::new();
    apply_with(&clients, &cfg, Duration::from_secs(30), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("upserted"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_and_repaired_and_undeclared_records_are_left_alone() {
    let moto = moto();
    let sdk = sdk_config(&moto.endpoint()).await;
    let r53 = aws_sdk_route53::Client::new(&sdk);
    let zone = create_zone(&r53, "example.com.").await;
    let cfg = config(&zone, &moto.endpoint());
    let clients = EdgeClients::from_sdk_config(&sdk);
    apply_with(&clients, &cfg, Duration::from_secs(30), &mut Vec::new())
        .await
        .expect("first apply");

    // Behind cutover's back: api's addresses change, and a record the
    // config does not declare appears in the same zone.
    upsert_a(&r53, &zone, "api.example.com.", "198.51.100.99", 300).await;
    upsert_a(&r53, &zone, "other.example.com.", "198.51.100.7", 120).await;

    let (code, table) = plan_text(&clients, &cfg).await;
    assert_eq!(code, 2, "{table}");
    let api = row(&table, "api.example.com.");
    assert!(api.contains("198.51.100.99 ttl 300"), "actual shown: {api}");
    assert!(
        api.contains("203.0.113.10,203.0.113.11 ttl 60"),
        "desired shown: {api}"
    );
    assert!(api.ends_with("update"), "{api}");
    assert!(row(&table, "www.example.com.").ends_with("none"));
    assert!(!table.contains("other.example.com."), "{table}");
    assert!(
        table.contains("1 of 4 item(s) would change: 1 update."),
        "{table}"
    );

    apply_with(&clients, &cfg, Duration::from_secs(30), &mut Vec::new())
        .await
        .expect("repair");
    let sets = list_records(&r53, &zone).await;
    let api = find(&sets, "api.example.com.", None).unwrap();
    assert_eq!(values(api), ["203.0.113.10", "203.0.113.11"]);
    assert_eq!(api.ttl(), Some(60));
    let other = find(&sets, "other.example.com.", None).expect("undeclared record kept");
    assert_eq!(values(other), ["198.51.100.7"]);
    assert_eq!(other.ttl(), Some(120));
    assert_eq!(plan_text(&clients, &cfg).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_errors_carry_the_code_message_and_item() {
    let moto = moto();
    let sdk = sdk_config(&moto.endpoint()).await;
    let cfg = config("NOSUCHZONE1", &moto.endpoint());
    let clients = EdgeClients::from_sdk_config(&sdk);
    let err = plan_with(&clients, &cfg, false, &mut Vec::new())
        .await
        .expect_err("the zone does not exist");
    assert_eq!(err.aws_code(), Some("NoSuchHostedZone"), "{err}");
    let EdgeError::Aws {
        operation, item, ..
    } = &err
    else {
        panic!("not an AWS error: {err:?}");
    };
    assert_eq!(*operation, "ListResourceRecordSets");
    assert_eq!(item, "record NOSUCHZONE1 www.example.com. A");
    let shown = err.to_string();
    assert!(
        shown.starts_with("record NOSUCHZONE1 www.example.com. A: AWS ListResourceRecordSets failed: NoSuchHostedZone: "),
        "{shown}"
    );
}
