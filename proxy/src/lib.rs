//! cutover's data plane: listeners, the routing snapshot, ticket routing,
//! backend balancing, upstream connection pools and data-plane metrics.
//!
//! The data plane reads one immutable [`Snapshot`] per request from an
//! `ArcSwap`; it never blocks on the control plane, never parses files and
//! never calls AWS.

mod body;
pub mod error;
mod forward;
pub mod headers;
pub mod metrics;
pub mod server;
pub mod snapshot;
pub mod ticket;

pub use error::{ErrorSource, ProxyError};
pub use metrics::ProxyMetrics;
pub use server::{serve, ListenerSpec};
pub use snapshot::{Backend, Pool, Service, Snapshot};
pub use ticket::Ticket;

use std::sync::Arc;

use arc_swap::ArcSwap;

/// What every listener shares: the routing snapshot and the metrics.
pub struct Shared {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<ProxyMetrics>,
}
