//! Unit tests of the plan: weights, the Elastic IP rule, health URLs,
//! name normalisation and the plan itself.

use super::*;
use cutover_config::edge::{
    parse_url_template, AliasTarget, Candidates, EdgeConfig, ElasticIpConfig, RecordConfig,
    RecordTarget, RecordType, RecordWeight, DEFAULT_HEALTH_TIMEOUT,
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
