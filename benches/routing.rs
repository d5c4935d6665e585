// Measures the per-request routing decision: snapshot load from the ArcSwap, ticket to pool, weighted P2C backend pick (2 pools of 3 and of 100 backends).

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use cutover_proxy::ticket::Split;
use cutover_proxy::{ProxyMetrics, Snapshot, Ticket};

mod common;

fn routing(c: &mut Criterion) {
    // A runtime context, as the proxy has when it builds snapshots.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _guard = rt.enter();

    let mut group = c.benchmark_group("route");
    for n in [3usize, 100] {
        let config = common::two_pools(n);
        let registry = prometheus::Registry::new();
        let metrics = ProxyMetrics::new(&registry).expect("metrics");
        let signal = std::sync::Arc::new(cutover_proxy::outlier::Signal::default());
        let splits: Vec<Vec<u32>> = config.services.iter().map(|s| s.split.clone()).collect();
        let snap = Snapshot::build(&config.services, &splits, 1, None, &metrics, &signal);
        let swap = Arc::new(ArcSwap::from_pointee(snap));
        let mut ticket = Ticket(0x1234_5678_9abc_def0);

        // What `forward::handle` does before it builds the upstream request.
        group.bench_with_input(BenchmarkId::new("decision", n), &n, |b, _| {
            b.iter(|| {
                ticket = Ticket(ticket.0.wrapping_add(0x9e37_79b9_7f4a_7c15));
                let service = {
                    let snap = swap.load();
                    snap.services.first().cloned()
                };
                let service = service.expect("service");
                let pool = service.pools[service.pool_for(black_box(ticket))].clone();
                let backend = pool.pick().cloned();
                black_box(backend)
            })
        });

        let snap = swap.load_full();
        let pool = snap.services[0].pools[0].clone();
        group.bench_with_input(BenchmarkId::new("pick", n), &n, |b, _| {
            b.iter(|| black_box(pool.pick().map(|b| b.in_flight())))
        });
    }
    group.bench_function("snapshot_load", |b| {
        let swap = ArcSwap::from_pointee(Snapshot::empty());
        b.iter(|| black_box(swap.load().generation))
    });
    let split = Split::new(vec![90, 10]);
    let mut t = 0u64;
    group.bench_function("ticket_to_pool", |b| {
        b.iter(|| {
            t = t.wrapping_add(0x9e37_79b9_7f4a_7c15);
            black_box(split.pool_for(Ticket(black_box(t))))
        })
    });
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
