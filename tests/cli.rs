//! The real binary: `cutover check` on good and bad configs, and `ctl`
//! against a running instance.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::process::Command;

use cutover_test_support::process::{cutover_json_logs, spawn_cutover};

fn cutover() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cutover"))
}

/// Runs `cutover ctl ARGS` against `admin`: (success, stdout, stderr).
fn ctl(admin: &str, args: &[&str]) -> (bool, String, String) {
    let out = cutover()
        .arg("ctl")
        .args(args)
        .env("CUTOVER_ADMIN", admin)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

const GOOD: &str = r#"[services.web]
split = { blue = 90, green = 10 }

[[services.web.listeners]]
listen = "127.0.0.1:8080"

[[services.web.listeners]]
listen = "127.0.0.1:8081"
pool = "green"

[services.web.pools.blue]
backends = ["10.0.1.10:8080"]

[services.web.pools.green]
backends = ["10.0.2.10:8080"]
"#;

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.toml");
    std::fs::write(&path, text).unwrap();
    let out = cutover().arg("check").arg(&path).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).replace(&path.display().to_string(), "FILE"),
        String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE"),
    )
}

#[test]
fn check_accepts_a_good_config_and_the_shipped_examples() {
    let (ok, stdout, _) = check(GOOD);
    assert!(ok);
    assert_eq!(stdout.trim(), "FILE: ok");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut cmd = cutover();
    cmd.arg("check");
    for e in std::fs::read_dir(examples).unwrap() {
        cmd.arg(e.unwrap().path());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_reports_file_line_and_key_for_each_kind_of_bad_config() {
    let cases: Vec<(String, &str)> = vec![
        (GOOD.replace("split = {", "colour = 1\nsplit = {"), "FILE:2: `services.web.colour`: unknown key"),
        (GOOD.replace("green = 10 }", "purple = 10 }"), "FILE:2: `services.web.split.purple`: the split names pool `purple`, which does not exist"),
        (GOOD.replace("green = 10 }", "purple = 10 }"), "FILE:2: `services.web.split`: pool `green` is missing from the split"),
        (GOOD.replace("blue = 90, green = 10", "blue = 0, green = 0"), "FILE:2: `services.web.split`: all weights are zero"),
        (GOOD.replace("127.0.0.1:8081", "127.0.0.1:8080"), "FILE:8: `services.web.listeners[1].listen`: 127.0.0.1:8080 is already used"),
        (GOOD.replace("pool = \"green\"", "pool = \"teal\""), "FILE:9: `services.web.listeners[1].pool`: preview pool `teal` does not exist"),
        (GOOD.replace("10.0.1.10:8080", "10.0.1.10"), "FILE:12: `services.web.pools.blue.backends[0]`: `10.0.1.10` is not a backend address"),
        (GOOD.replace("[\"10.0.2.10:8080\"]", "[]"), "FILE:15: `services.web.pools.green.backends`: the backend list is empty"),
        (GOOD.replace("127.0.0.1:8080\"", "127.0.0.1\""), "FILE:5: `services.web.listeners[0].listen`: `127.0.0.1` is not a socket address"),
    ];
    for (text, want) in cases {
        let (ok, _, stderr) = check(&text);
        assert!(!ok, "accepted:\n{text}");
        assert!(stderr.contains(want), "want `{want}` in:\n{stderr}");
    }
}

#[test]
fn check_reports_all_errors_at_once() {
    let text = GOOD
        .replace("split = {", "colour = 1\nsplit = {")
        .replace("pool = \"green\"", "pool = \"teal\"")
        .replace("[\"10.0.2.10:8080\"]", "[]");
    let (ok, _, stderr) = check(&text);
    assert!(!ok);
    assert!(stderr.contains("FILE: 3 error(s)"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_switches_and_reports_through_the_admin_api() {
    let h = cutover_test_support::Harness::new().start().await;
    let admin = format!("http://{}", h.admin);
    let run = |args: &[&str]| ctl(&admin, args);
    let (ok, out, err) = tokio::task::block_in_place(|| {
        run(&["split", "web", "blue=90", "green=10", "--reason", "canary"])
    });
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "web: blue=100 green=0 -> blue=90 green=10 (generation 2)"
    );
    let (ok, out, _) = tokio::task::block_in_place(|| run(&["switch", "web", "green"]));
    assert!(ok);
    assert!(out.contains("-> blue=0 green=100"), "{out}");
    assert_eq!(
        cutover_test_support::get_once(h.proxy, "/", &[])
            .await
            .unwrap()
            .pool(),
        "green"
    );
    let (ok, out, _) = tokio::task::block_in_place(|| run(&["status"]));
    assert!(ok);
    assert!(
        out.contains("generation 3") && out.contains("green") && out.contains("100.0%"),
        "{out}"
    );
    let (ok, out, _) = tokio::task::block_in_place(|| run(&["--json", "rollback", "web"]));
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["split"]["green"], 10);
    let (ok, _, err) = tokio::task::block_in_place(|| run(&["switch", "web", "purple"]));
    assert!(!ok);
    assert!(
        err.contains("422") && err.contains("no pool `purple`"),
        "{err}"
    );
    let (ok, _, err) = tokio::task::block_in_place(|| run(&["split", "web", "blue:90"]));
    assert!(!ok && err.contains("is not POOL=WEIGHT"), "{err}");
}

#[test]
fn a_busy_port_names_the_port_and_the_config_key() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = GOOD
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:8081", "127.0.0.1:0")
        .replace(
            "[services.web]",
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[services.web]",
        );
    std::fs::write(&path, text).unwrap();
    let out = cutover()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (config key `services.web.listeners[0].listen`)"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_refuses_new_connections_and_exits_0() {
    let blue = cutover_test_support::TestBackend::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            r#"shutdown_timeout = "10s"
[admin]
listen = "127.0.0.1:0"
[services.web]
split = {{ blue = 1, green = 0 }}
[[services.web.listeners]]
listen = "127.0.0.1:0"
[services.web.pools.blue]
backends = ["{b}"]
[services.web.pools.green]
backends = ["{b}"]
"#,
            b = blue.addr
        ),
    )
    .unwrap();
    // cutover binds port 0 and says where in its log.
    let mut run = cutover_json_logs(env!("CARGO_BIN_EXE_cutover"));
    run.args(["run", "--config"]).arg(&path);
    let (mut child, bound) =
        tokio::task::block_in_place(|| spawn_cutover(run, 1, std::time::Duration::from_secs(10)));
    let (proxy, admin) = (bound.listeners[0], bound.admin);
    let up = cutover_test_support::eventually(std::time::Duration::from_secs(10), || async {
        cutover_test_support::probe(admin, "/readyz")
            .await
            .is_some_and(|a| a.status == 200)
    })
    .await;
    assert!(up, "cutover did not become ready");
    // A connection that tries to connect without panicking.
    async fn connect_ok(addr: std::net::SocketAddr) -> bool {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    }
    assert!(connect_ok(proxy).await);

    let slow =
        tokio::spawn(
            async move { cutover_test_support::get_once(proxy, "/slow?ms=1500", &[]).await },
        );
    let in_flight = cutover_test_support::eventually(std::time::Duration::from_secs(5), || async {
        let (_, v) =
            cutover_test_support::admin(admin, "GET", "/v1/services/web/drain", None).await;
        v["pools"][0]["in_flight"] == 1
    })
    .await;
    assert!(in_flight, "the slow request never showed as in flight");

    let t = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let refused = cutover_test_support::eventually(std::time::Duration::from_secs(3), || async {
        !connect_ok(proxy).await
    })
    .await;
    assert!(refused, "new connections are still accepted after SIGTERM");

    let answer = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.pool(), "blue");
    let mut status = None;
    let exited = cutover_test_support::eventually(std::time::Duration::from_secs(10), || {
        status = status.or(child.0.try_wait().unwrap());
        let done = status.is_some();
        async move { done }
    })
    .await;
    assert!(exited, "cutover exits within 10s of SIGTERM");
    let status = status.expect("an exit status");
    assert!(status.success(), "exit status {status:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_switch_wait_drained_follows_the_old_pool_and_ctl_drain_prints_counts() {
    let h = cutover_test_support::Harness::new()
        .service("drain_timeout = \"30s\"")
        .start()
        .await;
    let admin = format!("http://{}", h.admin);
    let run = |args: &[&str]| ctl(&admin, args);
    let mut ws = cutover_test_support::ws::Ws::connect(h.proxy).await;
    assert_eq!(
        ws.echo("hi").await,
        cutover_test_support::ws::Echo::Text("blue: hi".into())
    );
    // Blue keeps a tunnel: the wait runs out and says what is left.
    let (ok, out, err) = tokio::task::block_in_place(|| {
        run(&[
            "switch",
            "web",
            "green",
            "--wait-drained",
            "--timeout",
            "1500ms",
        ])
    });
    assert!(!ok, "{out}");
    assert!(out.contains("-> blue=0 green=100"), "{out}");
    assert!(
        err.contains("not drained")
            && err.contains("blue: 0 in flight, 0 tunnels open, 1 draining"),
        "{err}"
    );
    let (ok, out, _) = tokio::task::block_in_place(|| run(&["drain", "web"]));
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("blue") && l.trim_end().ends_with("no")),
        "{out}"
    );
    ws.close().await;
    // Green has nothing on it: switching back drains it at once.
    let (ok, out, err) =
        tokio::task::block_in_place(|| run(&["switch", "web", "blue", "--wait-drained"]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("green drained"), "{out}");
}
