//! moto in server mode for the edge tests: one server shared by every test
//! of a test binary ([`moto()`]), or the one already running at
//! `CUTOVER_MOTO_ENDPOINT` (e.g. `http://127.0.0.1:5000`) when that is set.
//!
//! moto is installed on first use into a virtualenv under the target
//! directory (`<target>/moto-venv`, guarded by a lock file so that parallel
//! test binaries install it once; pip fetches `moto[server]` the first
//! time, so a clean clone needs the network once).
//!
//! The server binds port 0 itself and the port is read from the line it
//! prints (`Running on http://127.0.0.1:PORT`): nothing picks a port to
//! bind later. It runs under a small `sh` that waits for its stdin to close
//! and then kills it; stdin is a pipe held by the test binary, so however
//! the binary ends (tests done, a panic, a kill), moto goes with it and no
//! python process outlives the run. Its output goes to
//! `<target>/moto-<test binary pid>.log`.
//!
//! [`front::Front`] sits between a test and moto to inject what moto never
//! answers (PENDING changes, throttling, 5xx).
//!
//! Tests share the server: each one makes its own zones, instances and
//! addresses (unique caller references and tags), never assumes an empty
//! account.

pub mod front;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The moto release line the tests are written against.
const MOTO_REQUIREMENT: &str = "moto[server]>=5.1,<6";

/// How long a first install plus start may take before the tests give up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Set to reuse a running moto server instead of starting one.
pub const ENDPOINT_ENV: &str = "CUTOVER_MOTO_ENDPOINT";

pub struct Moto {
    pub addr: SocketAddr,
    endpoint: String,
    /// The `sh` watching stdin (None when reusing a server). Never waited
    /// for: it ends when the test binary does.
    _child: Option<Mutex<Child>>,
}

impl Moto {
    /// `http://host:port`, for an SDK's `endpoint_url`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }
}

/// The moto server of this test binary, started (and installed) on first
/// call; panics with the reason when it cannot start (every later call
/// panics with the same reason instead of trying again).
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Result<Moto, String>> = OnceLock::new();
    match MOTO.get_or_init(start) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    }
}

fn start() -> Result<Moto, String> {
    if let Ok(endpoint) = std::env::var(ENDPOINT_ENV) {
        return reuse(endpoint.trim_end_matches('/'));
    }
    let venv = ensure_venv()?;
    let log_path = target_dir()?.join(format!("moto-{}.log", std::process::id()));
    let mut log = std::fs::File::create(&log_path)
        .map_err(|e| format!("create the moto log {}: {e}", log_path.display()))?;
    // $0 is moto_server; the shell kills it once its stdin (our pipe) closes.
    let script = r#""$0" -H 127.0.0.1 -p 0 </dev/null & m=$!
cat >/dev/null
kill $m 2>/dev/null
wait $m"#;
    let mut child = Command::new("sh")
        .args(["-c", script])
        .arg(venv.join("bin").join("moto_server"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start moto_server: {e}"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or("moto_server's stderr is not a pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Copies everything to the log; reports the port once.
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            if let Some(port) = running_on(&line) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(port);
                }
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(port) => {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            Ok(Moto {
                addr,
                endpoint: format!("http://{addr}"),
                _child: Some(Mutex::new(child)),
            })
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "moto_server did not report its port within {START_TIMEOUT:?}; log {}:\n{}",
                log_path.display(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ))
        }
    }
}

fn reuse(endpoint: &str) -> Result<Moto, String> {
    let hostport = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("{ENDPOINT_ENV}={endpoint}: want http://HOST:PORT"))?;
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("{ENDPOINT_ENV}={endpoint}: {e}"))?
        .next()
        .ok_or_else(|| format!("{ENDPOINT_ENV}={endpoint}: no address"))?;
    Ok(Moto {
        addr,
        endpoint: endpoint.to_string(),
        _child: None,
    })
}

/// The port in werkzeug's ` * Running on http://127.0.0.1:PORT` line.
fn running_on(line: &str) -> Option<u16> {
    let rest = line.split("Running on http://").nth(1)?;
    let hostport = rest.split_whitespace().next()?;
    hostport
        .rsplit(':')
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// The target directory of this build: test binaries live in
/// `<target>/<profile>/deps/`.
pub fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} is not inside <target>/<profile>/deps", exe.display()))
}

/// `<target>/moto-venv` with moto installed, created under an exclusive
/// `flock` on `<target>/moto-venv.lock` so concurrent test binaries wait
/// for one installer.
fn ensure_venv() -> Result<PathBuf, String> {
    let target = target_dir()?;
    let venv = target.join("moto-venv");
    let ready = venv.join(".cutover-ready");
    if ready.exists() {
        return Ok(venv);
    }
    let lock = target.join("moto-venv.lock");
    let script = format!(
        r#"set -e
if [ ! -e "{ready}" ]; then
  rm -rf "{venv}"
  python3 -m venv "{venv}"
  "{venv}/bin/pip" install --quiet --disable-pip-version-check "{req}"
  touch "{ready}"
fi"#,
        ready = ready.display(),
        venv = venv.display(),
        req = MOTO_REQUIREMENT,
    );
    let out = Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", &script])
        .output()
        .map_err(|e| format!("run flock (util-linux) to install moto: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "installing moto into {} failed:\n{}{}",
            venv.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(venv)
}

/// A name no other test (in this binary, or another run against the same
/// reused server) has used: `<prefix>-<pid>-<n>-<nanos>`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_port_werkzeug_prints() {
        assert_eq!(
            super::running_on(" * Running on http://127.0.0.1:40123"),
            Some(40123)
        );
        assert_eq!(
            super::running_on("INFO: * Running on http://127.0.0.1:5000/ (Press CTRL+C to quit)"),
            Some(5000)
        );
        assert_eq!(
            super::running_on("WARNING: This is a development server."),
            None
        );
    }
}
