//! The real binary under signals: SIGTERM in the order a load balancer
//! needs (`/readyz` 503 at once, listeners accepting for `shutdown_delay`,
//! then the drain, the admin API up to the end), and SIGHUP reloading the
//! config without killing it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use cutover_test_support::process::{run_ready, Bound, Reaped};
use cutover_test_support::{eventually, get_once, holds_for, metric, probe, TestBackend};

/// `cutover run` on a config with one listener whose pools both go to
/// `backend`, and `extra` at the top; ready when this returns.
async fn start(dir: &tempfile::TempDir, backend: SocketAddr, extra: &str) -> (Reaped, Bound) {
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            r#"{extra}
[admin]
listen = "127.0.0.1:0"
[services.web]
split = {{ blue = 1, green = 0 }}
[[services.web.listeners]]
listen = "127.0.0.1:0"
[services.web.pools.blue]
backends = ["{backend}"]
[services.web.pools.green]
backends = ["{backend}"]
"#
        ),
    )
    .unwrap();
    run_ready(env!("CARGO_BIN_EXE_cutover"), &path).await
}

async fn serves(proxy: SocketAddr) -> bool {
    get_once(proxy, "/", &[])
        .await
        .is_ok_and(|a| a.status == 200 && a.pool() == "blue")
}

async fn status(admin: SocketAddr, path: &str) -> Option<u16> {
    probe(admin, path).await.map(|a| a.status.as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_at_once_serves_through_shutdown_delay_then_drains() {
    let blue = TestBackend::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let delay = Duration::from_secs(3);
    let (mut child, bound) = start(
        &dir,
        blue.addr,
        "shutdown_delay = \"3s\"\nshutdown_timeout = \"10s\"",
    )
    .await;
    let (proxy, admin) = (bound.listeners[0], bound.admin);
    // In flight through the whole shutdown: the drain lasts until it ends.
    let slow = tokio::spawn(async move { get_once(proxy, "/slow?ms=6000", &[]).await });
    let in_flight = eventually(Duration::from_secs(5), || async {
        let (_, v) =
            cutover_test_support::admin(admin, "GET", "/v1/services/web/drain", None).await;
        v["pools"][0]["in_flight"] == 1
    })
    .await;
    assert!(in_flight, "the slow request never showed as in flight");

    let t = Instant::now();
    child.signal("TERM");
    let not_ready = eventually(Duration::from_secs(1), || async {
        status(admin, "/readyz").await == Some(503)
    })
    .await;
    assert!(
        not_ready,
        "/readyz is not 503 within 1s of SIGTERM ({:?}, exit {:?}); log:\n{}",
        status(admin, "/readyz").await,
        child.0.try_wait(),
        bound.log_lines("").join("\n")
    );
    // The balancer has not noticed yet: new connections are still served.
    let served = holds_for(Duration::from_secs(1), || serves(proxy)).await;
    assert!(
        served,
        "a new connection was not served during shutdown_delay"
    );
    assert!(
        t.elapsed() < delay,
        "the check outlasted the delay: {:?}",
        t.elapsed()
    );

    let refused = eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(proxy).await.is_err()
    })
    .await;
    assert!(
        refused,
        "new connections are still accepted after shutdown_delay"
    );
    assert!(
        t.elapsed() >= delay,
        "listeners stopped before the delay: {:?}",
        t.elapsed()
    );
    // Draining: the admin API still answers.
    assert_eq!(status(admin, "/healthz").await, Some(200));
    assert_eq!(status(admin, "/readyz").await, Some(503));
    let (code, v) = cutover_test_support::admin(admin, "GET", "/v1/services/web/drain", None).await;
    assert_eq!(code, 200);
    assert_eq!(v["pools"][0]["in_flight"], 1, "{v}");

    let answer = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(answer.status, 200);
    let mut exit = None;
    let exited = eventually(Duration::from_secs(10), || {
        exit = exit.or(child.0.try_wait().unwrap());
        let done = exit.is_some();
        async move { done }
    })
    .await;
    assert!(exited, "cutover did not exit after the drain");
    assert!(exit.unwrap().success(), "exit status {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_and_ctl_reload_prints_the_result() {
    let blue = TestBackend::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let (child, bound) = start(&dir, blue.addr, "").await;
    let admin = bound.admin;
    let ok = format!("{}{{result=\"ok\"}}", "cutover_config_reloads_total");
    assert_eq!(metric(admin, &ok).await, Some(0.0), "no reload yet");
    // The file is unchanged (the watch sees nothing): only SIGHUP reloads.
    child.signal("HUP");
    let reloaded = eventually(Duration::from_secs(5), || async {
        metric(admin, &ok).await == Some(1.0)
    })
    .await;
    assert!(reloaded, "SIGHUP did not reload the config");
    // A timeout changes in the file; `ctl reload` applies it and says so.
    let path = dir.path().join("c.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[services.web]\n",
        "[services.web]\ntimeouts = { connect = \"2s\" }\n",
    );
    std::fs::write(&path, text).unwrap();
    let out = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["ctl", "--admin", &format!("http://{admin}"), "reload"])
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The watch may have applied it first: then ctl finds nothing left.
    assert!(
        stdout.contains(
            "config reloaded: generation 2, 1 change(s)\n  services.web: timeouts changed"
        ) || stdout.contains("config reloaded: nothing changed (generation 2)"),
        "{stdout}"
    );
    assert!(serves(bound.listeners[0]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_leaves_the_process_running_and_serving() {
    let blue = TestBackend::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, bound) = start(&dir, blue.addr, "").await;
    let (proxy, admin) = (bound.listeners[0], bound.admin);
    assert!(serves(proxy).await);
    child.signal("HUP");
    let alive = holds_for(Duration::from_secs(1), || {
        let running = child.0.try_wait().unwrap().is_none();
        async move { running && serves(proxy).await }
    })
    .await;
    assert!(alive, "SIGHUP ended cutover or stopped it serving");
    assert_eq!(status(admin, "/readyz").await, Some(200));
    // A second SIGHUP too.
    child.signal("HUP");
    let alive = holds_for(Duration::from_millis(500), || {
        let running = child.0.try_wait().unwrap().is_none();
        async move { running }
    })
    .await;
    assert!(alive, "a second SIGHUP ended cutover");
}
