//! The audit trail: one JSON line per accepted change, per refused attempt
//! and per reload item, appended to an append-only file and fsynced before
//! the admin API answers (the write runs on a blocking thread, never on a
//! runtime worker). The file rotates by size (`audit.jsonl` ->
//! `audit.jsonl.1` -> ... -> `audit.jsonl.N`, the oldest dropped).
//! Without a file (no `audit_log` and no `state_file`) the last
//! [`MEMORY_KEEP`] records are kept in memory only.
//!
//! Refused attempts cost a line each, so a flood of bad tokens could fill
//! the disk: they pass a token bucket ([`REFUSED_BURST`] lines, then
//! [`REFUSED_PER_SEC`] a second); the ones over it are counted
//! (`cutover_audit_refused_dropped_total`, and `dropped_before` on the
//! next refused line written), not written.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use cutover_proxy::metrics::names;
use prometheus::{IntCounter, Registry};
use serde::{Deserialize, Serialize};

use crate::error::ControlError;
use crate::state::AuditEntry;

mod file;
use file::{read_files, FileSink};

/// Records kept in memory: all of them without a file, and the newest
/// (for `/v1/status`'s `last_change`) with one.
pub const MEMORY_KEEP: usize = 1000;
/// The most records one `GET /v1/audit` returns.
pub const MAX_LIMIT: usize = 1000;
/// Refused lines written in a burst, then at most this many a second.
pub const REFUSED_BURST: f64 = 20.0;
pub const REFUSED_PER_SEC: f64 = 10.0;

pub const ACCEPTED: &str = "accepted";
pub const REFUSED: &str = "refused";
pub const FAILED: &str = "failed";

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One line of the audit log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// When, RFC 3339 in UTC to the millisecond.
    pub at: String,
    /// The run (process start) that wrote it; see `/v1/status`'s `run_id`.
    #[serde(default)]
    pub run_id: String,
    /// `accepted`, `refused` (4xx) or `failed` (5xx: nothing changed).
    pub result: String,
    /// The HTTP status the API answered.
    pub status: u16,
    /// The generation after an accepted change; the one in force when
    /// a change was refused.
    pub generation: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// `split`, `switch`, `rollback`, `reload`, or the endpoint refused.
    pub action: String,
    /// The split after (accepted changes), pool by pool in ticket order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<(String, u32)>,
    /// The split before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<(String, u32)>,
    /// The token's name; `anonymous` without tokens; `unknown` for a
    /// missing or wrong token.
    pub actor: String,
    /// The caller's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Applied with `force` although a pool that gained weight had no
    /// backend up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_run_id: Option<String>,
    /// The body's `who`: what the caller says it acts for (unverified;
    /// `actor` is who it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Why it was refused or failed; for a reload, what one item changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Refused lines not written (over the rate limit) since the last one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_before: u64,
}

impl AuditRecord {
    /// A record stamped now, by this run.
    pub fn now(run_id: &str, result: &str, status: u16, action: &str, actor: &str) -> AuditRecord {
        AuditRecord {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            run_id: run_id.to_string(),
            result: result.to_string(),
            status,
            action: action.to_string(),
            actor: actor.to_string(),
            ..AuditRecord::default()
        }
    }

    fn time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.at).ok()
    }
}

/// Where the log goes and how it rotates.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// `None`: in memory only.
    pub path: Option<PathBuf>,
    pub max_bytes: u64,
    /// Rotated files kept besides the live one.
    pub keep: usize,
}

/// What `GET /v1/audit` asks for.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub service: Option<String>,
    pub limit: usize,
    pub since: Option<SystemTime>,
}

impl AuditQuery {
    fn wants(&self, r: &AuditRecord) -> bool {
        self.service.as_deref().is_none_or(|s| r.service == s)
    }

    /// Whether `r` and everything older is before `since`.
    fn too_old(&self, r: &AuditRecord) -> bool {
        match (self.since, r.time()) {
            (Some(since), Some(t)) => t < since,
            _ => false,
        }
    }
}

/// Refused lines: a token bucket.
struct Limiter {
    tokens: f64,
    last: Instant,
    dropped: u64,
}

impl Limiter {
    /// Whether one more refused line may be written now; if so, how many
    /// were dropped since the last one.
    fn take(&mut self, now: Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * REFUSED_PER_SEC).min(REFUSED_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.dropped))
        } else {
            self.dropped += 1;
            None
        }
    }
}

