//! One `[[edge.records]]` entry: zone, name, type, target (alias or
//! values) and weight.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{dns_name, errs_len, normalize_zone_id, required};
use crate::edge::model::*;
use crate::edge::raw::*;
use crate::locate::Seg;
use crate::model::ServiceConfig;
use crate::validate::{idx, key, Errs};

/// One record; `None` if it has any error.
pub(super) fn validate_record(
    rr: &RawRecord,
    p: &[Seg],
    services: &[ServiceConfig],
    errs: &mut Errs<'_>,
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
    let rtype = record_type(rr, p, errs);
    let target = record_target(rr, p, rtype, errs);
    let (set_identifier, weight) = record_weight(rr, p, services, errs);
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

/// A record's `type`.
fn record_type(rr: &RawRecord, p: &[Seg], errs: &mut Errs<'_>) -> Option<RecordType> {
    match rr.rtype.as_deref() {
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
    }
}

/// A record's target: exactly one of `alias` and `values` (with `ttl`).
fn record_target(
    rr: &RawRecord,
    p: &[Seg],
    rtype: Option<RecordType>,
    errs: &mut Errs<'_>,
) -> Option<RecordTarget> {
    match (&rr.alias, &rr.values) {
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
        (Some(a), None) => alias_target(rr, a, p, errs),
        (None, Some(vals)) => values_target(rr, vals, p, rtype, errs),
    }
}

/// `alias = { dns_name, zone_id, evaluate_target_health }`; no `ttl`.
fn alias_target(
    rr: &RawRecord,
    a: &RawAlias,
    p: &[Seg],
    errs: &mut Errs<'_>,
) -> Option<RecordTarget> {
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

/// `values = [...]` of the record's type, and `ttl`.
fn values_target(
    rr: &RawRecord,
    vals: &[String],
    p: &[Seg],
    rtype: Option<RecordType>,
    errs: &mut Errs<'_>,
) -> Option<RecordTarget> {
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

/// A record's `set_identifier` and `weight` or `weight_from`, which go
/// together.
fn record_weight(
    rr: &RawRecord,
    p: &[Seg],
    services: &[ServiceConfig],
    errs: &mut Errs<'_>,
) -> (Option<String>, Option<RecordWeight>) {
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
    (set_identifier, weight)
}

fn weight_from(
    from: &str,
    path: &[Seg],
    services: &[ServiceConfig],
    errs: &mut Errs<'_>,
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
