//! The audit log against real files in a temp dir.

use super::*;
use std::path::Path;

fn settings(dir: &Path, max_bytes: u64, keep: usize) -> AuditSettings {
    AuditSettings {
        path: Some(dir.join("audit.jsonl")),
        max_bytes,
        keep,
    }
}

fn open(s: &AuditSettings) -> (AuditLog, Registry) {
    let registry = Registry::new();
    let log = AuditLog::open(s, "run1".into(), &registry).unwrap();
    (log, registry)
}

fn change(generation: u64, service: &str) -> AuditRecord {
    let mut r = AuditRecord::now("run1", ACCEPTED, 200, "switch", "deploy-bot");
    r.generation = generation;
    r.service = service.into();
    r.split = vec![("blue".into(), 0), ("green".into(), 100)];
    r.source = Some("127.0.0.1:5000".into());
    r
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn query(service: Option<&str>, limit: usize) -> AuditQuery {
    AuditQuery {
        service: service.map(String::from),
        limit,
        since: None,
    }
}

#[test]
fn lines_are_on_disk_when_append_returns_and_read_back_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 3);
    let (log, _) = open(&s);
    let rt = rt();
    for g in 2..=4 {
        rt.block_on(log.append(change(g, if g == 3 { "api" } else { "web" })))
            .unwrap();
    }
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("audit.jsonl")).unwrap();
        let mode = meta.permissions().mode();
        assert_eq!(mode & 0o007, 0, "not readable by others: {mode:o}");
    }
    assert_eq!(lines[0]["generation"], 2);
    assert_eq!(lines[0]["actor"], "deploy-bot");
    assert_eq!(lines[0]["run_id"], "run1");
    assert_eq!(lines[0]["result"], "accepted");
    assert_eq!(
        lines[0]["split"],
        serde_json::json!([["blue", 0], ["green", 100]])
    );
    let got = rt.block_on(log.read(query(None, 10))).unwrap();
    assert_eq!(
        got.iter().map(|r| r.generation).collect::<Vec<_>>(),
        [4, 3, 2]
    );
    let web = rt.block_on(log.read(query(Some("web"), 1))).unwrap();
    assert_eq!(web.iter().map(|r| r.generation).collect::<Vec<_>>(), [4]);
    // A new run reads the old lines back (status `last_change`, generations).
    drop(log);
    let (again, _) = open(&s);
    assert_eq!(again.last_generation(), Some(4));
    assert_eq!(again.accepted().last().map(|r| r.generation), Some(4));
}

#[test]
fn rotation_by_size_keeps_n_files_and_reads_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let line_len = serde_json::to_vec(&change(10, "web")).unwrap().len() as u64 + 1;
    // Three lines a file.
    let (log, _) = open(&settings(dir.path(), line_len * 3, 2));
    let rt = rt();
    for g in 10..30 {
        rt.block_on(log.append(change(g, "web"))).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
    for n in &names {
        let len = std::fs::metadata(dir.path().join(n)).unwrap().len();
        assert!(len <= line_len * 3, "{n}: {len} bytes");
    }
    // 20 lines written, 3 files of at most 3 kept: the newest 8 (2 + 3 + 3).
    let got = rt.block_on(log.read(query(None, 1000))).unwrap();
    let gens: Vec<u64> = got.iter().map(|r| r.generation).collect();
    assert_eq!(gens, (22..30).rev().collect::<Vec<_>>());
    // `since` stops at the first older line.
    let cut = got[2].time().unwrap();
    let q = AuditQuery {
        since: Some(cut),
        ..query(None, 1000)
    };
    let recent = rt.block_on(log.read(q)).unwrap();
    assert!(recent.len() >= 3 && recent.iter().all(|r| r.time().unwrap() >= cut));
}

