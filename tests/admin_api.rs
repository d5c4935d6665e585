//! End-to-end: the admin API's answers to good and bad input, and the state
//! file that keeps an acknowledged switch across a restart.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use cutover_test_support::*;
use http::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_generation_split_pools_backends_and_listeners() {
    let h = Harness::new()
        .blue(2)
        .green(1)
        .service("split = { blue = 90, green = 10 }")
        .start()
        .await;
    let (s, v) = admin(h.admin, "GET", "/v1/status", None).await;
    assert_eq!(s, StatusCode::OK);
    let web = &v["services"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["split"]["blue"], 90);
    assert_eq!(web["pools"][0]["name"], "blue");
    assert_eq!(web["pools"][0]["backends"].as_array().unwrap().len(), 2);
    assert_eq!(web["pools"][1]["in_flight"], 0);
    assert_eq!(web["listeners"][1]["pool"], "green");
    assert_eq!(web["listeners"][0]["listen"], h.proxy.to_string());
    assert!(v["generation"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_switch_rollback_answer_the_new_generation_and_split() {
    let h = Harness::new().start().await;
    let g0 = generation(h.admin).await;
    let (s, v) = admin(
        h.admin,
        "PUT",
        "/v1/services/web/split",
        Some(&format!(
            r#"{{"split":{{"blue":90,"green":10}},"reason":"canary","expect_generation":{g0}}}"#
        )),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["generation"], g0 + 1);
    assert_eq!(v["split"]["green"], 10);
    let v = switch(h.admin, "green").await;
    assert_eq!(v["generation"], g0 + 2);
    assert_eq!(v["previous"]["green"], 10);
    let (s, v) = admin(
        h.admin,
        "POST",
        "/v1/services/web/rollback",
        Some(r#"{"reason":"oops"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["split"]["blue"], 90);
    assert_eq!(v["generation"], g0 + 3);
    let (_, audit) = admin(h.admin, "GET", "/v1/audit", None).await;
    let entries = audit["entries"].as_array().unwrap();
    // Newest first.
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2]["reason"], "canary");
    assert_eq!(entries[2]["expect_generation"], g0);
    assert_eq!(entries[0]["action"], "rollback");
    assert!(entries
        .iter()
        .all(|e| e["actor"] == "anonymous" && e["result"] == "accepted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_a_clear_4xx_and_changes_nothing() {
    let h = Harness::new().start().await;
    let g0 = generation(h.admin).await;
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "PUT",
            "/v1/services/nope/split",
            Some(r#"{"split":{"blue":1}}"#),
            404,
            "unknown service `nope`",
        ),
        (
            "POST",
            "/v1/services/nope/switch",
            Some(r#"{"to":"green"}"#),
            404,
            "unknown service",
        ),
        (
            "PUT",
            "/v1/services/web/split",
            Some(r#"{"split":{"blue":50,"purple":50}}"#),
            422,
            "no pool `purple`",
        ),
        (
            "POST",
            "/v1/services/web/switch",
            Some(r#"{"to":"purple"}"#),
            422,
            "no pool `purple`",
        ),
        (
            "PUT",
            "/v1/services/web/split",
            Some(r#"{"split":{"blue":-1,"green":10}}"#),
            422,
            "out of range",
        ),
        (
            "PUT",
            "/v1/services/web/split",
            Some(r#"{"split":{"blue":0,"green":0}}"#),
            422,
            "all weights are zero",
        ),
        (
            "PUT",
            "/v1/services/web/split",
            Some(r#"{"split":{"blue":100}}"#),
            422,
            "missing: green",
        ),
        (
            "PUT",
            "/v1/services/web/split",
            Some(r#"{"split":{"blue":1.5,"green":1}}"#),
            422,
            "whole number",
        ),
        (
            "PUT",
            "/v1/services/web/split",
            Some(r#"{"split":{"blue":1,"green":1}"#),
            400,
            "malformed JSON",
        ),
        (
            "PUT",
            "/v1/services/web/split",
            Some(r#"{"spilt":{"blue":1,"green":1}}"#),
            400,
            "unknown field `spilt`",
        ),
        (
            "POST",
            "/v1/services/web/switch",
            Some("green"),
            400,
            "malformed JSON",
        ),
        ("GET", "/v1/services/web/split", None, 405, "allowed: PUT"),
        ("DELETE", "/v1/status", None, 405, "allowed: GET"),
        (
            "POST",
            "/v1/services/web/rollback",
            None,
            409,
            "no earlier split",
        ),
        ("GET", "/v1/nothing", None, 404, "no such endpoint"),
        (
            "PUT",
            "/v1/services/web/split",
            Some(r#"{"split":{"blue":1,"green":1},"expect_generation":999}"#),
            409,
            "generation mismatch",
        ),
    ];
    for (method, path, body, want, fragment) in cases {
        let (s, v) = admin(h.admin, method, path, *body).await;
        assert_eq!(s.as_u16(), *want, "{method} {path} {body:?}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {v}"));
        assert!(
            msg.contains(fragment),
            "{method} {path}: `{msg}` lacks `{fragment}`"
        );
        assert_eq!(
            generation(h.admin).await,
            g0,
            "{method} {path} changed the generation"
        );
    }
    // And traffic still goes where it did.
    assert_eq!(get_once(h.proxy, "/", &[]).await.unwrap().pool(), "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_protects_the_api_but_not_health_checks() {
    let h = Harness::new().admin_token("t0ken").start().await;
    let (s, v) = admin(h.admin, "GET", "/v1/status", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _) = admin(h.admin, "GET", "/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = admin(h.admin, "GET", "/readyz", None).await;
    assert_eq!(s, StatusCode::OK);
    // A wrong token is refused too; the right one is let through.
    let (s, v) = admin_with_token(h.admin, Some("nope"), "GET", "/v1/status", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, v) = h.api("GET", "/v1/status", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.app.expect("app").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_pool_and_show_split_and_generation() {
    let h = Harness::new().start().await;
    for _ in 0..3 {
        get_once(h.proxy, "/", &[]).await.unwrap();
    }
    switch(h.admin, "green").await;
    get_once(h.proxy, "/", &[]).await.unwrap();
    let m = Metrics::scrape(h.admin).await.unwrap();
    let web = |pool| [("pool", pool), ("service", "web")];
    for (name, labels, want) in [
        (
            "cutover_requests_total",
            vec![("code", "2xx"), ("pool", "blue"), ("service", "web")],
            3.0,
        ),
        (
            "cutover_requests_total",
            vec![("code", "2xx"), ("pool", "green"), ("service", "web")],
            1.0,
        ),
        ("cutover_split_weight", web("green").to_vec(), 100.0),
        ("cutover_in_flight_requests", web("blue").to_vec(), 0.0),
        ("cutover_generation", vec![], 2.0),
        (
            "cutover_request_duration_seconds_count",
            web("blue").to_vec(),
            3.0,
        ),
    ] {
        assert_eq!(
            m.value(name, &labels),
            Some(want),
            "{name} {labels:?} in:\n{}",
            m.text()
        );
    }
    assert!(
        m.line("cutover_downstream_connections{listener=").is_some(),
        "metrics lack cutover_downstream_connections{{listener=..}}:\n{}",
        m.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_switch_survives_a_restart_through_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let top = format!("state_file = {:?}", state.display().to_string());
    let mut h = Harness::new().top(&top).start().await;
    switch(h.admin, "green").await;
    let text = h.config_text.clone();
    h.app.take().unwrap().shutdown().await;

    // Same config (split 100/0 in the file): the runtime split wins.
    let app = cutover::App::start(cutover_config::parse("harness.toml", &text).unwrap())
        .await
        .unwrap();
    let proxy = app.listener("web", 0).unwrap();
    assert_eq!(get_once(proxy, "/", &[]).await.unwrap().pool(), "green");
    let (_, v) = admin(app.admin_addr, "GET", "/v1/status", None).await;
    assert_eq!(v["generation"], 3, "generation continues after a restart");
    // Rollback still knows the split before the switch.
    let (s, _) = admin(app.admin_addr, "POST", "/v1/services/web/rollback", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(get_once(proxy, "/", &[]).await.unwrap().pool(), "blue");
    app.shutdown().await;

    // A changed split in the file wins over the runtime state.
    let changed = text.replace(
        "split = { blue = 100, green = 0 }",
        "split = { blue = 0, green = 1 }",
    );
    let app = cutover::App::start(cutover_config::parse("harness.toml", &changed).unwrap())
        .await
        .unwrap();
    let proxy = app.listener("web", 0).unwrap();
    assert_eq!(get_once(proxy, "/", &[]).await.unwrap().pool(), "green");
    app.shutdown().await;
}
