//! End-to-end: who may call the admin API (named tokens with roles), the
//! audit log every change and refused attempt goes to, and run ids that
//! keep a generation from before a restart from matching after it.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cutover_test_support::process::{cutover_json_logs, spawn_cutover};
use cutover_test_support::*;
use http::StatusCode;
use serde_json::Value;

const OPERATOR: &str = "op-secret-1";
const VIEWER: &str = "view-secret-2";

/// Writes the two tokens' secret files into `dir` (with a trailing
/// newline, as `echo` writes them) and returns the `[admin]` lines that
/// name them.
fn tokens(dir: &Path, admin_keys: &str) -> String {
    let op = dir.join("deploy-bot.token");
    let view = dir.join("grafana.token");
    std::fs::write(&op, format!("{OPERATOR}\n")).unwrap();
    std::fs::write(&view, format!("{VIEWER}\n")).unwrap();
    format!(
        "{admin_keys}\n[[admin.tokens]]\nname = \"deploy-bot\"\nrole = \"operator\"\nsecret_file = {op:?}\n\n[[admin.tokens]]\nname = \"grafana\"\nrole = \"viewer\"\nsecret_file = {view:?}\n"
    )
}

fn state_top(dir: &Path) -> String {
    format!(
        "state_file = {:?}",
        dir.join("state.json").display().to_string()
    )
}

