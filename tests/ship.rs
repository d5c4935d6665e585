//! What the project ships beside the code: `cutover ctl health` (the
//! Dockerfile's HEALTHCHECK) against the real binary, and the systemd unit
//! checked by `systemd-analyze verify`.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cutover_test_support::process::{cutover_json_logs, spawn_cutover, Reaped};

fn cutover() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
    // The tests choose the admin address and token themselves.
    c.env_remove("CUTOVER_ADMIN")
        .env_remove("CUTOVER_TOKEN")
        .env("NO_COLOR", "1");
    c
}

/// `cutover ctl --admin ADMIN health ARGS`.
fn health(admin: &str, args: &[&str]) -> Output {
    cutover()
        .args(["ctl", "--admin", admin, "health"])
        .args(args)
        .output()
        .expect("run cutover ctl health")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `cutover run` child process (killed when dropped) and its admin
/// address, with the directory of its config.
struct Running {
    _child: Reaped,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Starts the real binary with the admin API on 127.0.0.1 port 0 (and a
/// token, which /readyz does not ask for); the bound admin address comes
/// from its "cutover started" log line.
fn start_cutover() -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        r#"
[admin]
listen = "127.0.0.1:0"
token = "s3cret"

[services.web]
split = { blue = 100, green = 0 }

[[services.web.listeners]]
listen = "127.0.0.1:0"

[services.web.pools.blue]
backends = ["127.0.0.1:9"]

[services.web.pools.green]
backends = ["127.0.0.1:9"]
"#,
    )
    .expect("write config");
    let mut cmd = cutover_json_logs(env!("CARGO_BIN_EXE_cutover"));
    cmd.env_remove("CUTOVER_ADMIN")
        .env_remove("CUTOVER_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .args(["run", "--config"])
        .arg(&config);
    let (child, bound) = spawn_cutover(cmd, 1, Duration::from_secs(30));
    Running {
        _child: child,
        admin: bound.admin,
        _dir: dir,
    }
}

#[test]
fn ctl_health_exits_0_against_a_running_cutover() {
    let running = start_cutover();
    let admin = format!("http://{}", running.admin);

    let out = health(&admin, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), format!("ready ({admin}/readyz)"));

    // The address from CUTOVER_ADMIN, as for every ctl command, and --json.
    let out = cutover()
        .args(["ctl", "health", "--json", "--timeout", "5s"])
        .env("CUTOVER_ADMIN", &admin)
        .output()
        .expect("run cutover ctl health");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["status"], "ready");
}

#[test]
fn ctl_health_exits_1_with_a_clear_message_where_nothing_listens() {
    // A port that is bound but not listening: connecting to it is refused,
    // and nobody else can take it while the socket is held (no pick-a-port-
    // and-hope race).
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let addr = socket
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet address");

    let started = Instant::now();
    let out = health(&format!("http://{addr}"), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: cannot reach the admin API at http://{addr}/readyz: "
        )) && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(socket);
}

/// Serves one connection with `response` and hands back the request head.
fn answer_once(response: String) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(response.as_bytes());
        let _ = tx.send(text(&head));
    });
    (addr, rx)
}

#[test]
fn ctl_health_exits_1_and_says_why_when_readyz_is_not_200() {
    let body = "{\"status\": \"shutting down\"}\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (addr, head) = answer_once(response);
    let out = health(&format!("http://{addr}"), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "error: not ready: http://{addr}/readyz answered 503 Service Unavailable (shutting down)"
        )
    );
    let head = head
        .recv_timeout(Duration::from_secs(10))
        .expect("the request head");
    assert!(head.starts_with("GET /readyz HTTP/1.1\r\n"), "{head}");
}

#[test]
fn ctl_health_exits_1_when_something_else_answers_200() {
    let (addr, _head) = answer_once(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 6\r\nconnection: close\r\n\r\nhello\n"
            .to_string(),
    );
    let out = health(&format!("http://{addr}"), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("not ready") && stderr.contains("answered 200 OK (hello)"),
        "{stderr}"
    );
}

