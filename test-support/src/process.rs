//! A child process that binds its own ports (port 0) and says where: the
//! real `cutover run`, started by a test, reports its admin and listener
//! addresses in its JSON log lines, which are read back here. Nothing picks
//! a free port to bind later.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where a started cutover listens.
#[derive(Debug, Clone)]
pub struct Bound {
    pub admin: SocketAddr,
    /// The proxy listeners, in the order they logged `listening`.
    pub listeners: Vec<SocketAddr>,
    /// Every line of its log so far (it keeps growing).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Bound {
    /// The log lines so far that contain `fragment`.
    pub fn log_lines(&self, fragment: &str) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .filter(|l| l.contains(fragment))
            .cloned()
            .collect()
    }
}

/// A child killed (and reaped) on drop, if it has not exited by then.
pub struct Reaped(pub Child);

impl Reaped {
    /// Sends it signal `name` (`TERM`, `HUP`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{name}");
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // This child only, by its own handle.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` (a `cutover run`; `--log-format json --log-level info` are
/// added in front of its arguments by the caller through
/// [`cutover_json_logs`]) with stderr piped, and reads its log until it has
/// named its admin address and `listeners` proxy listeners, at most
/// `within`. The rest of the log is drained (and dropped) so the child
/// never blocks on a full pipe.
pub fn spawn_cutover(mut cmd: Command, listeners: usize, within: Duration) -> (Reaped, Bound) {
    let mut child = Reaped(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cutover"),
    );
    let stderr = child.0.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<String>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            kept.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line.clone());
            if tx.send(line).is_err() {
                // Nobody listens any more: keep draining.
                continue;
            }
        }
    });
    let deadline = Instant::now() + within;
    let (mut admin, mut bound, mut seen) = (None, Vec::new(), Vec::new());
    while admin.is_none() || bound.len() < listeners {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => panic!(
                "cutover did not report its addresses within {within:?}; its log:\n{}",
                seen.join("\n")
            ),
        };
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            let f = &v["fields"];
            let addr = |key: &str| f[key].as_str().and_then(|s| s.parse::<SocketAddr>().ok());
            match f["message"].as_str() {
                Some("listening") => bound.extend(addr("listener")),
                Some("cutover started") => admin = addr("admin"),
                _ => {}
            }
        }
        seen.push(line);
    }
    let admin = admin.unwrap_or_else(|| unreachable!("the loop ends with an admin address"));
    (
        child,
        Bound {
            admin,
            listeners: bound,
            log,
        },
    )
}

/// `cutover --log-format json --log-level info`, for [`spawn_cutover`].
pub fn cutover_json_logs(binary: &str) -> Command {
    let mut c = Command::new(binary);
    c.args(["--log-format", "json", "--log-level", "info"]);
    c
}

/// `binary run --config config` with JSON logs and one listener, ready
/// (its `/readyz` answers 200) when this returns. Call from a
/// multi-threaded runtime: the start blocks in place.
pub async fn run_ready(binary: &str, config: &std::path::Path) -> (Reaped, Bound) {
    let mut run = cutover_json_logs(binary);
    run.args(["run", "--config"]).arg(config);
    let (child, bound) =
        tokio::task::block_in_place(|| spawn_cutover(run, 1, Duration::from_secs(10)));
    let admin = bound.admin;
    let up = crate::eventually(Duration::from_secs(10), || async {
        crate::probe(admin, "/readyz")
            .await
            .is_some_and(|a| a.status == 200)
    })
    .await;
    assert!(up, "cutover did not become ready");
    (child, bound)
}