/// The audit log's lines on disk, oldest first.
fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn api(
    h: &Running,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    admin_with_token(h.admin, token, method, path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_may_read_and_change_and_every_attempt_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new()
        .top(&state_top(dir.path()))
        .admin(&tokens(dir.path(), ""))
        .start()
        .await;
    let log = dir.path().join("cutover-audit.jsonl");

    // No token, a wrong one: 401, the same answer for both.
    let (s1, none) = api(&h, None, "GET", "/v1/status", None).await;
    let (s2, wrong) = api(
        &h,
        Some("op-secret-"),
        "POST",
        "/v1/services/web/switch",
        Some(r#"{"to":"green"}"#),
    )
    .await;
    assert_eq!(
        (s1, s2),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(none, wrong, "no hint which it was");
    // Health checks need nothing.
    assert_eq!(
        api(&h, None, "GET", "/healthz", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api(&h, None, "GET", "/readyz", None).await.0,
        StatusCode::OK
    );

    // The viewer reads status, drain, audit and metrics, but may not switch.
    for path in [
        "/v1/status",
        "/v1/services/web/drain",
        "/v1/audit",
        "/metrics",
    ] {
        let (s, v) = api(&h, Some(VIEWER), "GET", path, None).await;
        assert_eq!(s, StatusCode::OK, "viewer GET {path}: {v}");
    }
    let (s, v) = api(
        &h,
        Some(VIEWER),
        "POST",
        "/v1/services/web/switch",
        Some(r#"{"to":"green"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("viewer"), "{v}");
    assert_eq!(get_once(h.proxy, "/", &[]).await.unwrap().pool(), "blue");

    // The operator switches; the answer comes once the line is on disk.
    let (s, v) = api(
        &h,
        Some(OPERATOR),
        "POST",
        "/v1/services/web/switch",
        Some(r#"{"to":"green","reason":"release 42","who":"ci job 7"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let lines = audit_lines(&log);
    let last = lines.last().unwrap();
    assert_eq!(last["result"], "accepted");
    assert_eq!(last["actor"], "deploy-bot");
    assert_eq!(last["requested_by"], "ci job 7");
    assert_eq!(last["reason"], "release 42");
    assert_eq!(last["generation"], v["generation"]);
    assert_eq!(last["run_id"], v["run_id"]);
    assert_eq!(
        last["split"],
        serde_json::json!([["blue", 0], ["green", 100]])
    );
    assert!(
        last["source"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{last}"
    );

    // The refused attempts are there too, with who (or `unknown`) and from where.
    let refused: Vec<(u64, &str, &str)> = lines
        .iter()
        .filter(|l| l["result"] == "refused")
        .map(|l| {
            (
                l["status"].as_u64().unwrap(),
                l["actor"].as_str().unwrap(),
                l["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            (401, "unknown", "GET /v1/status"),
            (401, "unknown", "switch"),
            (403, "grafana", "switch")
        ]
    );
    assert!(lines.iter().all(|l| l["source"]
        .as_str()
        .is_some_and(|s| s.starts_with("127.0.0.1:"))));

    let m = Metrics::parse(api_text(&h, VIEWER, "/metrics").await);
    for (reason, n) in [
        ("missing_token", 1.0),
        ("wrong_token", 1.0),
        ("forbidden", 1.0),
    ] {
        assert_eq!(
            m.value("cutover_admin_auth_failures_total", &[("reason", reason)]),
            Some(n),
            "{reason}"
        );
    }
    // A change refused by the controller (stale generation, unknown pool) is recorded with its status.
    let (s, _) = api(
        &h,
        Some(OPERATOR),
        "PUT",
        "/v1/services/web/split",
        Some(r#"{"split":{"blue":1,"green":1},"expect_generation":1}"#),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = api(
        &h,
        Some(OPERATOR),
        "POST",
        "/v1/services/web/switch",
        Some(r#"{"to":"purple"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, audit) = api(&h, Some(VIEWER), "GET", "/v1/audit?limit=2", None).await;
    let newest = audit["entries"].as_array().unwrap();
    assert_eq!(newest.len(), 2);
    assert_eq!(
        (newest[0]["status"].as_u64(), newest[1]["status"].as_u64()),
        (Some(422), Some(409))
    );
    assert_eq!(newest[1]["expect_generation"], 1);
    assert!(
        newest[1]["detail"]
            .as_str()
            .unwrap()
            .contains("generation mismatch"),
        "{audit}"
    );
    h.app.unwrap().shutdown().await;
}

async fn api_text(h: &Running, token: &str, path: &str) -> String {
    let (s, v) = api(h, Some(token), "GET", path, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v.as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_public_opens_metrics_and_nothing_else_and_the_single_token_is_admin() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new()
        .admin_token("t0ken")
        .admin(&tokens(dir.path(), "metrics_public = true"))
        .start()
        .await;
    let (s, v) = api(&h, None, "GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.as_str().unwrap().contains("cutover_generation"));
    assert_eq!(
        api(&h, None, "GET", "/v1/status", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // `admin.token` still works, as an operator named `admin`.
    let (s, v) = api(
        &h,
        Some("t0ken"),
        "POST",
        "/v1/services/web/switch",
        Some(r#"{"to":"green"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, audit) = api(&h, Some(VIEWER), "GET", "/v1/audit", None).await;
    assert_eq!(audit["entries"][0]["actor"], "admin", "{audit}");
    // Without metrics_public, /metrics needs a token.
    let closed = Harness::new().admin(&tokens(dir.path(), "")).start().await;
    assert_eq!(
        api(&closed, None, "GET", "/metrics", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Without any token, the loopback API is open and the actor is `anonymous`.
    let open = Harness::new().start().await;
    switch(open.admin, "green").await;
    let (_, audit) = admin(open.admin, "GET", "/v1/audit", None).await;
    assert_eq!(audit["entries"][0]["actor"], "anonymous", "{audit}");
    assert_eq!(
        audit["file"],
        Value::Null,
        "no state file, no audit_log: memory only"
    );
    // A cross-site request (a DNS-rebound name) refused there is recorded too.
    let mut conn = Conn::h1(open.admin).await;
    let req = http::Request::post("/v1/services/web/switch")
        .header("host", format!("evil.example:{}", open.admin.port()))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"to":"blue"}"#,
        )))
        .unwrap();
    assert_eq!(conn.send(req).await.unwrap().status, StatusCode::FORBIDDEN);
    let (_, audit) = admin(open.admin, "GET", "/v1/audit", None).await;
    let e = &audit["entries"][0];
    assert_eq!(
        (e["status"].as_u64(), e["actor"].as_str()),
        (Some(403), Some("anonymous")),
        "{audit}"
    );
    assert_eq!(e["action"], "POST /v1/services/web/switch", "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_rotates_by_size_and_reads_newest_first_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let h = Harness::new()
        .admin(&format!(
            "audit_log = {:?}\naudit_max_bytes = 4096\naudit_keep = 2",
            log.display().to_string()
        ))
        .start()
        .await;
    let mut last = 0;
    for i in 0..60 {
        let v = switch(h.admin, if i % 2 == 0 { "green" } else { "blue" }).await;
        last = v["generation"].as_u64().unwrap();
    }
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"],
        "the live file and audit_keep = 2 rotated ones"
    );
    for f in &files {
        let len = std::fs::metadata(dir.path().join(f)).unwrap().len();
        assert!(len <= 4096, "{f} is {len} bytes");
    }
    let kept: usize = files
        .iter()
        .map(|f| audit_lines(&dir.path().join(f)).len())
        .sum();
    assert!(kept < 60, "the oldest file was dropped: {kept} lines kept");

    // Newest first, across the three files, without gaps.
    let (s, v) = admin(h.admin, "GET", "/v1/audit?limit=1000", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let gens: Vec<u64> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(gens.len(), kept);
    assert_eq!(
        gens,
        (last + 1 - kept as u64..=last).rev().collect::<Vec<_>>()
    );
    // Filters: service, limit, since.
    let (_, v) = admin(h.admin, "GET", "/v1/audit?service=web&limit=5", None).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 5);
    assert_eq!(v["entries"][0]["generation"], last);
    let (_, v) = admin(h.admin, "GET", "/v1/audit?service=api", None).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 0);
    let (_, v) = admin(h.admin, "GET", "/v1/audit?since=2100-01-01T00:00:00Z", None).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 0);
    let (_, v) = admin(
        h.admin,
        "GET",
        "/v1/audit?since=2000-01-01T00:00:00Z&limit=3",
        None,
    )
    .await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
    for (bad, fragment) in [
        ("limit=0", "1 to 1000"),
        ("limit=1001", "1 to 1000"),
        ("since=yesterday", "RFC 3339"),
        ("who=me", "allowed: service, limit, since"),
    ] {
        let (s, v) = admin(h.admin, "GET", &format!("/v1/audit?{bad}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(fragment),
            "{bad}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_from_before_a_restart_never_matches_after_it() {
    // No state file: generations restart at 1, the run id does not repeat.
    let mut h = Harness::new().start().await;
    let (_, st) = admin(h.admin, "GET", "/v1/status", None).await;
    let run1 = st["run_id"].as_str().unwrap().to_string();
    assert_eq!(run1.len(), 16);
    let v = switch(h.admin, "green").await;
    assert_eq!(
        (v["generation"].as_u64(), v["run_id"].as_str()),
        (Some(2), Some(run1.as_str()))
    );
    let text = h.config_text.clone();
    h.app.take().unwrap().shutdown().await;

    let app = cutover::App::start(cutover_config::parse("harness.toml", &text).unwrap())
        .await
        .unwrap();
    let (_, st) = admin(app.admin_addr, "GET", "/v1/status", None).await;
    let run2 = st["run_id"].as_str().unwrap().to_string();
    assert_ne!(run1, run2);
    assert_eq!(st["generation"], 1);
    switch(app.admin_addr, "green").await;
    // Generation 2 again, but not the state the first run's 2 named.
    let stale = format!(
        r#"{{"split":{{"blue":50,"green":50}},"expect_generation":2,"expect_run_id":"{run1}"}}"#
    );
    let (s, v) = admin(
        app.admin_addr,
        "PUT",
        "/v1/services/web/split",
        Some(&stale),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("run mismatch"), "{v}");
    let fresh = stale.replace(&run1, &run2);
    let (s, v) = admin(
        app.admin_addr,
        "PUT",
        "/v1/services/web/split",
        Some(&fresh),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, audit) = admin(app.admin_addr, "GET", "/v1/audit", None).await;
    let e = &audit["entries"];
    assert_eq!(
        (e[0]["result"].as_str(), e[0]["run_id"].as_str()),
        (Some("accepted"), Some(run2.as_str()))
    );
    assert_eq!(
        (e[1]["status"].as_u64(), e[1]["expect_run_id"].as_str()),
        (Some(409), Some(run1.as_str()))
    );
    app.shutdown().await;

    // With an audit log file (still no state file) the generation goes on
    // after the last one the log recorded.
    let dir = tempfile::tempdir().unwrap();
    let with_log = text.replacen(
        "listen = \"127.0.0.1:0\"\n",
        &format!(
            "listen = \"127.0.0.1:0\"\naudit_log = {:?}\n",
            dir.path().join("a.jsonl").display().to_string()
        ),
        1,
    );
    let app = cutover::App::start(cutover_config::parse("harness.toml", &with_log).unwrap())
        .await
        .unwrap();
    assert_eq!(switch(app.admin_addr, "green").await["generation"], 2);
    app.shutdown().await;
    let app = cutover::App::start(cutover_config::parse("harness.toml", &with_log).unwrap())
        .await
        .unwrap();
    assert_eq!(generation(app.admin_addr).await, 3);
    app.shutdown().await;
}

fn cutover() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
    c.env_remove("CUTOVER_TOKEN").env_remove("CUTOVER_ADMIN");
    c
}

/// `cutover ctl ARGS` against `admin` with `env`: (success, stdout, stderr).
fn ctl(admin: &str, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = cutover()
        .arg("ctl")
        .args(["--admin", admin])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_reads_its_token_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new().admin(&tokens(dir.path(), "")).start().await;
    let url = format!("http://{}", h.admin);
    let op_file: PathBuf = dir.path().join("deploy-bot.token");
    let op_file = op_file.to_str().unwrap();
    let run =
        |env: &[(&str, &str)], args: &[&str]| tokio::task::block_in_place(|| ctl(&url, env, args));

    let (ok, _, err) = run(&[], &["status"]);
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, out, err) = run(&[], &["--token-file", op_file, "status"]);
    assert!(ok, "{err}");
    let run_id = out
        .split("(run ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap()
        .to_string();
    assert_eq!(run_id.len(), 16, "{out}");
    let (ok, _, err) = run(&[("CUTOVER_TOKEN", VIEWER)], &["switch", "web", "green"]);
    assert!(
        !ok && err.contains("403") && err.contains("viewer"),
        "{err}"
    );
    // --token still works, with a warning.
    let (ok, _, err) = run(&[], &["--token", OPERATOR, "status"]);
    assert!(ok && err.contains("shows in `ps`"), "{err}");

    // --expect-generation N@RUN_ID sends both.
    let stale = format!("1@{}", "0".repeat(16));
    let (ok, _, err) = run(
        &[("CUTOVER_TOKEN", OPERATOR)],
        &["switch", "web", "green", "--expect-generation", &stale],
    );
    assert!(
        !ok && err.contains("409") && err.contains("run mismatch"),
        "{err}"
    );
    let current = format!("1@{run_id}");
    let (ok, out, err) = run(
        &[("CUTOVER_TOKEN", OPERATOR)],
        &[
            "switch",
            "web",
            "green",
            "--expect-generation",
            &current,
            "--reason",
            "go",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("-> blue=0 green=100 (generation 2)"), "{out}");

    // ctl audit: a table, newest first, with the actor and the source.
    let (ok, out, err) = run(
        &[("CUTOVER_TOKEN", VIEWER)],
        &["audit", "--service", "web", "--limit", "3"],
    );
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert!(
        rows[0].starts_with("time") && rows[0].contains("actor"),
        "{out}"
    );
    assert!(
        rows[1].contains("switch")
            && rows[1].contains("accepted 200")
            && rows[1].contains("deploy-bot")
            && rows[1].contains("blue=100 green=0 -> blue=0 green=100 (go)"),
        "{out}"
    );
    assert!(
        rows[2].contains("refused 409") && rows[2].contains("127.0.0.1:"),
        "{out}"
    );
    assert!(
        rows[3].contains("refused 403") && rows[3].contains("grafana"),
        "{out}"
    );
}

const RUN_CONFIG: &str = r#"state_file = "STATE"
shutdown_timeout = "1s"
[admin]
listen = "127.0.0.1:0"
[[admin.tokens]]
name = "ci"
role = "operator"
secret_env = "CUTOVER_TEST_CI_TOKEN"
[services.web]
split = { blue = 100, green = 0 }
[[services.web.listeners]]
listen = "127.0.0.1:0"
[services.web.pools.blue]
backends = ["BACKEND"]
[services.web.pools.green]
backends = ["BACKEND"]
"#;

/// The real binary, its token from the environment: `kill -9` right after
/// an acknowledged change loses neither the change nor its audit line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_an_acknowledged_change_keeps_the_change_and_its_audit_line() {
    let backend = TestBackend::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let text = RUN_CONFIG
        .replace(
            "STATE",
            &dir.path().join("state.json").display().to_string(),
        )
        .replace("BACKEND", &backend.addr.to_string());
    std::fs::write(&config, &text).unwrap();
    let start = || {
        let mut cmd = cutover_json_logs(env!("CARGO_BIN_EXE_cutover"));
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("CUTOVER_TEST_CI_TOKEN", "ci-secret");
        spawn_cutover(cmd, 1, Duration::from_secs(20))
    };
    let (mut child, bound) = start();
    let (s, v) = admin_with_token(
        bound.admin,
        Some("ci-secret"),
        "POST",
        "/v1/services/web/switch",
        Some(r#"{"to":"green","reason":"r"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    child.0.kill().unwrap(); // SIGKILL: no shutdown path runs
    child.0.wait().unwrap();

    let lines = audit_lines(&dir.path().join("cutover-audit.jsonl"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (lines[0]["actor"].as_str(), lines[0]["generation"].as_u64()),
        (Some("ci"), Some(2))
    );
    let (_child, bound) = start();
    let (_, st) = admin_with_token(bound.admin, Some("ci-secret"), "GET", "/v1/status", None).await;
    assert_eq!(st["services"][0]["split"]["green"], 100, "{st}");
    assert_eq!(st["generation"], 3);
    assert_eq!(st["last_change"]["actor"], "ci", "{st}");
    assert_ne!(st["run_id"], lines[0]["run_id"]);

    // Without the variable set, it refuses to start, naming the key.
    let out = cutover().args(["check"]).arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(":8: `admin.tokens[0].secret_env`: environment variable CUTOVER_TEST_CI_TOKEN is not set"), "{err}");
}
