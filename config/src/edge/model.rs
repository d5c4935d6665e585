//! The validated `[edge]` section: the types `cutover-control` uses.

use std::time::Duration;

/// Default reconcile period inside `cutover run`.
pub const DEFAULT_EDGE_INTERVAL: Duration = Duration::from_secs(30);
/// Default TTL of a record given by `values`.
pub const DEFAULT_RECORD_TTL: u32 = 60;
/// Default time a candidate has to answer its health URL.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Route 53's largest weight.
pub const MAX_ROUTE53_WEIGHT: u8 = 255;

#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// AWS region; `None` takes it from the standard chain (environment,
    /// profile, instance metadata).
    pub region: Option<String>,
    /// Reconcile period inside `cutover run`.
    pub interval: Duration,
    /// Endpoint override for every AWS service (moto, LocalStack).
    pub endpoint_url: Option<String>,
    /// Records in file order.
    pub records: Vec<RecordConfig>,
    /// Elastic IPs in file order.
    pub elastic_ips: Vec<ElasticIpConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    A,
    Aaaa,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasTarget {
    /// Lower case, with the trailing dot.
    pub dns_name: String,
    /// Hosted zone ID of the alias target, without `/hostedzone/`.
    pub zone_id: String,
    pub evaluate_target_health: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordTarget {
    Alias(AliasTarget),
    /// Plain addresses with a TTL.
    Values {
        values: Vec<String>,
        ttl: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordWeight {
    /// A fixed Route 53 weight (0 to 255).
    Fixed(u8),
    /// Follows a service's split: the pool's share of the split, mapped to
    /// 0..=255 (see `cutover_control::edge::route53_weight`). `config_weight`
    /// and `config_total` are the split in the config file, used by
    /// `cutover edge plan/apply`; the running proxy uses its live split.
    From {
        service: String,
        pool: String,
        config_weight: u32,
        config_total: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    /// Hosted zone ID, without the `/hostedzone/` prefix.
    pub zone_id: String,
    /// Lower case, with the trailing dot.
    pub name: String,
    pub rtype: RecordType,
    pub target: RecordTarget,
    /// Set on weighted records, together with `weight`.
    pub set_identifier: Option<String>,
    pub weight: Option<RecordWeight>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// Explicit instance IDs.
    Instances(Vec<String>),
    /// Every running instance carrying all of these tags.
    Tags(Vec<(String, String)>),
}

/// One piece of a `health_url` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlPart {
    Literal(String),
    PrivateIp,
    PublicIp,
    InstanceId,
    /// The value of the instance's tag of this key.
    Tag(String),
}

/// A parsed `health_url`, like `http://{private_ip}:9901/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    /// As written in the file.
    pub raw: String,
    pub parts: Vec<UrlPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElasticIpConfig {
    pub allocation_id: String,
    pub candidates: Candidates,
    pub health_url: UrlTemplate,
    /// How long a candidate has to answer its health URL.
    pub health_timeout: Duration,
}
