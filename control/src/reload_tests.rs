//! Reloads against a real state file (in a temp dir): what carries over,
//! what changes, what is refused.

use std::sync::Arc;

use cutover_proxy::{Health, ProxyMetrics};
use prometheus::Registry;

use super::*;
use crate::controller::{Action, ChangeRequest};

fn text(state: &std::path::Path, timeouts: &str, split: &str, blue: &str, green: &str) -> String {
    format!(
        "state_file = {:?}\n[services.web]\nsplit = {{ {split} }}\ntimeouts = {{ {timeouts} }}\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[services.web.pools.blue]\nbackends = [{blue}]\n[services.web.pools.green]\nbackends = [{green}]\n",
        state.display().to_string()
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    state: std::path::PathBuf,
    registry: Registry,
    controller: Arc<Controller>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let config = cutover_config::parse(
        "t.toml",
        &text(
            &state,
            "",
            "blue = 100, green = 0",
            "\"127.0.0.1:1\", \"127.0.0.1:2\"",
            "\"127.0.0.1:3\"",
        ),
    )
    .unwrap();
    let registry = Registry::new();
    let metrics = Arc::new(ProxyMetrics::new(&registry).unwrap());
    let controller = Arc::new(Controller::new(config, &registry, metrics).unwrap());
    Fixture {
        _dir: dir,
        state,
        registry,
        controller,
    }
}

fn parse(f: &Fixture, timeouts: &str, split: &str, blue: &str, green: &str) -> Config {
    cutover_config::parse("t.toml", &text(&f.state, timeouts, split, blue, green)).unwrap()
}

fn metrics_text(r: &Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&r.gather())
        .unwrap()
}

#[tokio::test]
async fn a_timeout_change_keeps_the_operators_switch_and_a_file_split_change_applies() {
    let f = fixture();
    let c = &f.controller;
    c.apply(ChangeRequest {
        service: "web".into(),
        action: Action::Switch("green".into()),
        reason: None,
        expect_generation: None,
        expect_run_id: None,
        who: "t".into(),
        source: None,
        requested_by: None,
        force: false,
    })
    .await
    .unwrap();
    let blue = "\"127.0.0.1:1\", \"127.0.0.1:2\"";
    let green = "\"127.0.0.1:3\"";
    let new = parse(&f, "connect = \"1s\"", "blue = 100, green = 0", blue, green);
    let report = c.reload(new, "test").await.unwrap();
    assert!(report.changed);
    assert_eq!(report.changes, vec!["services.web: timeouts changed"]);
    assert_eq!(report.generation, 3);
    let snap = c.snapshot().load_full();
    assert_eq!(snap.services[0].split.weights(), &[0, 100], "switch kept");
    assert_eq!(
        snap.services[0].config.timeouts.connect,
        std::time::Duration::from_secs(1)
    );
    // The state file says so too: a restart comes back to green.
    let st = crate::state::load(&f.state).unwrap().unwrap();
    assert_eq!(st.generation, 3);
    assert_eq!(st.services[0].split[1], ("green".to_string(), 100));
    // The file's split changes: it applies, and the rollback is gone.
    let new = parse(&f, "connect = \"1s\"", "blue = 50, green = 50", blue, green);
    c.reload(new, "test").await.unwrap();
    let snap = c.snapshot().load_full();
    assert_eq!(snap.services[0].split.weights(), &[50, 50]);
    assert_eq!(snap.generation, 4);
}

