//! The `[edge]` section: Route 53 records and Elastic IP associations that
//! cutover keeps pointing at the proxy tier. Raw serde types (every field
//! optional, like [`crate::raw`]) in `raw`, their validation (`validate`)
//! into [`EdgeConfig`] and the types under it (`model`).
//! Pure data: the AWS side lives in `cutover-control` (`edge` feature).

mod model;
mod raw;
mod validate;

pub use model::*;
pub use raw::{RawAlias, RawCandidates, RawEdge, RawElasticIp, RawRecord};
pub(crate) use raw::{
    ALLOWED_ALIAS_KEYS, ALLOWED_CANDIDATES_KEYS, ALLOWED_EDGE_KEYS, ALLOWED_ELASTIC_IP_KEYS,
    ALLOWED_RECORD_KEYS,
};
pub(crate) use validate::validate_edge;
pub use validate::{normalize_zone_id, parse_url_template};

#[cfg(test)]
mod tests;
