//! Drain state per pool ("is blue empty?") and the task that re-evaluates
//! tunnels whenever the routing generation changes.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::watch;

use crate::Shared;

/// What is left on one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDrain {
    pub pool: String,
    pub weight: u32,
    pub in_flight: i64,
    pub tunnels_open: u64,
    pub tunnels_draining: u64,
    /// Weight 0, no requests in flight and no tunnels.
    pub drained: bool,
}

impl PoolDrain {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "pool": self.pool,
            "weight": self.weight,
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
            .map(|(p, w)| {
                let t = shared.tunnels.counts(service, &p.name);
                let in_flight = p.in_flight().max(0);
                PoolDrain {
                    pool: p.name.clone(),
                    weight: *w,
                    in_flight,
                    tunnels_open: t.open,
                    tunnels_draining: t.draining,
                    drained: *w == 0 && in_flight == 0 && t.open == 0 && t.draining == 0,
                }
            })
            .collect(),
    )
}

/// Re-evaluates tunnels after every routing change, until the sender goes.
pub async fn follow_changes(shared: Arc<Shared>, mut generation: watch::Receiver<u64>) {
    while generation.changed().await.is_ok() {
        let snap = shared.snapshot.load_full();
        shared.tunnels.rebalance(&snap);
    }
}
