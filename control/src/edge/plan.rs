//! The pure part of edge sync: desired state from the config (and the live
//! split), actual state as read from AWS, the difference between them, the
//! Elastic IP choice rule, health URL templates and the weight mapping. No
//! I/O here, so all of it is unit-tested.

use std::collections::HashMap;
use std::fmt;

use cutover_config::edge::{
    Candidates, EdgeConfig, RecordConfig, RecordTarget, RecordType, RecordWeight, UrlPart,
    UrlTemplate, MAX_ROUTE53_WEIGHT,
};
use serde::Serialize;

/// Map a pool's share of a service split to a Route 53 weight.
///
/// Rule: `round(255 * weight / total)`, except that a pool with a positive
/// weight never maps to 0 (it would get no traffic at all through DNS while
/// the proxy still sends it some), and a total of 0 maps to 0. So a 90/10
/// split becomes 230/26, 100/0 becomes 255/0, and 1/999 becomes 1/255.
pub fn route53_weight(weight: u32, total: u32) -> u8 {
    if weight == 0 || total == 0 {
        return 0;
    }
    let max = u64::from(MAX_ROUTE53_WEIGHT);
    let w = (u64::from(weight) * max + u64::from(total) / 2) / u64::from(total);
    w.clamp(1, max) as u8
}

/// What a split source answers for `weight_from`: the pool's weight and the
/// service's total, or `None` when the service or pool is unknown.
pub type SplitLookup<'a> = &'a dyn Fn(&str, &str) -> Option<(u32, u32)>;

/// The split as written in the config file (what `cutover edge plan/apply`
/// use; `cutover run` uses the live split instead).
pub fn config_split(cfg: &EdgeConfig) -> impl Fn(&str, &str) -> Option<(u32, u32)> + '_ {
    move |service, pool| {
        cfg.records.iter().find_map(|r| match &r.weight {
            Some(RecordWeight::From {
                service: s,
                pool: p,
                config_weight,
                config_total,
            }) if s == service && p == pool => Some((*config_weight, *config_total)),
            _ => None,
        })
    }
}

/// A splits list as the reconciler gets it: `(service, pool, weight, total)`.
pub fn lookup_in(
    splits: &[(String, String, u32, u32)],
    service: &str,
    pool: &str,
) -> Option<(u32, u32)> {
    splits
        .iter()
        .find(|(s, p, _, _)| s == service && p == pool)
        .map(|(_, _, w, t)| (*w, *t))
}

// ------------------------------------------------------------------ records

/// Which record: Route 53 identifies a record set by zone, name, type and
/// set identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    pub zone_id: String,
    pub name: String,
    pub rtype: RecordType,
    pub set_identifier: Option<String>,
}

impl RecordKey {
    pub fn of(r: &RecordConfig) -> Self {
        RecordKey {
            zone_id: r.zone_id.clone(),
            name: r.name.clone(),
            rtype: r.rtype,
            set_identifier: r.set_identifier.clone(),
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.zone_id, self.name, self.rtype.as_str())?;
        if let Some(s) = &self.set_identifier {
            write!(f, " [{s}]")?;
        }
        Ok(())
    }
}

/// An alias target, normalised: lower-case DNS name with the trailing dot,
/// zone ID without `/hostedzone/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasValue {
    pub dns_name: String,
    pub zone_id: String,
    pub evaluate_target_health: bool,
}

/// A record's content, normalised so that desired and actual compare equal
/// when Route 53 would serve the same answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordValue {
    pub alias: Option<AliasValue>,
    /// Sorted addresses (order does not matter in DNS).
    pub values: Vec<String>,
    pub ttl: Option<i64>,
    pub weight: Option<i64>,
}

impl RecordValue {
    pub fn new(
        alias: Option<AliasValue>,
        mut values: Vec<String>,
        ttl: Option<i64>,
        weight: Option<i64>,
    ) -> Self {
        values.sort();
        RecordValue {
            alias: alias.map(|a| AliasValue {
                dns_name: normalize_name(&a.dns_name),
                zone_id: a
                    .zone_id
                    .strip_prefix("/hostedzone/")
                    .unwrap_or(&a.zone_id)
                    .to_string(),
                evaluate_target_health: a.evaluate_target_health,
            }),
            values,
            ttl,
            weight,
        }
    }
}

