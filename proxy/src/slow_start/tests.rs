//! Slow start: the ramp arithmetic, and the snapshots it builds (ramped
//! splits, steps, warm-ups) through the snapshot's public API.

use std::sync::Arc;
use std::time::SystemTime;

use super::*;
use crate::metrics::ProxyMetrics;
use crate::snapshot::{Health, Snapshot};

fn down(reason: &str) -> Health {
    Health::Down {
        reason: reason.into(),
        since: SystemTime::now(),
    }
}

#[test]
fn steps_are_a_fiftieth_of_the_window_and_at_least_50ms() {
    assert_eq!(
        step_interval(Duration::from_secs(30)),
        Duration::from_millis(600)
    );
    assert_eq!(
        step_interval(Duration::from_secs(1)),
        Duration::from_millis(50)
    );
    assert_eq!(
        step_interval(Duration::from_millis(10)),
        Duration::from_millis(50)
    );
}

#[test]
fn a_split_ramp_runs_linearly_and_stands_still_while_paused() {
    let t0 = Instant::now();
    let w = Duration::from_secs(10);
    let from = Split::new(vec![100, 0]);
    let to = Split::new(vec![50, 50]);
    let r = SplitRamp::start(from.bounds().clone(), t0);
    assert_eq!(r.bounds(to.bounds(), w), *from.bounds());
    let r = r.advanced(t0 + Duration::from_secs(2), false);
    assert!((r.bounds(to.bounds(), w).share(1) - 0.1).abs() < 1e-9);
    assert!((r.progress(w) - 0.2).abs() < 1e-9);
    // Paused for 5 s: no progress.
    let r = r.advanced(t0 + Duration::from_secs(7), true);
    assert!((r.progress(w) - 0.2).abs() < 1e-9);
    assert!(r.paused);
    let r = r.advanced(t0 + Duration::from_secs(11), false);
    assert!((r.progress(w) - 0.6).abs() < 1e-9);
    assert!(!r.done(w));
    let r = r.advanced(t0 + Duration::from_secs(20), false);
    assert!(r.done(w));
    assert_eq!(r.bounds(to.bounds(), w), *to.bounds());
    assert_eq!(r.progress(w), 1.0);
}

#[test]
fn only_more_traffic_for_a_cold_or_warming_pool_ramps() {
    let s = |w: &[u32]| Split::new(w.to_vec());
    let (b100, b90, b50, b0) = (s(&[100, 0]), s(&[90, 10]), s(&[50, 50]), s(&[0, 100]));
    // From weight 0: a canary, a switch, and back to a blue at 0.
    assert!(ramps(&b100, b100.bounds(), &b90));
    assert!(ramps(&b100, b100.bounds(), &b0));
    assert!(ramps(&b0, b0.bounds(), &b50));
    // A warm pool raised, and traffic taken away: at once.
    assert!(!ramps(&b90, b90.bounds(), &b50));
    assert!(!ramps(&b50, b50.bounds(), &b100));
    assert!(!ramps(&b50, b50.bounds(), &b0));
    // Mid-ramp from 100/0 to 50/50 (green at 20%): raising green, even
    // to less than 50 but more than it gets now, ramps on; less than it
    // gets now goes at once.
    let mid = Bounds::between(b100.bounds(), b50.bounds(), 2, 5);
    assert!((mid.share(1) - 0.2).abs() < 1e-9);
    assert!(ramps(&b50, &mid, &b0));
    assert!(ramps(&b50, &mid, &s(&[70, 30])));
    assert!(!ramps(&b50, &mid, &b90));
    assert!(!ramps(&b50, &mid, &b100));
    // Mid-ramp from 100/0 to 0/100 (blue at 60%, weight 0): more for
    // blue, which still has traffic, is at once.
    let mid = Bounds::between(b100.bounds(), b0.bounds(), 2, 5);
    assert!(!ramps(&b0, &mid, &b100));
    assert!(!ramps(&b0, &mid, &s(&[70, 30])));
    assert!(ramps(&b0, &mid, &s(&[10, 90])), "green still warming");
    // Three pools: c from 0 ramps, whatever a and b do.
    assert!(ramps(
        &s(&[1, 1, 0]),
        s(&[1, 1, 0]).bounds(),
        &s(&[0, 1, 1])
    ));
    assert!(!ramps(
        &s(&[1, 1, 1]),
        s(&[1, 1, 1]).bounds(),
        &s(&[0, 1, 1])
    ));
}

