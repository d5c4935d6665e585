//! Edge sync: keep the Route 53 records and Elastic IPs declared in `[edge]`
//! pointing at the proxy tier.
//!
//! - [`plan`]: the pure part (desired vs actual, the Elastic IP rule, health
//!   URL templates, split to Route 53 weight), unit-tested without I/O.
//! - [`aws`]: reading the actual state and applying a plan with
//!   aws-sdk-route53 and aws-sdk-ec2 (retries with backoff on throttling and
//!   5xx come from the SDK's standard retry strategy, configured here).
//! - [`health`]: the candidates' HTTP health checks.
//! - [`reconcile`]: the background loop of `cutover run`, its metrics and
//!   status.
//! - [`cli`]: `cutover edge plan` and `cutover edge apply`.

pub mod aws;
pub mod cli;
pub mod health;
pub mod plan;
pub mod reconcile;

pub use aws::{EdgeClients, PollPolicy};
pub use cli::{apply_command, apply_with, plan_command, plan_with};
pub use plan::{route53_weight, Action, ItemKind, Plan, PlanItem};
pub use reconcile::{
    spawn_reconciler, spawn_reconciler_with, EdgeStatus, ReconcilerHandle, ReconcilerOptions,
    SplitsFn,
};

/// What can go wrong talking to AWS (or writing the output). Every AWS
/// error names the operation, the item it concerns, and AWS's error code and
/// message.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// AWS answered with an error.
    #[error("{item}: AWS {operation} failed: {code}: {message}")]
    Aws {
        operation: &'static str,
        item: String,
        code: String,
        message: String,
    },
    /// No AWS answer: connection failure, timeout, unreadable response.
    #[error("{item}: AWS {operation} failed: {message}")]
    Transport {
        operation: &'static str,
        item: String,
        message: String,
    },
    /// Route 53 did not report the change INSYNC within the timeout. The
    /// change was accepted and will still propagate.
    #[error("{item}: Route 53 change {change_id} was still {status} after {waited:?}; it was accepted and keeps propagating")]
    NotInSync {
        item: String,
        change_id: String,
        status: String,
        waited: std::time::Duration,
    },
    /// A request could not be built or an answer lacked a required field.
    #[error("{item}: {message}")]
    Invalid { item: String, message: String },
    #[error("cannot register the edge metrics: {0}")]
    Metrics(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl EdgeError {
    /// The AWS error code, when AWS sent one (like `NoSuchHostedZone`).
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            EdgeError::Aws { code, .. } => Some(code),
            _ => None,
        }
    }
}
