//! Config reload, the control plane's part: a new, validated config is
//! applied as a diff in one snapshot swap ([`Controller::reload`]), under
//! the same lock as operator changes, with the next generation. Backends
//! that stay keep their `Arc<Backend>` (connections, in-flight counts) and
//! their health, ejections and warm-ups ([`Snapshot::build`] reuses them
//! from the snapshot in force); backends that go are drained by
//! [`cutover_proxy::drain::follow_changes`], which the routing watch wakes.
//!
//! The state file's rule stays: a service keeps its runtime split (an
//! operator's switch) unless the file's `split` itself changed since the
//! last load. Settings only a restart applies (`workers`, `admin`,
//! `state_file`, `[edge]`) are reported, not applied.
//!
//! Reading the file, binding new listeners and serving them is the
//! binary's part (`src/reload.rs`): it calls [`Controller::reload_failed`]
//! when the file is bad or a listener cannot be bound.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use cutover_config::{Config, ReloadPlan, ServiceConfig};
use cutover_proxy::Snapshot;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::controller::{align, named, Controller};
use crate::error::ControlError;
use crate::state::{PersistedService, PersistedState, STATE_VERSION};

/// A proxy listener the app serves: service, bound address, preview pool.
pub type ListenerInfo = (String, SocketAddr, Option<String>);

/// What a reload did: one line per item changed, and what needs a restart.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// What asked for it: `SIGHUP`, `file watch`, `POST /v1/reload from ...`.
    pub trigger: String,
    /// The generation in force after it.
    pub generation: u64,
    /// False when nothing that applies live changed.
    pub changed: bool,
    pub changes: Vec<String>,
    /// Settings that changed in the file but apply only after a restart.
    pub needs_restart: Vec<String>,
}

/// Called after every reload attempt, good or bad, with its trigger: the
/// audit log's hook (wired by the binary).
pub type ReloadHook = Arc<dyn Fn(&str, Result<&ReloadReport, &str>) + Send + Sync>;

/// Reads the config file and runs the whole reload (bind, apply, serve):
/// the binary's part, set with [`Controller::set_reloader`]; called with
/// the trigger. `Err` carries the reason nothing changed.
pub type Reloader = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<ReloadReport, String>> + Send>>
        + Send
        + Sync,
>;

pub(crate) struct ReloadState {
    inner: Mutex<StateInner>,
    /// Bumped after each reload that changed something (the health
    /// checker re-reads its targets).
    applied: watch::Sender<u64>,
}

struct StateInner {
    loaded_at: SystemTime,
    last_error: Option<String>,
    hook: Option<ReloadHook>,
    reloader: Option<Reloader>,
    listeners: Vec<ListenerInfo>,
}

impl Default for StateInner {
    fn default() -> Self {
        StateInner {
            loaded_at: SystemTime::now(),
            last_error: None,
            hook: None,
            reloader: None,
            listeners: Vec::new(),
        }
    }
}

