//! Shared helpers of the edge tests.

#![allow(dead_code)]

pub mod reconciler;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_route53::config::Credentials;
pub use cutover_test_support::eventually;
pub use cutover_test_support::moto::{moto, unique};

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use cutover_config::edge::EdgeConfig;

/// The services part every edge test config carries (weight_from needs a
/// service; the listener is never bound by these tests).
pub const SERVICES: &str = r#"
[services.web]
split = { blue = 100, green = 0 }

[[services.web.listeners]]
listen = "127.0.0.1:18080"

[services.web.pools.blue]
backends = ["127.0.0.1:18081"]

[services.web.pools.green]
backends = ["127.0.0.1:18082"]
"#;

/// Parse `[edge]` text (after [`SERVICES`]) through the real config loader.
pub fn edge_config(edge: &str) -> EdgeConfig {
    let text = format!("{SERVICES}\n{edge}");
    match cutover_config::parse("test.toml", &text) {
        Ok(c) => c.edge.expect("[edge] section"),
        Err(e) => panic!("test config does not validate:\n{e}\n{text}"),
    }
}

pub async fn create_zone(r53: &aws_sdk_route53::Client, name: &str) -> String {
    let out = r53
        .create_hosted_zone()
        .name(name)
        .caller_reference(unique(&format!("cutover-test-{name}")))
        .send()
        .await
        .expect("CreateHostedZone");
    let id = out.hosted_zone().expect("hosted zone").id();
    id.trim_start_matches("/hostedzone/").to_string()
}

/// Every record set of the zone: (name, type, set identifier, rrset).
pub async fn list_records(r53: &aws_sdk_route53::Client, zone: &str) -> Vec<ResourceRecordSet> {
    let out = r53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .expect("ListResourceRecordSets");
    out.resource_record_sets().to_vec()
}

pub fn find<'a>(
    sets: &'a [ResourceRecordSet],
    name: &str,
    set_id: Option<&str>,
) -> Option<&'a ResourceRecordSet> {
    sets.iter().find(|r| {
        r.name().trim_end_matches('.') == name.trim_end_matches('.')
            && r.r#type() == &RrType::A
            && r.set_identifier() == set_id
    })
}

/// UPSERT a plain A record, as a console edit would.
pub async fn upsert_a(
    r53: &aws_sdk_route53::Client,
    zone: &str,
    name: &str,
    value: &str,
    ttl: i64,
) {
    let rrset = ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::A)
        .ttl(ttl)
        .resource_records(
            ResourceRecord::builder()
                .value(value)
                .build()
                .expect("resource record"),
        )
        .build()
        .expect("record set");
    r53.change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(ChangeAction::Upsert)
                        .resource_record_set(rrset)
                        .build()
                        .expect("change"),
                )
                .build()
                .expect("change batch"),
        )
        .send()
        .await
        .expect("ChangeResourceRecordSets");
}

pub fn values(r: &ResourceRecordSet) -> Vec<String> {
    r.resource_records()
        .iter()
        .map(|v| v.value().to_string())
        .collect()
}

/// An SDK config for tests: explicit fake credentials, region and endpoint
/// (never the process environment, tests run in parallel).
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "cutover-tests",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}
