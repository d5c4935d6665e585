//! Entry points for the fuzz targets in `fuzz/`: the admin API's change
//! bodies, read as the API reads them and applied to a controller. Not an
//! API; it may change at any time.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::admin::{change_request, ChangeKind};
use crate::controller::{ChangeOutcome, Controller};

/// Which change endpoint a body went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `PUT /v1/services/NAME/split`
    Split,
    /// `POST /v1/services/NAME/switch`
    Switch,
    /// `POST /v1/services/NAME/rollback`
    Rollback,
}

thread_local! {
    /// `apply` is async (its state-file write runs on a blocking thread):
    /// one runtime per fuzzing thread runs it.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime");
}

/// Reads `body` as the admin API reads a change to `service` at
/// `endpoint`, and applies it to `controller`: the outcome, or the status
/// code and message the API would answer with.
pub fn change(
    controller: &Arc<Controller>,
    endpoint: Endpoint,
    service: &str,
    body: &[u8],
) -> Result<ChangeOutcome, (u16, String)> {
    let kind = match endpoint {
        Endpoint::Split => ChangeKind::Split,
        Endpoint::Switch => ChangeKind::Switch,
        Endpoint::Rollback => ChangeKind::Rollback,
    };
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
    let request = change_request(body, peer, "fuzz", service.to_string(), kind)
        .map_err(|(status, message)| (status.as_u16(), message))?;
    RUNTIME
        .with(|rt| rt.block_on(controller.apply(request)))
        .map_err(|e| (e.status().as_u16(), e.to_string()))
}
