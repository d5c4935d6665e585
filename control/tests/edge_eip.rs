//! Elastic IP failover against moto: the address moves from instance A to
//! instance B when A's health URL stops answering, and stays on B when A
//! recovers. Health URLs point at loopback test servers through a tag
//! (moto's instance addresses are fake 10.x ones: never connected to).

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]
#![cfg(feature = "edge")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::{DomainType, ResourceType, Tag, TagSpecification};
use cutover_control::edge::reconcile::PassResult;
use cutover_control::edge::{ReconcilerOptions, SplitsFn};
use cutover_test_support::backend::health::HealthServer;
use support::{edge_config, reconciler};
use support::{eventually, moto, sdk_config, unique};

async fn run_instance(
    ec2: &aws_sdk_ec2::Client,
    image: &str,
    role: &str,
    health_port: u16,
) -> String {
    let out = ec2
        .run_instances()
        .image_id(image)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Role").value(role).build())
                .tags(
                    Tag::builder()
                        .key("HealthPort")
                        .value(health_port.to_string())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("RunInstances");
    out.instances()[0]
        .instance_id()
        .expect("instance id")
        .to_string()
}

async fn associated(ec2: &aws_sdk_ec2::Client, alloc: &str) -> Option<String> {
    let out = ec2
        .describe_addresses()
        .allocation_ids(alloc)
        .send()
        .await
        .expect("DescribeAddresses");
    out.addresses()
        .first()
        .and_then(|a| a.instance_id())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eip_moves_off_a_failed_instance_and_does_not_move_back() {
    let moto = moto();
    let sdk = sdk_config(&moto.endpoint()).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);

    let image = ec2
        .describe_images()
        .send()
        .await
        .expect("DescribeImages")
        .images()
        .iter()
        .find_map(|i| i.image_id().map(str::to_string))
        .expect("moto ships AMIs");

    // moto is shared: this test's instances carry a role no other has.
    let role = unique("cutover-test");
    let health1 = HealthServer::start().await;
    let health2 = HealthServer::start().await;
    let id1 = run_instance(&ec2, &image, &role, health1.port()).await;
    let id2 = run_instance(&ec2, &image, &role, health2.port()).await;
    // A is the instance with the lower ID: the one the rule would prefer
    // if it ignored where the address is now.
    let (a, b, health_a, _health_b) = if id1 < id2 {
        (id1, id2, &health1, &health2)
    } else {
        (id2, id1, &health2, &health1)
    };

    let alloc = ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .send()
        .await
        .expect("AllocateAddress")
        .allocation_id()
        .expect("allocation id")
        .to_string();
    ec2.associate_address()
        .allocation_id(&alloc)
        .instance_id(&a)
        .send()
        .await
        .expect("AssociateAddress");

    let cfg = edge_config(&format!(
        r#"
[edge]
interval = "200ms"

[[edge.elastic_ips]]
allocation_id = "{alloc}"
candidates = {{ tags = {{ Role = "{role}" }} }}
health_url = "http://127.0.0.1:{{tag:HealthPort}}/readyz"
health_timeout = "500ms"
"#
    ));
    let splits: SplitsFn = Arc::new(Vec::new);
    let (_gen_tx, gen_rx) = tokio::sync::watch::channel(0u64);
    let opts = ReconcilerOptions {
        retry_initial: Duration::from_millis(100),
        ..ReconcilerOptions::default()
    };
    let mut rec = reconciler::start(cfg, &sdk, opts, splits, gen_rx);

    // Both healthy: it stays on A.
    rec.wait_status("a first pass", |s| s.passes >= 1).await;
    let handle = &rec.handle;
    assert_eq!(
        handle.status().last_result,
        Some(PassResult::Unchanged),
        "{:?}",
        handle.status()
    );
    assert_eq!(associated(&ec2, &alloc).await.as_deref(), Some(a.as_str()));

    // A's health URL stops answering: the address moves to B.
    health_a.stop();
    let moved = eventually(Duration::from_secs(30), || {
        let ec2 = ec2.clone();
        let alloc = alloc.clone();
        let b = b.clone();
        async move { associated(&ec2, &alloc).await.as_deref() == Some(b.as_str()) }
    })
    .await;
    assert!(moved, "timed out waiting for the address to move to B");
    let s = handle.status();
    let moved = s
        .last_changes
        .iter()
        .find(|i| i.id.starts_with(&alloc))
        .expect("the move is in the status");
    assert_eq!(moved.actual.as_deref(), Some(a.as_str()));
    assert_eq!(moved.desired.as_deref(), Some(b.as_str()));
    assert!(
        moved
            .note
            .as_deref()
            .unwrap_or("")
            .contains(&format!("{a} unhealthy")),
        "{moved:?}"
    );

    // A recovers; B is healthy too: no move back (no flapping). Several
    // passes with both healthy must leave it on B.
    health_a.restart();
    let seen = handle.status().passes;
    rec.wait_status("three passes with A healthy again", |s| {
        s.passes >= seen + 3 && s.last_result == Some(PassResult::Unchanged)
    })
    .await;
    assert_eq!(associated(&ec2, &alloc).await.as_deref(), Some(b.as_str()));

    rec.stop().await;
}