#[test]
fn ctl_health_gives_up_after_its_timeout() {
    // Listening but never accepting: the kernel completes the handshake and
    // nothing ever answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let started = Instant::now();
    let out = health(&format!("http://{addr}"), &["--timeout", "300ms"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("no answer within 0.3s"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    drop(listener);
}

/// `systemd-analyze verify` on deploy/systemd/cutover.service. verify
/// refuses a unit whose ExecStart binary does not exist, and the unit names
/// /usr/local/bin/cutover, which is not installed here. So the test checks a
/// copy whose ExecStart names the binary this test run built, and nothing
/// else changed: every other line (and the rest of ExecStart's command line)
/// is checked as shipped. verify exits 0 even for unknown keys or bad
/// values, which it only prints, so any output fails the test too.
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/cutover.service");
    let unit = std::fs::read_to_string(&unit_path).expect("read the unit");
    for needed in [
        "Type=simple",
        "Restart=on-failure",
        "LimitNOFILE=1048576",
        "StateDirectory=cutover",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ExecStart=/usr/local/bin/cutover run --config /etc/cutover/cutover.toml",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == needed),
            "the unit has no `{needed}` line"
        );
    }
    // `systemctl reload` sends SIGHUP, which reloads the config file.
    assert!(unit
        .lines()
        .any(|l| l.trim() == "ExecReload=/bin/kill -HUP $MAINPID"));

    let probe = Command::new("systemd-analyze").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: systemd-analyze is not installed; deploy/systemd/cutover.service not verified");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("cutover.service");
    let bin = env!("CARGO_BIN_EXE_cutover");
    let rewritten = unit.replace(
        "ExecStart=/usr/local/bin/cutover ",
        &format!("ExecStart={bin} "),
    );
    assert_ne!(rewritten, unit, "ExecStart was not rewritten");
    std::fs::write(&copy, rewritten).expect("write the copy");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .current_dir(dir.path())
        .output()
        .expect("run systemd-analyze verify");
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {} (exit {:?}):\n{said}",
        unit_path.display(),
        out.status.code()
    );
}

/// There is no Docker engine where the tests run, so the Dockerfile is
/// checked piecewise: the files it copies from the source tree exist, the
/// default config it installs passes `cutover check` and is where CMD looks
/// for it, and its HEALTHCHECK command line works against a running
/// cutover (with CUTOVER_ADMIN pointing at it instead of the image's
/// default 127.0.0.1:9901).
#[test]
fn dockerfile_copies_existing_files_and_its_healthcheck_command_works() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("read Dockerfile");
    let mut copied = Vec::new();
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"COPY") && words.contains(&"--from=build") {
            if let Some(src) = words.iter().find_map(|w| w.strip_prefix("/src/")) {
                assert!(
                    root.join(src).exists(),
                    "the Dockerfile copies {src}, which does not exist"
                );
                copied.push((
                    src.to_string(),
                    words.last().copied().unwrap_or("").to_string(),
                ));
            }
        }
    }
    let config = copied
        .iter()
        .find(|(src, _)| src.ends_with(".toml"))
        .expect("the Dockerfile installs a config");
    assert_eq!(config.1, "/etc/cutover/cutover.toml");
    assert!(
        dockerfile.contains(r#"CMD ["run", "--config", "/etc/cutover/cutover.toml"]"#),
        "CMD runs the installed config"
    );
    let out = cutover()
        .arg("check")
        .arg(root.join(&config.0))
        .output()
        .expect("run cutover check");
    assert!(out.status.success(), "{}", text(&out.stderr));

    let health: Vec<String> = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("CMD [\"/usr/local/bin/cutover\", "))
        .map(|rest| {
            rest.trim_end_matches(']')
                .split(", ")
                .map(|w| w.trim_matches('"').to_string())
                .collect()
        })
        .expect("a HEALTHCHECK CMD running /usr/local/bin/cutover");
    assert_eq!(health[..2], ["ctl", "health"]);
    let running = start_cutover();
    let out = cutover()
        .args(&health)
        .env("CUTOVER_ADMIN", format!("http://{}", running.admin))
        .output()
        .expect("run the health check");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
