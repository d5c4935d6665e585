//! The `[edge]` section: Route 53 records and Elastic IP associations that
//! cutover keeps pointing at the proxy tier. Raw serde types (every field
//! optional, like [`crate::raw`]) and their validation into [`EdgeConfig`].
//! Pure data: the AWS side lives in `cutover-control` (`edge` feature).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::Deserialize;

use crate::locate::Seg;
use crate::model::ServiceConfig;
use crate::raw::OrderedMap;
use crate::validate::{duration, idx, key, Errs};

pub(crate) const ALLOWED_EDGE_KEYS: &str = "region, interval, endpoint_url, records, elastic_ips";
pub(crate) const ALLOWED_RECORD_KEYS: &str =
    "zone_id, name, type, alias, values, ttl, set_identifier, weight, weight_from";
pub(crate) const ALLOWED_ALIAS_KEYS: &str = "dns_name, zone_id, evaluate_target_health";
pub(crate) const ALLOWED_ELASTIC_IP_KEYS: &str =
    "allocation_id, candidates, health_url, health_timeout";
pub(crate) const ALLOWED_CANDIDATES_KEYS: &str = "tags, instances";

/// Default reconcile period inside `cutover run`.
pub const DEFAULT_EDGE_INTERVAL: Duration = Duration::from_secs(30);
/// Default TTL of a record given by `values`.
pub const DEFAULT_RECORD_TTL: u32 = 60;
/// Default time a candidate has to answer its health URL.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Route 53's largest weight.
pub const MAX_ROUTE53_WEIGHT: u8 = 255;

// ---------------------------------------------------------------- raw types

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

// ---------------------------------------------------------- validated types

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

// ------------------------------------------------------------- validation

/// Parse a `health_url` template. Placeholders: `{private_ip}`,
/// `{public_ip}`, `{instance_id}`, `{tag:KEY}`.
pub fn parse_url_template(s: &str) -> Result<UrlTemplate, String> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(open) = rest.find(['{', '}']) {
        lit.push_str(&rest[..open]);
        if rest[open..].starts_with('}') {
            return Err(format!("`{s}` has a `}}` without a matching `{{`"));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("`{s}` has a `{{` without a matching `}}`"));
        };
        let name = &after[..close];
        let part = match name {
            "private_ip" => UrlPart::PrivateIp,
            "public_ip" => UrlPart::PublicIp,
            "instance_id" => UrlPart::InstanceId,
            _ => match name.strip_prefix("tag:") {
                Some(k) if !k.is_empty() && !k.contains('{') => UrlPart::Tag(k.to_string()),
                _ => {
                    return Err(format!(
                        "`{{{name}}}` is not a placeholder; allowed: {{private_ip}}, {{public_ip}}, {{instance_id}}, {{tag:KEY}}"
                    ))
                }
            },
        };
        if !lit.is_empty() {
            parts.push(UrlPart::Literal(std::mem::take(&mut lit)));
        }
        parts.push(part);
        rest = &after[close + 1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        parts.push(UrlPart::Literal(lit));
    }
    let scheme_ok = matches!(parts.first(), Some(UrlPart::Literal(l)) if l.starts_with("http://"));
    if !scheme_ok {
        return Err(format!(
            "`{s}` must start with `http://` (health checks are plain HTTP), like \"http://{{private_ip}}:9901/readyz\""
        ));
    }
    Ok(UrlTemplate {
        raw: s.to_string(),
        parts,
    })
}

/// A hosted zone ID: upper-case letters and digits after an optional
/// `/hostedzone/` prefix. Returns it without the prefix.
pub fn normalize_zone_id(s: &str) -> Result<String, String> {
    let id = s.strip_prefix("/hostedzone/").unwrap_or(s);
    if id.is_empty() {
        return Err("a hosted zone ID must not be empty; like \"Z0123456789ABC\"".to_string());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(format!(
            "`{s}` is not a hosted zone ID: after an optional `/hostedzone/` prefix, only upper-case letters and digits, like \"Z0123456789ABC\""
        ));
    }
    Ok(id.to_string())
}