#[test]
fn a_warming_backend_weighs_a_growing_part_of_its_weight() {
    let t0 = Instant::now();
    let w = Duration::from_secs(10);
    let up = Warmup::start(t0);
    assert_eq!(up.weight(3), 1, "never 0: it can still be picked");
    let mid = up.at(t0 + Duration::from_secs(4), w).unwrap();
    assert_eq!(mid.permille, 400);
    assert_eq!(mid.weight(3), 1200);
    assert_eq!(mid.weight(0), 0);
    assert!(up.at(t0 + w, w).is_none(), "done: its full weight");
    assert!(up.at(t0, Duration::ZERO).is_none());
}

/// web: blue (two backends) and green (one), with `extra` in the service.
fn web(extra: &str, split: &[u32]) -> Snapshot {
    let reg = prometheus::Registry::new();
    let m = ProxyMetrics::new(&reg).unwrap();
    let config = cutover_config::parse(
        "t.toml",
        &format!("[services.web]\nsplit = {{ blue = 1, green = 1 }}\n{extra}\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[services.web.pools.blue]\nbackends = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n[services.web.pools.green]\nbackends = [\"127.0.0.1:3\"]\n"),
    )
    .unwrap();
    Snapshot::build(
        &config.services,
        &[split.to_vec()],
        5,
        None,
        &m,
        &std::sync::Arc::default(),
    )
}

fn green_share(s: &Snapshot) -> f64 {
    s.services[0].effective().share(1)
}

const TEN_S: &str = "slow_start = \"10s\"";

#[tokio::test]
async fn a_ramped_split_moves_tickets_in_steps_with_the_same_backends() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let snap = web(TEN_S, &[100, 0]);
    assert!(snap.step(t0).is_none(), "nothing ramps");
    assert_eq!(snap.step_interval(), None);
    let next = snap.with_ramped_split(0, vec![50, 50], t0);
    assert_eq!(next.generation, 6, "the change bumps the generation once");
    assert_eq!(next.services[0].split.weights(), [50, 50]);
    assert_eq!(green_share(&next), 0.0, "no ticket moved yet");
    assert_eq!(next.step_interval(), Some(Duration::from_millis(200)));
    let mid = next.step(at(2000)).unwrap();
    assert_eq!(mid.generation, 6, "steps keep the generation");
    assert!(
        (green_share(&mid) - 0.1).abs() < 1e-9,
        "{}",
        green_share(&mid)
    );
    assert!(
        (mid.services[0]
            .ramp()
            .unwrap()
            .progress(Duration::from_secs(10))
            - 0.2)
            .abs()
            < 1e-9
    );
    for (a, b) in snap.services[0].pools.iter().zip(&mid.services[0].pools) {
        assert!(Arc::ptr_eq(&a.backends[0], &b.backends[0]));
    }
    let done = mid.step(at(10_000)).unwrap();
    assert_eq!(
        done.services[0].effective(),
        done.services[0].split.bounds()
    );
    assert!(done.services[0].ramp().is_none());
    assert!(!done.services[0].ramping());
    assert!(done.step(at(11_000)).is_none(), "the ramp is over");
    // Without slow_start a ramp (which the controller never starts)
    // ends at the first step.
    let plain = web("", &[100, 0]).with_ramped_split(0, vec![50, 50], t0);
    let stepped = plain.step(at(1)).unwrap();
    assert!((green_share(&stepped) - 0.5).abs() < 1e-9);
}

