//! The reconcile loop of `cutover run`: a background task (never on the
//! request path) that makes AWS match `[edge]` every `interval`, and at once
//! when the routing generation changes in a way that moves a `weight_from`
//! weight. A failed pass is retried with backoff (1 s, 2 s, 4 s ... up to
//! `interval`) and never stops the proxy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cutover_config::edge::{EdgeConfig, RecordWeight};
use prometheus::{Gauge, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::aws::EdgeClients;
use super::plan::{compute_plan, lookup_in, route53_weight, Action, ItemKind, PlanItem};
use super::EdgeError;

/// The live split, as `(service, pool, weight, total)` for every pool of
/// every service. Called once per pass; must be cheap and must not block.
pub type SplitsFn = Arc<dyn Fn() -> Vec<(String, String, u32, u32)> + Send + Sync>;

/// Tuning of the loop; `Default` is what `cutover run` uses.
#[derive(Debug, Clone)]
pub struct ReconcilerOptions {
    /// Bound on one apply (including waiting for INSYNC).
    pub apply_timeout: Duration,
    /// First retry delay after a failed pass; doubles up to `interval`.
    pub retry_initial: Duration,
}

impl Default for ReconcilerOptions {
    fn default() -> Self {
        ReconcilerOptions {
            apply_timeout: Duration::from_secs(120),
            retry_initial: Duration::from_secs(1),
        }
    }
}

/// How the last pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassResult {
    /// AWS already matched the config.
    Unchanged,
    /// Changes were made (and Route 53 reported them INSYNC).
    Applied,
    Error,
}

impl PassResult {
    pub fn as_str(self) -> &'static str {
        match self {
            PassResult::Unchanged => "unchanged",
            PassResult::Applied => "applied",
            PassResult::Error => "error",
        }
    }
}

/// What `/v1/status` shows about edge sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EdgeStatus {
    /// Passes run since start.
    pub passes: u64,
    pub last_result: Option<PassResult>,
    /// The error of the last pass, when it failed.
    pub last_error: Option<String>,
    /// RFC 3339, UTC.
    pub last_run_at: Option<String>,
    pub last_success_at: Option<String>,
    /// The routing generation the last pass saw.
    pub generation: u64,
    /// Items found different from the config by the last pass.
    pub drift_records: usize,
    pub drift_elastic_ips: usize,
    /// The items the last pass changed (or tried to).
    pub last_changes: Vec<PlanItem>,
}

/// A running reconciler.
pub struct ReconcilerHandle {
    status: watch::Receiver<EdgeStatus>,
    task: JoinHandle<()>,
}

impl ReconcilerHandle {
    /// The status after the last pass.
    pub fn status(&self) -> EdgeStatus {
        self.status.borrow().clone()
    }

    /// Notified after every pass.
    pub fn subscribe(&self) -> watch::Receiver<EdgeStatus> {
        self.status.clone()
    }

    /// Wait until the loop has stopped (after the shutdown future resolved).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "edge reconciler task ended abnormally");
        }
    }
}

struct Metrics {
    total: IntCounterVec,
    drift: IntGaugeVec,
    last_success: Gauge,
}

impl Metrics {
    fn register(registry: &Registry) -> Result<Self, EdgeError> {
        let m = |e: prometheus::Error| EdgeError::Metrics(e.to_string());
        let total = IntCounterVec::new(
            Opts::new(
                "cutover_edge_reconcile_total",
                "Edge reconcile passes, by result (unchanged, applied, error).",
            ),
            &["result"],
        )
        .map_err(m)?;
        let drift = IntGaugeVec::new(
            Opts::new(
                "cutover_edge_drift",
                "Declared edge items that differed from AWS at the last pass, by kind (record, elastic_ip).",
            ),
            &["kind"],
        )
        .map_err(m)?;
        let last_success = Gauge::new(
            "cutover_edge_last_success_timestamp_seconds",
            "Unix time of the last edge reconcile pass that succeeded.",
        )
        .map_err(m)?;
        registry.register(Box::new(total.clone())).map_err(m)?;
        registry.register(Box::new(drift.clone())).map_err(m)?;
        registry
            .register(Box::new(last_success.clone()))
            .map_err(m)?;
        for r in ["unchanged", "applied", "error"] {
            total.with_label_values(&[r]);
        }
        for k in [ItemKind::Record, ItemKind::ElasticIp] {
            drift.with_label_values(&[k.as_str()]);
        }
        Ok(Metrics {
            total,
            drift,
            last_success,
        })
    }
}

