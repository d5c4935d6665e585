//! End-to-end: TLS with clients nobody here wrote, and cutover as a TLS
//! client. curl (OpenSSL, nghttp2) over HTTP/1.1 and HTTP/2 and Python's
//! `ssl` module against a listener with two certificates made in the test
//! (rcgen); then cutover's own connections to a TLS backend, whose second
//! handshake must resume the first one's session, across a reload.
//!
//! curl and python3 must be installed (README says so): without them these
//! tests fail and say what to install, they are not skipped.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cutover_test_support::tls::{self, TestCa, TlsBackend};
use cutover_test_support::*;

/// The longest a client process may run; curl and the script give up
/// after 10 s themselves.
const PROCESS_LIMIT: Duration = Duration::from_secs(20);

/// A process's end: exit code (`None`: killed by a signal), stdout, stderr.
struct Ran {
    code: Option<i32>,
    out: String,
    err: String,
}

/// Runs `program` with `args` to its end, at most [`PROCESS_LIMIT`] (then
/// it is killed and the test fails). A program that is not installed fails
/// the test with `install`, what to install.
async fn run(program: &'static str, args: Vec<String>, install: &'static str) -> Ran {
    tokio::task::spawn_blocking(move || {
        let mut child = match Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`{program}` is not installed; the TLS client tests need it ({install}; see README.md)"
            ),
            Err(e) => panic!("cannot run {program}: {e}"),
        };
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        // A bounded poll of the child's exit.
        let deadline = Instant::now() + PROCESS_LIMIT;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{program} {args:?} did not finish within {PROCESS_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ran {
            code: status.code(),
            out: out.join().unwrap(),
            err: err.join().unwrap(),
        }
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// A harness whose main listener serves `a.test` and `b.test` (with
/// `*.b.test`), `a.test` first (the default); the CA's PEM file.
async fn two_cert_harness(ca: &TestCa, dir: &Path) -> (Running, String) {
    let a = ca.leaf(&["a.test"]).write(dir, "a");
    let b = ca.leaf(&["b.test", "*.b.test"]).write(dir, "b");
    let h = Harness::new()
        .listener(&tls::listener_table(&[a, b], ""))
        .start()
        .await;
    (h, write_ca(ca, dir, "ca.pem"))
}

fn write_ca(ca: &TestCa, dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, ca.pem()).unwrap();
    path.display().to_string()
}

/// `curl https://NAME:PORT/` (NAME resolved to the proxy's loopback
/// address, verified against `cafile`) with `version_flag`
/// (`--http1.1`, `--http2`); stdout is the body, then a line with the HTTP
/// version curl used.
async fn curl(proxy: SocketAddr, name: &str, cafile: &str, version_flag: &str) -> Ran {
    let port = proxy.port();
    let args = [
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--cacert",
        cafile,
        "--resolve",
        &format!("{name}:{port}:{}", proxy.ip()),
        version_flag,
        "--write-out",
        "\n%{http_version}",
        &format!("https://{name}:{port}/"),
    ];
    run(
        "curl",
        args.iter().map(|s| s.to_string()).collect(),
        "apt-get install curl",
    )
    .await
}

/// The body and the HTTP version of a curl that succeeded.
fn body_and_version(r: &Ran) -> (&str, &str) {
    assert_eq!(r.code, Some(0), "curl failed: {}{}", r.out, r.err);
    r.out.rsplit_once('\n').unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_verifies_each_sni_certificate_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (h, cafile) = two_cert_harness(&ca, dir.path()).await;
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        for name in ["a.test", "b.test", "x.b.test"] {
            let r = curl(h.proxy, name, &cafile, flag).await;
            assert_eq!(body_and_version(&r), ("blue\n", version), "{name} {flag}");
        }
    }
    // A switch shows in what curl gets: the body is the pool's.
    switch(h.admin, "green").await;
    let r = curl(h.proxy, "b.test", &cafile, "--http2").await;
    assert_eq!(body_and_version(&r), ("green\n", "2"));

    // curl checks the certificate: for a name no certificate covers, the
    // default (a.test's) does not verify, and with a CA that did not sign
    // them, neither does any. 60: CURLE_PEER_FAILED_VERIFICATION.
    let r = curl(h.proxy, "c.test", &cafile, "--http1.1").await;
    assert_eq!(r.code, Some(60), "{}{}", r.out, r.err);
    assert!(r.err.contains("c.test"), "{}", r.err);
    let stranger = write_ca(&TestCa::new("another CA"), dir.path(), "other-ca.pem");
    for flag in ["--http1.1", "--http2"] {
        let r = curl(h.proxy, "b.test", &stranger, flag).await;
        assert_eq!(r.code, Some(60), "{flag}: {}{}", r.out, r.err);
    }
}

