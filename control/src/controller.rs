//! The switch logic: validates a change, persists it, then swaps in a new
//! routing snapshot with the next generation. An async mutex serialises
//! operator changes across the state-file write (which runs on a blocking
//! thread, never on a runtime worker); a std mutex guards the short swaps.
//! The data plane takes neither (it only reads the `ArcSwap`).
//!
//! With `slow_start` a change may ramp ([`cutover_proxy::slow_start`]):
//! the controller swaps in the change with tickets still mapping where they
//! did, and [`Controller::step_ramps`] (run by [`crate::slow_start::run`])
//! moves them on in steps, under the swap lock, keeping the generation.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use cutover_config::Config;
use cutover_proxy::metrics::names;
use cutover_proxy::outlier::Signal;
use cutover_proxy::{Ejection, Health, ProxyMetrics, Snapshot};
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::audit::{AuditLog, AuditRecord, AuditSettings, ACCEPTED, FAILED, REFUSED};
use crate::error::ControlError;
use crate::state::{self, PersistedState};

/// A requested change of one service's split.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    pub service: String,
    pub action: Action,
    pub reason: Option<String>,
    pub expect_generation: Option<u64>,
    /// Refuse (409) unless this is still the run (`/v1/status`'s
    /// `run_id`): a generation taken before a restart never matches.
    pub expect_run_id: Option<String>,
    /// The actor: the token's name, or `anonymous` without tokens.
    pub who: String,
    /// The caller's address, for the audit log.
    pub source: Option<String>,
    /// What the caller says it acts for (the body's `who`), unverified.
    pub requested_by: Option<String>,
    /// Apply even if the change gives weight to a pool with no backend up
    /// (recorded in the audit entry). A rollback is never refused.
    pub force: bool,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Pool name -> weight, every pool of the service named.
    Split(Vec<(String, i64)>),
    /// All traffic to one pool.
    Switch(String),
    /// Back to the split before the last change.
    Rollback,
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Split(_) => "split",
            Action::Switch(_) => "switch",
            Action::Rollback => "rollback",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeOutcome {
    pub generation: u64,
    /// This run's id (see [`Controller::run_id`]).
    pub run_id: String,
    pub service: String,
    pub split: serde_json::Map<String, serde_json::Value>,
    pub previous: serde_json::Map<String, serde_json::Value>,
    /// False when the requested split was already in force.
    pub changed: bool,
    /// The window over which the change ramps in (slow start), like
    /// `"30s"`; absent when it is in force at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<String>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    /// Per service (aligned with config.services): split before the last change.
    pub(crate) previous: Vec<Option<Vec<u32>>>,
}

/// A change worked out, not yet written nor swapped in.
struct Plan {
    idx: usize,
    new: Vec<u32>,
    entry: AuditRecord,
    previous: Vec<Option<Vec<u32>>>,
    /// The state file's new content, when there is a state file, and its
    /// content before (put back if the audit line cannot be written).
    persist: Option<(PersistedState, PersistedState)>,
}

// One per operator change, moved once: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Planned {
    /// The split asked for is already in force.
    Unchanged(ChangeOutcome),
    Change(Plan),
}

pub(crate) struct ControlMetrics {
    pub(crate) split_weight: IntGaugeVec,
    pub(crate) effective_share: GaugeVec,
    generation: IntGauge,
    changes: IntCounterVec,
    /// `cutover_config_reloads_total{result="ok"|"error"}` and
    /// `cutover_config_last_reload_success`.
    pub(crate) reloads_ok: IntCounter,
    pub(crate) reloads_error: IntCounter,
    pub(crate) last_reload_ok: IntGauge,
}

/// Writes the state file (blocking: it fsyncs); [`state::save`] but in tests.
pub(crate) type StateWriter =
    Arc<dyn Fn(&Path, &PersistedState) -> Result<(), ControlError> + Send + Sync>;

