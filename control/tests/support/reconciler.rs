//! A reconciler started against moto the way `cutover run` starts it, with a
//! shutdown switch and waits on its status.

use std::time::Duration;

use aws_config::SdkConfig;
use cutover_config::edge::EdgeConfig;
use cutover_control::edge::{
    spawn_reconciler_with, EdgeClients, EdgeStatus, ReconcilerHandle, ReconcilerOptions, SplitsFn,
};
use tokio::sync::{oneshot, watch};

use super::eventually;

pub struct Running {
    pub handle: ReconcilerHandle,
    pub registry: prometheus::Registry,
    status: watch::Receiver<EdgeStatus>,
    stop: oneshot::Sender<()>,
}

/// Starts the reconcile loop on `cfg` with clients for `sdk`; a new value in
/// `trigger` asks for a pass at once.
pub fn start(
    cfg: EdgeConfig,
    sdk: &SdkConfig,
    opts: ReconcilerOptions,
    splits: SplitsFn,
    trigger: watch::Receiver<u64>,
) -> Running {
    let registry = prometheus::Registry::new();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let handle = spawn_reconciler_with(
        cfg,
        Some(EdgeClients::from_sdk_config(sdk)),
        opts,
        splits,
        trigger,
        &registry,
        async move {
            let _ = stop_rx.await;
        },
    )
    .expect("reconciler starts");
    Running {
        status: handle.subscribe(),
        handle,
        registry,
        stop,
    }
}

impl Running {
    /// Polls until the status after a pass satisfies `cond` (30 s at most).
    pub async fn wait_status(&mut self, what: &str, cond: impl Fn(&EdgeStatus) -> bool) {
        let status = &mut self.status;
        let ok = eventually(Duration::from_secs(30), || {
            let ok = cond(&status.borrow_and_update());
            async move { ok }
        })
        .await;
        assert!(ok, "timed out waiting for {what}");
    }

    /// Shuts the loop down and waits for it to stop.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.handle.join())
            .await
            .expect("the reconciler stops on shutdown");
    }
}
