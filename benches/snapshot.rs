// Measures building a routing snapshot (fresh and reusing the previous one's backends) and a split change: `with_split` plus the ArcSwap store (2 pools of 3 and of 100 backends).

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use cutover_proxy::{ProxyMetrics, Snapshot};

mod common;

fn snapshot(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _guard = rt.enter();

    let mut group = c.benchmark_group("snapshot");
    for n in [3usize, 100] {
        let config = common::two_pools(n);
        let registry = prometheus::Registry::new();
        let metrics = ProxyMetrics::new(&registry).expect("metrics");
        let signal = std::sync::Arc::new(cutover_proxy::outlier::Signal::default());
        let splits: Vec<Vec<u32>> = config.services.iter().map(|s| s.split.clone()).collect();

        group.bench_with_input(BenchmarkId::new("build_fresh", n), &n, |b, _| {
            b.iter(|| {
                black_box(Snapshot::build(
                    &config.services,
                    &splits,
                    1,
                    None,
                    &metrics,
                    &signal,
                ))
            })
        });

        let prev = Snapshot::build(&config.services, &splits, 1, None, &metrics, &signal);
        group.bench_with_input(BenchmarkId::new("build_reusing_prev", n), &n, |b, _| {
            b.iter(|| {
                black_box(Snapshot::build(
                    &config.services,
                    &splits,
                    2,
                    Some(&prev),
                    &metrics,
                    &signal,
                ))
            })
        });

        // A flip as the control plane makes it: derive and swap in.
        let swap = Arc::new(ArcSwap::from_pointee(prev));
        let mut flip = false;
        group.bench_with_input(BenchmarkId::new("with_split_and_swap", n), &n, |b, _| {
            b.iter(|| {
                flip = !flip;
                let split = if flip { vec![0, 100] } else { vec![100, 0] };
                let next = swap.load().with_split(0, split);
                swap.store(Arc::new(next));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