pub struct Controller {
    pub(crate) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(crate) proxy_metrics: Arc<ProxyMetrics>,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) metrics: ControlMetrics,
    pub(crate) state_path: Option<PathBuf>,
    pub(crate) writer: StateWriter,
    /// Held by an operator change from its validation to its swap, across
    /// the state-file write: changes reach the disk, and the snapshot, in
    /// the order they were accepted, and two changes in a row never leave
    /// the older one on disk.
    pub(crate) changes: tokio::sync::Mutex<()>,
    /// Held only for short, non-blocking critical sections (never across
    /// an await): the swaps of changes and of health and ejections.
    inner: Mutex<Inner>,
    pub(crate) generation_tx: watch::Sender<u64>,
    /// Backends' failure streaks wake the ejector through this.
    pub(crate) outlier: Arc<Signal>,
    /// Counts routing changes: operator changes and ramp steps that moved
    /// tickets (for the tunnel drainer).
    pub(crate) routing_tx: watch::Sender<u64>,
    /// Wakes the slow start task when a ramp begins.
    pub(crate) ramp_wake: Notify,
    /// The last config reload's outcome (`/v1/status` `config`), the
    /// audit hook and the listeners the app serves.
    pub(crate) reloads: crate::reload::ReloadState,
}

pub(crate) fn named(pools: &[String], split: &[u32]) -> Vec<(String, u32)> {
    pools.iter().cloned().zip(split.iter().copied()).collect()
}

fn as_map(pairs: &[(String, u32)]) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
        .collect()
}

/// `pairs` aligned to `pools` when it names exactly those pools.
pub(crate) fn align(pools: &[String], pairs: &[(String, u32)]) -> Option<Vec<u32>> {
    if pairs.len() != pools.len() {
        return None;
    }
    pools
        .iter()
        .map(|p| pairs.iter().find(|(n, _)| n == p).map(|(_, w)| *w))
        .collect()
}

impl Controller {
    /// Builds the first snapshot from `config`, restoring the last
    /// acknowledged splits from the state file where the file's split has
    /// not changed since they were written.
    pub fn new(
        config: Config,
        registry: &Registry,
        proxy_metrics: Arc<ProxyMetrics>,
    ) -> Result<Controller, ControlError> {
        let state_path = config.state_file.clone();
        let persisted = match &state_path {
            Some(p) => state::load(p)?,
            None => None,
        };
        let audit = Arc::new(AuditLog::open(
            &AuditSettings {
                path: config.audit_log(),
                max_bytes: config.admin.audit_max_bytes,
                keep: config.admin.audit_keep,
            },
            crate::audit::new_run_id(),
            registry,
        )?);
        let mut splits = Vec::new();
        let mut previous = Vec::new();
        for sc in &config.services {
            let pools: Vec<String> = sc.pools.iter().map(|p| p.name.clone()).collect();
            let saved = persisted
                .as_ref()
                .and_then(|st| st.services.iter().find(|s| s.name == sc.name))
                .filter(|s| align(&pools, &s.file_split).as_deref() == Some(sc.split.as_slice()));
            match saved.and_then(|s| align(&pools, &s.split).map(|split| (s, split))) {
                Some((s, split)) if split.iter().any(|w| *w > 0) => {
                    tracing::info!(service = %sc.name, ?split, "restored the last acknowledged split from the state file");
                    previous.push(s.previous.as_ref().and_then(|p| align(&pools, p)));
                    splits.push(split);
                }
                _ => {
                    previous.push(None);
                    splits.push(sc.split.clone());
                }
            }
        }
        if let Some(st) = &persisted {
            let old: Vec<_> = st.audit.iter().cloned().collect();
            let n = audit.migrate(&old)?;
            if n > 0 {
                tracing::info!(
                    entries = n,
                    "moved the state file's audit entries to the audit log"
                );
            }
        }
        // Generations never repeat while a state file or an audit log
        // file remembers the last one; the run id tells runs apart anyway.
        let generation = persisted
            .as_ref()
            .map(|st| st.generation)
            .into_iter()
            .chain(audit.last_generation())
            .max()
            .map_or(1, |g| g + 1);
        let outlier = Arc::new(Signal::default());
        let snapshot = Snapshot::build(
            &config.services,
            &splits,
            generation,
            None,
            &proxy_metrics,
            &outlier,
        );
        let metrics = ControlMetrics::new(registry)
            .map_err(|e| ControlError::InvalidSplit(format!("metrics: {e}")))?;
        let (generation_tx, _) = watch::channel(generation);
        let (routing_tx, _) = watch::channel(0);
        let c = Controller {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            proxy_metrics,
            audit,
            metrics,
            state_path,
            writer: Arc::new(state::save),
            changes: tokio::sync::Mutex::new(()),
            inner: Mutex::new(Inner { config, previous }),
            generation_tx,
            outlier,
            routing_tx,
            ramp_wake: Notify::new(),
            reloads: crate::reload::ReloadState::new(),
        };
        c.metrics.last_reload_ok.set(1);
        c.update_metrics();
        Ok(c)
    }