impl fmt::Display for RecordValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.alias {
            Some(a) => {
                write!(f, "ALIAS {} (zone {}", a.dns_name, a.zone_id)?;
                if a.evaluate_target_health {
                    write!(f, ", evaluate health")?;
                }
                write!(f, ")")?;
            }
            None => {
                if self.values.is_empty() {
                    write!(f, "(no values)")?;
                } else {
                    write!(f, "{}", self.values.join(","))?;
                }
                if let Some(t) = self.ttl {
                    write!(f, " ttl {t}")?;
                }
            }
        }
        if let Some(w) = self.weight {
            write!(f, " weight {w}")?;
        }
        Ok(())
    }
}

/// A DNS name as Route 53 returns it, made comparable with the config's:
/// lower case, trailing dot, `\ooo` octal escapes (like `\052` for `*`)
/// decoded.
pub fn normalize_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Some(c) = char::from_u32(v) {
                out.push(c);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    let mut out = out.to_ascii_lowercase();
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// The value the config wants for a record, given the split source for
/// `weight_from`. `Err` says why it cannot be computed (an unknown service
/// in the live split).
pub fn desired_record(r: &RecordConfig, split: SplitLookup) -> Result<RecordValue, String> {
    let weight = match &r.weight {
        None => None,
        Some(RecordWeight::Fixed(w)) => Some(i64::from(*w)),
        Some(RecordWeight::From { service, pool, .. }) => match split(service, pool) {
            Some((w, total)) => Some(i64::from(route53_weight(w, total))),
            None => {
                return Err(format!(
                    "weight_from `{service}.{pool}`: no such service and pool in the running split"
                ))
            }
        },
    };
    Ok(match &r.target {
        RecordTarget::Alias(a) => RecordValue::new(
            Some(AliasValue {
                dns_name: a.dns_name.clone(),
                zone_id: a.zone_id.clone(),
                evaluate_target_health: a.evaluate_target_health,
            }),
            Vec::new(),
            None,
            weight,
        ),
        RecordTarget::Values { values, ttl } => {
            RecordValue::new(None, values.clone(), Some(i64::from(*ttl)), weight)
        }
    })
}

// ------------------------------------------------------------- elastic IPs

/// An instance as DescribeInstances reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceInfo {
    pub instance_id: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// Expand a `health_url` template for one instance. `Err` names the missing
/// value (an instance without a public IP, a missing tag).
pub fn expand_health_url(t: &UrlTemplate, inst: &InstanceInfo) -> Result<String, String> {
    let mut out = String::new();
    for part in &t.parts {
        match part {
            UrlPart::Literal(s) => out.push_str(s),
            UrlPart::InstanceId => out.push_str(&inst.instance_id),
            UrlPart::PrivateIp => match &inst.private_ip {
                Some(ip) => out.push_str(ip),
                None => return Err("the instance has no private IP address".to_string()),
            },
            UrlPart::PublicIp => match &inst.public_ip {
                Some(ip) => out.push_str(ip),
                None => return Err("the instance has no public IP address".to_string()),
            },
            UrlPart::Tag(k) => match inst.tags.iter().find(|(tk, _)| tk == k) {
                Some((_, v)) => out.push_str(v),
                None => return Err(format!("the instance has no tag `{k}`")),
            },
        }
    }
    Ok(out)
}

/// A candidate instance and the outcome of its health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CandidateHealth {
    pub instance_id: String,
    pub healthy: bool,
    /// Why it is unhealthy (or the URL that answered).
    pub detail: String,
}

/// The Elastic IP rule: stay on the current instance while it is a healthy
/// candidate (no flapping); otherwise the healthy candidate with the lowest
/// instance ID (the same answer on every cutover instance). `None` when no
/// candidate is healthy.
pub fn choose_instance<'a>(
    current: Option<&str>,
    candidates: &'a [CandidateHealth],
) -> Option<&'a str> {
    if let Some(cur) = current {
        if let Some(c) = candidates
            .iter()
            .find(|c| c.instance_id == cur && c.healthy)
        {
            return Some(&c.instance_id);
        }
    }
    candidates
        .iter()
        .filter(|c| c.healthy)
        .map(|c| c.instance_id.as_str())
        .min()
}

/// Where an Elastic IP is now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressState {
    pub public_ip: Option<String>,
    pub instance_id: Option<String>,
    /// Set when it is associated with a network interface but no instance.
    pub network_interface_id: Option<String>,
}

// --------------------------------------------------------------------- plan

/// Everything read from AWS for the declared items.
#[derive(Debug, Clone, Default)]
pub struct ActualState {
    /// Declared records that exist; a missing key means the record does not.
    pub records: HashMap<RecordKey, RecordValue>,
    pub addresses: HashMap<String, AddressState>,
    /// Running candidates per allocation ID, with their health.
    pub candidates: HashMap<String, Vec<CandidateHealth>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Record,
    ElasticIp,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Record => "record",
            ItemKind::ElasticIp => "elastic_ip",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    None,
    Create,
    Update,
    Move,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Create => "create",
            Action::Update => "update",
            Action::Move => "move",
        }
    }
}

