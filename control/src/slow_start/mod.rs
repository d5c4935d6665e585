//! Slow start in the control plane: whether a change ramps
//! ([`ramp_window`]), the controller's steps and warm-ups, and the task
//! ([`run`]) that moves every ramp on ([`Controller::step_ramps`]) while
//! one runs and sleeps until the next one begins. Never on the request
//! path: the data plane only reads the snapshots built here (the
//! arithmetic is in [`cutover_proxy::slow_start`]).

use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::slow_start;
use cutover_proxy::ticket::Split;
use cutover_proxy::Snapshot;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::controller::{locate, Action, ChangeRequest, Controller};

/// Runs until `shutdown` turns true (or its sender goes).
pub async fn run(controller: Arc<Controller>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let next = controller.step_ramps(Instant::now());
        let step = async {
            match next {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = step => {}
            _ = controller.ramp_started() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

impl Controller {
    /// Starts one backend's slow start: its weight in its pool's draw ramps
    /// from almost nothing to its weight over the service's `slow_start`
    /// window, from now. For a backend that returns to service:
    /// [`Controller::set_health`] calls it on an active check's down to up;
    /// the end of a passive ejection should too. Same generation, no audit.
    /// False without `slow_start`, or when there is no such backend or it
    /// is not up.
    pub fn warm_up(&self, service: &str, pool: &str, backend: &str) -> bool {
        let _inner = self.lock();
        let current = self.snapshot.load_full();
        let Some((si, pi, bi)) = locate(&current, service, pool, backend) else {
            return false;
        };
        match current.with_warmup(si, pi, bi, Instant::now()) {
            Some(next) => {
                self.snapshot.store(Arc::new(next));
                self.ramp_wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Moves every slow start on to `now` (split ramps and warming
    /// backends): a new snapshot with the same backends and the same
    /// generation, swapped in under the change lock (an operator's change
    /// and a step never undo each other). Not an operator change: no audit
    /// entry, no state file write (they hold the target split). Returns
    /// how soon the next step is due; `None` when nothing ramps.
    pub fn step_ramps(&self, now: Instant) -> Option<Duration> {
        let inner = self.lock();
        let current = self.snapshot.load_full();
        let next = current.step(now)?;
        let moved = current
            .services
            .iter()
            .zip(&next.services)
            .any(|(a, b)| a.effective() != b.effective());
        let interval = next.step_interval();
        self.snapshot.store(Arc::new(next));
        drop(inner);
        if moved {
            self.update_metrics();
            self.routing_tx.send_modify(|n| *n += 1);
        }
        interval
    }

    /// Resolves when a slow start may have begun since the last call
    /// (a ramped change, a backend warming up).
    pub async fn ramp_started(&self) {
        self.ramp_wake.notified().await;
    }
}

/// The slow start window when the change `req` (to `new`) ramps: the
/// service has `slow_start`, the change is a split or a switch (a rollback
/// returns to the last acknowledged split at once), and it gives more
/// tickets to a pool that gets none now or is still ramping up
/// ([`slow_start::ramps`]). `None`: the change is in force at once.
pub(crate) fn ramp_window(
    current: &Snapshot,
    idx: usize,
    req: &ChangeRequest,
    new: &[u32],
) -> Option<Duration> {
    if matches!(req.action, Action::Rollback) {
        return None;
    }
    let s = current.services.get(idx)?;
    let window = s.config.slow_start?;
    slow_start::ramps(&s.split, s.effective(), &Split::new(new.to_vec())).then_some(window)
}

#[cfg(test)]
mod tests;