#[tokio::test]
async fn backends_that_stay_keep_their_arc_and_state_and_removed_ones_are_forgotten() {
    let f = fixture();
    let c = &f.controller;
    let before = c.snapshot().load_full();
    assert!(c.set_health(
        "web",
        "blue",
        "127.0.0.1:1",
        Health::Down {
            reason: "connect refused".into(),
            since: SystemTime::now(),
        }
    ));
    // 127.0.0.1:1 re-weighted, :2 removed; green gets :4.
    let new = parse(
        &f,
        "",
        "blue = 100, green = 0",
        "{ addr = \"127.0.0.1:1\", weight = 5 }",
        "\"127.0.0.1:3\", \"127.0.0.1:4\"",
    );
    let report = c.reload(new, "test").await.unwrap();
    assert_eq!(
        report.changes,
        vec![
            "services.web.pools.blue: backend 127.0.0.1:1 weight 1 -> 5",
            "services.web.pools.blue: backend 127.0.0.1:2 removed",
            "services.web.pools.green: backend 127.0.0.1:4 added",
        ]
    );
    let after = c.snapshot().load_full();
    let (b0, b1) = (&before.services[0].pools[0], &after.services[0].pools[0]);
    assert!(
        Arc::ptr_eq(&b0.backends[0], &b1.backends[0]),
        "re-weighted: same backend"
    );
    assert_eq!(b1.weights(), &[5]);
    assert!(!b1.health()[0].is_up(), "its health carried over");
    let (g0, g1) = (&before.services[0].pools[1], &after.services[0].pools[1]);
    assert!(Arc::ptr_eq(&g0.backends[0], &g1.backends[0]));
    assert_eq!(g1.backends[1].addr, "127.0.0.1:4");
    let text = metrics_text(&f.registry);
    assert!(!text.contains("\"127.0.0.1:2\""), "{text}");
    assert!(text.contains("backend=\"127.0.0.1:4\""), "{text}");
}

#[tokio::test]
async fn nothing_live_changed_keeps_the_generation_and_restart_settings_are_reported() {
    let f = fixture();
    let c = &f.controller;
    let mut new = c.config();
    new.workers = Some(3);
    let report = c.reload(new, "SIGHUP").await.unwrap();
    assert!(!report.changed);
    assert_eq!(report.generation, 1);
    assert_eq!(report.needs_restart, vec!["workers: one per core -> 3"]);
    assert_eq!(c.config().workers, None, "not applied");
    assert!(!f.state.exists(), "nothing written");
}

#[tokio::test]
async fn a_failed_reload_shows_in_the_status_and_metrics_until_a_good_one() {
    let f = fixture();
    let c = &f.controller;
    c.reload_failed("file watch", "t.toml line 3, key `split`: boom");
    assert_eq!(
        c.config_status()["last_error"],
        "t.toml line 3, key `split`: boom"
    );
    let text = metrics_text(&f.registry);
    assert!(
        text.contains("cutover_config_last_reload_success 0"),
        "{text}"
    );
    assert!(text.contains("cutover_config_reloads_total{result=\"error\"} 1"));
    let new = parse(
        &f,
        "connect = \"2s\"",
        "blue = 100, green = 0",
        "\"127.0.0.1:1\"",
        "\"127.0.0.1:3\"",
    );
    c.reload(new, "file watch").await.unwrap();
    assert!(c.config_status()["last_error"].is_null());
    let text = metrics_text(&f.registry);
    assert!(
        text.contains("cutover_config_last_reload_success 1"),
        "{text}"
    );
    assert!(text.contains("cutover_config_reloads_total{result=\"ok\"} 1"));
}

#[tokio::test]
async fn a_state_file_that_cannot_be_written_changes_nothing() {
    let f = fixture();
    let c = &f.controller;
    // A directory where the state file should be: the write fails.
    std::fs::create_dir_all(f.state.join("x")).unwrap();
    let new = parse(
        &f,
        "connect = \"2s\"",
        "blue = 100, green = 0",
        "\"127.0.0.1:1\"",
        "\"127.0.0.1:3\"",
    );
    assert!(c.reload(new, "test").await.is_err());
    let snap = c.snapshot().load_full();
    assert_eq!(snap.generation, 1);
    assert_eq!(snap.services[0].pools[0].backends.len(), 2);
    assert!(c.config_status()["last_error"].is_string());
}