#[test]
fn refused_lines_are_rate_limited_and_the_drop_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (log, registry) = open(&settings(dir.path(), 1 << 20, 1));
    let rt = rt();
    let refused = || AuditRecord::now("run1", REFUSED, 401, "switch", "unknown");
    for _ in 0..200 {
        rt.block_on(log.append_refused(refused()));
    }
    let written = std::fs::read_to_string(dir.path().join("audit.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(
        (REFUSED_BURST as usize..REFUSED_BURST as usize + 10).contains(&written),
        "{written} refused lines written of 200"
    );
    let dropped = cutover_test_support::Metrics::from_registry(&registry)
        .value(names::AUDIT_REFUSED_DROPPED, &[]);
    assert_eq!(dropped, Some((200 - written) as f64));
    // Later, the next refused line says how many it stands for.
    let mut limiter = lock(&log.limiter);
    let later = limiter.last + std::time::Duration::from_secs(1);
    assert_eq!(limiter.take(later), Some((200 - written) as u64));
}

#[test]
fn an_accepted_change_is_never_pushed_out_of_memory_by_refusals() {
    let registry = Registry::new();
    let s = AuditSettings {
        path: None,
        max_bytes: 1 << 20,
        keep: 1,
    };
    let log = AuditLog::open(&s, "run1".into(), &registry).unwrap();
    let rt = rt();
    rt.block_on(log.append(change(2, "web"))).unwrap();
    for _ in 0..MEMORY_KEEP + 5 {
        log.remember(AuditRecord::now("run1", REFUSED, 401, "status", "unknown"));
    }
    assert_eq!(log.accepted().len(), 1);
    assert_eq!(log.path(), None);
    let got = rt.block_on(log.read(query(Some("web"), 10))).unwrap();
    assert_eq!(got.len(), 1);
}

#[test]
fn a_reload_is_one_line_per_item_and_old_state_entries_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 1);
    let (log, _) = open(&s);
    let old = AuditEntry {
        generation: 7,
        at: "2026-11-01T10:00:00Z".into(),
        service: "web".into(),
        action: "switch".into(),
        split: vec![("blue".into(), 0), ("green".into(), 100)],
        previous: vec![("blue".into(), 100), ("green".into(), 0)],
        who: "10.0.0.5".into(),
        reason: Some("release 41".into()),
        forced: false,
    };
    assert_eq!(log.migrate(std::slice::from_ref(&old)).unwrap(), 1);
    assert_eq!(log.migrate(&[old]).unwrap(), 0, "only into an empty log");
    let rt = rt();
    let items = vec![
        "backend 10.0.2.12:8080 added to web/green".to_string(),
        "service api added".into(),
    ];
    rt.block_on(log.record_reload("signal", None, 8, Ok(&items)))
        .unwrap();
    rt.block_on(log.record_reload("ops", Some("10.0.0.9:4000"), 8, Err("t.toml:3: bad")))
        .unwrap();
    let got = rt.block_on(log.read(query(None, 10))).unwrap();
    let seen: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|r| {
            (
                r.action.as_str(),
                r.result.as_str(),
                r.detail.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("reload", "failed", "t.toml:3: bad"),
            ("reload", "accepted", "service api added"),
            (
                "reload",
                "accepted",
                "backend 10.0.2.12:8080 added to web/green"
            ),
            ("switch", "accepted", "migrated from the state file"),
        ]
    );
    assert_eq!(got[3].actor, "10.0.0.5");
    assert_eq!(got[0].source.as_deref(), Some("10.0.0.9:4000"));
}

#[test]
fn a_torn_last_line_is_skipped_and_the_next_append_starts_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let good = serde_json::to_string(&change(3, "web")).unwrap();
    std::fs::write(&path, format!("{good}\n{{\"at\":\"2026-")).unwrap();
    let (log, _) = open(&settings(dir.path(), 1 << 20, 1));
    assert_eq!(log.last_generation(), Some(3));
    let rt = rt();
    rt.block_on(log.append(change(4, "web"))).unwrap();
    let got = rt.block_on(log.read(query(None, 10))).unwrap();
    let gens: Vec<u64> = got.iter().map(|r| r.generation).collect();
    assert_eq!(
        gens,
        [4, 3],
        "the torn tail is ended first, so line 4 stands alone"
    );
}

#[test]
fn run_ids_differ() {
    let a = new_run_id();
    assert_eq!(a.len(), 16);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(a, new_run_id());
}