#[tokio::test]
async fn a_pool_gets_fresh_backends_when_a_ramp_takes_its_last_ticket() {
    let t0 = Instant::now();
    let snap = web(TEN_S, &[100, 0]).with_ramped_split(0, vec![0, 100], t0);
    let blue = |s: &Snapshot| s.services[0].pools[0].backends[0].clone();
    let mid = snap.step(t0 + Duration::from_secs(9)).unwrap();
    assert!(
        Arc::ptr_eq(&blue(&snap), &blue(&mid)),
        "blue still has tickets"
    );
    assert!(mid.services[0].effective().has_share(0));
    let done = mid.step(t0 + Duration::from_secs(10)).unwrap();
    assert!(!done.services[0].effective().has_share(0));
    assert!(
        !Arc::ptr_eq(&blue(&mid), &blue(&done)),
        "blue lost its last ticket"
    );
    let green = |s: &Snapshot| s.services[0].pools[1].backends[0].clone();
    assert!(Arc::ptr_eq(&green(&mid), &green(&done)));
    // At once (no ramp): at the change, as before.
    let now = web(TEN_S, &[100, 0]);
    let switched = now.with_split(0, vec![0, 100]);
    assert!(!Arc::ptr_eq(&blue(&now), &blue(&switched)));
}

#[tokio::test]
async fn a_ramp_to_a_pool_with_no_backend_up_waits_for_it() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let snap = web(TEN_S, &[100, 0])
        .with_health(0, 1, 0, down("connect refused"))
        .unwrap()
        .with_ramped_split(0, vec![50, 50], t0);
    let waiting = snap.step(at(5)).unwrap();
    assert_eq!(green_share(&waiting), 0.0);
    assert!(waiting.services[0].ramp().unwrap().paused);
    let up = waiting.with_health(0, 1, 0, Health::Up).unwrap();
    let on = up.step(at(7)).unwrap();
    assert!(!on.services[0].ramp().unwrap().paused);
    assert!(
        (green_share(&on) - 0.1).abs() < 1e-9,
        "2 s of 10 since it came up"
    );
}

#[tokio::test]
async fn a_backend_back_up_warms_up_over_the_window() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let pool = |s: &Snapshot| s.services[0].pools[0].clone();
    let snap = web(TEN_S, &[1, 0]);
    let back = snap
        .with_health(0, 0, 1, down("connect refused"))
        .unwrap()
        .with_health(0, 0, 1, Health::Up)
        .unwrap();
    assert!(back.with_warmup(0, 0, 9, t0).is_none(), "no such backend");
    let warm = back.with_warmup(0, 0, 1, t0).unwrap();
    assert_eq!(warm.generation, 5);
    let p = pool(&warm);
    assert!(p.warming() && warm.services[0].ramping());
    assert_eq!(p.effective_weight(0), 1.0);
    assert_eq!(p.effective_weight(1), 0.001);
    assert_eq!(p.available(), 2);
    let picked = (0..2000)
        .filter(|_| Arc::ptr_eq(p.pick().unwrap(), &p.backends[1]))
        .count();
    assert!(
        picked < 40,
        "{picked} of 2000 picks at the start of its warm-up"
    );
    let mid = warm.step(at(5)).unwrap();
    assert_eq!(pool(&mid).effective_weight(1), 0.5);
    assert_eq!(pool(&mid).warmup(1).map(|w| w.permille), Some(500));
    assert!(Arc::ptr_eq(&pool(&mid).backends[1], &p.backends[1]));
    let done = mid.step(at(10)).unwrap();
    assert_eq!(pool(&done).effective_weight(1), 1.0);
    assert!(!pool(&done).warming());
    assert!(done.step(at(11)).is_none());
    // Down again mid warm-up: it stops warming (and starts over when
    // it is back).
    let again = mid.with_health(0, 0, 1, down("x")).unwrap();
    assert!(!pool(&again).warming());
    assert_eq!(pool(&again).effective_weight(1), 0.0);
    assert!(again.with_warmup(0, 0, 1, t0).is_none(), "not up");
    // Without slow_start: no warm-up.
    assert!(web("", &[1, 0]).with_warmup(0, 0, 1, t0).is_none());
}