    /// The snapshot the data plane reads.
    pub fn snapshot(&self) -> Arc<ArcSwap<Snapshot>> {
        self.snapshot.clone()
    }

    pub fn proxy_metrics(&self) -> Arc<ProxyMetrics> {
        self.proxy_metrics.clone()
    }

    /// What the data plane wakes the ejector ([`crate::outlier::run`]) with.
    pub fn outlier_signal(&self) -> Arc<Signal> {
        self.outlier.clone()
    }

    /// Changes whenever the generation does (for the edge reconciler).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }

    /// Fires whenever tickets may map elsewhere: on every operator change,
    /// and on every slow start step that moved tickets (which keeps the
    /// generation). For the tunnel drainer
    /// ([`cutover_proxy::drain::follow_changes`]).
    pub fn subscribe_routing(&self) -> watch::Receiver<u64> {
        self.routing_tx.subscribe()
    }

    pub fn config(&self) -> Config {
        self.lock().config.clone()
    }

    /// The accepted changes kept in memory, oldest first (the audit log
    /// has them all: [`Controller::audit_log`]).
    pub fn audit(&self) -> Vec<AuditRecord> {
        self.audit.accepted()
    }

    pub fn audit_log(&self) -> Arc<AuditLog> {
        self.audit.clone()
    }

    /// This run's id, new at every start: with the generation, it names
    /// one routing state for good (generations restart without a state
    /// file; run ids never repeat).
    pub fn run_id(&self) -> &str {
        self.audit.run_id()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave Inner half-written
        // (every mutation is a whole-value replacement), so poison is safe to clear.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn update_metrics(&self) {
        let snap = self.snapshot.load();
        self.metrics.generation.set(snap.generation as i64);
        for s in &snap.services {
            for (i, (p, w)) in s.pools.iter().zip(s.split.weights()).enumerate() {
                self.metrics
                    .split_weight
                    .with_label_values(&[s.name(), &p.name])
                    .set(i64::from(*w));
                self.metrics
                    .effective_share
                    .with_label_values(&[s.name(), &p.name])
                    .set(s.effective().share(i));
            }
        }
    }

    /// Validates, persists and applies one change. A refused change changes
    /// nothing: not the snapshot, not the state file, not the generation.
    /// Answers only once the state file is on disk (fsynced); the write runs
    /// on a blocking thread, so a slow disk never stalls a runtime worker
    /// (with `workers = 1`, the only one) and proxying goes on meanwhile.
    ///
    /// The change runs in its own task: a caller that goes away (an admin
    /// client that hung up) cannot leave a change written to disk but not
    /// swapped in.
    pub async fn apply(
        self: &Arc<Self>,
        req: ChangeRequest,
    ) -> Result<ChangeOutcome, ControlError> {
        let action = req.action.name();
        let this = self.clone();
        let refused = req.clone();
        let result = match tokio::spawn(async move { this.apply_inner(&req).await }).await {
            Ok(r) => r,
            Err(e) => Err(self.persist_error(std::io::Error::other(format!(
                "the change task failed: {e}"
            )))),
        };
        if let Err(e) = &result {
            self.audit_refused(&refused, e).await;
        }
        let label = match &result {
            Ok(o) if o.changed => "accepted",
            Ok(_) => "unchanged",
            Err(_) => "refused",
        };
        self.metrics
            .changes
            .with_label_values(&[action, label])
            .inc();
        result
    }

    pub(crate) fn persist_error(&self, source: std::io::Error) -> ControlError {
        ControlError::Persist {
            path: self
                .state_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            source,
        }
    }

