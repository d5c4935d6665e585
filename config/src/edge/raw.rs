//! The `[edge]` section as written: raw serde types, every field optional
//! (like [`crate::raw`]), so validation can report every mistake at once.

use serde::Deserialize;

use crate::raw::OrderedMap;

pub(crate) const ALLOWED_EDGE_KEYS: &str = "region, interval, endpoint_url, records, elastic_ips";
pub(crate) const ALLOWED_RECORD_KEYS: &str =
    "zone_id, name, type, alias, values, ttl, set_identifier, weight, weight_from";
pub(crate) const ALLOWED_ALIAS_KEYS: &str = "dns_name, zone_id, evaluate_target_health";
pub(crate) const ALLOWED_ELASTIC_IP_KEYS: &str =
    "allocation_id, candidates, health_url, health_timeout";
pub(crate) const ALLOWED_CANDIDATES_KEYS: &str = "tags, instances";

#[derive(Debug, Default, Deserialize)]
pub struct RawEdge {
    pub region: Option<String>,
    pub interval: Option<String>,
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub records: Vec<RawRecord>,
    #[serde(default)]
    pub elastic_ips: Vec<RawElasticIp>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRecord {
    pub zone_id: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub rtype: Option<String>,
    pub alias: Option<RawAlias>,
    pub values: Option<Vec<String>>,
    pub ttl: Option<i64>,
    pub set_identifier: Option<String>,
    pub weight: Option<i64>,
    pub weight_from: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAlias {
    pub dns_name: Option<String>,
    pub zone_id: Option<String>,
    pub evaluate_target_health: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawElasticIp {
    pub allocation_id: Option<String>,
    pub candidates: Option<RawCandidates>,
    pub health_url: Option<String>,
    pub health_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCandidates {
    pub tags: Option<OrderedMap<String>>,
    pub instances: Option<Vec<String>>,
}