/// The AWS call that makes one item true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    UpsertRecord {
        key: RecordKey,
        value: RecordValue,
    },
    Associate {
        allocation_id: String,
        instance_id: String,
    },
}

/// One declared item: what AWS has, what the config wants, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    pub kind: ItemKind,
    /// `ZONE NAME TYPE [SET]` for a record, the allocation ID for an EIP.
    pub id: String,
    /// `None`: absent (no such record; an unassociated address).
    pub actual: Option<String>,
    /// `None`: cannot be computed (see `note`); nothing is changed.
    pub desired: Option<String>,
    pub action: Action,
    /// Why, when it is not obvious (unhealthy candidates, no healthy one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip)]
    pub change: Option<Change>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub items: Vec<PlanItem>,
}

impl Plan {
    /// True when applying would call AWS.
    pub fn changes_pending(&self) -> bool {
        self.items.iter().any(|i| i.action != Action::None)
    }

    /// How many items of `kind` differ from the config.
    pub fn drift(&self, kind: ItemKind) -> usize {
        self.items
            .iter()
            .filter(|i| i.kind == kind && i.action != Action::None)
            .count()
    }

    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.items.iter().filter_map(|i| i.change.as_ref())
    }
}

/// Compare the config with what AWS has.
pub fn compute_plan(cfg: &EdgeConfig, actual: &ActualState, split: SplitLookup) -> Plan {
    let mut items = Vec::new();
    for r in &cfg.records {
        let key = RecordKey::of(r);
        let have = actual.records.get(&key);
        let id = key.to_string();
        let (desired, note) = match desired_record(r, split) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        let action = match (&desired, have) {
            (None, _) => Action::None,
            (Some(_), None) => Action::Create,
            (Some(d), Some(h)) if d == h => Action::None,
            (Some(_), Some(_)) => Action::Update,
        };
        items.push(PlanItem {
            kind: ItemKind::Record,
            id,
            actual: have.map(|h| h.to_string()),
            desired: desired.as_ref().map(|d| d.to_string()),
            action,
            note,
            change: match (action, desired) {
                (Action::None, _) | (_, None) => None,
                (_, Some(value)) => Some(Change::UpsertRecord { key, value }),
            },
        });
    }
    for e in &cfg.elastic_ips {
        let addr = actual
            .addresses
            .get(&e.allocation_id)
            .cloned()
            .unwrap_or_default();
        let none = Vec::new();
        let cands = actual.candidates.get(&e.allocation_id).unwrap_or(&none);
        let current = addr.instance_id.as_deref();
        let chosen = choose_instance(current, cands);
        let actual_s = match (&addr.instance_id, &addr.network_interface_id) {
            (Some(i), _) => Some(i.clone()),
            (None, Some(eni)) => Some(format!("{eni} (no instance)")),
            (None, None) => None,
        };
        let unhealthy: Vec<String> = cands
            .iter()
            .filter(|c| !c.healthy)
            .map(|c| format!("{} unhealthy: {}", c.instance_id, c.detail))
            .collect();
        let mut notes = Vec::new();
        if let Some(cur) = current {
            if !cands.iter().any(|c| c.instance_id == cur) {
                notes.push(format!("{cur} is not a running candidate"));
            }
        }
        notes.extend(unhealthy);
        let (action, change) = match chosen {
            None => {
                notes.push(match cands.len() {
                    0 => "no running candidate instance; left where it is".to_string(),
                    _ => "no healthy candidate; left where it is".to_string(),
                });
                (Action::None, None)
            }
            Some(c) if Some(c) == current => (Action::None, None),
            Some(c) => (
                if actual_s.is_none() {
                    Action::Create
                } else {
                    Action::Move
                },
                Some(Change::Associate {
                    allocation_id: e.allocation_id.clone(),
                    instance_id: c.to_string(),
                }),
            ),
        };
        let id = match &addr.public_ip {
            Some(ip) => format!("{} ({ip})", e.allocation_id),
            None => e.allocation_id.clone(),
        };
        items.push(PlanItem {
            kind: ItemKind::ElasticIp,
            id,
            actual: actual_s,
            desired: chosen.map(str::to_string),
            action,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
            change,
        });
    }
    Plan { items }
}