impl ReloadState {
    pub(crate) fn new() -> ReloadState {
        ReloadState {
            inner: Mutex::default(),
            applied: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, StateInner> {
        // Every mutation is a field replacement: poison is safe to clear.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Controller {
    /// Sets the function told about every reload attempt (the audit log).
    pub fn set_reload_hook(&self, hook: ReloadHook) {
        self.reloads.lock().hook = Some(hook);
    }

    /// Fires after every reload that changed the config in force.
    pub fn subscribe_reloads(&self) -> watch::Receiver<u64> {
        self.reloads.applied.subscribe()
    }

    /// Sets what [`Controller::request_reload`] runs (the binary's reload).
    pub fn set_reloader(&self, reloader: Reloader) {
        self.reloads.lock().reloader = Some(reloader);
    }

    /// Reloads the config file (`POST /v1/reload`); `None` when this
    /// process has no reloader (not started from a config file).
    pub async fn request_reload(&self, trigger: String) -> Option<Result<ReloadReport, String>> {
        let reloader = self.reloads.lock().reloader.clone()?;
        Some(reloader(trigger).await)
    }

    /// The proxy listeners served now (the app sets them at start and
    /// after each reload that changes them).
    pub fn set_listeners(&self, listeners: Vec<ListenerInfo>) {
        self.reloads.lock().listeners = listeners;
    }

    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.reloads.lock().listeners.clone()
    }

    /// `/v1/status` `config`: when the config in force was loaded, and the
    /// last reload's error until a good config loads.
    pub fn config_status(&self) -> Value {
        let st = self.reloads.lock();
        json!({
            "loaded_at": humantime::format_rfc3339_seconds(st.loaded_at).to_string(),
            "last_error": st.last_error,
        })
    }

    /// What reloading `new` would change and what would need a restart.
    pub fn reload_plan(&self, new: &Config) -> ReloadPlan {
        cutover_config::describe(&self.lock().config, new)
    }

    /// A reload failed (a bad file, a listener that cannot be bound, the
    /// state file): nothing changed. Logged, counted, shown in the status.
    pub fn reload_failed(&self, trigger: &str, error: &str) {
        tracing::error!(
            trigger,
            "config reload failed; the running config stays: {error}"
        );
        self.metrics.reloads_error.inc();
        self.metrics.last_reload_ok.set(0);
        let hook = {
            let mut st = self.reloads.lock();
            st.last_error = Some(error.to_string());
            st.hook.clone()
        };
        self.audit_reload(trigger, 0, Err(error.to_string()));
        if let Some(hook) = hook {
            hook(trigger, Err(error));
        }
    }

    /// Appends the reload to the audit log (one line per change, or the
    /// error), off the caller's path: who or what triggered it is the
    /// actor (`POST /v1/reload by NAME from ADDR` names the token).
    fn audit_reload(&self, trigger: &str, generation: u64, result: Result<Vec<String>, String>) {
        let (actor, source) = match trigger.strip_prefix("POST /v1/reload by ") {
            Some(rest) => match rest.split_once(" from ") {
                Some((actor, source)) => (actor.to_string(), Some(source.to_string())),
                None => (rest.to_string(), None),
            },
            None => (trigger.to_string(), None),
        };
        let audit = self.audit.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let result = match &result {
                Ok(items) => Ok(items.as_slice()),
                Err(e) => Err(e.as_str()),
            };
            if let Err(e) = audit
                .record_reload(&actor, source.as_deref(), generation, result)
                .await
            {
                tracing::warn!("cannot write the reload to the audit log: {e}");
            }
        });
    }

    fn reload_succeeded(&self, report: &ReloadReport) {
        for line in &report.changes {
            tracing::info!(trigger = %report.trigger, generation = report.generation, "config reload: {line}");
        }
        for line in &report.needs_restart {
            tracing::warn!(trigger = %report.trigger, "config reload: {line} (needs a restart; not applied)");
        }
        tracing::info!(trigger = %report.trigger, generation = report.generation, changes = report.changes.len(), needs_restart = report.needs_restart.len(), "config reloaded");
        self.metrics.reloads_ok.inc();
        self.metrics.last_reload_ok.set(1);
        let hook = {
            let mut st = self.reloads.lock();
            st.last_error = None;
            st.loaded_at = SystemTime::now();
            st.hook.clone()
        };
        self.audit_reload(
            &report.trigger,
            report.generation,
            Ok(report.changes.clone()),
        );
        if let Some(hook) = hook {
            hook(&report.trigger, Ok(report));
        }
    }

    /// Applies a validated config as a diff, in one snapshot swap with the
    /// next generation (none when nothing live changes), after persisting
    /// the state file. On an error nothing changes. Records the outcome
    /// (log, metrics, status, hook) either way.
    pub async fn reload(
        self: &Arc<Self>,
        new: Config,
        trigger: &str,
    ) -> Result<ReloadReport, ControlError> {
        let this = self.clone();
        let t = trigger.to_string();
        let result = match tokio::spawn(async move { this.reload_inner(new, t).await }).await {
            Ok(r) => r,
            Err(e) => Err(self.persist_error(std::io::Error::other(format!(
                "the reload task failed: {e}"
            )))),
        };
        match &result {
            Ok(report) => self.reload_succeeded(report),
            Err(e) => self.reload_failed(trigger, &e.to_string()),
        }
        result
    }

