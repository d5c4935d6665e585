//! End-to-end: durations too long to add to a clock. Validation refuses
//! them (see config's tests), but a `Config` can be built in code, and an
//! `Instant + Duration` that overflows panics: with `response_header =
//! "300000000000y"` every request panicked its worker. Every deadline
//! built from a configured duration is checked, so such a config serves,
//! switches, drains and shuts down like any other.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cutover_test_support::ws::{Echo, Ws};
use cutover_test_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_with_every_duration_at_its_maximum_serves_switches_and_stops() {
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[services.web]
split = {{ blue = 100, green = 0 }}

[[services.web.listeners]]
listen = "127.0.0.1:0"

[services.web.pools.blue]
backends = {}

[services.web.pools.green]
backends = {}
"#,
        blue.toml_list(),
        green.toml_list()
    );
    let mut config = cutover_config::parse("t.toml", &text).unwrap();
    config.shutdown_timeout = Duration::MAX;
    let s = &mut config.services[0];
    s.drain_timeout = Duration::MAX;
    s.timeouts.response_header = Duration::MAX;
    s.timeouts.connect = Duration::MAX;
    s.timeouts.idle = Duration::MAX;
    let app = cutover::App::start(config).await.expect("app starts");
    let proxy = app.listener("web", 0).unwrap();
    let admin = app.admin_addr;

    // Requests are answered (each used to panic on its deadline).
    let mut conn = Conn::h1(proxy).await;
    for _ in 0..3 {
        let a = conn.get("/", &[]).await.expect("an answer, not a panic");
        assert_eq!((a.status.as_u16(), a.pool()), (200, "blue"));
    }
    // A tunnel on blue, then a switch: its drain deadline is now + MAX.
    let mut ws = Ws::connect(proxy).await;
    assert_eq!(ws.echo("one").await, Echo::Text("blue: one".into()));
    switch(admin, "green").await;
    let moved = eventually(Duration::from_secs(5), || async {
        get_once(proxy, "/", &[])
            .await
            .is_ok_and(|a| a.pool() == "green")
    })
    .await;
    assert!(moved, "the switch did not take effect");
    let draining = eventually(Duration::from_secs(5), || async {
        let Ok(m) = Metrics::scrape(admin).await else {
            return false;
        };
        m.value(
            "cutover_tunnels",
            &[("pool", "blue"), ("service", "web"), ("state", "draining")],
        ) == Some(1.0)
    })
    .await;
    assert!(draining, "the tunnel was not marked draining");
    // The draining tunnel still works: its deadline is far away.
    assert_eq!(ws.echo("two").await, Echo::Text("blue: two".into()));
    ws.close().await;
    // And shutdown (its own deadline now + MAX) completes.
    tokio::time::timeout(Duration::from_secs(10), app.shutdown())
        .await
        .expect("shutdown completes");
}