    async fn apply_inner(&self, req: &ChangeRequest) -> Result<ChangeOutcome, ControlError> {
        let _change = self.changes.lock().await;
        let plan = match self.plan(req)? {
            Planned::Unchanged(outcome) => return Ok(outcome),
            Planned::Change(plan) => plan,
        };
        // Persist first: if the disk refuses, nothing changes. Then the
        // audit line: if it cannot be written, the state file is put back
        // and nothing changes either.
        let restore = match plan.persist {
            Some((new, old)) => {
                self.write_state(new).await?;
                Some(old)
            }
            None => None,
        };
        if let Err(e) = self.audit.append(plan.entry.clone()).await {
            if let Some(old) = restore {
                if let Err(back) = self.write_state(old).await {
                    tracing::error!("the audit log failed ({e}) and the state file could not be put back: {back}");
                }
            }
            return Err(e);
        }
        let window;
        {
            let mut inner = self.lock();
            // From the snapshot in force now: a health change or an
            // ejection swapped in during the write is kept. Operator
            // changes wait on `changes`, so the generation is the planned one.
            // A ramp (slow start) is decided on that snapshot too.
            let current = self.snapshot.load_full();
            window = crate::slow_start::ramp_window(&current, plan.idx, req, &plan.new);
            let next = match window {
                Some(_) => current.with_ramped_split(plan.idx, plan.new, Instant::now()),
                None => current.with_split(plan.idx, plan.new),
            };
            inner.previous = plan.previous;
            self.snapshot.store(Arc::new(next));
        }
        let slow_start = window.map(|w| humantime::format_duration(w).to_string());
        self.announce(req, &plan.entry, slow_start.as_deref());
        if window.is_some() {
            self.ramp_wake.notify_one();
        }
        Ok(ChangeOutcome {
            generation: plan.entry.generation,
            run_id: self.run_id().to_string(),
            service: req.service.clone(),
            split: as_map(&plan.entry.split),
            previous: as_map(&plan.entry.previous),
            changed: true,
            slow_start,
        })
    }

