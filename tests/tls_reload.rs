//! End-to-end: a reload (`POST /v1/reload` in process, SIGHUP on the real
//! binary) reads the certificate files again, not only the files' watch.
//!
//! To tell the reload from the watch, the config names `certs/a.pem` and
//! `certs/a.key`, symlinks to files in another directory, `real/`, which
//! the test rewrites in place. The watch (`src/tls_watch.rs`) watches the
//! directories the config names (`certs/`), which sees no event when a
//! symlink's target changes elsewhere; the config file's own watch sees
//! nothing either (it is not touched). Each test first checks, over a
//! second, that the old certificate is still served after the rewrite:
//! only then does it ask for the reload.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use cutover::App;
use cutover_test_support::process::{run_ready, Reaped};
use cutover_test_support::tls::{self, Leaf, TestCa};
use cutover_test_support::*;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// 2040-01-01T00:00:00Z and 2050-01-01T00:00:00Z, seconds since the epoch:
/// the expiry of the first certificate and of its replacement.
const UNTIL_2040: i64 = 2_208_988_800;
const UNTIL_2050: i64 = 2_524_608_000;

/// A temp dir with `real/a.pem` and `real/a.key` holding `leaf`,
/// `certs/a.pem` and `certs/a.key` symlinks to them, and `cutover.toml`
/// whose one TLS listener names the symlinks (relative to the file).
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(leaf: &Leaf, backend: SocketAddr) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let (real, certs) = (dir.path().join("real"), dir.path().join("certs"));
        std::fs::create_dir(&real).unwrap();
        std::fs::create_dir(&certs).unwrap();
        leaf.write(&real, "a");
        for f in ["a.pem", "a.key"] {
            std::os::unix::fs::symlink(real.join(f), certs.join(f)).unwrap();
        }
        let text = format!(
            r#"shutdown_timeout = "2s"

[admin]
listen = "127.0.0.1:0"

[services.web]
split = {{ blue = 100 }}

[[services.web.listeners]]
listen = "127.0.0.1:0"
tls = {{ certificates = [{{ cert = "certs/a.pem", key = "certs/a.key" }}] }}

[services.web.pools.blue]
backends = ["{backend}"]
"#
        );
        std::fs::write(dir.path().join("cutover.toml"), text).unwrap();
        Files { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("cutover.toml")
    }

    /// Rewrites the symlinks' targets in place (truncate and write).
    fn rewrite(&self, cert_pem: &str, key_pem: &str) {
        let real = self.dir.path().join("real");
        std::fs::write(real.join("a.pem"), cert_pem).unwrap();
        std::fs::write(real.join("a.key"), key_pem).unwrap();
    }
}

/// The DNS names of the certificate a verifying client gets for `a.test`
/// on a new connection (empty if the handshake failed).
async fn served(proxy: SocketAddr, ca: &TestCa) -> Vec<String> {
    match tls::connect(proxy, tls::client_config(&ca.pem(), &[]), Some("a.test")).await {
        Ok(s) => tls::served_names(&s),
        Err(_) => Vec::new(),
    }
}

/// An HTTP/1.1 keep-alive connection over TLS, opened before a rotation.
struct KeepAlive(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl KeepAlive {
    async fn open(proxy: SocketAddr, ca: &TestCa) -> KeepAlive {
        let config = tls::client_config(&ca.pem(), &["http/1.1"]);
        let stream = tls::connect(proxy, config, Some("a.test")).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        KeepAlive(send)
    }

    /// A GET on this same connection: its status and pool.
    async fn get(&mut self) -> (u16, String) {
        let req = http::Request::get("/")
            .header("host", "a.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), self.0.send_request(req))
            .await
            .expect("no answer within 5 s on the keep-alive connection")
            .expect("the keep-alive connection failed");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).trim().to_string())
    }
}