/// Start the reconcile loop with clients from the standard AWS chain.
/// Must be called inside a Tokio runtime. A pass runs at once, then every
/// `cfg.interval`, and when `trigger` (the routing generation) changes such
/// that a `weight_from` weight moves. The loop stops when `shutdown`
/// resolves. Errors only when the metrics cannot be registered.
pub fn spawn_reconciler(
    cfg: EdgeConfig,
    splits: SplitsFn,
    trigger: watch::Receiver<u64>,
    registry: &Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ReconcilerHandle, EdgeError> {
    spawn_reconciler_with(
        cfg,
        None,
        ReconcilerOptions::default(),
        splits,
        trigger,
        registry,
        shutdown,
    )
}

/// [`spawn_reconciler`] with given clients (`None`: the standard chain) and
/// options.
pub fn spawn_reconciler_with(
    cfg: EdgeConfig,
    clients: Option<EdgeClients>,
    opts: ReconcilerOptions,
    splits: SplitsFn,
    trigger: watch::Receiver<u64>,
    registry: &Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ReconcilerHandle, EdgeError> {
    let metrics = Metrics::register(registry)?;
    let (status_tx, status_rx) = watch::channel(EdgeStatus::default());
    let task = tokio::spawn(async move {
        let mut shutdown = std::pin::pin!(shutdown);
        let clients = match clients {
            Some(c) => c,
            None => tokio::select! {
                _ = &mut shutdown => return,
                c = EdgeClients::from_env(&cfg) => c,
            },
        };
        let reconciler = Reconciler {
            clients,
            cfg,
            opts,
            splits,
            metrics,
            status_tx,
        };
        reconciler.run(trigger, shutdown).await;
    });
    Ok(ReconcilerHandle {
        status: status_rx,
        task,
    })
}

/// The loop's fixed parts.
struct Reconciler {
    clients: EdgeClients,
    cfg: EdgeConfig,
    opts: ReconcilerOptions,
    splits: SplitsFn,
    metrics: Metrics,
    status_tx: watch::Sender<EdgeStatus>,
}

/// What the loop carries from one pass to the next.
#[derive(Default)]
struct LoopState {
    /// Failed passes in a row (for the backoff).
    failures: u32,
    /// The weight_from weights the last successful pass made true.
    done_weights: Option<Vec<Option<u8>>>,
    status: EdgeStatus,
}

impl Reconciler {
    /// Pass after pass until `shutdown` resolves.
    async fn run<F: Future<Output = ()>>(
        self,
        mut trigger: watch::Receiver<u64>,
        mut shutdown: Pin<&mut F>,
    ) {
        let cfg = &self.cfg;
        let follows_split = cfg
            .records
            .iter()
            .any(|r| matches!(r.weight, Some(RecordWeight::From { .. })));
        let mut trigger_open = true;
        let mut next_at = Instant::now();
        let mut st = LoopState::default();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(next_at) => {}
                changed = trigger.changed(), if trigger_open => {
                    if changed.is_err() {
                        trigger_open = false;
                        continue;
                    }
                    let now = followed_weights(cfg, &(self.splits)());
                    if !follows_split || st.done_weights.as_ref() == Some(&now) {
                        continue;
                    }
                    tracing::info!("edge: a followed split changed; reconciling now");
                }
            }
            let generation = *trigger.borrow_and_update();
            let live = (self.splits)();
            let weights = followed_weights(cfg, &live);
            let outcome = tokio::select! {
                _ = &mut shutdown => break,
                r = pass(&self.clients, cfg, &live, self.opts.apply_timeout) => r,
            };
            next_at = self.record(&mut st, generation, weights, outcome);
            self.status_tx.send_replace(st.status.clone());
        }
    }

    /// Accounts for one pass in the status and metrics; returns when the
    /// next pass is due (after `interval`, or the backoff after a failure).
    fn record(
        &self,
        st: &mut LoopState,
        generation: u64,
        weights: Vec<Option<u8>>,
        outcome: Result<PassOk, PassErr>,
    ) -> Instant {
        let (cfg, opts, metrics, status) = (&self.cfg, &self.opts, &self.metrics, &mut st.status);
        status.passes += 1;
        status.generation = generation;
        status.last_run_at = Some(now_rfc3339());
        match outcome {
            Ok((result, items, drift)) => {
                st.failures = 0;
                st.done_weights = Some(weights);
                metrics.total.with_label_values(&[result.as_str()]).inc();
                set_drift(metrics, status, drift);
                metrics.last_success.set(unix_now());
                status.last_success_at = status.last_run_at.clone();
                status.last_result = Some(result);
                status.last_error = None;
                if result == PassResult::Applied {
                    status.last_changes = items;
                }
                cutover_proxy::time::later_tokio(Instant::now(), cfg.interval)
            }
            Err((e, items, drift)) => {
                metrics.total.with_label_values(&["error"]).inc();
                if let Some(d) = drift {
                    set_drift(metrics, status, d);
                }
                if !items.is_empty() {
                    status.last_changes = items;
                }
                let backoff = opts
                    .retry_initial
                    .saturating_mul(1u32 << st.failures.min(16))
                    .min(cfg.interval);
                st.failures = st.failures.saturating_add(1);
                tracing::warn!(error = %e, retry_in = ?backoff, "edge: reconcile pass failed");
                status.last_result = Some(PassResult::Error);
                status.last_error = Some(e.to_string());
                cutover_proxy::time::later_tokio(Instant::now(), backoff)
            }
        }
    }
}