    /// Writes the state file on a blocking thread.
    async fn write_state(&self, st: PersistedState) -> Result<(), ControlError> {
        let Some(path) = self.state_path.clone() else {
            return Ok(());
        };
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || writer(&path, &st))
            .await
            .map_err(|e| {
                self.persist_error(std::io::Error::other(format!("the writer failed: {e}")))
            })?
    }

    /// Records a refused (4xx) or failed (5xx) change in the audit log.
    async fn audit_refused(&self, req: &ChangeRequest, e: &ControlError) {
        let status = e.status().as_u16();
        let result = if status >= 500 { FAILED } else { REFUSED };
        let mut r = request_record(req, self.run_id(), result, status);
        r.generation = self.snapshot.load().generation;
        r.detail = Some(e.to_string());
        self.audit.append_refused(r).await;
    }

    /// What `req` would change, checked against the snapshot in force.
    fn plan(&self, req: &ChangeRequest) -> Result<Planned, ControlError> {
        let inner = self.lock();
        let current = self.snapshot.load_full();
        if let Some(expected) = &req.expect_run_id {
            if expected != self.run_id() {
                return Err(ControlError::RunMismatch {
                    expected: expected.clone(),
                    actual: self.run_id().to_string(),
                });
            }
        }
        let (idx, pools, old) = target_service(&current, req)?;
        let new = requested_split(req, &pools, &inner.previous[idx])?;
        if new == old {
            return Ok(Planned::Unchanged(ChangeOutcome {
                generation: current.generation,
                run_id: self.run_id().to_string(),
                service: req.service.clone(),
                split: as_map(&named(&pools, &new)),
                previous: as_map(&named(&pools, &old)),
                changed: false,
                slow_start: None,
            }));
        }
        let forced = check_available(&current, idx, req, &new, &old)?;
        let generation = current.generation + 1;
        let mut entry = request_record(req, self.run_id(), ACCEPTED, 200);
        entry.generation = generation;
        entry.split = named(&pools, &new);
        entry.previous = named(&pools, &old);
        entry.forced = forced;
        let mut previous = inner.previous.clone();
        previous[idx] = Some(old.clone());
        let persist = self.state_path.as_ref().map(|_| {
            let config = &inner.config;
            (
                persisted_state(config, &current, (idx, &new), generation, &previous),
                persisted_state(
                    config,
                    &current,
                    (idx, &old),
                    current.generation,
                    &inner.previous,
                ),
            )
        });
        Ok(Planned::Change(Plan {
            idx,
            new,
            entry,
            previous,
            persist,
        }))
    }

    /// Sets one backend's health (from the active checks): a new snapshot
    /// with the same backends and the same generation, swapped in under the
    /// change lock so it never undoes an operator's change made meanwhile
    /// (nor the reverse). Not an operator change: no audit entry, no state
    /// file write, no generation bump. A backend that comes back up (down
    /// before) warms up when the service has `slow_start`. Returns whether
    /// anything changed.
    pub fn set_health(&self, service: &str, pool: &str, backend: &str, health: Health) -> bool {
        let back_up = health.is_up();
        self.swap_backend(service, pool, backend, |snap, s, p, b| {
            let next = snap.with_health(s, p, b, health)?;
            // with_health changed something: an up backend was down.
            Some(if back_up {
                self.warmed(next, s, p, b)
            } else {
                next
            })
        })
    }

    /// Sets (`Some`) or lifts (`None`) one backend's passive ejection (from
    /// the ejector), like [`Controller::set_health`]: same backends, same
    /// generation, no audit entry. Returns whether anything changed.
    pub fn set_ejection(
        &self,
        service: &str,
        pool: &str,
        backend: &str,
        ejection: Option<Ejection>,
    ) -> bool {
        let lifted = ejection.is_none();
        self.swap_backend(service, pool, backend, |snap, s, p, b| {
            let next = snap.with_ejection(s, p, b, ejection)?;
            Some(if lifted {
                self.warmed(next, s, p, b)
            } else {
                next
            })
        })
    }

    /// Whether the snapshot in force has this backend up by its active
    /// checks (true for an unknown one: backends start up).
    pub fn backend_is_up(&self, service: &str, pool: &str, backend: &str) -> bool {
        let snap = self.snapshot.load();
        locate(&snap, service, pool, backend)
            .and_then(|(s, p, b)| Some(snap.services[s].pools.get(p)?.health().get(b)?.is_up()))
            .unwrap_or(true)
    }

    /// An active check of this backend passed: its ejection (if any) is
    /// lifted, and the ejector woken to note the return. Costs a snapshot
    /// read, no lock, when it is not ejected.
    pub fn active_check_passed(&self, service: &str, pool: &str, backend: &str) {
        let ejected = {
            let snap = self.snapshot.load();
            snap.service(service)
                .and_then(|(_, s)| s.pools.iter().find(|p| p.name == pool))
                .and_then(|p| {
                    let i = p.backends.iter().position(|b| b.addr == backend)?;
                    p.ejections().get(i).map(Option::is_some)
                })
                .unwrap_or(false)
        };
        if ejected && self.set_ejection(service, pool, backend, None) {
            tracing::info!(
                service,
                pool,
                backend,
                "ejection lifted: an active health check passed"
            );
            self.outlier.wake();
        }
    }

    /// Swaps in what `f` makes of the current snapshot for one backend
    /// (by name; `f` gets indices), under the change lock so that it never
    /// undoes an operator's change made meanwhile (nor the reverse).
    fn swap_backend(
        &self,
        service: &str,
        pool: &str,
        backend: &str,
        f: impl FnOnce(&Snapshot, usize, usize, usize) -> Option<Snapshot>,
    ) -> bool {
        let _inner = self.lock();
        let current = self.snapshot.load_full();
        let Some((si, pi, bi)) = locate(&current, service, pool, backend) else {
            return false;
        };
        match f(&current, si, pi, bi) {
            Some(next) => {
                self.snapshot.store(Arc::new(next));
                true
            }
            None => false,
        }
    }

    /// `next`, in which backend (`s`, `p`, `b`) is back in its pool's draw
    /// (back up, or its ejection lifted): with `slow_start` it warms up
    /// from now, and the slow start task is woken to move it on.
    fn warmed(&self, next: Snapshot, s: usize, p: usize, b: usize) -> Snapshot {
        match next.with_warmup(s, p, b, Instant::now()) {
            Some(warming) => {
                self.ramp_wake.notify_one();
                warming
            }
            None => next,
        }
    }

    /// After a change is in force: metrics, the generation and routing
    /// watchers, the log.
    fn announce(&self, req: &ChangeRequest, entry: &AuditRecord, slow_start: Option<&str>) {
        let generation = entry.generation;
        self.update_metrics();
        self.generation_tx.send_replace(generation);
        self.routing_tx.send_modify(|n| *n += 1);
        tracing::info!(
            service = %req.service,
            action = req.action.name(),
            generation,
            split = ?entry.split,
            who = %req.who,
            reason = req.reason.as_deref().unwrap_or(""),
            slow_start = slow_start.unwrap_or("none"),
            "routing changed"
        );
    }
}

