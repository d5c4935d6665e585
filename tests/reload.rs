//! End-to-end: config hot reload. cutover runs in process from a config
//! file in a temp dir; the tests edit the file (the watch on its directory
//! reloads it) or ask `POST /v1/reload`, over real sockets, and look at
//! what clients see: no failed request, connections that stay open, new
//! backends and listeners that serve, removed ones that drain.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover::App;
use cutover_test_support::ws::{Echo, Ws};
use cutover_test_support::*;
use http::StatusCode;
use serde_json::Value;

/// The config file: service `web` (a main listener and a preview
/// listener on green, both on port 0) with `blue` and `green` pools, and
/// whatever `extra` adds at the end (another service).
fn config(web: &str, blue: &[SocketAddr], green: &[SocketAddr], extra: &str) -> String {
    let list = |b: &[SocketAddr]| {
        let v: Vec<String> = b.iter().map(|a| format!("\"{a}\"")).collect();
        format!("[{}]", v.join(", "))
    };
    format!(
        r#"shutdown_timeout = "2s"

[admin]
listen = "127.0.0.1:0"

[services.web]
{web}

[[services.web.listeners]]
listen = "127.0.0.1:0"

[[services.web.listeners]]
listen = "127.0.0.1:0"
pool = "green"

[services.web.pools.blue]
backends = {blue}

[services.web.pools.green]
backends = {green}
{extra}"#,
        blue = list(blue),
        green = list(green),
    )
}

/// Writes the file as editors and deploy tools do: a new file renamed over
/// the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Running {
    _dir: tempfile::TempDir,
    path: PathBuf,
    app: Option<App>,
    admin: SocketAddr,
}

impl Running {
    async fn start(text: &str) -> Running {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cutover.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = cutover_config::load(&path).unwrap();
        let app = App::start_watching(&path, cfg).await.expect("app starts");
        Running {
            admin: app.admin_addr,
            _dir: dir,
            path,
            app: Some(app),
        }
    }

    fn app(&self) -> &App {
        self.app.as_ref().unwrap()
    }

    fn listener(&self, service: &str, n: usize) -> Option<SocketAddr> {
        self.app().listener(service, n)
    }

    async fn status(&self) -> Value {
        let (s, v) = admin(self.admin, "GET", "/v1/status", None).await;
        assert_eq!(s, StatusCode::OK);
        v
    }