fn set_drift(metrics: &Metrics, status: &mut EdgeStatus, (records, eips): (usize, usize)) {
    metrics
        .drift
        .with_label_values(&[ItemKind::Record.as_str()])
        .set(records as i64);
    metrics
        .drift
        .with_label_values(&[ItemKind::ElasticIp.as_str()])
        .set(eips as i64);
    status.drift_records = records;
    status.drift_elastic_ips = eips;
}

/// The Route 53 weights the `weight_from` records want under `splits`
/// (`None` for a service or pool the live split does not have).
fn followed_weights(cfg: &EdgeConfig, splits: &[(String, String, u32, u32)]) -> Vec<Option<u8>> {
    cfg.records
        .iter()
        .filter_map(|r| match &r.weight {
            Some(RecordWeight::From { service, pool, .. }) => {
                Some(lookup_in(splits, service, pool).map(|(w, t)| route53_weight(w, t)))
            }
            _ => None,
        })
        .collect()
}

type PassOk = (PassResult, Vec<PlanItem>, (usize, usize));
type PassErr = (EdgeError, Vec<PlanItem>, Option<(usize, usize)>);

async fn pass(
    clients: &EdgeClients,
    cfg: &EdgeConfig,
    splits: &[(String, String, u32, u32)],
    timeout: Duration,
) -> Result<PassOk, PassErr> {
    let actual = clients
        .read_actual(cfg)
        .await
        .map_err(|e| (e, Vec::new(), None))?;
    let lookup = |s: &str, p: &str| lookup_in(splits, s, p);
    let plan = compute_plan(cfg, &actual, &lookup);
    let drift = (
        plan.drift(ItemKind::Record),
        plan.drift(ItemKind::ElasticIp),
    );
    for item in &plan.items {
        if let Some(note) = &item.note {
            tracing::warn!(item = %item.id, note, "edge: attention");
        }
    }
    let changed: Vec<PlanItem> = plan
        .items
        .iter()
        .filter(|i| i.action != Action::None)
        .cloned()
        .collect();
    if changed.is_empty() {
        tracing::debug!("edge: AWS matches the config");
        return Ok((PassResult::Unchanged, changed, drift));
    }
    for i in &changed {
        tracing::info!(
            kind = i.kind.as_str(),
            item = %i.id,
            actual = i.actual.as_deref().unwrap_or("-"),
            desired = i.desired.as_deref().unwrap_or("-"),
            action = i.action.as_str(),
            "edge: drift found; applying"
        );
    }
    match clients.apply(&plan, timeout).await {
        Ok(lines) => {
            for l in lines {
                tracing::info!("edge: {l}");
            }
            Ok((PassResult::Applied, changed, drift))
        }
        Err(e) => Err((e, changed, Some(drift))),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