/// Indices of a service's pool's backend in `snap`.
pub(crate) fn locate(
    snap: &Snapshot,
    service: &str,
    pool: &str,
    backend: &str,
) -> Option<(usize, usize, usize)> {
    let (si, s) = snap.service(service)?;
    let pi = s.pool_index(pool)?;
    let bi = s.pools[pi]
        .backends
        .iter()
        .position(|b| b.addr == backend)?;
    Some((si, pi, bi))
}

/// The service `req` names in `current`, checked against the generation
/// the caller expects: its index, pool names and split in force.
fn target_service(
    current: &Snapshot,
    req: &ChangeRequest,
) -> Result<(usize, Vec<String>, Vec<u32>), ControlError> {
    let Some((idx, service)) = current.service(&req.service) else {
        let names: Vec<&str> = current.services.iter().map(|s| s.name()).collect();
        return Err(ControlError::UnknownService(
            req.service.clone(),
            names.join(", "),
        ));
    };
    let pools: Vec<String> = service.pools.iter().map(|p| p.name.clone()).collect();
    if let Some(expected) = req.expect_generation {
        if expected != current.generation {
            return Err(ControlError::Conflict {
                expected,
                actual: current.generation,
            });
        }
    }
    let old: Vec<u32> = service.split.weights().to_vec();
    Ok((idx, pools, old))
}

fn unknown_pool(req: &ChangeRequest, pools: &[String], pool: &str) -> ControlError {
    ControlError::UnknownPool {
        service: req.service.clone(),
        pool: pool.to_string(),
        pools: pools.join(", "),
    }
}

/// The split `req` asks for, aligned with `pools`; `previous` is the split
/// before the last change (for a rollback).
fn requested_split(
    req: &ChangeRequest,
    pools: &[String],
    previous: &Option<Vec<u32>>,
) -> Result<Vec<u32>, ControlError> {
    let new: Vec<u32> = match &req.action {
        Action::Split(pairs) => explicit_split(req, pools, pairs)?,
        Action::Switch(to) => {
            let i = pools
                .iter()
                .position(|p| p == to)
                .ok_or_else(|| unknown_pool(req, pools, to))?;
            (0..pools.len())
                .map(|j| if j == i { 100 } else { 0 })
                .collect()
        }
        Action::Rollback => previous
            .clone()
            .ok_or_else(|| ControlError::NothingToRollBack(req.service.clone()))?,
    };
    if new.iter().all(|w| *w == 0) {
        return Err(ControlError::InvalidSplit(
            "all weights are zero: at least one pool needs a positive weight".into(),
        ));
    }
    Ok(new)
}

/// `Action::Split`: every pool named once, with a weight in range.
fn explicit_split(
    req: &ChangeRequest,
    pools: &[String],
    pairs: &[(String, i64)],
) -> Result<Vec<u32>, ControlError> {
    let mut split = vec![None; pools.len()];
    for (name, w) in pairs {
        let i = pools
            .iter()
            .position(|p| p == name)
            .ok_or_else(|| unknown_pool(req, pools, name))?;
        if split[i].is_some() {
            return Err(ControlError::InvalidSplit(format!(
                "pool `{name}` is named twice"
            )));
        }
        if !(0..=1_000_000).contains(w) {
            return Err(ControlError::InvalidSplit(format!(
                "weight {w} for pool `{name}` is out of range; allowed: 0 to 1000000"
            )));
        }
        split[i] = Some(*w as u32);
    }
    let missing: Vec<&str> = pools
        .iter()
        .zip(&split)
        .filter(|(_, w)| w.is_none())
        .map(|(p, _)| p.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(ControlError::InvalidSplit(format!(
            "every pool needs a weight (0 for none); missing: {}",
            missing.join(", ")
        )));
    }
    Ok(split.into_iter().map(|w| w.unwrap_or(0)).collect())
}

