//! cutover's data plane: listeners, the routing snapshot, ticket routing,
//! backend balancing, upstream connection pools and data-plane metrics.
//!
//! The data plane reads one immutable [`Snapshot`] per request from an
//! `ArcSwap`; it never blocks on the control plane, never parses files and
//! never calls AWS.

mod body;
pub mod drain;
pub mod error;
mod forward;
/// Entry points for the fuzz targets in `fuzz/`: private parsers driven
/// from a byte slice. Not an API; it may change at any time.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::upstream::h1::fuzzing::{read_response, BodyFraming, End, H1Outcome};
}
mod grpc;
pub mod headers;
pub mod metrics;
pub mod outlier;
pub mod proxy_protocol;
pub mod server;
pub mod slow_start;
pub mod snapshot;
mod sockopt;
mod tcp;
pub mod ticket;
pub mod time;
pub mod tls;
pub mod tunnel;
pub mod upstream;

pub use error::{ErrorSource, ProxyError};
pub use metrics::ProxyMetrics;
pub use outlier::Ejection;
pub use server::{serve, serve_with, ListenerControl, ListenerSpec};
pub use snapshot::{Backend, Health, Pool, Service, Snapshot};
pub use ticket::Ticket;

use std::sync::Arc;

use arc_swap::ArcSwap;

/// What every listener shares: the routing snapshot, the metrics and the
/// registry of open tunnels.
pub struct Shared {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<ProxyMetrics>,
    pub tunnels: Arc<tunnel::Tunnels>,
}

impl Shared {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, metrics: Arc<ProxyMetrics>) -> Shared {
        Shared {
            snapshot,
            metrics,
            tunnels: Arc::new(tunnel::Tunnels::default()),
        }
    }
}
