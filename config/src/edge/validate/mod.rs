//! `[edge]` raw -> validated, collecting every error with its line: the
//! section, the checks across records and across Elastic IPs, each Elastic
//! IP, and the parsers they share. One record is checked in `record`.

use std::collections::HashMap;

use super::model::*;
use super::raw::*;
use crate::locate::Seg;
use crate::model::ServiceConfig;
use crate::validate::{bounded_duration, idx, key, Errs, MAX_INTERVAL};

mod record;
use record::validate_record;

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

fn nonempty(errs: &mut Errs<'_>, path: &[Seg], v: &Option<String>, what: &str) -> Option<String> {
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
    errs: &mut Errs<'_>,
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
    errs: &mut Errs<'_>,
) -> EdgeConfig {
    let region = edge_region(raw, path, errs);
    let interval = bounded_duration(
        errs,
        &key(path, "interval"),
        &raw.interval,
        DEFAULT_EDGE_INTERVAL,
        MAX_INTERVAL,
    );
    let endpoint_url = edge_endpoint_url(raw, path, errs);
    if raw.records.is_empty() && raw.elastic_ips.is_empty() {
        errs.push(
            path,
            "[edge] declares nothing: add [[edge.records]] or [[edge.elastic_ips]], or remove [edge]",
        );
    }
    let records = validate_records(&raw.records, &key(path, "records"), services, errs);
    let elastic_ips = validate_elastic_ips(&raw.elastic_ips, &key(path, "elastic_ips"), errs);
    EdgeConfig {
        region,
        interval,
        endpoint_url,
        records,
        elastic_ips,
    }
}

/// `region`: an AWS region name, or none for the standard chain.
fn edge_region(raw: &RawEdge, path: &[Seg], errs: &mut Errs<'_>) -> Option<String> {
    match &raw.region {
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
    }
}

/// `endpoint_url`: an http(s) URL, or none for AWS itself.
fn edge_endpoint_url(raw: &RawEdge, path: &[Seg], errs: &mut Errs<'_>) -> Option<String> {
    match &raw.endpoint_url {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 8 => {
            errs.push(
                &key(path, "endpoint_url"),
                format!("`{u}` is not an endpoint URL; write http://HOST:PORT or https://HOST"),
            );
            None
        }
        u => u.clone(),
    }
}

/// `[[edge.records]]`, each on its own, then across records: no record
/// twice, and no name and type both weighted and plain.
fn validate_records(
    raw: &[RawRecord],
    rpath: &[Seg],
    services: &[ServiceConfig],
    errs: &mut Errs<'_>,
) -> Vec<RecordConfig> {
    let mut records = Vec::new();
    let mut seen: HashMap<(String, String, RecordType, Option<String>), usize> = HashMap::new();
    // (zone, name, type) -> (weighted?, first index): Route 53 refuses to mix.
    let mut routing: HashMap<(String, String, RecordType), (bool, usize)> = HashMap::new();
    for (i, rr) in raw.iter().enumerate() {
        let p = idx(rpath, i);
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
    records
}

/// `[[edge.elastic_ips]]`, each on its own, then no allocation ID twice.
fn validate_elastic_ips(
    raw: &[RawElasticIp],
    epath: &[Seg],
    errs: &mut Errs<'_>,
) -> Vec<ElasticIpConfig> {
    let mut elastic_ips = Vec::new();
    let mut seen_alloc: HashMap<String, usize> = HashMap::new();
    for (i, re) in raw.iter().enumerate() {
        let p = idx(epath, i);
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
    elastic_ips
}

/// One Elastic IP; `None` if it has any error.
fn validate_elastic_ip(
    re: &RawElasticIp,
    p: &[Seg],
    errs: &mut Errs<'_>,
) -> Option<ElasticIpConfig> {
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
    let candidates = eip_candidates(re, p, errs);
    let health_url = required(
        errs,
        &key(p, "health_url"),
        &re.health_url,
        "how a candidate proves it is healthy, like \"http://{private_ip}:9901/readyz\"",
        |u| parse_url_template(&u),
    );
    let health_timeout = bounded_duration(
        errs,
        &key(p, "health_timeout"),
        &re.health_timeout,
        DEFAULT_HEALTH_TIMEOUT,
        MAX_INTERVAL,
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

/// `candidates`: exactly one of `tags` and `instances`.
fn eip_candidates(re: &RawElasticIp, p: &[Seg], errs: &mut Errs<'_>) -> Option<Candidates> {
    let cp = key(p, "candidates");
    match &re.candidates {
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
    }
}

fn resource_id_ok(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn errs_len(errs: &Errs<'_>) -> usize {
    errs.len()
}