struct AuditMetrics {
    dropped: IntCounter,
    write_errors: IntCounter,
}

impl AuditMetrics {
    fn new(registry: &Registry) -> Result<AuditMetrics, prometheus::Error> {
        let dropped = IntCounter::new(
            names::AUDIT_REFUSED_DROPPED,
            "Refused attempts not written to the audit log (over its rate limit)",
        )?;
        let write_errors = IntCounter::new(
            names::AUDIT_WRITE_ERRORS,
            "Audit log writes that failed (a change is then refused; a refused attempt goes unrecorded)",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(write_errors.clone()))?;
        Ok(AuditMetrics {
            dropped,
            write_errors,
        })
    }
}

/// The audit log of one run.
pub struct AuditLog {
    run_id: String,
    file: Option<Arc<Mutex<FileSink>>>,
    /// Newest last: every record without a file; with one, the newest.
    memory: Mutex<VecDeque<AuditRecord>>,
    limiter: Mutex<Limiter>,
    metrics: AuditMetrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation is a whole step (a line appended or not): a panic
    // elsewhere cannot leave these half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AuditLog {
    /// Opens (creates) the log file, if any, and reads its newest records
    /// back into memory.
    pub fn open(
        settings: &AuditSettings,
        run_id: String,
        registry: &Registry,
    ) -> Result<AuditLog, ControlError> {
        let metrics = AuditMetrics::new(registry)
            .map_err(|e| ControlError::InvalidSplit(format!("metrics: {e}")))?;
        let mut memory = VecDeque::new();
        let file = match &settings.path {
            None => None,
            Some(path) => {
                let err = |source| ControlError::AuditOpen {
                    path: path.display().to_string(),
                    source,
                };
                let sink = FileSink::open(path, settings.max_bytes, settings.keep).map_err(err)?;
                let q = AuditQuery {
                    limit: MEMORY_KEEP,
                    ..AuditQuery::default()
                };
                let mut newest = read_files(&sink.files(), &q).map_err(err)?;
                newest.reverse();
                memory.extend(newest);
                Some(Arc::new(Mutex::new(sink)))
            }
        };
        Ok(AuditLog {
            run_id,
            file,
            memory: Mutex::new(memory),
            limiter: Mutex::new(Limiter {
                tokens: REFUSED_BURST,
                last: Instant::now(),
                dropped: 0,
            }),
            metrics,
        })
    }

    /// This run's id: random, new at every start.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The file, when there is one.
    pub fn path(&self) -> Option<PathBuf> {
        self.file.as_ref().map(|f| lock(f).path.clone())
    }

    /// The highest generation of an accepted change in the log (or in
    /// memory): a run without a state file starts after it.
    pub fn last_generation(&self) -> Option<u64> {
        lock(&self.memory)
            .iter()
            .filter(|r| r.result == ACCEPTED)
            .map(|r| r.generation)
            .max()
    }

    /// The accepted changes kept in memory, oldest first.
    pub fn accepted(&self) -> Vec<AuditRecord> {
        lock(&self.memory)
            .iter()
            .filter(|r| r.result == ACCEPTED)
            .cloned()
            .collect()
    }

    /// Appends `record`: on disk and fsynced when this returns Ok.
    pub async fn append(&self, record: AuditRecord) -> Result<(), ControlError> {
        if let Some(file) = &self.file {
            let mut line = serde_json::to_vec(&record).map_err(|e| self.error(e.into()))?;
            line.push(b'\n');
            let file = file.clone();
            let written = tokio::task::spawn_blocking(move || lock(&file).append(&line))
                .await
                .map_err(|e| std::io::Error::other(format!("the audit writer failed: {e}")))
                .and_then(|r| r);
            if let Err(e) = written {
                self.metrics.write_errors.inc();
                return Err(self.error(e));
            }
        }
        self.remember(record);
        Ok(())
    }

    /// Appends a refused attempt, unless over the rate limit (then it is
    /// counted). A failed write is logged, never returned: the refusal
    /// stands either way.
    pub async fn append_refused(&self, mut record: AuditRecord) {
        let Some(dropped) = lock(&self.limiter).take(Instant::now()) else {
            self.metrics.dropped.inc();
            return;
        };
        record.dropped_before = dropped;
        if let Err(e) = self.append(record).await {
            tracing::warn!("refused attempt not recorded: {e}");
        }
    }

