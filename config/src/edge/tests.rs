//! Tests of the `[edge]` section: parsing, defaults and every error.

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

#[test]
fn edge_durations_are_bounded_to_an_hour() {
    let (full, errs) = errors(
        r#"
[edge]
interval = "300000000000y"

[[edge.elastic_ips]]
allocation_id = "eipalloc-2"
candidates = { instances = ["i-1"] }
health_url = "http://{private_ip}:9901/readyz"
health_timeout = "2h"
"#,
    );
    has(
        &full,
        &errs,
        "interval = \"300000000000y\"",
        "edge.interval",
        "too long; allowed: at most 1 hour",
    );
    has(
        &full,
        &errs,
        "health_timeout = \"2h\"",
        "edge.elastic_ips[0].health_timeout",
        "too long; allowed: at most 1 hour",
    );
}
