//! End-to-end: TCP keepalive on the sockets cutover accepts and dials,
//! read from the kernel's own table (`/proc/net/tcp`, Linux): an
//! established socket with keepalive on and nothing in flight has its
//! keepalive timer running (`tr` = 2), due after the configured idle
//! time. The test's own client and backend sockets have none, so only
//! cutover's sockets can pass.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cutover_test_support::raw::Lines;
use cutover_test_support::*;

/// The established sockets of `/proc/net/tcp`: (local port, remote port,
/// timer kind, seconds until the timer fires).
fn sockets() -> Vec<(u16, u16, u8, f64)> {
    let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (kind, when) = f.get(5)?.split_once(':')?;
            let kind = u8::from_str_radix(kind, 16).ok()?;
            // In USER_HZ ticks: 100 per second on Linux.
            let when = u64::from_str_radix(when, 16).ok()? as f64 / 100.0;
            // Established only: sockets of earlier tests in TIME_WAIT may
            // have the same ports.
            (f[3] == ESTABLISHED).then(|| (port(f[1]), port(f[2]), kind, when))
        })
        .collect()
}

const KEEPALIVE_TIMER: u8 = 2;
const ESTABLISHED: &str = "01";

/// The timer of the socket from local port `local` to remote `remote`.
fn timer(local: u16, remote: u16) -> Option<(u8, f64)> {
    sockets()
        .into_iter()
        .find(|(l, r, _, _)| *l == local && *r == remote)
        .map(|(_, _, k, w)| (k, w))
}

/// cutover's dialed socket to the backend at `port`: the one whose remote
/// port it is (the backend's accepted side has it as its local port).
fn dialed_timer(backend_port: u16, not_local: u16) -> Option<(u8, f64)> {
    sockets()
        .into_iter()
        .find(|(l, r, _, _)| *r == backend_port && *l != not_local)
        .map(|(_, _, k, w)| (k, w))
}

#[tokio::test]
async fn accepted_and_dialed_sockets_run_a_keepalive_timer_with_the_configured_idle() {
    let run = Harness::new()
        .tcp()
        .service("timeouts = { tcp_keepalive = \"42s\", tcp_keepalive_interval = \"7s\" }")
        .start()
        .await;
    let (mut lines, greeting) = Lines::connect(run.proxy).await;
    assert_eq!(greeting, "blue");
    assert_eq!(lines.echo("hi").await.as_deref(), Some("hi"));
    let client = lines.stream().local_addr().unwrap().port();
    let proxy = run.proxy.port();
    let backend = run.backends[0].addr.port();
    let due =
        |t: Option<(u8, f64)>| matches!(t, Some((KEEPALIVE_TIMER, w)) if w > 30.0 && w <= 42.0);
    // The socket cutover accepted (local: the listener's port).
    let accepted = eventually(Duration::from_secs(5), || async {
        due(timer(proxy, client))
    })
    .await;
    assert!(
        accepted,
        "accepted socket: {:?}, want a keepalive timer due in about 42s",
        timer(proxy, client)
    );
    // The socket cutover dialed to the backend.
    let dialed = eventually(Duration::from_secs(5), || async {
        due(dialed_timer(backend, backend))
    })
    .await;
    assert!(
        dialed,
        "dialed socket: {:?}, want a keepalive timer due in about 42s",
        dialed_timer(backend, backend)
    );
    // The test's own client socket has no keepalive: no timer.
    assert_eq!(timer(client, proxy).map(|t| t.0), Some(0));
}

#[tokio::test]
async fn tcp_keepalive_0s_leaves_sockets_without_keepalive() {
    let run = Harness::new()
        .tcp()
        .service("timeouts = { tcp_keepalive = \"0s\" }")
        .start()
        .await;
    let (mut lines, _) = Lines::connect(run.proxy).await;
    assert_eq!(lines.echo("hi").await.as_deref(), Some("hi"));
    let client = lines.stream().local_addr().unwrap().port();
    let proxy = run.proxy.port();
    let backend = run.backends[0].addr.port();
    let idle = |t: Option<(u8, f64)>| matches!(t, Some((0, _)));
    let ok = eventually(Duration::from_secs(5), || async {
        idle(timer(proxy, client)) && idle(dialed_timer(backend, backend))
    })
    .await;
    assert!(
        ok,
        "accepted {:?}, dialed {:?}: want no timer",
        timer(proxy, client),
        dialed_timer(backend, backend)
    );
}