/// Which declared Elastic IP candidates to look up, for the AWS side.
pub fn candidate_ids(c: &Candidates) -> Option<&[String]> {
    match c {
        Candidates::Instances(ids) => Some(ids),
        Candidates::Tags(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_config::edge::{
        parse_url_template, AliasTarget, ElasticIpConfig, DEFAULT_HEALTH_TIMEOUT,
    };
    use std::time::Duration;

    fn healthy(id: &str, h: bool) -> CandidateHealth {
        CandidateHealth {
            instance_id: id.to_string(),
            healthy: h,
            detail: if h { "200" } else { "connection refused" }.to_string(),
        }
    }

    #[test]
    fn weight_mapping_rule() {
        assert_eq!(route53_weight(90, 100), 230);
        assert_eq!(route53_weight(10, 100), 26);
        assert_eq!(route53_weight(100, 100), 255);
        assert_eq!(route53_weight(0, 100), 0);
        assert_eq!(
            route53_weight(1, 1000),
            1,
            "a pool with traffic never gets 0"
        );
        assert_eq!(route53_weight(5, 0), 0);
        assert_eq!(route53_weight(1_000_000, 1_000_000), 255);
        assert_eq!(route53_weight(50, 100), 128);
    }

    #[test]
    fn eip_stays_on_healthy_current_and_else_takes_lowest_healthy() {
        let c = [
            healthy("i-b", true),
            healthy("i-a", true),
            healthy("i-c", false),
        ];
        assert_eq!(choose_instance(Some("i-b"), &c), Some("i-b"), "no flapping");
        assert_eq!(choose_instance(Some("i-c"), &c), Some("i-a"));
        assert_eq!(choose_instance(None, &c), Some("i-a"));
        assert_eq!(
            choose_instance(Some("i-z"), &c),
            Some("i-a"),
            "not a candidate"
        );
        let none = [healthy("i-a", false)];
        assert_eq!(choose_instance(Some("i-a"), &none), None);
        assert_eq!(choose_instance(None, &[]), None);
    }

    #[test]
    fn health_url_expansion() {
        let t = parse_url_template(
            "http://{private_ip}:{tag:HealthPort}/readyz?i={instance_id}&p={public_ip}",
        )
        .unwrap();
        let mut inst = InstanceInfo {
            instance_id: "i-1".into(),
            private_ip: Some("10.0.0.5".into()),
            public_ip: Some("203.0.113.9".into()),
            tags: vec![("HealthPort".into(), "9901".into())],
        };
        assert_eq!(
            expand_health_url(&t, &inst).unwrap(),
            "http://10.0.0.5:9901/readyz?i=i-1&p=203.0.113.9"
        );
        inst.public_ip = None;
        assert!(expand_health_url(&t, &inst)
            .unwrap_err()
            .contains("no public IP"));
        inst.public_ip = Some("x".into());
        inst.tags.clear();
        assert!(expand_health_url(&t, &inst)
            .unwrap_err()
            .contains("no tag `HealthPort`"));
    }

    #[test]
    fn names_from_route53_are_normalised() {
        assert_eq!(normalize_name("\\052.Example.com."), "*.example.com.");
        assert_eq!(normalize_name("www.example.com"), "www.example.com.");
        assert_eq!(normalize_name("a\\05"), "a\\05.");
    }

    fn cfg() -> EdgeConfig {
        EdgeConfig {
            region: None,
            interval: Duration::from_secs(30),
            endpoint_url: None,
            records: vec![
                RecordConfig {
                    zone_id: "Z1".into(),
                    name: "www.example.com.".into(),
                    rtype: RecordType::A,
                    target: RecordTarget::Alias(AliasTarget {
                        dns_name: "lb.example.net.".into(),
                        zone_id: "Z2".into(),
                        evaluate_target_health: true,
                    }),
                    set_identifier: None,
                    weight: None,
                },
                RecordConfig {
                    zone_id: "Z1".into(),
                    name: "api.example.com.".into(),
                    rtype: RecordType::A,
                    target: RecordTarget::Values {
                        values: vec!["203.0.113.2".into(), "203.0.113.1".into()],
                        ttl: 60,
                    },
                    set_identifier: Some("green".into()),
                    weight: Some(RecordWeight::From {
                        service: "web".into(),
                        pool: "green".into(),
                        config_weight: 0,
                        config_total: 100,
                    }),
                },
            ],
            elastic_ips: vec![ElasticIpConfig {
                allocation_id: "eipalloc-1".into(),
                candidates: Candidates::Instances(vec!["i-a".into(), "i-b".into()]),
                health_url: parse_url_template("http://{private_ip}/").unwrap(),
                health_timeout: DEFAULT_HEALTH_TIMEOUT,
            }],
        }
    }

    #[test]
    fn empty_actual_state_plans_creates() {
        let c = cfg();
        let mut actual = ActualState::default();
        actual.candidates.insert(
            "eipalloc-1".into(),
            vec![healthy("i-b", true), healthy("i-a", false)],
        );
        let split = config_split(&c);
        let plan = compute_plan(&c, &actual, &split);
        let actions: Vec<Action> = plan.items.iter().map(|i| i.action).collect();
        assert_eq!(actions, [Action::Create, Action::Create, Action::Create]);
        assert!(plan.changes_pending());
        assert_eq!(
            plan.items[1].desired.as_deref(),
            Some("203.0.113.1,203.0.113.2 ttl 60 weight 0")
        );
        assert_eq!(plan.items[2].desired.as_deref(), Some("i-b"));
        assert!(plan.items[2]
            .note
            .as_deref()
            .unwrap()
            .contains("i-a unhealthy: connection refused"));
        assert_eq!(plan.drift(ItemKind::Record), 2);
        assert_eq!(plan.drift(ItemKind::ElasticIp), 1);
    }

    #[test]
    fn matching_state_plans_nothing_and_differences_are_updates_or_moves() {
        let c = cfg();
        let split = |_: &str, _: &str| Some((10u32, 100u32));
        let mut actual = ActualState::default();
        for r in &c.records {
            let v = desired_record(r, &split).unwrap();
            actual.records.insert(RecordKey::of(r), v);
        }
        actual.addresses.insert(
            "eipalloc-1".into(),
            AddressState {
                public_ip: Some("198.51.100.1".into()),
                instance_id: Some("i-b".into()),
                network_interface_id: Some("eni-1".into()),
            },
        );
        actual.candidates.insert(
            "eipalloc-1".into(),
            vec![healthy("i-a", true), healthy("i-b", true)],
        );
        let plan = compute_plan(&c, &actual, &split);
        assert!(!plan.changes_pending(), "{plan:#?}");
        assert_eq!(plan.items[2].id, "eipalloc-1 (198.51.100.1)");

        // The split moves: the weighted record must be updated.
        let split2 = |_: &str, _: &str| Some((100u32, 100u32));
        let plan = compute_plan(&c, &actual, &split2);
        assert_eq!(plan.items[1].action, Action::Update);
        assert_eq!(
            plan.items[1].change,
            Some(Change::UpsertRecord {
                key: RecordKey::of(&c.records[1]),
                value: RecordValue::new(
                    None,
                    vec!["203.0.113.1".into(), "203.0.113.2".into()],
                    Some(60),
                    Some(255)
                ),
            })
        );
        assert_eq!(
            plan.items[1].actual.as_deref(),
            Some("203.0.113.1,203.0.113.2 ttl 60 weight 26")
        );

        // i-b fails its health check: the address moves to i-a.
        actual.candidates.insert(
            "eipalloc-1".into(),
            vec![healthy("i-a", true), healthy("i-b", false)],
        );
        let plan = compute_plan(&c, &actual, &split);
        assert_eq!(plan.items[2].action, Action::Move);
        assert_eq!(
            plan.items[2].change,
            Some(Change::Associate {
                allocation_id: "eipalloc-1".into(),
                instance_id: "i-a".into()
            })
        );

        // Nobody is healthy: it stays, and says why.
        actual.candidates.insert(
            "eipalloc-1".into(),
            vec![healthy("i-a", false), healthy("i-b", false)],
        );
        let plan = compute_plan(&c, &actual, &split);
        assert_eq!(plan.items[2].action, Action::None);
        assert!(plan.items[2]
            .note
            .as_deref()
            .unwrap()
            .contains("no healthy candidate"));
    }

    #[test]
    fn unknown_live_service_changes_nothing_and_says_why() {
        let c = cfg();
        let split = |_: &str, _: &str| None;
        let plan = compute_plan(&c, &ActualState::default(), &split);
        assert_eq!(plan.items[1].action, Action::None);
        assert!(plan.items[1].note.as_deref().unwrap().contains("web.green"));
    }

    #[test]
    fn alias_values_compare_after_normalisation() {
        let a = RecordValue::new(
            Some(AliasValue {
                dns_name: "LB.example.net".into(),
                zone_id: "/hostedzone/Z2".into(),
                evaluate_target_health: true,
            }),
            vec![],
            None,
            None,
        );
        let split = |_: &str, _: &str| None;
        assert_eq!(desired_record(&cfg().records[0], &split).unwrap(), a);
    }

    #[test]
    fn lookup_in_splits() {
        let s = vec![("web".to_string(), "green".to_string(), 10, 100)];
        assert_eq!(lookup_in(&s, "web", "green"), Some((10, 100)));
        assert_eq!(lookup_in(&s, "web", "blue"), None);
    }
}