/// `/v1/status`'s `tls` entry of listener `proxy`.
async fn tls_status(admin_addr: SocketAddr, proxy: SocketAddr) -> Value {
    let (s, v) = admin(admin_addr, "GET", "/v1/status", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["tls"][proxy.to_string()].clone()
}

/// After `files` were rewritten: the old certificate (`["a.test"]`) stays
/// for a second, so neither watch reacted and what follows is the reload's
/// doing.
async fn assert_no_watch_saw_it(proxy: SocketAddr, ca: &TestCa) {
    let kept = holds_for(Duration::from_secs(1), || async {
        served(proxy, ca).await == ["a.test"]
    })
    .await;
    assert!(
        kept,
        "the new certificate was served before any reload: a watch saw the rewrite, \
         so this test cannot tell the reload from the watch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_rereads_the_certificates_and_a_bad_pair_keeps_the_old_one() {
    let blue = TestBackend::start("blue").await;
    let ca = TestCa::new("test CA");
    let files = Files::new(&ca.leaf_until(&["a.test"], 2040), blue.addr);
    let cfg = cutover_config::load(&files.config()).unwrap();
    let app = App::start_watching(&files.config(), cfg).await.unwrap();
    let (proxy, admin_addr) = (app.listener("web", 0).unwrap(), app.admin_addr);

    let mut open = KeepAlive::open(proxy, &ca).await;
    assert_eq!(open.get().await, (200, "blue".to_string()));
    let before = tls_status(admin_addr, proxy).await;
    assert_eq!(
        before["certificates"][0]["not_after"], UNTIL_2040,
        "{before}"
    );

    let new = ca.leaf_until(&["a.test", "new.test"], 2050);
    files.rewrite(&new.cert_pem, &new.key_pem);
    assert_no_watch_saw_it(proxy, &ca).await;
    let (s, report) = admin(admin_addr, "POST", "/v1/reload", None).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    // The reload answers once the certificates are read: new connections
    // get the new one at once; the connection from before keeps working.
    assert_eq!(served(proxy, &ca).await, ["a.test", "new.test"]);
    assert_eq!(open.get().await, (200, "blue".to_string()));
    let after = tls_status(admin_addr, proxy).await;
    assert_eq!(after["certificates"][0]["not_after"], UNTIL_2050, "{after}");
    assert_eq!(
        after["certificates"][0]["names"],
        serde_json::json!(["a.test", "new.test"])
    );
    assert_eq!(after["last_error"], Value::Null, "{after}");

    // A certificate with a key that is not its own: the reload is refused
    // and says why; the certificate served and the open connection stay.
    let other = ca.leaf(&["bad.test"]);
    files.rewrite(&other.cert_pem, &new.key_pem);
    let (s, v) = admin(admin_addr, "POST", "/v1/reload", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let err = v["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("does not match") && err.contains("tls.certificates[0].key"),
        "{v}"
    );
    assert_eq!(served(proxy, &ca).await, ["a.test", "new.test"]);
    assert_eq!(open.get().await, (200, "blue".to_string()));
    let (_, status) = admin(admin_addr, "GET", "/v1/status", None).await;
    assert_eq!(status["config"]["last_error"].as_str(), Some(err));
    let tls = &status["tls"][proxy.to_string()];
    assert_eq!(tls["certificates"][0]["not_after"], UNTIL_2050, "{tls}");
    drop(app);
}

/// `cutover run` on `config`, ready when this returns.
async fn run_binary(config: &Path) -> (Reaped, cutover_test_support::process::Bound) {
    run_ready(env!("CARGO_BIN_EXE_cutover"), config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_certificates_of_the_running_binary() {
    let blue = TestBackend::start("blue").await;
    let ca = TestCa::new("test CA");
    let files = Files::new(&ca.leaf_until(&["a.test"], 2040), blue.addr);
    let (child, bound) = run_binary(&files.config()).await;
    let (proxy, admin_addr) = (bound.listeners[0], bound.admin);

    let mut open = KeepAlive::open(proxy, &ca).await;
    assert_eq!(open.get().await, (200, "blue".to_string()));
    let new = ca.leaf_until(&["a.test", "new.test"], 2050);
    files.rewrite(&new.cert_pem, &new.key_pem);
    assert_no_watch_saw_it(proxy, &ca).await;

    child.signal("HUP");
    let rotated = eventually(Duration::from_secs(2), || async {
        served(proxy, &ca).await == ["a.test", "new.test"]
    })
    .await;
    assert!(
        rotated,
        "new connections did not get the new certificate within 2 s of SIGHUP; log:\n{}",
        bound.log_lines("").join("\n")
    );
    assert_eq!(open.get().await, (200, "blue".to_string()));
    let tls = tls_status(admin_addr, proxy).await;
    assert_eq!(tls["certificates"][0]["not_after"], UNTIL_2050, "{tls}");
    assert!(
        !bound.log_lines("TLS certificates rotated").is_empty(),
        "no rotation in the log"
    );
    // Still running: SIGHUP is a reload, not an exit.
    let mut child = child;
    assert!(child.0.try_wait().unwrap().is_none(), "cutover exited");
}

/// `cutover_tls_certificate_reloads_total{listener=proxy,result}`.
async fn cert_reloads(admin_addr: SocketAddr, proxy: SocketAddr, result: &str) -> f64 {
    let key =
        format!(r#"cutover_tls_certificate_reloads_total{{listener="{proxy}",result="{result}"}}"#);
    metric(admin_addr, &key).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_reads_a_refused_pair_once_not_again_at_each_of_its_own_reads() {
    // The watch sees the directory's entries opened, its own reads
    // included: a reread must not set off the next one (with a bad pair,
    // a warning and a counted error every 200 ms until it is fixed).
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let h = tls::a_test_harness(&ca, dir.path()).await;
    let replace = |file: &str, text: &str| tls::replace_file(dir.path(), file, text);
    // A good rotation first, written again until it is served: then the
    // watch is up (a change made before it watches is seen by no event).
    let good = ca.leaf(&["a.test", "good.test"]);
    let rotated = eventually(Duration::from_secs(3), || async {
        replace("a.key", &good.key_pem);
        replace("a.pem", &good.cert_pem);
        served(h.proxy, &ca).await == ["a.test", "good.test"]
    })
    .await;
    assert!(rotated, "the watch did not rotate a good pair");
    // (A reread between the two renames above may have refused a pair.)
    let errors = || cert_reloads(h.admin, h.proxy, "error");
    let base = errors().await;
    replace("a.pem", &ca.leaf(&["bad.test"]).cert_pem);
    let counted = eventually(Duration::from_secs(2), || async {
        errors().await >= base + 1.0
    })
    .await;
    assert!(counted, "the refused pair was not counted");
    let once = holds_for(Duration::from_secs(1), || async {
        errors().await == base + 1.0
    })
    .await;
    assert!(
        once,
        "one bad file was refused {} times: the watch rereads at its own reads",
        errors().await - base
    );
    // Other files in the directory (a log beside the certificates, say)
    // are not the certificates: no reread, no new warning.
    let unrelated = holds_for(Duration::from_secs(1), || async {
        std::fs::write(dir.path().join("cutover.log"), "a line\n").unwrap();
        errors().await == base + 1.0
    })
    .await;
    assert!(
        unrelated,
        "writes to another file in the directory reread the certificates ({} refusals)",
        errors().await - base
    );
    assert_eq!(served(h.proxy, &ca).await, ["a.test", "good.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_as_cutover_starts_is_served() {
    // Between the first read of the files and the watch on their
    // directory, a change makes no event the watch could see.
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let h = tls::a_test_harness(&ca, dir.path()).await;
    let new = ca.leaf(&["a.test", "new.test"]);
    for (file, text) in [("a.key", &new.key_pem), ("a.pem", &new.cert_pem)] {
        tls::replace_file(dir.path(), file, text);
    }
    let rotated = eventually(Duration::from_secs(2), || async {
        served(h.proxy, &ca).await == ["a.test", "new.test"]
    })
    .await;
    assert!(
        rotated,
        "a certificate replaced as cutover started is not served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_style_secret_swap_rotates_the_certificate() {
    // A Kubernetes secret volume: `a.pem -> ..data/a.pem`, `..data ->
    // ..v1`; a new version is written to `..vN` and `..data` is swapped to
    // it by a rename. No event names `a.pem`: the `..` names must do.
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let swap = |version: u32, names: &[&str]| {
        let next = dir.path().join(format!("..v{version}"));
        std::fs::create_dir(&next).unwrap();
        ca.leaf(names).write(&next, "a");
        let tmp = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join("..data")).unwrap();
    };
    swap(1, &["a.test"]);
    for f in ["a.pem", "a.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), dir.path().join(f)).unwrap();
    }
    let pair = (dir.path().join("a.pem"), dir.path().join("a.key"));
    let h = Harness::new()
        .listener(&tls::listener_table(&[pair], ""))
        .start()
        .await;
    assert_eq!(served(h.proxy, &ca).await, ["a.test"]);
    // Swapped again until served: then the watch is up (it reads the
    // files once more after it starts watching).
    let mut version = 1;
    let up = eventually(Duration::from_secs(3), || {
        version += 1;
        swap(version, &["a.test", "up.test"]);
        async { served(h.proxy, &ca).await == ["a.test", "up.test"] }
    })
    .await;
    assert!(up, "the swapped secret was not served");
    // One more swap, once: only the watch's event can bring it.
    swap(version + 1, &["a.test", "swapped.test"]);
    let rotated = eventually(Duration::from_secs(2), || async {
        served(h.proxy, &ca).await == ["a.test", "swapped.test"]
    })
    .await;
    assert!(rotated, "a swap of ..data was not seen by the watch");
}