/// Connects to `127.0.0.1:PORT` with `ssl.create_default_context(cafile)`
/// and `server_hostname`, offers ALPN http/1.1, sends a GET and prints as
/// JSON the status line, `x-pool`, `version()`, the ALPN result and the
/// served certificate's subjectAltName; or `{"error": ...}` when the
/// handshake fails (exit status 1).
const PYTHON_CLIENT: &str = r#"
import json, socket, ssl, sys
port, name, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
try:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname=name)
except ssl.SSLError as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(1)
s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % name).encode())
data = b""
while b"\r\n\r\n" not in data:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
pool = [l.split(":", 1)[1].strip() for l in head[1:] if l.lower().startswith("x-pool:")]
print(json.dumps({
    "status": head[0],
    "pool": pool[0] if pool else None,
    "version": s.version(),
    "alpn": s.selected_alpn_protocol(),
    "san": s.getpeercert()["subjectAltName"],
}))
s.close()
"#;

async fn python(proxy: SocketAddr, name: &str, cafile: &str) -> (Ran, serde_json::Value) {
    let args = vec![
        "-c".to_string(),
        PYTHON_CLIENT.to_string(),
        proxy.port().to_string(),
        name.to_string(),
        cafile.to_string(),
    ];
    let r = run("python3", args, "apt-get install python3").await;
    let v = serde_json::from_str(r.out.trim())
        .unwrap_or_else(|e| panic!("python printed no JSON ({e}): {}{}", r.out, r.err));
    (r, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pythons_ssl_module_verifies_b_test_and_gets_an_answer_over_http1() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (h, cafile) = two_cert_harness(&ca, dir.path()).await;
    let (r, v) = python(h.proxy, "b.test", &cafile).await;
    assert_eq!(r.code, Some(0), "{v} {}", r.err);
    assert_eq!(v["status"], "HTTP/1.1 200 OK", "{v}");
    assert_eq!(v["pool"], "blue", "{v}");
    assert_eq!(v["version"], "TLSv1.3", "{v}");
    assert_eq!(v["alpn"], "http/1.1", "{v}");
    assert_eq!(
        v["san"],
        serde_json::json!([["DNS", "b.test"], ["DNS", "*.b.test"]]),
        "{v}"
    );
    // It verifies: a name only the default certificate is served for fails.
    let (r, v) = python(h.proxy, "c.test", &cafile).await;
    assert_eq!(r.code, Some(1), "{v} {}", r.err);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("CERTIFICATE_VERIFY_FAILED")),
        "{v}"
    );
}

/// cutover's config: service `web` whose blue pool is `backend` over TLS
/// (verified by the CA in `ca_file`, name `backend.test`) speaking
/// `protocol`, with a connect timeout of `connect`.
fn tls_pool_config(backend: SocketAddr, ca_file: &str, protocol: &str, connect: &str) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"

[services.web]
split = {{ blue = 100, green = 0 }}
error_detail = "full"

[services.web.timeouts]
connect = "{connect}"

[[services.web.listeners]]
listen = "127.0.0.1:0"

[services.web.pools.blue]
backends = ["{backend}"]
protocol = "{protocol}"
tls = {{ ca_file = {ca_file:?}, server_name = "backend.test" }}

[services.web.pools.green]
backends = ["127.0.0.1:9"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_upstream_connection_resumes_the_tls_session_over_http1_and_h2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("backend CA");
    let ca_file = write_ca(&ca, dir.path(), "ca.pem");
    let path = dir.path().join("cutover.toml");
    for protocol in ["http1", "h2"] {
        let backend = TlsBackend::start(&ca.leaf(&["backend.test"]), "blue").await;
        let text = |connect| tls_pool_config(backend.addr, &ca_file, protocol, connect);
        std::fs::write(&path, text("5s")).unwrap();
        let cfg = cutover_config::load(&path).unwrap();
        let app = cutover::App::start_watching(&path, cfg).await.unwrap();
        let (proxy, admin_addr) = (app.listener("web", 0).unwrap(), app.admin_addr);
        let mut conn = Conn::h1(proxy).await;
        let a = conn.get("/", &[]).await.unwrap();
        assert_eq!(a.status, 200, "{protocol}: {}", a.body);
        assert_eq!(backend.handshakes(), (1, 0), "{protocol}: first connection");
        // The backend drops its connections, and a reload changes the
        // connect timeout, which makes a new backend object for the same
        // address: cutover has to open another connection for the next
        // request, with the session the pool's TLS (unchanged, kept)
        // remembers.
        backend.close_connections().await;
        let before = generation(admin_addr).await;
        std::fs::write(&path, text("4s")).unwrap();
        let (s, report) = admin(admin_addr, "POST", "/v1/reload", None).await;
        assert_eq!(s, 200, "{report}");
        // (The file's watch may have applied it first.)
        let rebuilt = eventually(Duration::from_secs(2), || async {
            generation(admin_addr).await > before
        })
        .await;
        assert!(rebuilt, "the reload did not rebuild the snapshot: {report}");
        let a = conn.get("/", &[]).await.unwrap();
        assert_eq!(a.status, 200, "{protocol}: {}", a.body);
        assert_eq!(
            backend.handshakes(),
            (1, 1),
            "{protocol}: (full, resumed) handshakes; the second should resume"
        );
    }
}
