//! moto in server mode for the edge tests: installed on first use into a
//! virtualenv under the target directory (`<target>/moto-venv`, guarded by
//! a lock file so that parallel test binaries install it once), started on
//! a free loopback port, stopped by PID on drop.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_route53::config::Credentials;

/// The moto release line the tests are written against.
const MOTO_REQUIREMENT: &str = "moto[server]>=5.1,<6";

pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
}

impl Moto {
    /// Install (first time only) and start moto; waits until it accepts
    /// connections (bounded).
    pub fn start() -> Moto {
        let venv = ensure_venv();
        let port = free_port();
        let log = target_dir().join(format!("moto-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create the moto log file");
        let child = Command::new(venv.join("bin").join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start moto_server");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut moto = Moto { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto_server exited with {status} before listening; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {addr} within 60s; log: {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Kill by PID (this child only), then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SDK config for tests: explicit fake credentials, region and endpoint
/// (never the process environment, tests run in parallel).
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "cutover-tests",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// The target directory of this build: test binaries live in
/// `<target>/<profile>/deps/`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .expect("test binary inside <target>/<profile>/deps")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `<target>/moto-venv` with moto installed, created under an exclusive
/// `flock` on `<target>/moto-venv.lock` so concurrent test binaries wait
/// for one installer.
fn ensure_venv() -> PathBuf {
    let target = target_dir();
    let venv = target.join("moto-venv");
    let ready = venv.join(".cutover-ready");
    if ready.exists() {
        return venv;
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
        .expect("run flock (util-linux) to install moto");
    assert!(
        out.status.success(),
        "installing moto into {} failed:\n{}{}",
        venv.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    venv
}

/// Wait for `cond` (bounded poll); panics with `what` on timeout.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
