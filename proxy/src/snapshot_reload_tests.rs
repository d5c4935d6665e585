//! What a rebuild from the previous snapshot (a config reload) carries
//! over: backends that stay (re-weighted or not) with their state, warm-ups,
//! and a slow start in progress when the split did not change.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn config(split: &str, blue: &str) -> Vec<ServiceConfig> {
    let text = format!(
        "[services.web]\nsplit = {{ {split} }}\nslow_start = \"10s\"\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[services.web.pools.blue]\nbackends = [{blue}]\n[services.web.pools.green]\nbackends = [\"127.0.0.1:3\"]\n"
    );
    cutover_config::parse("t.toml", &text).unwrap().services
}

#[tokio::test]
async fn a_reweighted_backend_keeps_its_arc_and_its_warmup_and_draws_by_the_new_weight() {
    let m = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
    let signal = Arc::default();
    let two = "\"127.0.0.1:1\", \"127.0.0.1:2\"";
    let a = Snapshot::build(
        &config("blue = 1, green = 0", two),
        &[vec![1, 0]],
        1,
        None,
        &m,
        &signal,
    );
    let a = a.with_warmup(0, 0, 1, Instant::now()).unwrap();
    let reweighted = "\"127.0.0.1:1\", { addr = \"127.0.0.1:2\", weight = 4 }";
    let b = Snapshot::build(
        &config("blue = 1, green = 0", reweighted),
        &[vec![1, 0]],
        2,
        Some(&a),
        &m,
        &signal,
    );
    let (pa, pb) = (&a.services[0].pools[0], &b.services[0].pools[0]);
    for i in 0..2 {
        assert!(
            Arc::ptr_eq(&pa.backends[i], &pb.backends[i]),
            "backend {i} kept"
        );
    }
    assert_eq!(pb.weights(), &[1, 4]);
    assert!(pb.warmup(1).is_some(), "its warm-up goes on");
    assert!(pb.warming());
    // A backend removed and one added: the kept one is the same object.
    let c = Snapshot::build(
        &config("blue = 1, green = 0", "\"127.0.0.1:2\", \"127.0.0.1:9\""),
        &[vec![1, 0]],
        3,
        Some(&b),
        &m,
        &signal,
    );
    let pc = &c.services[0].pools[0];
    assert!(Arc::ptr_eq(&pb.backends[1], &pc.backends[0]));
    assert_eq!(pc.backends[1].addr, "127.0.0.1:9");
    assert_eq!(pc.weights(), &[1, 1]);
}

#[tokio::test]
async fn a_slow_start_in_progress_survives_a_rebuild_with_the_same_split() {
    let m = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
    let signal = Arc::default();
    let blue = "\"127.0.0.1:1\"";
    let services = config("blue = 100, green = 0", blue);
    let a = Snapshot::build(&services, &[vec![100, 0]], 1, None, &m, &signal);
    let now = Instant::now();
    let ramping = a.with_ramped_split(0, vec![0, 100], now);
    let ramping = ramping.step(now + Duration::from_secs(5)).unwrap();
    let share = ramping.services[0].effective().share(1);
    assert!(share > 0.0 && share < 1.0, "{share}");
    // Rebuilt (a timeout changed, say) with the split in force: the ramp goes on.
    let b = Snapshot::build(&services, &[vec![0, 100]], 3, Some(&ramping), &m, &signal);
    assert!(b.services[0].ramp().is_some());
    assert_eq!(b.services[0].effective().share(1), share);
    // Rebuilt with another split (the file's changed): in force at once,
    // and green, which lost its last share, gets fresh backends.
    let c = Snapshot::build(&services, &[vec![100, 0]], 4, Some(&b), &m, &signal);
    assert!(c.services[0].ramp().is_none());
    assert_eq!(c.services[0].effective().share(0), 1.0);
    let (gb, gc) = (&b.services[0].pools[1], &c.services[0].pools[1]);
    assert!(!Arc::ptr_eq(&gb.backends[0], &gc.backends[0]));
    let (bb, bc) = (&b.services[0].pools[0], &c.services[0].pools[0]);
    assert!(Arc::ptr_eq(&bb.backends[0], &bc.backends[0]));
}
