//! The controller's slow start: ramped changes, steps, warm-ups.

use std::time::{Duration, SystemTime};

use cutover_proxy::{Health, ProxyMetrics};
use prometheus::Registry;

use super::*;
use crate::controller::{Action, ChangeOutcome, ChangeRequest};
use crate::ControlError;

/// web with blue (one backend) and green (two), 100/0, and `extra`; a
/// state file in `dir`.
fn controller(extra: &str, dir: &tempfile::TempDir) -> (Arc<Controller>, Registry) {
    let state = dir.path().join("state.json");
    let text = format!(
        "state_file = {state:?}\n[services.web]\nsplit = {{ blue = 100, green = 0 }}\n{extra}\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[services.web.pools.blue]\nbackends = [\"127.0.0.1:1\"]\n[services.web.pools.green]\nbackends = [\"127.0.0.1:2\", \"127.0.0.1:3\"]\n"
    );
    let config = cutover_config::parse("t.toml", &text).unwrap();
    let registry = Registry::new();
    let metrics = Arc::new(ProxyMetrics::new(&registry).unwrap());
    (
        Arc::new(Controller::new(config, &registry, metrics).unwrap()),
        registry,
    )
}

const TEN_S: &str = "slow_start = \"10s\"";

/// An operator change (`apply` is async: its state-file write runs on a
/// blocking thread), on a runtime of its own.
fn change(c: &Arc<Controller>, action: Action) -> Result<ChangeOutcome, ControlError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(c.apply(ChangeRequest {
        service: "web".into(),
        action,
        reason: None,
        expect_generation: None,
        expect_run_id: None,
        who: "test".into(),
        source: None,
        requested_by: None,
        force: true,
    }))
}

fn split(blue: i64, green: i64) -> Action {
    Action::Split(vec![("blue".into(), blue), ("green".into(), green)])
}

fn green(c: &Controller) -> f64 {
    c.snapshot().load().services[0].effective().share(1)
}

/// When the ramp in force began (the change starts it after its state
/// file write, on its own clock).
fn ramp_start(c: &Controller) -> Instant {
    let snap = c.snapshot().load_full();
    snap.services[0].ramp().map_or_else(Instant::now, |r| r.at)
}

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-3
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn a_change_from_weight_zero_ramps_in_steps_that_keep_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let (c, registry) = controller(TEN_S, &dir);
    let mut generation = c.subscribe();
    let mut routing = c.subscribe_routing();
    assert_eq!(c.step_ramps(Instant::now()), None, "nothing ramps");
    let out = change(&c, split(50, 50)).unwrap();
    let t0 = ramp_start(&c);
    assert_eq!(out.slow_start.as_deref(), Some("10s"));
    assert_eq!(out.generation, 2);
    assert_eq!(green(&c), 0.0, "no ticket moved at the change");
    assert!(generation.has_changed().unwrap() && routing.has_changed().unwrap());
    generation.borrow_and_update();
    routing.borrow_and_update();

    let next = c.step_ramps(t0 + secs(5.0));
    assert_eq!(next, Some(Duration::from_millis(200)), "10 s / 50");
    assert!(near(green(&c), 0.25), "{}", green(&c));
    let snap = c.snapshot().load_full();
    assert_eq!(snap.generation, 2);
    assert!(
        !generation.has_changed().unwrap(),
        "a step is no operator change"
    );
    assert!(routing.has_changed().unwrap(), "a step moved tickets");
    routing.borrow_and_update();
    let share = |pool: &str| {
        cutover_test_support::Metrics::from_registry(&registry).value(
            "cutover_effective_share",
            &[("service", "web"), ("pool", pool)],
        )
    };
    assert!(
        share("green").is_some_and(|s| near(s, 0.25)),
        "{:?}",
        share("green")
    );
    // The audit and the state file hold the target, never a step.
    let last = c.audit().last().cloned().unwrap();
    assert_eq!(last.split, [("blue".into(), 50), ("green".into(), 50)]);
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["generation"], 2);
    assert_eq!(
        state["services"][0]["split"],
        serde_json::json!([["blue", 50], ["green", 50]])
    );

    assert_eq!(c.step_ramps(t0 + secs(10.1)), None, "the ramp is over");
    assert!(near(green(&c), 0.5));
    assert!(c.snapshot().load().services[0].ramp().is_none());
    assert_eq!(c.audit().len(), 1);
}

#[test]
fn without_slow_start_every_change_is_in_force_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = controller("", &dir);
    let out = change(&c, split(50, 50)).unwrap();
    assert_eq!(out.slow_start, None);
    assert!(near(green(&c), 0.5));
    assert_eq!(c.step_ramps(Instant::now()), None);
}

