//! Drain state per pool ("is blue empty?") and the task that re-evaluates
//! tunnels whenever the routing generation changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use crate::snapshot::{Backend, Service, Snapshot};
use crate::Shared;

/// What is left on one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolDrain {
    pub pool: String,
    pub weight: u32,
    /// The share of tickets it gets now: during a slow start a pool whose
    /// weight went to 0 still gets some until the ramp ends.
    pub effective_share: f64,
    pub in_flight: i64,
    pub tunnels_open: u64,
    pub tunnels_draining: u64,
    /// No share of tickets (weight 0, and no slow start still giving it
    /// some), no requests in flight and no tunnels.
    pub drained: bool,
}

impl PoolDrain {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "pool": self.pool,
            "weight": self.weight,
            "effective_share": self.effective_share,
            "in_flight": self.in_flight,
            "tunnels_open": self.tunnels_open,
            "tunnels_draining": self.tunnels_draining,
            "drained": self.drained,
        })
    }
}

/// Per pool of `service`, in pool order; None for an unknown service.
pub fn status(shared: &Shared, service: &str) -> Option<Vec<PoolDrain>> {
    let snap = shared.snapshot.load_full();
    let (_, s) = snap.service(service)?;
    Some(
        s.pools
            .iter()
            .zip(s.split.weights())
            .enumerate()
            .map(|(i, (p, w))| {
                let t = shared.tunnels.counts(service, &p.name);
                let in_flight = p.in_flight().max(0);
                let idle = in_flight == 0 && t.open == 0 && t.draining == 0;
                PoolDrain {
                    pool: p.name.clone(),
                    weight: *w,
                    effective_share: s.effective().share(i),
                    in_flight,
                    tunnels_open: t.open,
                    tunnels_draining: t.draining,
                    drained: *w == 0 && !s.effective().has_share(i) && idle,
                }
            })
            .collect(),
    )
}

/// After every routing change (an operator's change, or a slow start's
/// step that moved tickets: the control plane's routing watch fires on
/// both), until the sender goes: re-evaluates tunnels,
/// and for backends the new snapshot retired (their pool lost all its
/// traffic) cuts the upstream connections still open at the drain deadline.
/// Every [`REAP_INTERVAL`] it also closes idle upstream connections past
/// their idle timeout.
pub async fn follow_changes(shared: Arc<Shared>, mut routing: watch::Receiver<u64>) {
    let mut prev = shared.snapshot.load_full();
    let mut reap = tokio::time::interval(REAP_INTERVAL);
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = routing.changed() => if changed.is_err() { break },
            _ = reap.tick() => {
                close_expired_idle(&shared.snapshot.load());
                continue;
            }
        }
        let snap = shared.snapshot.load_full();
        shared.tunnels.rebalance(&prev, &snap);
        for (service, backend) in retired(&prev, &snap) {
            let deadline = service.config.drain_timeout;
            let name = service.config.name.clone();
            let weak = Arc::downgrade(&backend);
            drop(backend);
            tokio::spawn(async move {
                tokio::time::sleep(deadline).await;
                // Still alive only while requests on it are in flight.
                if let Some(b) = weak.upgrade() {
                    let cut = b.connections.cut_all();
                    if cut > 0 {
                        tracing::warn!(service = %name, backend = %b.addr, cut, "drain deadline passed: cut upstream connections still in use");
                    }
                }
            });
        }
        prev = snap;
    }
}

/// How often idle upstream connections past their idle timeout are closed.
const REAP_INTERVAL: Duration = Duration::from_secs(15);

fn close_expired_idle(snap: &Snapshot) {
    let now = Instant::now();
    for b in snap
        .services
        .iter()
        .flat_map(|s| s.pools.iter())
        .flat_map(|p| p.backends.iter())
    {
        b.upstream.close_expired(now);
    }
}

/// Backends of `prev` that `next` no longer uses.
fn retired(prev: &Snapshot, next: &Snapshot) -> Vec<(Arc<Service>, Arc<Backend>)> {
    let mut out = Vec::new();
    for s in &prev.services {
        let kept: Vec<&Arc<Backend>> = next
            .service(s.name())
            .map(|(_, n)| n.pools.iter().flat_map(|p| p.backends.iter()).collect())
            .unwrap_or_default();
        for b in s.pools.iter().flat_map(|p| p.backends.iter()) {
            if !kept.iter().any(|k| Arc::ptr_eq(k, b)) {
                out.push((s.clone(), b.clone()));
            }
        }
    }
    out
}