/// A DNS name with its trailing dot, lower-cased. Route 53 stores names that
/// way (and escapes `*` as `\052`, which the control side undoes).
fn dns_name(s: &str, what: &str) -> Result<String, String> {
    if !s.ends_with('.') {
        return Err(format!(
            "{what} `{s}` needs the trailing dot of a fully qualified name: write \"{s}.\""
        ));
    }
    let body = &s[..s.len() - 1];
    let labels: Vec<&str> = body.split('.').collect();
    let label_ok = |(i, l): (usize, &&str)| {
        (i == 0 && **l == *"*")
            || (!l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    };
    if body.is_empty() || s.len() > 254 || !labels.iter().enumerate().all(label_ok) {
        return Err(format!(
            "{what} `{s}` is not a DNS name; use labels of letters, digits, `-` and `_` separated by dots, like \"www.example.com.\""
        ));
    }
    Ok(s.to_ascii_lowercase())
}

fn nonempty(errs: &mut Errs, path: &[Seg], v: &Option<String>, what: &str) -> Option<String> {
    match v {
        None => {
            let (parent, k) = path.split_at(path.len().saturating_sub(1));
            let k = match k.first() {
                Some(Seg::Key(k)) => k.as_str(),
                _ => "",
            };
            errs.push(parent, format!("`{k}` is required: {what}"));
            None
        }
        Some(s) if s.trim().is_empty() => {
            errs.push(path, format!("must not be empty: {what}"));
            None
        }
        Some(s) => Some(s.trim().to_string()),
    }
}

/// A required, non-empty string run through `parse`; a parse error is
/// reported at the same key.
fn required<T>(
    errs: &mut Errs,
    path: &[Seg],
    v: &Option<String>,
    what: &str,
    parse: impl FnOnce(String) -> Result<T, String>,
) -> Option<T> {
    let s = nonempty(errs, path, v, what)?;
    match parse(s) {
        Ok(t) => Some(t),
        Err(e) => {
            errs.push(path, e);
            None
        }
    }
}

pub(crate) fn validate_edge(
    raw: &RawEdge,
    path: &[Seg],
    services: &[ServiceConfig],
    errs: &mut Errs,
) -> EdgeConfig {
    let region = match &raw.region {
        Some(r)
            if r.trim().is_empty()
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            errs.push(
                &key(path, "region"),
                format!("`{r}` is not an AWS region name; like \"us-east-1\" (leave it out to use the standard AWS chain)"),
            );
            None
        }
        r => r.clone(),
    };
    let interval = duration(
        errs,
        &key(path, "interval"),
        &raw.interval,
        DEFAULT_EDGE_INTERVAL,
    );
    let endpoint_url = match &raw.endpoint_url {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 8 => {
            errs.push(
                &key(path, "endpoint_url"),
                format!("`{u}` is not an endpoint URL; write http://HOST:PORT or https://HOST"),
            );
            None
        }
        u => u.clone(),
    };
    if raw.records.is_empty() && raw.elastic_ips.is_empty() {
        errs.push(
            path,
            "[edge] declares nothing: add [[edge.records]] or [[edge.elastic_ips]], or remove [edge]",
        );
    }

    let rpath = key(path, "records");
    let mut records = Vec::new();
    let mut seen: HashMap<(String, String, RecordType, Option<String>), usize> = HashMap::new();
    // (zone, name, type) -> (weighted?, first index): Route 53 refuses to mix.
    let mut routing: HashMap<(String, String, RecordType), (bool, usize)> = HashMap::new();
    for (i, rr) in raw.records.iter().enumerate() {
        let p = idx(&rpath, i);
        if let Some(r) = validate_record(rr, &p, services, errs) {
            let k = (
                r.zone_id.clone(),
                r.name.clone(),
                r.rtype,
                r.set_identifier.clone(),
            );
            if let Some(first) = seen.insert(k, i) {
                errs.push(
                    &p,
                    format!(
                        "record {} {} in zone {}{} is declared twice (also records[{first}])",
                        r.name,
                        r.rtype.as_str(),
                        r.zone_id,
                        r.set_identifier
                            .as_deref()
                            .map(|s| format!(" with set_identifier `{s}`"))
                            .unwrap_or_default()
                    ),
                );
            }
            let weighted = r.set_identifier.is_some();
            let gk = (r.zone_id.clone(), r.name.clone(), r.rtype);
            match routing.get(&gk) {
                Some((w, first)) if *w != weighted => errs.push(
                    &p,
                    format!(
                        "records[{first}] and this record have the same name and type but only one is weighted; Route 53 needs all of them weighted (set_identifier and weight) or a single plain record"
                    ),
                ),
                Some(_) => {}
                None => {
                    routing.insert(gk, (weighted, i));
                }
            }
            records.push(r);
        }
    }

    let epath = key(path, "elastic_ips");
    let mut elastic_ips = Vec::new();
    let mut seen_alloc: HashMap<String, usize> = HashMap::new();
    for (i, re) in raw.elastic_ips.iter().enumerate() {
        let p = idx(&epath, i);
        if let Some(e) = validate_elastic_ip(re, &p, errs) {
            if let Some(first) = seen_alloc.insert(e.allocation_id.clone(), i) {
                errs.push(
                    &key(&p, "allocation_id"),
                    format!(
                        "`{}` is declared twice (also elastic_ips[{first}])",
                        e.allocation_id
                    ),
                );
            }
            elastic_ips.push(e);
        }
    }

    EdgeConfig {
        region,
        interval,
        endpoint_url,
        records,
        elastic_ips,
    }
}