    async fn reloads(&self, result: &str) -> f64 {
        Metrics::scrape(self.admin)
            .await
            .unwrap()
            .value("cutover_config_reloads_total", &[("result", result)])
            .unwrap_or(0.0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Listeners and tasks go with the runtime; nothing to wait for.
        drop(self.app.take());
    }
}

/// Requests on new connections and on one keep-alive connection, in a
/// loop until stopped; counts the answers that were not a 200.
fn load(proxy: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (ok, bad) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut conn = Conn::h1(proxy).await;
        while !stop.load(Ordering::Relaxed) {
            for r in [get_once(proxy, "/", &[]).await, conn.get("/", &[]).await] {
                match r {
                    Ok(a) if a.status == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
        (ok.into_inner(), bad.into_inner())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_changes_nothing_and_the_fixed_one_is_live_within_two_seconds() {
    let (b, g) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let web = "split = { blue = 100, green = 0 }\ndrain_timeout = \"30s\"";
    let h = Running::start(&config(web, &[b.addr], &[g.addr], "")).await;
    let proxy = h.listener("web", 0).unwrap();
    let generation = h.status().await["generation"].clone();
    // Opened before any reload: both must stay open through all of them.
    let mut keep = Conn::h1(proxy).await;
    assert_eq!(keep.get("/", &[]).await.unwrap().pool(), "blue");
    let mut ws = Ws::connect(proxy).await;
    assert_eq!(ws.echo("one").await, Echo::Text("blue: one".into()));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(proxy, stop.clone());

    // Line 7 (the service's first line) loses a comma.
    let broken = config("split = { blue = 0 green = 100 }", &[b.addr], &[g.addr], "");
    assert!(broken.lines().nth(6).unwrap().starts_with("split = {"));
    replace(&h.path, &broken);
    let failed = eventually(Duration::from_secs(5), || async {
        h.status().await["config"]["last_error"].is_string()
    })
    .await;
    assert!(failed, "the bad config's error never showed in the status");
    let err = h.status().await["config"]["last_error"].clone();
    let file = h.path.display().to_string();
    assert!(
        err.as_str().unwrap().contains(&format!("{file}:7:")),
        "the error names the file and line: {err}"
    );
    assert_eq!(
        metric(h.admin, "cutover_config_last_reload_success").await,
        Some(0.0)
    );
    assert!(h.reloads("error").await >= 1.0);
    // Routing unchanged.
    let st = h.status().await;
    assert_eq!(st["generation"], generation);
    assert_eq!(st["services"][0]["split"]["blue"], 100);
    assert_eq!(get_once(proxy, "/", &[]).await.unwrap().pool(), "blue");

    // Fixed: live within two seconds, no restart. Its timeouts changed
    // too: the listener's accept loop restarts on the same socket with the
    // new ones, and the backends get new upstream connections.
    let fixed = config(
        "split = { blue = 0, green = 100 }\ndrain_timeout = \"30s\"\ntimeouts = { idle = \"90s\", connect = \"3s\" }",
        &[b.addr],
        &[g.addr],
        "",
    );
    let written = Instant::now();
    replace(&h.path, &fixed);
    let live = eventually(Duration::from_secs(2), || async {
        get_once(proxy, "/", &[]).await.unwrap().pool() == "green"
    })
    .await;
    assert!(live, "the fixed config was not live within 2 s");
    assert!(written.elapsed() < Duration::from_secs(2));
    let st = h.status().await;
    assert!(st["config"]["last_error"].is_null(), "{st}");
    assert_eq!(h.listener("web", 0), Some(proxy), "the same socket");
    assert_eq!(
        metric(h.admin, "cutover_config_last_reload_success").await,
        Some(1.0)
    );
    assert!(h.reloads("ok").await >= 1.0);
    stop.store(true, Ordering::Relaxed);
    let (ok, bad) = traffic.await.unwrap();
    assert_eq!(bad, 0, "requests failed during the reloads ({ok} good)");
    assert!(ok > 10, "{ok}");
    // The keep-alive connection is the same one, and now routes to green.
    assert!(!keep.is_closed());
    assert_eq!(keep.get("/", &[]).await.unwrap().pool(), "green");
    // The WebSocket stays open (its drain deadline is 30 s away).
    assert_eq!(ws.echo("two").await, Echo::Text("blue: two".into()));
}

/// Opens WebSockets until one is on `backend`; the others are closed.
async fn ws_on(proxy: SocketAddr, backend: &TestBackend) -> Ws {
    for _ in 0..20 {
        let before = backend.connections.load(Ordering::Relaxed);
        let mut ws = Ws::connect(proxy).await;
        assert_eq!(ws.echo("hi").await, Echo::Text("blue: hi".into()));
        if backend.connections.load(Ordering::Relaxed) > before {
            return ws;
        }
        ws.close().await;
    }
    panic!("no WebSocket landed on {}", backend.addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_added_serves_and_a_removed_one_finishes_its_work_and_drains_its_tunnels() {
    let (b1, b2) = (
        TestBackend::start("blue").await,
        TestBackend::start("blue").await,
    );
    let (g1, g2, g3) = (
        TestBackend::start("green").await,
        TestBackend::start("green").await,
        TestBackend::start("green").await,
    );
    let web = "split = { blue = 100, green = 0 }\ndrain_timeout = \"1500ms\"";
    let h = Running::start(&config(web, &[b1.addr, b2.addr], &[g1.addr, g2.addr], "")).await;
    let (proxy, preview) = (h.listener("web", 0).unwrap(), h.listener("web", 1).unwrap());
    let mut ws = ws_on(proxy, &b1).await;
    // Slow requests in flight on both blue backends.
    let slow: Vec<_> = (0..8)
        .map(|_| tokio::spawn(get_once(proxy, "/slow?ms=1000", &[])))
        .collect();
    let spread = eventually(Duration::from_secs(5), || async {
        b1.requests.load(Ordering::Relaxed) > 0
            && b1.requests.load(Ordering::Relaxed) + b2.requests.load(Ordering::Relaxed) >= 8
    })
    .await;
    assert!(spread, "the slow requests did not reach both blue backends");
    let generation = h.status().await["generation"].as_u64().unwrap();

    replace(
        &h.path,
        &config(web, &[b2.addr], &[g1.addr, g2.addr, g3.addr], ""),
    );
    let applied = eventually(Duration::from_secs(5), || async {
        h.status().await["generation"].as_u64() == Some(generation + 1)
    })
    .await;
    assert!(applied, "the edit was not applied");
    let reloaded = Instant::now();
    // New requests reach the new green backend, never the removed blue one.
    let g3_serves = eventually(Duration::from_secs(5), || async {
        get_once(preview, "/", &[])
            .await
            .unwrap()
            .header("x-backend")
            == Some(&g3.addr.to_string())
    })
    .await;
    assert!(g3_serves, "the new backend never served");
    let before = b1.requests.load(Ordering::Relaxed);
    for _ in 0..20 {
        let a = get_once(proxy, "/", &[]).await.unwrap();
        assert_eq!(a.header("x-backend"), Some(b2.addr.to_string().as_str()));
    }
    assert_eq!(b1.requests.load(Ordering::Relaxed), before);
    // The requests in flight on the removed backend finish.
    for s in slow {
        let a = s.await.unwrap().unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    // Its WebSocket is open until the drain deadline, then closed 1001.
    assert_eq!(ws.echo("still").await, Echo::Text("blue: still".into()));
    assert_eq!(ws.next().await, Echo::Closed(Some(1001)));
    let took = reloaded.elapsed();
    assert!(
        took >= Duration::from_millis(1300) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    // Its `cutover_backend_up` is gone; the new one's is there.
    let m = Metrics::scrape(h.admin).await.unwrap();
    let up = |a: SocketAddr, pool: &str| {
        m.value(
            "cutover_backend_up",
            &[
                ("service", "web"),
                ("pool", pool),
                ("backend", &a.to_string()),
            ],
        )
    };
    assert_eq!(up(b1.addr, "blue"), None);
    assert_eq!(up(g3.addr, "green"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_added_with_a_listener_serves_and_when_removed_stops_accepting_and_drains() {
    let (b, g, a) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
        TestBackend::start("api").await,
    );
    let web = "split = { blue = 100, green = 0 }";
    let h = Running::start(&config(web, &[b.addr], &[g.addr], "")).await;
    let api = format!(
        "\n[services.api]\nsplit = {{ main = 1 }}\ndrain_timeout = \"5s\"\n[[services.api.listeners]]\nlisten = \"127.0.0.1:0\"\n[services.api.pools.main]\nbackends = [\"{}\"]\n",
        a.addr
    );
    std::fs::write(&h.path, config(web, &[b.addr], &[g.addr], &api)).unwrap();
    let (s, report) = admin(h.admin, "POST", "/v1/reload", None).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let listed = eventually(Duration::from_secs(5), || async {
        h.listener("api", 0).is_some()
    })
    .await;
    assert!(listed, "the new service's listener is not served: {report}");
    let addr = h.listener("api", 0).unwrap();
    assert_eq!(get_once(addr, "/", &[]).await.unwrap().pool(), "api");
    let st = h.status().await;
    let names: Vec<&str> = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "api"]);
    assert_eq!(
        st["services"][1]["listeners"][0]["listen"],
        addr.to_string()
    );
    // The web listeners kept their sockets.
    let web_proxy = h.listener("web", 0).unwrap();
    assert_eq!(get_once(web_proxy, "/", &[]).await.unwrap().pool(), "blue");

    // An idle keep-alive connection and a request in flight, then removed.
    let mut idle = Conn::h1(addr).await;
    assert_eq!(idle.get("/", &[]).await.unwrap().pool(), "api");
    let in_flight = tokio::spawn(get_once(addr, "/slow?ms=800", &[]));
    let busy = eventually(Duration::from_secs(5), || async {
        a.requests.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert!(busy);
    std::fs::write(&h.path, config(web, &[b.addr], &[g.addr], "")).unwrap();
    let (s, report) = admin(h.admin, "POST", "/v1/reload", None).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert!(h.listener("api", 0).is_none());
    // Stops accepting...
    let refused = eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "the removed listener still accepts");
    // ...the request in flight finishes, the idle connection is closed.
    let a2 = in_flight.await.unwrap().unwrap();
    assert_eq!(a2.status, StatusCode::OK);
    let closed = eventually(Duration::from_secs(5), || async { idle.is_closed() }).await;
    assert!(
        closed,
        "the idle connection of the removed listener stays open"
    );
    assert_eq!(h.status().await["services"].as_array().unwrap().len(), 1);
    assert_eq!(get_once(web_proxy, "/", &[]).await.unwrap().pool(), "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_listener_that_cannot_be_bound_changes_nothing_and_says_why() {
    let (b, g) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let web = "split = { blue = 100, green = 0 }";
    let h = Running::start(&config(web, &[b.addr], &[g.addr], "")).await;
    let before = h.status().await;
    // Someone else has this port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap();
    let api = format!(
        "\n[services.api]\nsplit = {{ main = 1 }}\n[[services.api.listeners]]\nlisten = \"{port}\"\n[services.api.pools.main]\nbackends = [\"{}\"]\n",
        b.addr
    );
    // The split changes too: it must not apply either.
    let text = config(
        "split = { blue = 0, green = 100 }",
        &[b.addr],
        &[g.addr],
        &api,
    );
    std::fs::write(&h.path, text).unwrap();
    let (s, v) = admin(h.admin, "POST", "/v1/reload", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains(&format!(
            "cannot listen on {port} (config key `services.api.listeners[0].listen`)"
        )),
        "{err}"
    );
    let after = h.status().await;
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!(after["services"], before["services"]);
    assert_eq!(after["config"]["last_error"].as_str(), Some(err));
    assert_eq!(
        metric(h.admin, "cutover_config_last_reload_success").await,
        Some(0.0)
    );
    let proxy = h.listener("web", 0).unwrap();
    assert_eq!(get_once(proxy, "/", &[]).await.unwrap().pool(), "blue");
    assert!(h.listener("api", 0).is_none());
    drop(taken);
}

/// 100 ms checks, 50 ms timeout, 2 to come up, 2 to go down.
const CHECKS: &str = r#"health_check = { path = "/health", interval = "100ms", timeout = "50ms", healthy_threshold = 2, unhealthy_threshold = 2 }"#;

async fn backend_state(h: &Running, addr: SocketAddr) -> Option<String> {
    let st = h.status().await;
    st["services"][0]["pools"]
        .as_array()?
        .iter()
        .flat_map(|p| p["backends"].as_array().cloned().unwrap_or_default())
        .find(|b| b["addr"] == addr.to_string().as_str())
        .and_then(|b| b["state"].as_str().map(String::from))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_checker_checks_added_backends_and_stops_checking_removed_ones() {
    let (b1, b2, g) = (
        TestBackend::start("blue").await,
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    b2.set_health(500);
    let web = format!("split = {{ blue = 100, green = 0 }}\n{CHECKS}");
    let h = Running::start(&config(&web, &[b1.addr], &[g.addr], "")).await;
    replace(&h.path, &config(&web, &[b1.addr, b2.addr], &[g.addr], ""));
    let down = eventually(Duration::from_secs(5), || async {
        backend_state(&h, b2.addr).await.as_deref() == Some("down")
    })
    .await;
    assert!(down, "the added backend was never checked");
    assert_eq!(backend_state(&h, b1.addr).await.as_deref(), Some("up"));
    // Removed: no more checks (each opens a connection).
    replace(&h.path, &config(&web, &[b1.addr], &[g.addr], ""));
    let gone = eventually(Duration::from_secs(5), || async {
        backend_state(&h, b2.addr).await.is_none()
    })
    .await;
    assert!(gone);
    let settled = eventually(Duration::from_secs(2), || async {
        let before = b2.connections.load(Ordering::Relaxed);
        holds_for(Duration::from_millis(400), || async {
            b2.connections.load(Ordering::Relaxed) == before
        })
        .await
    })
    .await;
    assert!(settled, "the removed backend is still checked");
    // The one that stayed is still checked and up.
    let checked = b1.connections.load(Ordering::Relaxed);
    let more = eventually(Duration::from_secs(2), || async {
        b1.connections.load(Ordering::Relaxed) > checked
    })
    .await;
    assert!(more, "the backend that stayed is no longer checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_is_a_post_and_needs_a_config_file() {
    // The harness starts cutover from a config text, not a file.
    let h = Harness::new().start().await;
    let (s, v) = h.api("POST", "/v1/reload", None).await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED, "{v}");
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("not started from a config file"));
    let (s, _) = h.api("GET", "/v1/reload", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}