#[test]
fn a_rollback_and_taking_traffic_away_are_in_force_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = controller(TEN_S, &dir);
    change(&c, split(50, 50)).unwrap();
    let t0 = ramp_start(&c);
    c.step_ramps(t0 + secs(5.0));
    assert!(near(green(&c), 0.25));
    let out = change(&c, Action::Rollback).unwrap();
    assert_eq!(out.slow_start, None);
    assert_eq!(green(&c), 0.0, "a rollback is at once");
    assert!(c.snapshot().load().services[0].ramp().is_none());

    let t1 = Instant::now();
    change(&c, split(50, 50)).unwrap();
    c.step_ramps(t1 + secs(10.1));
    assert!(near(green(&c), 0.5));
    // Green is warm now: less for it, or more, is at once.
    assert_eq!(change(&c, split(90, 10)).unwrap().slow_start, None);
    assert!(near(green(&c), 0.1));
    assert_eq!(change(&c, split(50, 50)).unwrap().slow_start, None);
    assert!(near(green(&c), 0.5));
    // Blue from 0 ramps: a switch back to blue without a rollback.
    assert_eq!(
        change(&c, Action::Switch("green".into()))
            .unwrap()
            .slow_start,
        None
    );
    assert_eq!(
        change(&c, Action::Switch("blue".into()))
            .unwrap()
            .slow_start
            .as_deref(),
        Some("10s")
    );
    assert!(near(green(&c), 1.0));
}

#[test]
fn a_change_mid_ramp_ramps_on_from_where_tickets_map_now() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = controller(TEN_S, &dir);
    change(&c, split(50, 50)).unwrap();
    let t0 = ramp_start(&c);
    c.step_ramps(t0 + secs(5.0));
    assert!(near(green(&c), 0.25));
    // More for green while it warms: a new ramp from 25%, not from 0
    // nor from 50.
    let out = change(&c, Action::Switch("green".into())).unwrap();
    let t1 = ramp_start(&c);
    assert_eq!(out.slow_start.as_deref(), Some("10s"));
    assert!(near(green(&c), 0.25), "{}", green(&c));
    c.step_ramps(t1 + secs(5.0));
    assert!(near(green(&c), 0.625), "{}", green(&c));
    // Less for green than it gets now: at once.
    let out = change(&c, split(70, 30)).unwrap();
    assert_eq!(out.slow_start, None);
    assert!(near(green(&c), 0.3));
    assert_eq!(c.step_ramps(Instant::now()), None);
}

#[test]
fn a_ramp_to_a_pool_with_no_backend_up_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = controller(TEN_S, &dir);
    let down = || Health::Down {
        reason: "connect refused".into(),
        since: SystemTime::now(),
    };
    for b in ["127.0.0.1:2", "127.0.0.1:3"] {
        assert!(c.set_health("web", "green", b, down()));
    }
    change(&c, split(50, 50)).unwrap(); // forced
    let t0 = ramp_start(&c);
    c.step_ramps(t0 + secs(5.0));
    assert_eq!(green(&c), 0.0, "no ticket goes to a dead pool");
    let ramp = |c: &Controller| c.snapshot().load().services[0].ramp().cloned();
    assert!(ramp(&c).unwrap().paused);
    // Back up: it warms up, and the ramp's clock runs again.
    assert!(c.set_health("web", "green", "127.0.0.1:2", Health::Up));
    c.step_ramps(t0 + secs(7.0));
    assert!(near(green(&c), 0.1), "2 s of 10: {}", green(&c));
    assert!(!ramp(&c).unwrap().paused);
}

#[test]
fn a_backend_back_up_warms_up_and_so_does_one_back_from_ejection() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = controller(TEN_S, &dir);
    let down = Health::Down {
        reason: "answered 500".into(),
        since: SystemTime::now(),
    };
    assert!(c.set_health("web", "green", "127.0.0.1:3", down));
    let t0 = Instant::now();
    assert!(c.set_health("web", "green", "127.0.0.1:3", Health::Up));
    let weight = |c: &Controller| c.snapshot().load().services[0].pools[1].effective_weight(1);
    assert_eq!(weight(&c), 0.001);
    assert_eq!(c.snapshot().load().generation, 1);
    let routing = c.subscribe_routing();
    assert_eq!(
        c.step_ramps(t0 + secs(4.0)),
        Some(Duration::from_millis(200))
    );
    assert!((weight(&c) - 0.4).abs() < 0.002, "{}", weight(&c));
    assert!(!routing.has_changed().unwrap(), "no ticket moved");
    assert_eq!(c.step_ramps(t0 + secs(10.1)), None);
    assert_eq!(weight(&c), 1.0);
    // What passive ejection calls when a backend returns.
    assert!(c.warm_up("web", "green", "127.0.0.1:2"));
    assert!(c.snapshot().load().services[0].pools[1].warmup(0).is_some());
    assert!(!c.warm_up("web", "green", "127.0.0.1:9"), "no such backend");
    let (plain, _) = controller("", &dir);
    assert!(
        !plain.warm_up("web", "green", "127.0.0.1:2"),
        "no slow start"
    );
}