fn validate_record(
    rr: &RawRecord,
    p: &[Seg],
    services: &[ServiceConfig],
    errs: &mut Errs,
) -> Option<RecordConfig> {
    let n = errs_len(errs);
    let zone_id = required(
        errs,
        &key(p, "zone_id"),
        &rr.zone_id,
        "the hosted zone ID, like \"Z0123456789ABC\"",
        |z| normalize_zone_id(&z),
    );
    let name = required(
        errs,
        &key(p, "name"),
        &rr.name,
        "the record name, like \"www.example.com.\"",
        |n| dns_name(&n, "name"),
    );
    let rtype = match rr.rtype.as_deref() {
        Some("A") => Some(RecordType::A),
        Some("AAAA") => Some(RecordType::Aaaa),
        Some(other) => {
            errs.push(
                &key(p, "type"),
                format!("`{other}` is not a supported record type; allowed: \"A\", \"AAAA\""),
            );
            None
        }
        None => {
            errs.push(p, "`type` is required: \"A\" or \"AAAA\"");
            None
        }
    };

    let target = match (&rr.alias, &rr.values) {
        (Some(_), Some(_)) => {
            errs.push(
                &key(p, "values"),
                "`alias` and `values` are both set: a record is either an alias or a list of addresses",
            );
            None
        }
        (None, None) => {
            errs.push(
                p,
                "a record needs `alias = { dns_name = ..., zone_id = ... }` or `values = [...]`",
            );
            None
        }
        (Some(a), None) => {
            let ap = key(p, "alias");
            if rr.ttl.is_some() {
                errs.push(
                    &key(p, "ttl"),
                    "an alias record has no TTL (Route 53 uses the target's); remove `ttl`",
                );
            }
            let dns = required(
                errs,
                &key(&ap, "dns_name"),
                &a.dns_name,
                "the alias target's DNS name, like \"my-nlb-123.elb.us-east-1.amazonaws.com.\"",
                |n| {
                    // Alias targets are often copied without the final dot; Route 53
                    // answers with it, so it is added here.
                    let n = if n.ends_with('.') { n } else { format!("{n}.") };
                    dns_name(&n, "dns_name")
                },
            );
            let zone = required(
                errs,
                &key(&ap, "zone_id"),
                &a.zone_id,
                "the alias target's hosted zone ID (for a load balancer, its canonical hosted zone ID)",
                |z| normalize_zone_id(&z),
            );
            match (dns, zone) {
                (Some(dns_name), Some(zone_id)) => Some(RecordTarget::Alias(AliasTarget {
                    dns_name,
                    zone_id,
                    evaluate_target_health: a.evaluate_target_health.unwrap_or(false),
                })),
                _ => None,
            }
        }
        (None, Some(vals)) => {
            let vp = key(p, "values");
            if vals.is_empty() {
                errs.push(&vp, "the list is empty: give at least one address");
            }
            let mut ok = true;
            let mut out = Vec::new();
            for (j, v) in vals.iter().enumerate() {
                let parsed = match rtype {
                    Some(RecordType::A) => v.parse::<Ipv4Addr>().map(|a| a.to_string()).ok(),
                    Some(RecordType::Aaaa) => v.parse::<Ipv6Addr>().map(|a| a.to_string()).ok(),
                    None => Some(v.clone()),
                };
                match parsed {
                    Some(a) => out.push(a),
                    None => {
                        ok = false;
                        errs.push(
                            &idx(&vp, j),
                            format!(
                                "`{v}` is not an {} address",
                                if rtype == Some(RecordType::A) {
                                    "IPv4"
                                } else {
                                    "IPv6"
                                }
                            ),
                        );
                    }
                }
            }
            let ttl = match rr.ttl {
                None => DEFAULT_RECORD_TTL,
                Some(t) if (0..=2_147_483_647).contains(&t) => t as u32,
                Some(t) => {
                    errs.push(
                        &key(p, "ttl"),
                        format!("{t} is out of range; allowed: 0 to 2147483647 seconds"),
                    );
                    DEFAULT_RECORD_TTL
                }
            };
            (ok && !vals.is_empty()).then_some(RecordTarget::Values { values: out, ttl })
        }
    };

    let set_identifier = match &rr.set_identifier {
        Some(s) if s.is_empty() || s.len() > 128 => {
            errs.push(&key(p, "set_identifier"), "must be 1 to 128 characters");
            None
        }
        s => s.clone(),
    };
    let weight = match (rr.weight, &rr.weight_from) {
        (Some(_), Some(_)) => {
            errs.push(
                &key(p, "weight_from"),
                "`weight` and `weight_from` are both set: give a fixed weight or follow a split, not both",
            );
            None
        }
        (Some(w), None) => {
            if (0..=MAX_ROUTE53_WEIGHT as i64).contains(&w) {
                Some(RecordWeight::Fixed(w as u8))
            } else {
                errs.push(
                    &key(p, "weight"),
                    format!("{w} is out of range; Route 53 weights are 0 to 255"),
                );
                None
            }
        }
        (None, Some(from)) => weight_from(from, &key(p, "weight_from"), services, errs),
        (None, None) => None,
    };
    let has_weight = rr.weight.is_some() || rr.weight_from.is_some();
    if has_weight && rr.set_identifier.is_none() {
        let k = if rr.weight.is_some() {
            "weight"
        } else {
            "weight_from"
        };
        errs.push(
            &key(p, k),
            format!("`{k}` needs `set_identifier`: a weighted record is one of a set, named by its set identifier, like set_identifier = \"green\""),
        );
    }
    if rr.set_identifier.is_some() && !has_weight {
        errs.push(
            &key(p, "set_identifier"),
            "`set_identifier` needs `weight` (0 to 255) or `weight_from = \"SERVICE.POOL\"`: cutover manages weighted records only",
        );
    }

    if errs_len(errs) != n {
        return None;
    }
    Some(RecordConfig {
        zone_id: zone_id?,
        name: name?,
        rtype: rtype?,
        target: target?,
        set_identifier,
        weight,
    })
}

