//! The change path against a real state file (in a temp dir) on a
//! current-thread runtime: what `workers = 1` runs on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::*;

/// A controller over two pools of one backend each, with its state file in
/// `dir`, whose writer first runs `before_write` (a slow disk, in effect).
fn controller(
    dir: &Path,
    before_write: impl Fn(&PersistedState) + Send + Sync + 'static,
) -> Arc<Controller> {
    let text = format!(
        "state_file = {:?}\n[services.web]\nsplit = {{ blue = 100, green = 0 }}\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[services.web.pools.blue]\nbackends = [\"127.0.0.1:1\"]\n[services.web.pools.green]\nbackends = [\"127.0.0.1:2\"]\n",
        dir.join("state.json").display().to_string()
    );
    let config = cutover_config::parse("t.toml", &text).unwrap();
    let registry = Registry::new();
    let metrics = Arc::new(ProxyMetrics::new(&registry).unwrap());
    let mut c = Controller::new(config, &registry, metrics).unwrap();
    c.writer = Arc::new(move |path: &Path, st: &PersistedState| {
        before_write(st);
        state::save(path, st)
    });
    Arc::new(c)
}

fn switch(to: &str) -> ChangeRequest {
    ChangeRequest {
        service: "web".into(),
        action: Action::Switch(to.into()),
        reason: None,
        expect_generation: None,
        expect_run_id: None,
        who: "test".into(),
        source: None,
        requested_by: None,
        force: true,
    }
}

fn on_disk(dir: &Path) -> PersistedState {
    state::load(&dir.join("state.json")).unwrap().unwrap()
}

/// With one runtime thread, a state-file write that takes 400 ms (a slow
/// disk's fsync) must not stop other tasks: a 5 ms ticker keeps ticking
/// while the change is being written. When the write ran on the worker
/// thread, the ticker stood still for the whole write (0 ticks).
#[tokio::test(flavor = "current_thread")]
async fn a_slow_state_write_does_not_stall_a_single_threaded_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), |_| {
        std::thread::sleep(Duration::from_millis(400))
    });
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let t = Instant::now();
    let outcome = c.apply(switch("green")).await.unwrap();
    let took = t.elapsed();
    ticker.abort();
    assert!(
        took >= Duration::from_millis(400),
        "answered before the write: {took:?}"
    );
    let ticked = ticks.load(Ordering::Relaxed);
    assert!(
        ticked >= 20,
        "the runtime stalled during the write: {ticked} ticks in {took:?}"
    );
    // Answered after the file is on disk, with what was answered.
    assert_eq!(outcome.generation, 2);
    let st = on_disk(dir.path());
    assert_eq!(st.generation, 2);
    assert_eq!(
        st.services[0].split,
        vec![("blue".into(), 0), ("green".into(), 100)]
    );
}

/// Two changes in a row, the first written slowly: the second waits for
/// it, so the disk ends with the second (never the older one), in step with
/// the snapshot. A health change made during the slow write is not undone
/// by the change's swap.
#[tokio::test(flavor = "current_thread")]
async fn changes_reach_the_disk_in_order_and_keep_health_changed_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    let c = controller(dir.path(), {
        let writes = writes.clone();
        move |_| {
            if writes.fetch_add(1, Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    });
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.apply(switch("green")).await }
    });
    // The first change is being written.
    while writes.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let down = Health::Down {
        reason: "connect refused".into(),
        since: SystemTime::now(),
    };
    assert!(c.set_health("web", "blue", "127.0.0.1:1", down.clone()));
    let second = c.apply(switch("blue")).await.unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!((first.generation, second.generation), (2, 3));
    assert_eq!(writes.load(Ordering::SeqCst), 2);

    let st = on_disk(dir.path());
    assert_eq!(st.generation, 3, "the newer change is the one on disk");
    assert_eq!(
        st.services[0].split,
        vec![("blue".into(), 100), ("green".into(), 0)]
    );
    assert!(st.audit.is_empty(), "the audit is in its own log now");
    let log = std::fs::read_to_string(dir.path().join("cutover-audit.jsonl")).unwrap();
    let actions: Vec<_> = log
        .lines()
        .map(|l| serde_json::from_str::<AuditRecord>(l).unwrap())
        .map(|e| (e.generation, e.split.clone()))
        .collect();
    assert_eq!(
        actions,
        vec![
            (2, vec![("blue".into(), 0), ("green".into(), 100)]),
            (3, vec![("blue".into(), 100), ("green".into(), 0)]),
        ]
    );
    let snap = c.snapshot().load_full();
    assert_eq!(snap.generation, 3);
    assert_eq!(snap.services[0].split.weights(), &[100, 0]);
    assert_eq!(c.audit().len(), 2);
    // Blue is a pool refreshed by the switch away (new backend objects),
    // but its health, set during the write, is still there.
    assert!(
        matches!(snap.services[0].pools[0].health()[0], Health::Down { .. }),
        "{:?}",
        snap.services[0].pools[0].health()
    );
}

/// A write that fails changes nothing, and the next change still works.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_write_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), |_| {});
    std::fs::create_dir(dir.path().join("state.json")).unwrap();
    let e = c.apply(switch("green")).await.unwrap_err();
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    assert_eq!(c.snapshot().load().generation, 1);
    assert!(c.audit().is_empty());
    std::fs::remove_dir(dir.path().join("state.json")).unwrap();
    assert_eq!(c.apply(switch("green")).await.unwrap().generation, 2);
    assert_eq!(on_disk(dir.path()).generation, 2);
}
