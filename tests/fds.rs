//! The real binary out of file descriptors: started under `ulimit -n 32`,
//! it says its limit is short, and when clients take every descriptor it
//! keeps running, logs the failed accepts at most once a second, counts
//! them, and serves again once the connections close.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use cutover_test_support::process::spawn_cutover;
use cutover_test_support::{eventually, get_once, holds_for, probe, Metrics, TestBackend};

/// Descriptors the child may have: it uses 13 or so once started (the
/// runtime, standard streams, its listeners), so some 19 are left, room
/// for about 9 HTTP connections (2 descriptors each).
const NOFILE: u32 = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_it_survives_logs_once_a_second_counts_and_recovers() {
    let blue = TestBackend::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            r#"workers = 1
[admin]
listen = "127.0.0.1:0"
[services.web]
split = {{ blue = 1 }}
[[services.web.listeners]]
listen = "127.0.0.1:0"
[services.web.pools.blue]
backends = ["{}"]
"#,
            blue.addr
        ),
    )
    .unwrap();
    // dash's `ulimit -n` sets the soft and the hard limit: cutover cannot
    // raise it.
    let mut run = Command::new("sh");
    run.arg("-c")
        .arg(format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "--log-format",
            "json",
            "--log-level",
            "info",
            "run",
            "--config",
        ])
        .arg(&path);
    let (mut child, bound) =
        tokio::task::block_in_place(|| spawn_cutover(run, 1, Duration::from_secs(10)));
    let (proxy, admin) = (bound.listeners[0], bound.admin);
    let ready = eventually(Duration::from_secs(10), || async {
        probe(admin, "/readyz")
            .await
            .is_some_and(|a| a.status == 200)
    })
    .await;
    assert!(ready);
    let short = bound.log_lines("below what max_connections need");
    assert_eq!(short.len(), 1, "no warning about the short limit");
    assert!(
        short[0].contains(&format!("\"limit\":{NOFILE}")),
        "{}",
        short[0]
    );
    assert!(get_once(proxy, "/", &[])
        .await
        .is_ok_and(|a| a.status == 200));

    // Idle connections that send nothing: each holds 2 of cutover's
    // descriptors until header_read (10 s); past ~9, accepts fail.
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(tokio::net::TcpStream::connect(proxy).await.unwrap());
    }
    let failing = eventually(Duration::from_secs(5), || async {
        !bound.log_lines("accept failed").is_empty()
    })
    .await;
    assert!(failing, "accepts never failed; is the limit in force?");
    let first = Instant::now();
    let alive = holds_for(Duration::from_millis(2500), || {
        let running = child.0.try_wait().unwrap().is_none();
        async move { running }
    })
    .await;
    assert!(alive, "cutover died out of descriptors");
    // A retry every 50 ms would log ~50 times here; once a second: 3 or 4.
    let logged = bound.log_lines("accept failed");
    let seconds = first.elapsed().as_secs_f64();
    assert!(
        logged.len() as f64 <= seconds + 2.0,
        "{} accept errors logged in {seconds:.1}s:\n{}",
        logged.len(),
        logged.join("\n")
    );
    assert!(
        logged.iter().any(|l| l.contains("Too many open files")),
        "{logged:?}"
    );
    assert!(
        logged
            .iter()
            .skip(1)
            .any(|l| !l.contains("\"suppressed\":0")),
        "the held-back count is not reported: {logged:?}"
    );

    // The clients leave: cutover serves again.
    drop(held);
    let served = eventually(Duration::from_secs(10), || async {
        get_once(proxy, "/", &[])
            .await
            .is_ok_and(|a| a.status == 200)
    })
    .await;
    assert!(served, "cutover did not recover once descriptors were free");
    let m = Metrics::scrape(admin).await.unwrap();
    let label = proxy.to_string();
    let emfile = m
        .value(
            "cutover_accept_errors_total",
            &[("listener", &label), ("reason", "emfile")],
        )
        .unwrap_or(0.0);
    assert!(emfile >= 1.0, "{}", m.text());
    assert!(child.0.try_wait().unwrap().is_none());
}