fn weight_from(
    from: &str,
    path: &[Seg],
    services: &[ServiceConfig],
    errs: &mut Errs,
) -> Option<RecordWeight> {
    let Some((svc, pool)) = from.split_once('.') else {
        errs.push(
            path,
            format!("`{from}` is not SERVICE.POOL; write it like \"web.green\""),
        );
        return None;
    };
    let Some(service) = services.iter().find(|s| s.name == svc) else {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        errs.push(
            path,
            format!(
                "`{from}` names service `{svc}`, which does not exist; services: {}",
                names.join(", ")
            ),
        );
        return None;
    };
    let Some(i) = service.pool_index(pool) else {
        let names: Vec<&str> = service.pools.iter().map(|p| p.name.as_str()).collect();
        errs.push(
            path,
            format!(
                "`{from}` names pool `{pool}`, which service `{svc}` does not have; pools: {}",
                names.join(", ")
            ),
        );
        return None;
    };
    Some(RecordWeight::From {
        service: svc.to_string(),
        pool: pool.to_string(),
        config_weight: service.split.get(i).copied().unwrap_or(0),
        config_total: service.split.iter().sum(),
    })
}

fn validate_elastic_ip(re: &RawElasticIp, p: &[Seg], errs: &mut Errs) -> Option<ElasticIpConfig> {
    let n = errs_len(errs);
    let allocation_id = nonempty(
        errs,
        &key(p, "allocation_id"),
        &re.allocation_id,
        "the Elastic IP's allocation ID, like \"eipalloc-0abc1234\"",
    );
    if let Some(a) = &allocation_id {
        if !resource_id_ok(a, "eipalloc-") {
            errs.push(
                &key(p, "allocation_id"),
                format!("`{a}` is not an allocation ID; like \"eipalloc-0abc1234\""),
            );
        }
    }
    let cp = key(p, "candidates");
    let candidates = match &re.candidates {
        None => {
            errs.push(
                p,
                "`candidates` is required: candidates = { tags = { Role = \"cutover\" } } or candidates = { instances = [\"i-0abc\"] }",
            );
            None
        }
        Some(c) => match (&c.tags, &c.instances) {
            (Some(_), Some(_)) | (None, None) => {
                errs.push(
                    &cp,
                    "give exactly one of `tags` (running instances with all these tags) or `instances` (instance IDs)",
                );
                None
            }
            (Some(tags), None) => {
                if tags.0.is_empty() {
                    errs.push(
                        &key(&cp, "tags"),
                        "no tags: every running instance in the region would be a candidate; name at least one tag",
                    );
                    None
                } else {
                    Some(Candidates::Tags(tags.0.clone()))
                }
            }
            (None, Some(ids)) => {
                let ip = key(&cp, "instances");
                if ids.is_empty() {
                    errs.push(&ip, "the list is empty: give at least one instance ID");
                }
                for (j, id) in ids.iter().enumerate() {
                    if !resource_id_ok(id, "i-") {
                        errs.push(
                            &idx(&ip, j),
                            format!("`{id}` is not an instance ID; like \"i-0abc1234\""),
                        );
                    }
                }
                let mut sorted = ids.clone();
                sorted.sort();
                sorted.dedup();
                if sorted.len() != ids.len() {
                    errs.push(&ip, "an instance ID is listed twice");
                }
                (!ids.is_empty()).then(|| Candidates::Instances(ids.clone()))
            }
        },
    };
    let health_url = required(
        errs,
        &key(p, "health_url"),
        &re.health_url,
        "how a candidate proves it is healthy, like \"http://{private_ip}:9901/readyz\"",
        |u| parse_url_template(&u),
    );
    let health_timeout = duration(
        errs,
        &key(p, "health_timeout"),
        &re.health_timeout,
        DEFAULT_HEALTH_TIMEOUT,
    );
    if errs_len(errs) != n {
        return None;
    }
    Some(ElasticIpConfig {
        allocation_id: allocation_id?,
        candidates: candidates?,
        health_url: health_url?,
        health_timeout,
    })
}