    async fn reload_inner(
        &self,
        new: Config,
        trigger: String,
    ) -> Result<ReloadReport, ControlError> {
        let _change = self.changes.lock().await;
        let (old, previous) = {
            let inner = self.lock();
            (inner.config.clone(), inner.previous.clone())
        };
        let plan = cutover_config::describe(&old, &new);
        let current = self.snapshot.load_full();
        let mut report = ReloadReport {
            trigger,
            generation: current.generation,
            changed: !plan.changes.is_empty(),
            changes: plan.changes,
            needs_restart: plan.needs_restart,
        };
        if !report.changed {
            return Ok(report);
        }
        let config = live_part(&old, new);
        let (splits, previous) = reload_splits(&old, &config, &current, &previous);
        let generation = current.generation + 1;
        if let Some(path) = &self.state_path {
            let st = persisted_all(&config, &splits, generation, &previous);
            let (path, writer) = (path.clone(), self.writer.clone());
            tokio::task::spawn_blocking(move || writer(&path, &st))
                .await
                .map_err(|e| {
                    self.persist_error(std::io::Error::other(format!("the writer failed: {e}")))
                })??;
        }
        let ramping = {
            let mut inner = self.lock();
            // From the snapshot in force now: health, ejections and
            // warm-ups swapped in during the write carry over.
            let now = self.snapshot.load_full();
            let next = Snapshot::build(
                &config.services,
                &splits,
                generation,
                Some(&now),
                &self.proxy_metrics,
                &self.outlier,
            );
            self.forget_removed(&now, &next);
            let ramping = next.step_interval().is_some();
            inner.config = config;
            inner.previous = previous;
            self.snapshot.store(Arc::new(next));
            ramping
        };
        report.generation = generation;
        self.update_metrics();
        self.generation_tx.send_replace(generation);
        // Wakes the drainer: retired backends' connections and tunnels.
        self.routing_tx.send_modify(|n| *n += 1);
        self.reloads.applied.send_modify(|n| *n += 1);
        if ramping {
            self.ramp_wake.notify_one();
        }
        Ok(report)
    }

    /// Drops the per-backend and per-pool gauges of what `next` no longer
    /// has (`cutover_backend_up`, the split and share gauges).
    fn forget_removed(&self, prev: &Snapshot, next: &Snapshot) {
        for s in &prev.services {
            let kept = next.service(s.name()).map(|(_, n)| n);
            for p in &s.pools {
                let kept_pool = kept.and_then(|n| n.pools.iter().find(|q| q.name == p.name));
                if kept_pool.is_none() {
                    let labels = [s.name(), p.name.as_str()];
                    let _ = self.metrics.split_weight.remove_label_values(&labels);
                    let _ = self.metrics.effective_share.remove_label_values(&labels);
                }
                for b in &p.backends {
                    if !kept_pool.is_some_and(|q| q.backends.iter().any(|k| k.addr == b.addr)) {
                        self.proxy_metrics
                            .forget_backend(s.name(), &p.name, &b.addr);
                    }
                }
            }
        }
    }
}

/// `new` with the settings that need a restart kept as they are in `old`
/// (they are not applied; the next reload reports them again).
fn live_part(old: &Config, mut new: Config) -> Config {
    new.workers = old.workers;
    new.admin = old.admin.clone();
    new.state_file = old.state_file.clone();
    new.edge = old.edge.clone();
    new
}

fn pool_names(s: &ServiceConfig) -> Vec<String> {
    s.pools.iter().map(|p| p.name.clone()).collect()
}

/// Each new service's split and split before the last change (aligned
/// with `new.services`): the runtime split (and its rollback) stay where
/// the file's split did not change since `old` and the pools are the
/// same; else the file's split, with nothing to roll back to.
pub(crate) fn reload_splits(
    old: &Config,
    new: &Config,
    current: &Snapshot,
    previous: &[Option<Vec<u32>>],
) -> (Vec<Vec<u32>>, Vec<Option<Vec<u32>>>) {
    new.services
        .iter()
        .map(|sc| {
            let pools = pool_names(sc);
            let kept = old
                .services
                .iter()
                .position(|o| o.name == sc.name)
                .filter(|i| {
                    let o = &old.services[*i];
                    align(&pools, &named(&pool_names(o), &o.split)).as_deref()
                        == Some(sc.split.as_slice())
                })
                .and_then(|i| {
                    let (_, s) = current.service(&sc.name)?;
                    let now: Vec<String> = s.pools.iter().map(|p| p.name.clone()).collect();
                    let split = align(&pools, &named(&now, s.split.weights()))?;
                    let prev = previous
                        .get(i)
                        .cloned()
                        .flatten()
                        .and_then(|p| align(&pools, &named(&now, &p)));
                    Some((split, prev))
                });
            kept.unwrap_or_else(|| (sc.split.clone(), None))
        })
        .unzip()
}

/// The state file's content for `config` with `splits` in force.
pub(crate) fn persisted_all(
    config: &Config,
    splits: &[Vec<u32>],
    generation: u64,
    previous: &[Option<Vec<u32>>],
) -> PersistedState {
    PersistedState {
        version: STATE_VERSION,
        generation,
        services: config
            .services
            .iter()
            .zip(splits)
            .zip(previous)
            .map(|((sc, split), prev)| {
                let pools = pool_names(sc);
                PersistedService {
                    name: sc.name.clone(),
                    split: named(&pools, split),
                    previous: prev.as_ref().map(|p| named(&pools, p)),
                    file_split: named(&pools, &sc.split),
                }
            })
            .collect(),
        // The audit log has it (older state files had it here).
        audit: Default::default(),
    }
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