    /// Writes the entries an older state file kept (its `audit` list)
    /// into a log that has no record yet, so history is not lost when the
    /// state file stops carrying it.
    pub fn migrate(&self, entries: &[AuditEntry]) -> Result<usize, ControlError> {
        if entries.is_empty() || !lock(&self.memory).is_empty() {
            return Ok(0);
        }
        let records: Vec<AuditRecord> = entries.iter().map(AuditRecord::from).collect();
        if let Some(file) = &self.file {
            let mut sink = lock(file);
            for r in &records {
                let mut line = serde_json::to_vec(r).map_err(|e| self.error(e.into()))?;
                line.push(b'\n');
                sink.append(&line).map_err(|e| self.error(e))?;
            }
        }
        let n = records.len();
        for r in records {
            self.remember(r);
        }
        Ok(n)
    }

    /// Records newest first, for `GET /v1/audit`: from the files (across
    /// rotations) when there are, else from memory.
    pub async fn read(&self, mut q: AuditQuery) -> Result<Vec<AuditRecord>, ControlError> {
        q.limit = q.limit.clamp(1, MAX_LIMIT);
        let Some(file) = &self.file else {
            let memory = lock(&self.memory);
            let mut out = Vec::new();
            for r in memory.iter().rev() {
                if q.too_old(r) || out.len() >= q.limit {
                    break;
                }
                if q.wants(r) {
                    out.push(r.clone());
                }
            }
            return Ok(out);
        };
        let files = lock(file).files();
        tokio::task::spawn_blocking(move || read_files(&files, &q))
            .await
            .map_err(|e| std::io::Error::other(format!("the audit reader failed: {e}")))
            .and_then(|r| r)
            .map_err(|e| self.error(e))
    }

    /// Audits one reload: one line per item it changed (`items`, like
    /// "service api added"), or one line saying nothing changed; a reload
    /// that failed is one `failed` line with its error. `actor` is who or
    /// what triggered it (a token's name, `signal`, `file watcher`),
    /// `source` the caller's address when it came through the API.
    pub async fn record_reload(
        &self,
        actor: &str,
        source: Option<&str>,
        generation: u64,
        result: Result<&[String], &str>,
    ) -> Result<(), ControlError> {
        let line = |result: &str, status: u16, detail: &str| {
            let mut r = AuditRecord::now(&self.run_id, result, status, "reload", actor);
            r.generation = generation;
            r.source = source.map(String::from);
            r.detail = Some(detail.to_string());
            r
        };
        match result {
            Err(error) => self.append(line(FAILED, 422, error)).await,
            Ok([]) => self.append(line(ACCEPTED, 200, "nothing changed")).await,
            Ok(items) => {
                for item in items {
                    self.append(line(ACCEPTED, 200, item)).await?;
                }
                Ok(())
            }
        }
    }

    fn remember(&self, record: AuditRecord) {
        let mut memory = lock(&self.memory);
        memory.push_back(record);
        if memory.len() > MEMORY_KEEP {
            // A flood of refusals must not push the changes out: drop the
            // oldest refusal first.
            match memory.iter().position(|r| r.result != ACCEPTED) {
                Some(i) => {
                    memory.remove(i);
                }
                None => {
                    memory.pop_front();
                }
            }
        }
    }

    fn error(&self, source: std::io::Error) -> ControlError {
        ControlError::Audit {
            path: self
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            source,
        }
    }
}

impl From<&AuditEntry> for AuditRecord {
    fn from(e: &AuditEntry) -> AuditRecord {
        AuditRecord {
            at: e.at.clone(),
            result: ACCEPTED.into(),
            status: 200,
            generation: e.generation,
            service: e.service.clone(),
            action: e.action.clone(),
            split: e.split.clone(),
            previous: e.previous.clone(),
            actor: e.who.clone(),
            reason: e.reason.clone(),
            forced: e.forced,
            detail: Some("migrated from the state file".into()),
            ..AuditRecord::default()
        }
    }
}

/// A new run id: 16 hex digits, random.
pub fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = fastrand::u64(..) ^ nanos.rotate_left(17) ^ u64::from(std::process::id());
    format!("{mixed:016x}")
}

#[cfg(test)]
mod tests;