fn resource_id_ok(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn errs_len(errs: &Errs) -> usize {
    errs.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, ConfigError, ConfigErrors};

    const SERVICES: &str = r#"
[services.web]
split = { blue = 90, green = 10 }

[[services.web.listeners]]
listen = "127.0.0.1:8080"

[services.web.pools.blue]
backends = ["10.0.1.10:8080"]

[services.web.pools.green]
backends = ["10.0.2.10:8080"]
"#;

    fn edge(text: &str) -> EdgeConfig {
        let full = format!("{SERVICES}{text}");
        match parse("t.toml", &full) {
            Ok(c) => c.edge.expect("an [edge] section"),
            Err(e) => panic!("unexpected errors:\n{e}"),
        }
    }

    /// Errors for `text` appended after the services; lines are counted in
    /// the whole file, so tests compare with `line_of`.
    fn errors(text: &str) -> (String, Vec<ConfigError>) {
        let full = format!("{SERVICES}{text}");
        match parse("t.toml", &full) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => (full, e.0),
        }
    }

    fn line_of(full: &str, needle: &str) -> usize {
        let off = full.find(needle).expect("needle in text");
        full[..off].matches('\n').count() + 1
    }

    fn has(full: &str, errs: &[ConfigError], needle: &str, key: &str, fragment: &str) {
        let line = line_of(full, needle);
        assert!(
            errs.iter().any(|e| e.line == Some(line)
                && e.key == key
                && e.message.contains(fragment)
                && e.origin == "t.toml"),
            "no error at line {line} key `{key}` containing `{fragment}` in:\n{}",
            ConfigErrors(errs.to_vec())
        );
    }

    #[test]
    fn full_example_validates_with_defaults() {
        let e = edge(
            r#"
[edge]
region = "us-east-1"

[[edge.records]]
zone_id = "/hostedzone/Z0123456789ABC"
name = "WWW.example.com."
type = "A"
alias = { dns_name = "proxy-nlb-123.elb.us-east-1.amazonaws.com", zone_id = "Z26RNL4JYFTOTI", evaluate_target_health = true }

[[edge.records]]
zone_id = "Z0123456789ABC"
name = "api.example.com."
type = "AAAA"
values = ["2001:db8::1"]
set_identifier = "green"
weight_from = "web.green"

[[edge.elastic_ips]]
allocation_id = "eipalloc-0abc"
candidates = { tags = { Role = "cutover", Env = "prod" } }
health_url = "http://{private_ip}:9901/readyz?id={instance_id}&p={tag:Port}"
"#,
        );
        assert_eq!(e.region.as_deref(), Some("us-east-1"));
        assert_eq!(e.interval, DEFAULT_EDGE_INTERVAL);
        let r = &e.records[0];
        assert_eq!(r.zone_id, "Z0123456789ABC");
        assert_eq!(r.name, "www.example.com.");
        assert_eq!(r.rtype, RecordType::A);
        assert_eq!(
            r.target,
            RecordTarget::Alias(AliasTarget {
                dns_name: "proxy-nlb-123.elb.us-east-1.amazonaws.com.".into(),
                zone_id: "Z26RNL4JYFTOTI".into(),
                evaluate_target_health: true,
            })
        );
        let r = &e.records[1];
        assert_eq!(
            r.target,
            RecordTarget::Values {
                values: vec!["2001:db8::1".into()],
                ttl: DEFAULT_RECORD_TTL
            }
        );
        assert_eq!(
            r.weight,
            Some(RecordWeight::From {
                service: "web".into(),
                pool: "green".into(),
                config_weight: 10,
                config_total: 100
            })
        );
        let ip = &e.elastic_ips[0];
        assert_eq!(
            ip.candidates,
            Candidates::Tags(vec![
                ("Role".into(), "cutover".into()),
                ("Env".into(), "prod".into())
            ])
        );
        assert_eq!(
            ip.health_url.parts,
            vec![
                UrlPart::Literal("http://".into()),
                UrlPart::PrivateIp,
                UrlPart::Literal(":9901/readyz?id=".into()),
                UrlPart::InstanceId,
                UrlPart::Literal("&p=".into()),
                UrlPart::Tag("Port".into()),
            ]
        );
        assert_eq!(ip.health_timeout, DEFAULT_HEALTH_TIMEOUT);
    }

    #[test]
    fn moto_style_zone_ids_are_accepted() {
        // moto's IDs do not start with Z.
        assert_eq!(
            normalize_zone_id("/hostedzone/AB12CD34").unwrap(),
            "AB12CD34"
        );
        assert!(normalize_zone_id("").is_err());
        assert!(normalize_zone_id("/hostedzone/").is_err());
        assert!(normalize_zone_id("z0123abc").is_err());
        assert!(normalize_zone_id("Z0123-ABC").is_err());
    }

    #[test]
    fn record_mistakes_are_all_reported_with_lines() {
        let (full, errs) = errors(
            r#"
[edge]

[[edge.records]]
zone_id = "zone-1"
name = "www.example.com"
type = "CNAME"
values = ["203.0.113.10"]

[[edge.records]]
zone_id = "Z1"
name = "api.example.com."
type = "A"
alias = { dns_name = "a.example.net.", zone_id = "Z2" }
values = ["203.0.113.10"]

[[edge.records]]
zone_id = "Z1"
name = "w.example.com."
type = "A"
values = ["203.0.113.11"]
weight = 10

[[edge.records]]
zone_id = "Z1"
name = "v.example.com."
type = "A"
values = ["not-an-ip"]
set_identifier = "blue"
weight_from = "web.purple"

[[edge.records]]
zone_id = ""
name = "u.example.com."
type = "A"
values = ["203.0.113.12"]
set_identifier = "x"
weight_from = "api.green"
"#,
        );
        has(
            &full,
            &errs,
            "zone_id = \"zone-1\"",
            "edge.records[0].zone_id",
            "upper-case letters and digits",
        );
        has(
            &full,
            &errs,
            "name = \"www.example.com\"",
            "edge.records[0].name",
            "trailing dot",
        );
        has(
            &full,
            &errs,
            "type = \"CNAME\"",
            "edge.records[0].type",
            "allowed: \"A\", \"AAAA\"",
        );
        has(
            &full,
            &errs,
            "values = [\"203.0.113.10\"]\n\n[[edge.records]]\nzone_id = \"Z1\"\nname = \"w",
            "edge.records[1].values",
            "both set",
        );
        has(
            &full,
            &errs,
            "weight = 10",
            "edge.records[2].weight",
            "needs `set_identifier`",
        );
        has(
            &full,
            &errs,
            "\"not-an-ip\"",
            "edge.records[3].values[0]",
            "not an IPv4 address",
        );
        has(
            &full,
            &errs,
            "weight_from = \"web.purple\"",
            "edge.records[3].weight_from",
            "pools: blue, green",
        );
        has(
            &full,
            &errs,
            "zone_id = \"\"",
            "edge.records[4].zone_id",
            "must not be empty",
        );
        has(
            &full,
            &errs,
            "weight_from = \"api.green\"",
            "edge.records[4].weight_from",
            "service `api`, which does not exist; services: web",
        );
    }

    #[test]
    fn duplicates_and_mixed_routing_are_refused() {
        let (full, errs) = errors(
            r#"
[edge]

[[edge.records]]
zone_id = "Z1"
name = "www.example.com."
type = "A"
values = ["203.0.113.10"]
set_identifier = "blue"
weight = 1

[[edge.records]]
zone_id = "Z1"
name = "www.example.com."
type = "A"
values = ["203.0.113.11"]
set_identifier = "blue"
weight = 2

[[edge.records]]
zone_id = "Z1"
name = "www.example.com."
type = "A"
values = ["203.0.113.12"]

[[edge.elastic_ips]]
allocation_id = "eipalloc-1"
candidates = { instances = ["i-1"] }
health_url = "http://{private_ip}/readyz"

[[edge.elastic_ips]]
allocation_id = "eipalloc-1"
candidates = { instances = ["i-2"] }
health_url = "http://{private_ip}/readyz"
"#,
        );
        // An error on a whole [[edge.records]] entry points at its header.
        let headers: Vec<usize> = full
            .match_indices("[[edge.records]]")
            .map(|(off, _)| full[..off].matches('\n').count() + 1)
            .collect();
        let at = |line: usize, key: &str, fragment: &str| {
            assert!(
                errs.iter()
                    .any(|e| e.line == Some(line) && e.key == key && e.message.contains(fragment)),
                "no error at line {line} key `{key}` containing `{fragment}` in:\n{}",
                ConfigErrors(errs.clone())
            )
        };
        at(
            headers[1],
            "edge.records[1]",
            "declared twice (also records[0])",
        );
        at(headers[2], "edge.records[2]", "only one is weighted");
        let second = full.rfind("allocation_id").unwrap();
        at(
            full[..second].matches('\n').count() + 1,
            "edge.elastic_ips[1].allocation_id",
            "declared twice",
        );
    }

    #[test]
    fn elastic_ip_mistakes_are_reported() {
        let (full, errs) = errors(
            r#"
[edge]
interval = "soon"

[[edge.elastic_ips]]
allocation_id = "alloc-1"
candidates = { tags = { Role = "cutover" }, instances = ["i-1"] }
health_url = "https://{private_ip}/readyz"

[[edge.elastic_ips]]
allocation_id = "eipalloc-2"
candidates = { instances = ["instance-1"] }
health_url = "http://{hostname}/readyz"
colour = "blue"
"#,
        );
        has(
            &full,
            &errs,
            "interval = \"soon\"",
            "edge.interval",
            "not a duration",
        );
        has(
            &full,
            &errs,
            "allocation_id = \"alloc-1\"",
            "edge.elastic_ips[0].allocation_id",
            "not an allocation ID",
        );
        has(
            &full,
            &errs,
            "candidates = { tags",
            "edge.elastic_ips[0].candidates",
            "exactly one of",
        );
        has(
            &full,
            &errs,
            "health_url = \"https",
            "edge.elastic_ips[0].health_url",
            "must start with `http://`",
        );
        has(
            &full,
            &errs,
            "\"instance-1\"",
            "edge.elastic_ips[1].candidates.instances[0]",
            "not an instance ID",
        );
        has(
            &full,
            &errs,
            "{hostname}",
            "edge.elastic_ips[1].health_url",
            "allowed: {private_ip}",
        );
        has(
            &full,
            &errs,
            "colour",
            "edge.elastic_ips[1].colour",
            "allowed here: allocation_id, candidates, health_url, health_timeout",
        );
    }

    #[test]
    fn empty_edge_and_missing_keys_are_reported() {
        let (full, errs) = errors("\n[edge]\nregion = \"us-east-1\"\n");
        has(&full, &errs, "[edge]", "edge", "declares nothing");
        let (full, errs) = errors("\n[edge]\n\n[[edge.records]]\nname = \"a.example.com.\"\n");
        has(
            &full,
            &errs,
            "[[edge.records]]",
            "edge.records[0]",
            "`zone_id` is required",
        );
        has(
            &full,
            &errs,
            "[[edge.records]]",
            "edge.records[0]",
            "`type` is required",
        );
        has(
            &full,
            &errs,
            "[[edge.records]]",
            "edge.records[0]",
            "needs `alias",
        );
    }

    #[test]
    fn url_templates() {
        assert!(parse_url_template("http://{private_ip").is_err());
        assert!(parse_url_template("http://x}/").is_err());
        assert!(parse_url_template("http://{tag:}/").is_err());
        let t = parse_url_template("http://127.0.0.1:{tag:HealthPort}/readyz").unwrap();
        assert_eq!(t.parts[1], UrlPart::Tag("HealthPort".into()));
    }
}
