//! Control-plane errors: what an admin request or a state file got wrong.

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("unknown service `{0}`; services: {1}")]
    UnknownService(String, String),
    #[error("service `{service}` has no pool `{pool}`; pools: {pools}")]
    UnknownPool {
        service: String,
        pool: String,
        pools: String,
    },
    #[error("invalid split: {0}")]
    InvalidSplit(String),
    #[error("generation mismatch: the change expected generation {expected}, but the current generation is {actual}; read /v1/status and retry")]
    Conflict { expected: u64, actual: u64 },
    #[error("run mismatch: the change expected run {expected}, but this is run {actual} (cutover restarted since; generations may have restarted too); read /v1/status and retry")]
    RunMismatch { expected: String, actual: String },
    #[error("refused: the change gives weight to a pool of service `{service}` with no backend up: {detail}; send \"force\": true (ctl: --force) to apply it anyway")]
    NoBackendUp { service: String, detail: String },
    #[error("service `{0}` has no earlier split to roll back to")]
    NothingToRollBack(String),
    #[error(
        "could not persist the change to the state file {path}: {source}; nothing was changed"
    )]
    Persist {
        path: String,
        source: std::io::Error,
    },
    #[error("could not write the audit log {path}: {source}; nothing was changed")]
    Audit {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the audit log {path}: {source}")]
    AuditOpen {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path} is unreadable: {message}; fix or remove it (it holds the last acknowledged split)")]
    BadStateFile { path: String, message: String },
}

impl ControlError {
    pub fn status(&self) -> StatusCode {
        match self {
            ControlError::UnknownService(..) => StatusCode::NOT_FOUND,
            ControlError::UnknownPool { .. } | ControlError::InvalidSplit(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ControlError::Conflict { .. }
            | ControlError::RunMismatch { .. }
            | ControlError::NothingToRollBack(_)
            | ControlError::NoBackendUp { .. } => StatusCode::CONFLICT,
            ControlError::Persist { .. }
            | ControlError::BadStateFile { .. }
            | ControlError::Audit { .. }
            | ControlError::AuditOpen { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
