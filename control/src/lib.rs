//! cutover's control plane: the switch logic ([`Controller`]), runtime state
//! persistence, and the admin API.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod controller;
#[cfg(feature = "edge")]
pub mod edge;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod outlier;
pub mod reload;
pub mod slow_start;
pub mod state;
mod status;

pub use admin::Admin;
pub use audit::{AuditLog, AuditRecord};
pub use auth::Auth;
pub use controller::{Action, ChangeOutcome, ChangeRequest, Controller};
pub use error::ControlError;
pub use reload::{ListenerInfo, ReloadReport};