/// Switch safety: a change that raises the weight of a pool with no
/// backend up (by the active health checks) is refused unless forced; a
/// rollback (back to the last acknowledged split) never is. Returns
/// whether the change goes through only because it was forced.
fn check_available(
    current: &Snapshot,
    idx: usize,
    req: &ChangeRequest,
    new: &[u32],
    old: &[u32],
) -> Result<bool, ControlError> {
    if matches!(req.action, Action::Rollback) {
        return Ok(false);
    }
    let Some(service) = current.services.get(idx) else {
        return Ok(false);
    };
    let dead: Vec<String> = service
        .pools
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            new.get(*i).copied().unwrap_or(0) > old.get(*i).copied().unwrap_or(0) && p.all_down()
        })
        .map(|(_, p)| p.down_message())
        .collect();
    if dead.is_empty() {
        return Ok(false);
    }
    if req.force {
        tracing::warn!(service = %req.service, who = %req.who, "forced change to a pool with no backend up: {}", dead.join("; "));
        return Ok(true);
    }
    Err(ControlError::NoBackendUp {
        service: req.service.clone(),
        detail: dead.join("; "),
    })
}

/// The audit record of `req`, stamped now; the caller fills in the
/// generation and splits.
fn request_record(req: &ChangeRequest, run_id: &str, result: &str, status: u16) -> AuditRecord {
    let mut r = AuditRecord::now(run_id, result, status, req.action.name(), &req.who);
    r.service = req.service.clone();
    r.source = req.source.clone();
    r.reason = req.reason.clone();
    r.expect_generation = req.expect_generation;
    r.expect_run_id = req.expect_run_id.clone();
    r.requested_by = req.requested_by.clone();
    r
}

/// The state file's content once service `changed.0` has split
/// `changed.1` at `generation`, the others as in `snap`.
fn persisted_state(
    config: &Config,
    snap: &Snapshot,
    changed: (usize, &[u32]),
    generation: u64,
    previous: &[Option<Vec<u32>>],
) -> PersistedState {
    let splits: Vec<Vec<u32>> = snap
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i == changed.0 {
                changed.1.to_vec()
            } else {
                s.split.weights().to_vec()
            }
        })
        .collect();
    crate::reload::persisted_all(config, &splits, generation, previous)
}

impl ControlMetrics {
    fn new(registry: &Registry) -> Result<ControlMetrics, prometheus::Error> {
        let split_weight = IntGaugeVec::new(
            Opts::new(
                names::SPLIT_WEIGHT,
                "Weight of each pool in its service's split",
            ),
            &["service", "pool"],
        )?;
        let effective_share = GaugeVec::new(
            Opts::new(
                names::EFFECTIVE_SHARE,
                "Share of new traffic each pool gets now (lags the split during a slow start)",
            ),
            &["service", "pool"],
        )?;
        let generation = IntGauge::new(
            names::GENERATION,
            "Generation of the routing snapshot in force",
        )?;
        let changes = IntCounterVec::new(
            Opts::new(
                names::CHANGES,
                "Routing change requests, by action and result",
            ),
            &["action", "result"],
        )?;
        registry.register(Box::new(split_weight.clone()))?;
        registry.register(Box::new(effective_share.clone()))?;
        registry.register(Box::new(generation.clone()))?;
        registry.register(Box::new(changes.clone()))?;
        let reloads = IntCounterVec::new(
            Opts::new(
                names::CONFIG_RELOADS,
                "Config reloads, by result (ok, error)",
            ),
            &["result"],
        )?;
        let last_reload_ok = IntGauge::new(
            names::CONFIG_LAST_RELOAD_SUCCESS,
            "Whether the last config reload succeeded (1) or failed (0); 1 at start",
        )?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_reload_ok.clone()))?;
        Ok(ControlMetrics {
            split_weight,
            effective_share,
            generation,
            changes,
            reloads_ok: reloads.with_label_values(&["ok"]),
            reloads_error: reloads.with_label_values(&["error"]),
            last_reload_ok,
        })
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
