//! Elastic IP failover against moto: the address moves from instance A to
//! instance B when A's health URL stops answering, and stays on B when A
//! recovers. Health URLs point at loopback test servers through a tag
//! (moto's instance addresses are fake 10.x ones: never connected to).

#![cfg(feature = "edge")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::{DomainType, ResourceType, Tag, TagSpecification};
use bytes::Bytes;
use cutover_control::edge::reconcile::PassResult;
use cutover_control::edge::{ReconcilerOptions, SplitsFn};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use support::moto::{sdk_config, wait_for, Moto};
use support::{edge_config, reconciler};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A loopback `/readyz` that answers 200 while it runs.
struct HealthServer {
    port: u16,
    task: Option<JoinHandle<()>>,
}

impl HealthServer {
    async fn start() -> HealthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        HealthServer {
            port,
            task: Some(tokio::spawn(serve(listener))),
        }
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Serve again on the same port (bounded retry while the old socket
    /// goes away).
    async fn restart(&mut self) {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 100, "cannot rebind port {}: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.task = Some(tokio::spawn(serve(listener)));
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                    "ready",
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn run_instance(ec2: &aws_sdk_ec2::Client, image: &str, health_port: u16) -> String {
    let out = ec2
        .run_instances()
        .image_id(image)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Role").value("cutover-test").build())
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
    let moto = Moto::start();
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

    let mut health1 = HealthServer::start().await;
    let mut health2 = HealthServer::start().await;
    let id1 = run_instance(&ec2, &image, health1.port).await;
    let id2 = run_instance(&ec2, &image, health2.port).await;
    // A is the instance with the lower ID: the one the rule would prefer
    // if it ignored where the address is now.
    let (a, b, health_a, _health_b) = if id1 < id2 {
        (id1, id2, &mut health1, &mut health2)
    } else {
        (id2, id1, &mut health2, &mut health1)
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
candidates = {{ tags = {{ Role = "cutover-test" }} }}
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
    wait_for("the address to move to B", Duration::from_secs(30), || {
        let ec2 = ec2.clone();
        let alloc = alloc.clone();
        let b = b.clone();
        async move { associated(&ec2, &alloc).await.as_deref() == Some(b.as_str()) }
    })
    .await;
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
    health_a.restart().await;
    let seen = handle.status().passes;
    rec.wait_status("three passes with A healthy again", |s| {
        s.passes >= seen + 3 && s.last_result == Some(PassResult::Unchanged)
    })
    .await;
    assert_eq!(associated(&ec2, &alloc).await.as_deref(), Some(b.as_str()));

    rec.stop().await;
}
