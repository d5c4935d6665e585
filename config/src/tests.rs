//! Validation and diff tests: pure data, no I/O but reading the shipped examples.

use crate::*;

const GOOD: &str = r#"
[services.web]
split = { blue = 90, green = 10 }

[[services.web.listeners]]
listen = "127.0.0.1:8080"

[[services.web.listeners]]
listen = "127.0.0.1:8081"
pool = "green"

[services.web.pools.blue]
backends = ["10.0.1.10:8080", { addr = "10.0.1.11:8080", weight = 2 }]

[services.web.pools.green]
backends = ["10.0.2.10:8080"]
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    match parse("t.toml", text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0,
    }
}

fn has(errs: &[ConfigError], line: usize, key: &str, fragment: &str) {
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
fn good_config_validates_with_defaults() {
    let c = parse("t.toml", GOOD).unwrap();
    let s = &c.services[0];
    assert_eq!(s.name, "web");
    assert_eq!(
        s.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["blue", "green"]
    );
    assert_eq!(s.split, [90, 10]);
    assert_eq!(s.pools[0].backends[1].weight, 2);
    assert_eq!(s.pools[0].backends[0].weight, 1);
    assert_eq!(s.listeners[1].pool, Some(1));
    assert_eq!(s.sticky, Sticky::None);
    assert_eq!(s.drain_timeout, std::time::Duration::from_secs(30));
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9901");
}

#[test]
fn pool_order_is_file_order_not_alphabetical() {
    let text = GOOD
        .replace("pools.blue]", "pools.zeta]")
        .replace("blue = 90", "zeta = 90");
    let c = parse("t.toml", &text).unwrap();
    assert_eq!(c.services[0].pools[0].name, "zeta");
    assert_eq!(c.services[0].split, [90, 10]);
}

#[test]
fn every_unknown_key_is_reported_with_its_line() {
    let text = GOOD
        .replace("split = {", "colour = \"red\"\nsplit = {")
        .replace("pool = \"green\"", "pool = \"green\"\nspeed = \"fast\"");
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{}", ConfigErrors(errs.clone()));
    has(
        &errs,
        3,
        "services.web.colour",
        "unknown key; allowed here: split, sticky",
    );
    has(
        &errs,
        12,
        "services.web.listeners[1].speed",
        "allowed here: listen, pool, mode, proxy_protocol, trust_forwarded",
    );
}

#[test]
fn split_errors_name_the_pool_and_line() {
    let errs = errors(&GOOD.replace("green = 10 }", "purple = 10 }"));
    has(
        &errs,
        3,
        "services.web.split.purple",
        "does not exist; pools: blue, green",
    );
    has(
        &errs,
        3,
        "services.web.split",
        "pool `green` is missing from the split",
    );

    let errs = errors(&GOOD.replace("blue = 90, green = 10", "blue = 0, green = 0"));
    has(&errs, 3, "services.web.split", "all weights are zero");

    let errs = errors(&GOOD.replace("blue = 90", "blue = -5"));
    has(
        &errs,
        3,
        "services.web.split.blue",
        "out of range; allowed: 0 to",
    );
}

#[test]
fn listener_errors() {
    let errs = errors(&GOOD.replace("127.0.0.1:8081", "127.0.0.1:8080"));
    has(
        &errs,
        9,
        "services.web.listeners[1].listen",
        "already used by `services.web.listeners[0].listen`",
    );

    let errs = errors(&GOOD.replace("pool = \"green\"", "pool = \"teal\""));
    has(
        &errs,
        10,
        "services.web.listeners[1].pool",
        "preview pool `teal` does not exist",
    );

    let errs = errors(&GOOD.replace("127.0.0.1:8080\"", "localhost:eighty\""));
    has(
        &errs,
        6,
        "services.web.listeners[0].listen",
        "not a socket address",
    );
}

#[test]
fn backend_errors() {
    let errs = errors(&GOOD.replace("[\"10.0.2.10:8080\"]", "[]"));
    has(
        &errs,
        16,
        "services.web.pools.green.backends",
        "the backend list is empty",
    );

    let errs = errors(&GOOD.replace("\"10.0.1.10:8080\", {", "\"10.0.1.10\", {"));
    has(&errs, 13, "services.web.pools.blue.backends[0]", "no port");

    let errs = errors(&GOOD.replace("weight = 2", "weight = -1"));
    has(
        &errs,
        13,
        "services.web.pools.blue.backends[1].weight",
        "out of range",
    );
}

#[test]
fn all_errors_at_once_in_line_order() {
    let text = GOOD
        .replace("green = 10 }", "green = 10 }\nsticky = \"sometimes\"")
        .replace("127.0.0.1:8081", "127.0.0.1:8080")
        .replace("[\"10.0.2.10:8080\"]", "[\"nope\"]");
    let errs = errors(&text);
    assert!(errs.len() >= 3, "{}", ConfigErrors(errs.clone()));
    has(
        &errs,
        4,
        "services.web.sticky",
        "allowed: \"none\", \"client_ip\", \"cookie\"",
    );
    let lines: Vec<_> = errs.iter().map(|e| e.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn syntax_and_type_errors_have_a_line() {
    let errs = errors("[services.web]\nsplit = { blue = \"lots\" }\n");
    assert_eq!(errs[0].line, Some(2), "{}", ConfigErrors(errs.clone()));
    let errs = errors("[services.web\n");
    assert_eq!(errs[0].line, Some(1));
}

/// Found by the `config` fuzz target: toml_edit's parser panicked on this
/// text ("all items have spans"), so `cutover check` did too.
#[test]
fn malformed_text_that_panicked_toml_edit_is_a_syntax_error() {
    for text in ["==\n[...", "a.b=1\n==\n[a]\nb.c=2"] {
        let errs = errors(text);
        assert!(!errs.is_empty() && errs[0].line.is_some(), "{text:?}");
    }
}

#[test]
fn durations_and_admin() {
    let errs = errors(&GOOD.replace("green = 10 }", "green = 10 }\ndrain_timeout = \"soon\""));
    has(&errs, 4, "services.web.drain_timeout", "is not a duration");

    assert_eq!(
        parse("t.toml", GOOD).unwrap().shutdown_delay,
        std::time::Duration::ZERO
    );
    let delayed = parse("t.toml", &format!("shutdown_delay = \"15s\"\n{GOOD}")).unwrap();
    assert_eq!(delayed.shutdown_delay, std::time::Duration::from_secs(15));
    let errs = errors(&format!("shutdown_delay = \"11m\"\n{GOOD}"));
    has(
        &errs,
        1,
        "shutdown_delay",
        "is too long; allowed: \"0s\" (no delay) to \"10m\"",
    );
    let errs = errors(&format!("shutdown_delay = \"later\"\n{GOOD}"));
    has(&errs, 1, "shutdown_delay", "is not a duration");

    let errs = errors(&format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{GOOD}"));
    has(&errs, 2, "admin.listen", "set admin.token");
    let with_token = format!("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken = \"t\"\n{GOOD}");
    assert!(parse("t.toml", &with_token).is_ok());
}

#[test]
fn display_names_file_line_and_key() {
    let errs = parse("/etc/cutover.toml", &GOOD.replace("blue = 90", "blue = -5")).unwrap_err();
    let shown = errs.to_string();
    assert!(
        shown.starts_with(
            "/etc/cutover.toml:3: `services.web.split.blue`: weight -5 is out of range"
        ),
        "{shown}"
    );
}

#[test]
fn backend_address_forms() {
    use crate::validate_backend_addr as check;
    for ok in [
        "10.0.0.1:80",
        "[::1]:8080",
        "app.internal:8080",
        "localhost:1",
    ] {
        assert!(check(ok).is_ok(), "{ok}");
    }
    for bad in [
        "10.0.0.1",
        ":80",
        "host:0",
        "host:99999",
        "[::1:80",
        "bad_host:80",
        "-x.y:80",
    ] {
        assert!(check(bad).is_err(), "{bad}");
    }
}

#[test]
fn shipped_examples_all_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 5);
}

#[test]
fn diff_sees_split_but_not_reordering_of_split_keys() {
    let a = parse("t.toml", GOOD).unwrap();
    let b = parse(
        "t.toml",
        &GOOD.replace(
            "split = { blue = 90, green = 10 }",
            "split = { green = 10, blue = 90 }",
        ),
    )
    .unwrap();
    assert!(diff(&a, &b).is_empty());
    let c = parse("t.toml", &GOOD.replace("blue = 90", "blue = 50")).unwrap();
    let d = diff(&a, &c);
    assert_eq!(d.split_changed, ["web"]);
    assert!(d.pools_changed.is_empty());
    let e = parse("t.toml", &GOOD.replace("10.0.2.10", "10.0.2.11")).unwrap();
    assert_eq!(diff(&a, &e).pools_changed, ["web"]);
}

#[test]
fn trust_forwarded_is_off_by_default_and_only_for_http_listeners() {
    let c = parse("t.toml", GOOD).unwrap();
    assert!(!c.services[0].listeners[0].trust_forwarded);
    let trusted = GOOD.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\ntrust_forwarded = true",
    );
    let c = parse("t.toml", &trusted).unwrap();
    assert!(c.services[0].listeners[0].trust_forwarded);
    assert!(!c.services[0].listeners[1].trust_forwarded);
    let errs = errors(&GOOD.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nmode = \"tcp\"\ntrust_forwarded = true",
    ));
    has(
        &errs,
        8,
        "services.web.listeners[0].trust_forwarded",
        "applies to http listeners only",
    );
    let errs = errors(&GOOD.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\ntrust_forwarded = \"yes\"",
    ));
    assert!(!errs.is_empty());
}

#[test]
fn allowed_upgrades_default_to_websocket_and_never_allow_h2c() {
    let c = parse("t.toml", GOOD).unwrap();
    assert_eq!(c.services[0].allowed_upgrades, ["websocket"]);
    let with = |list: &str| {
        GOOD.replace(
            "green = 10 }",
            &format!("green = 10 }}\nallowed_upgrades = {list}"),
        )
    };
    let c = parse("t.toml", &with("[\"WebSocket\", \"foo/2\", \"websocket\"]")).unwrap();
    assert_eq!(c.services[0].allowed_upgrades, ["websocket", "foo/2"]);
    let c = parse("t.toml", &with("[]")).unwrap();
    assert!(c.services[0].allowed_upgrades.is_empty());
    let errs = errors(&with("[\"websocket\", \"H2C\", \"a b\"]"));
    has(
        &errs,
        4,
        "services.web.allowed_upgrades[1]",
        "h2c cannot be allowed",
    );
    has(
        &errs,
        4,
        "services.web.allowed_upgrades[2]",
        "is not a protocol name",
    );
}

#[test]
fn error_detail_is_short_by_default_or_full() {
    let c = parse("t.toml", GOOD).unwrap();
    assert_eq!(c.services[0].error_detail, ErrorDetail::Short);
    let with = |v: &str| {
        GOOD.replace(
            "green = 10 }",
            &format!("green = 10 }}\nerror_detail = {v}"),
        )
    };
    let c = parse("t.toml", &with("\"full\"")).unwrap();
    assert_eq!(c.services[0].error_detail, ErrorDetail::Full);
    let errs = errors(&with("\"verbose\""));
    has(&errs, 4, "services.web.error_detail", "allowed: \"short\"");
}

#[test]
fn listener_modes_and_proxy_protocol() {
    let tcp = GOOD.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nmode = \"tcp\"\nproxy_protocol = true",
    );
    let c = parse("t.toml", &tcp).unwrap();
    assert_eq!(c.services[0].listeners[0].mode, ListenerMode::Tcp);
    assert!(c.services[0].listeners[0].proxy_protocol);
    assert_eq!(c.services[0].listeners[1].mode, ListenerMode::Http);

    let errs = errors(&GOOD.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nmode = \"udp\"",
    ));
    has(
        &errs,
        7,
        "services.web.listeners[0].mode",
        "allowed: \"http\", \"tcp\"",
    );
    let cookie_tcp = tcp.replace("green = 10 }", "green = 10 }\nsticky = \"cookie\"");
    let errs = errors(&cookie_tcp);
    has(
        &errs,
        8,
        "services.web.listeners[0].mode",
        "cannot carry a cookie",
    );
}

#[test]
fn health_checks_default_per_service_and_override_per_pool() {
    let c = parse("t.toml", GOOD).unwrap();
    assert!(c.services[0].pools.iter().all(|p| p.health_check.is_none()));
    assert!(!c.services[0].failover);

    let text = format!(
        "{}\n[services.web.health_check]\npath = \"/healthz\"\nhost = \"web.internal\"\n\n[services.web.pools.green.health_check]\npath = \"/ready\"\nexpect = \"200-299, 302\"\ninterval = \"500ms\"\ntimeout = \"200ms\"\nunhealthy_threshold = 1\n",
        GOOD.replace("green = 10 }", "green = 10 }\nfailover = true")
    );
    let c = parse("t.toml", &text).unwrap();
    let s = &c.services[0];
    assert!(s.failover);
    let blue = s.pools[0].health_check.clone().unwrap();
    assert_eq!(blue.path.as_deref(), Some("/healthz"));
    assert_eq!(blue.host.as_deref(), Some("web.internal"));
    assert_eq!(blue.expect, [(200, 399)]);
    assert_eq!(blue.interval, std::time::Duration::from_secs(2));
    assert_eq!(blue.timeout, std::time::Duration::from_secs(1));
    assert_eq!((blue.healthy_threshold, blue.unhealthy_threshold), (2, 3));
    let green = s.pools[1].health_check.clone().unwrap();
    assert_eq!(green.path.as_deref(), Some("/ready"));
    assert_eq!(green.host.as_deref(), Some("web.internal"), "inherited");
    assert_eq!(green.expect, [(200, 299), (302, 302)]);
    assert!(green.expects(302) && !green.expects(301) && green.expects(204));
    assert_eq!(green.interval, std::time::Duration::from_millis(500));
    assert_eq!((green.healthy_threshold, green.unhealthy_threshold), (2, 1));

    // A pool's table alone checks that pool only, with the defaults.
    let text = format!("{GOOD}\n[services.web.pools.green.health_check]\n");
    let c = parse("t.toml", &text).unwrap();
    assert!(c.services[0].pools[0].health_check.is_none());
    assert_eq!(
        c.services[0].pools[1].health_check,
        Some(HealthCheck::default())
    );

    // All listeners tcp: a TCP connect check whatever the path says.
    let text = format!(
        "{}\n[services.web.health_check]\npath = \"/healthz\"\n",
        GOOD.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\nmode = \"tcp\""
        )
        .replace("pool = \"green\"", "pool = \"green\"\nmode = \"tcp\"")
    );
    let c = parse("t.toml", &text).unwrap();
    assert_eq!(
        c.services[0].pools[0].health_check.clone().unwrap().path,
        None
    );
}

#[test]
fn health_check_errors_name_the_table_that_wrote_the_key() {
    // GOOD ends at line 16; line 18 is the table.
    let text = format!(
        "{GOOD}\n[services.web.health_check]\npath = \"healthz\"\nexpect = \"200-99\"\ninterval = \"1s\"\ntimeout = \"2s\"\nhealthy_threshold = 0\nunhealthy_threshold = -3\nhost = \"\"\nspeed = 1\n"
    );
    let errs = errors(&text);
    let hc = "services.web.health_check";
    has(&errs, 19, &format!("{hc}.path"), "must start with `/`");
    has(
        &errs,
        20,
        &format!("{hc}.expect"),
        "not a list of status ranges",
    );
    has(
        &errs,
        22,
        &format!("{hc}.timeout"),
        "must not exceed the interval (1s)",
    );
    has(
        &errs,
        23,
        &format!("{hc}.healthy_threshold"),
        "allowed: 1 to",
    );
    has(
        &errs,
        24,
        &format!("{hc}.unhealthy_threshold"),
        "allowed: 1 to",
    );
    has(&errs, 25, &format!("{hc}.host"), "not a Host header value");
    has(
        &errs,
        26,
        &format!("{hc}.speed"),
        "allowed here: path, host, expect",
    );
    assert_eq!(errs.len(), 7, "{}", ConfigErrors(errs.clone()));

    // A pool's interval below the service's timeout: at the pool's key.
    let text = format!(
        "{GOOD}\n[services.web.health_check]\ntimeout = \"1s\"\n\n[services.web.pools.green.health_check]\ninterval = \"500ms\"\nexpect = \"ok\"\nwhat = true\n"
    );
    let errs = errors(&text);
    let g = "services.web.pools.green.health_check";
    has(
        &errs,
        22,
        &format!("{g}.interval"),
        "must not exceed the interval (500ms)",
    );
    has(
        &errs,
        23,
        &format!("{g}.expect"),
        "not a list of status ranges",
    );
    has(
        &errs,
        24,
        &format!("{g}.what"),
        "allowed here: path, host, expect",
    );
    assert_eq!(errs.len(), 3, "{}", ConfigErrors(errs.clone()));

    let errs = errors(&GOOD.replace("green = 10 }", "green = 10 }\nfailover = \"yes\""));
    assert_eq!(errs[0].line, Some(4), "{}", ConfigErrors(errs.clone()));
}

#[test]
fn status_ranges_parse() {
    assert_eq!(parse_status_ranges("200"), Ok(vec![(200, 200)]));
    assert_eq!(
        parse_status_ranges("200-299,302"),
        Ok(vec![(200, 299), (302, 302)])
    );
    for bad in ["", "2xx", "99", "600", "300-200", "200-", "200,,302", "-1"] {
        assert!(parse_status_ranges(bad).is_err(), "{bad}");
    }
}

#[test]
fn retries_default_to_two_and_are_bounded() {
    let c = parse("t.toml", GOOD).unwrap();
    assert_eq!(c.services[0].retries, 2);
    let c = parse(
        "t.toml",
        &GOOD.replace("green = 10 }", "green = 10 }\nretries = 0"),
    )
    .unwrap();
    assert_eq!(c.services[0].retries, 0, "0 turns retries off");
    for bad in ["-1", "11"] {
        let errs =
            errors(&GOOD.replace("green = 10 }", &format!("green = 10 }}\nretries = {bad}")));
        has(
            &errs,
            4,
            "services.web.retries",
            "allowed: 0 (never retry) to 10",
        );
    }
}

#[test]
fn h2_pings_default_on_and_can_be_turned_off() {
    use std::time::Duration;
    let c = parse("t.toml", GOOD).unwrap();
    let t = &c.services[0].timeouts;
    assert_eq!(t.h2_ping_interval, Some(Duration::from_secs(10)));
    assert_eq!(t.h2_ping_timeout, Duration::from_secs(5));

    let text = format!(
        "{GOOD}\n[services.web.timeouts]\nh2_ping_interval = \"250ms\"\nh2_ping_timeout = \"1s\"\n"
    );
    let t = parse("t.toml", &text).unwrap().services[0].timeouts.clone();
    assert_eq!(t.h2_ping_interval, Some(Duration::from_millis(250)));
    assert_eq!(t.h2_ping_timeout, Duration::from_secs(1));

    // "0s": no PINGs; the timeout is unused then, so "0s" passes too.
    let text = format!(
        "{GOOD}\n[services.web.timeouts]\nh2_ping_interval = \"0s\"\nh2_ping_timeout = \"0s\"\n"
    );
    let t = parse("t.toml", &text).unwrap().services[0].timeouts.clone();
    assert_eq!(t.h2_ping_interval, None);
}

#[test]
fn h2_ping_errors_name_the_key_and_the_bound() {
    // GOOD ends at line 16; line 18 is the table.
    let text = format!(
        "{GOOD}\n[services.web.timeouts]\nh2_ping_interval = \"50ms\"\nh2_ping_timeout = \"soon\"\n"
    );
    let errs = errors(&text);
    let t = "services.web.timeouts";
    has(
        &errs,
        19,
        &format!("{t}.h2_ping_interval"),
        "must be \"0s\" (no PINGs) or at least 100ms",
    );
    has(
        &errs,
        20,
        &format!("{t}.h2_ping_timeout"),
        "is not a duration",
    );
    assert_eq!(errs.len(), 2, "{}", ConfigErrors(errs.clone()));

    // A zero timeout while PINGs are on (the default interval included).
    for (lines, line) in [
        ("h2_ping_timeout = \"0s\"\n", 19),
        ("h2_ping_interval = \"3s\"\nh2_ping_timeout = \"0ms\"\n", 20),
    ] {
        let errs = errors(&format!("{GOOD}\n[services.web.timeouts]\n{lines}"));
        has(
            &errs,
            line,
            &format!("{t}.h2_ping_timeout"),
            "must be greater than zero while PINGs are on",
        );
        assert_eq!(errs.len(), 1, "{}", ConfigErrors(errs.clone()));
    }
    let errs = errors(&format!(
        "{GOOD}\n[services.web.timeouts]\nh2_ping_interval = \"3s\"\nh2_ping_timeout = \"0ms\"\n"
    ));
    assert!(
        errs[0].message.contains("h2_ping_interval = \"3s\""),
        "{}",
        errs[0]
    );

    let errs = errors(&format!(
        "{GOOD}\n[services.web.timeouts]\nh2_pings = true\n"
    ));
    has(
        &errs,
        19,
        &format!("{t}.h2_pings"),
        "h2_ping_interval, h2_ping_timeout",
    );
}

#[test]
fn outlier_ejection_is_on_by_default_and_every_key_can_be_set() {
    let c = parse("t.toml", GOOD).unwrap();
    let o = &c.services[0].outlier;
    assert_eq!(*o, Outlier::default());
    assert!(o.enabled && !o.count_5xx);
    assert_eq!(o.consecutive_failures, 5);
    assert_eq!(o.base_ejection, std::time::Duration::from_secs(10));
    assert_eq!(o.max_ejection, std::time::Duration::from_secs(300));
    assert_eq!(o.max_ejected_percent, 50);

    let text = format!(
        "{GOOD}\n[services.web.outlier]\nconsecutive_failures = 3\ncount_5xx = true\nbase_ejection = \"300ms\"\nmax_ejection = \"1m\"\nmax_ejected_percent = 100\n"
    );
    let o = parse("t.toml", &text).unwrap().services[0].outlier.clone();
    assert_eq!(
        o,
        Outlier {
            enabled: true,
            consecutive_failures: 3,
            count_5xx: true,
            base_ejection: std::time::Duration::from_millis(300),
            max_ejection: std::time::Duration::from_secs(60),
            max_ejected_percent: 100,
        }
    );
    let text = GOOD.replace(
        "green = 10 }",
        "green = 10 }\noutlier = { enabled = false }",
    );
    let c = parse("t.toml", &text).unwrap();
    assert!(!c.services[0].outlier.enabled);
    // An empty table is the defaults.
    let c = parse("t.toml", &format!("{GOOD}\n[services.web.outlier]\n")).unwrap();
    assert_eq!(c.services[0].outlier, Outlier::default());
}

#[test]
fn outlier_errors_name_the_line_and_key() {
    // GOOD ends at line 17; the table is line 18.
    let text = format!(
        "{GOOD}\n[services.web.outlier]\nconsecutive_failures = 0\nmax_ejected_percent = 101\nbase_ejection = \"0s\"\nmax_ejection = \"soon\"\ncount_5xx = \"yes\"\n"
    );
    let errs = errors(&text);
    let o = "services.web.outlier";
    // A wrong type is a syntax error, alone: fix it and the rest shows.
    assert_eq!(errs.len(), 1, "{}", ConfigErrors(errs.clone()));
    assert_eq!(errs[0].line, Some(23), "{}", ConfigErrors(errs.clone()));
    let errs = errors(&text.replace("count_5xx = \"yes\"\n", "eject = true\n"));
    has(
        &errs,
        19,
        &format!("{o}.consecutive_failures"),
        "0 is out of range; allowed: 1 to 1000",
    );
    has(
        &errs,
        20,
        &format!("{o}.max_ejected_percent"),
        "101 is out of range; allowed: 0 to 100",
    );
    has(
        &errs,
        21,
        &format!("{o}.base_ejection"),
        "must be greater than zero",
    );
    has(&errs, 22, &format!("{o}.max_ejection"), "not a duration");
    has(
        &errs,
        23,
        &format!("{o}.eject"),
        "allowed here: enabled, consecutive_failures, count_5xx",
    );
    assert_eq!(errs.len(), 5, "{}", ConfigErrors(errs.clone()));

    // base_ejection above max_ejection: at the key the table wrote.
    let text = format!("{GOOD}\n[services.web.outlier]\nbase_ejection = \"10m\"\n");
    let errs = errors(&text);
    has(
        &errs,
        19,
        &format!("{o}.base_ejection"),
        "base_ejection (10m) must not exceed max_ejection (5m)",
    );
    let text = format!("{GOOD}\n[services.web.outlier]\nmax_ejection = \"5s\"\n");
    let errs = errors(&text);
    has(
        &errs,
        19,
        &format!("{o}.max_ejection"),
        "base_ejection (10s) must not exceed max_ejection (5s)",
    );
    assert_eq!(errs.len(), 1, "{}", ConfigErrors(errs.clone()));
    let errs = errors(&format!(
        "{GOOD}\n[services.web.outlier]\nmax_ejected_percent = -1\n"
    ));
    has(
        &errs,
        19,
        &format!("{o}.max_ejected_percent"),
        "allowed: 0 to 100",
    );
}

#[test]
fn slow_start_is_off_by_default_and_bounded() {
    let with = |v: &str| GOOD.replace("green = 10 }", &format!("green = 10 }}\nslow_start = {v}"));
    assert_eq!(parse("t.toml", GOOD).unwrap().services[0].slow_start, None);
    let c = parse("t.toml", &with("\"30s\"")).unwrap();
    assert_eq!(
        c.services[0].slow_start,
        Some(std::time::Duration::from_secs(30))
    );
    // "0s" is off, as if absent.
    assert_eq!(
        parse("t.toml", &with("\"0s\"")).unwrap().services[0].slow_start,
        None
    );
    assert_eq!(
        parse("t.toml", &with("\"1h\"")).unwrap().services[0].slow_start,
        Some(MAX_SLOW_START)
    );
    let key = "services.web.slow_start";
    let errs = errors(&with("\"61m\""));
    has(
        &errs,
        4,
        key,
        "`61m` is too long; allowed: \"0s\" (off) to \"1h\"",
    );
    assert_eq!(errs.len(), 1, "{}", ConfigErrors(errs.clone()));
    let errs = errors(&with("\"soon\""));
    has(&errs, 4, key, "is not a duration");
    has(
        &errs,
        4,
        key,
        "allowed: \"0s\" (off) to \"1h\", like slow_start = \"30s\"",
    );
    let errs = errors(&with("30"));
    assert_eq!(errs[0].line, Some(4), "{}", ConfigErrors(errs.clone()));

    // A reload that changes it is a settings change.
    let a = parse("t.toml", GOOD).unwrap();
    let b = parse("t.toml", &with("\"30s\"")).unwrap();
    assert_eq!(diff(&a, &b).settings_changed, ["web"]);
}

#[test]
fn every_duration_key_is_bounded_and_the_error_says_the_bound() {
    use std::time::Duration;
    // The issue's probe: a response_header of 300 billion years passed
    // validation and then panicked a worker on every request.
    let errs = errors(&format!(
        "{GOOD}\n[services.web.timeouts]\nresponse_header = \"300000000000y\"\n"
    ));
    has(
        &errs,
        19,
        "services.web.timeouts.response_header",
        "`300000000000y` is too long; allowed: at most 7 days",
    );
    // Each key with its table, a value just over its bound, and the bound
    // the error must name.
    let week = "7 days (\"7d\")";
    let hour = "1 hour (\"1h\")";
    let cases: [(&str, &str, &str, &str); 16] = [
        ("", "shutdown_timeout", "8d", week),
        ("services.web", "drain_timeout", "8d", week),
        ("services.web.cookie", "max_age", "401d", "400 days"),
        ("services.web.timeouts", "connect", "8d", week),
        ("services.web.timeouts", "response_header", "7d 1s", week),
        ("services.web.timeouts", "header_read", "8d", week),
        ("services.web.timeouts", "idle", "8d", week),
        ("services.web.timeouts", "h2_ping_interval", "61m", hour),
        ("services.web.timeouts", "h2_ping_timeout", "61m", hour),
        ("services.web.health_check", "interval", "2h", hour),
        ("services.web.health_check", "timeout", "2h", hour),
        (
            "services.web.pools.blue.health_check",
            "interval",
            "2h",
            hour,
        ),
        ("services.web.outlier", "base_ejection", "2h", hour),
        ("services.web.outlier", "max_ejection", "2h", hour),
        ("services.web.timeouts", "idle", "500000000000y", week),
        ("services.web.timeouts", "connect", "3601s 604800s", week),
    ];
    for (table, k, v, bound) in cases {
        let text = if table.is_empty() {
            format!("{k} = \"{v}\"\n{GOOD}")
        } else if table == "services.web" {
            GOOD.replace("green = 10 }", &format!("green = 10 }}\n{k} = \"{v}\""))
        } else {
            format!("{GOOD}\n[{table}]\n{k} = \"{v}\"\n")
        };
        let line = text.lines().position(|l| l.starts_with(k)).unwrap() + 1;
        let full_key = if table.is_empty() {
            k.to_string()
        } else {
            format!("{table}.{k}")
        };
        has(
            &errors(&text),
            line,
            &full_key,
            &format!("too long; allowed: at most {bound}"),
        );
    }
    // The bounds themselves pass.
    let text = format!(
        "shutdown_timeout = \"7d\"\n{}\n[services.web.timeouts]\nresponse_header = \"7d\"\nh2_ping_interval = \"1h\"\n\n[services.web.cookie]\nmax_age = \"400d\"\n\n[services.web.health_check]\ninterval = \"1h\"\ntimeout = \"1h\"\n",
        GOOD.replace("green = 10 }", "green = 10 }\ndrain_timeout = \"7d\"")
    );
    let c = parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let s = &c.services[0];
    assert_eq!(c.shutdown_timeout, Duration::from_secs(7 * 86400));
    assert_eq!(s.drain_timeout, Duration::from_secs(7 * 86400));
    assert_eq!(s.timeouts.response_header, Duration::from_secs(7 * 86400));
    assert_eq!(s.timeouts.h2_ping_interval, Some(Duration::from_secs(3600)));
    assert_eq!(s.cookie.max_age, Duration::from_secs(400 * 86400));
    let hc = s.pools[0].health_check.clone().unwrap();
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(3600), Duration::from_secs(3600))
    );
}

#[test]
fn tcp_keepalive_is_on_by_default_and_can_be_tuned_or_turned_off() {
    use std::time::Duration;
    let c = parse("t.toml", GOOD).unwrap();
    assert_eq!(
        c.services[0].timeouts.tcp_keepalive,
        Some(TcpKeepalive {
            idle: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            probes: 3
        })
    );
    let tuned = format!("{GOOD}\n[services.web.timeouts]\ntcp_keepalive = \"2m\"\ntcp_keepalive_interval = \"5s\"\ntcp_keepalive_probes = 9\n");
    let c = parse("t.toml", &tuned).unwrap();
    assert_eq!(
        c.services[0].timeouts.tcp_keepalive,
        Some(TcpKeepalive {
            idle: Duration::from_secs(120),
            interval: Duration::from_secs(5),
            probes: 9
        })
    );
    let off = format!("{GOOD}\n[services.web.timeouts]\ntcp_keepalive = \"0s\"\n");
    assert_eq!(
        parse("t.toml", &off).unwrap().services[0]
            .timeouts
            .tcp_keepalive,
        None
    );
}

#[test]
fn tcp_keepalive_errors_name_the_key_and_what_is_allowed() {
    let t = "services.web.timeouts";
    let errs = errors(&format!(
        "{GOOD}\n[services.web.timeouts]\ntcp_keepalive = \"1500ms\"\ntcp_keepalive_interval = \"0s\"\ntcp_keepalive_probes = 128\n"
    ));
    has(
        &errs,
        19,
        &format!("{t}.tcp_keepalive"),
        "not a whole number of seconds",
    );
    has(
        &errs,
        20,
        &format!("{t}.tcp_keepalive_interval"),
        "set tcp_keepalive = \"0s\"",
    );
    has(
        &errs,
        21,
        &format!("{t}.tcp_keepalive_probes"),
        "allowed: 1 to 127",
    );
    let errs = errors(&format!(
        "{GOOD}\n[services.web.timeouts]\ntcp_keepalive = \"2h\"\n"
    ));
    has(&errs, 19, &format!("{t}.tcp_keepalive"), "at most 1 hour");
}

#[test]
fn idle_timeouts_after_the_head_default_and_are_bounded() {
    use std::time::Duration;
    let t = parse("t.toml", GOOD).unwrap().services[0].timeouts.clone();
    assert_eq!(t.client_idle, Duration::from_secs(60));
    assert_eq!(t.backend_idle, Duration::from_secs(60));
    assert_eq!(t.tunnel_idle, Some(Duration::from_secs(3600)));
    let set = format!("{GOOD}\n[services.web.timeouts]\nclient_idle = \"5s\"\nbackend_idle = \"2m\"\ntunnel_idle = \"0s\"\n");
    let t = parse("t.toml", &set).unwrap().services[0].timeouts.clone();
    assert_eq!(t.client_idle, Duration::from_secs(5));
    assert_eq!(t.backend_idle, Duration::from_secs(120));
    assert_eq!(t.tunnel_idle, None, "0s: tunnels never time out");
    let errs = errors(&format!(
        "{GOOD}\n[services.web.timeouts]\nclient_idle = \"0s\"\nbackend_idle = \"8d\"\ntunnel_idle = \"300000000000y\"\n"
    ));
    let t = "services.web.timeouts";
    has(&errs, 19, &format!("{t}.client_idle"), "greater than zero");
    has(&errs, 20, &format!("{t}.backend_idle"), "at most 7 days");
    has(&errs, 21, &format!("{t}.tunnel_idle"), "at most 7 days");
}

const TOKENS: &str = r#"[admin]
listen = "0.0.0.0:9901"
metrics_public = true
audit_max_bytes = 65536
audit_keep = 3

[[admin.tokens]]
name = "deploy-bot"
role = "operator"
secret_file = "/etc/cutover/deploy-bot.token"

[[admin.tokens]]
name = "grafana"
role = "viewer"
secret_env = "CUTOVER_TOKEN_GRAFANA"
"#;

#[test]
fn admin_tokens_have_names_roles_and_a_secret_source() {
    let c = parse("t.toml", &format!("{TOKENS}{GOOD}")).unwrap();
    let a = &c.admin;
    assert!(a.metrics_public && a.token.is_none());
    assert_eq!((a.audit_max_bytes, a.audit_keep), (65536, 3));
    assert_eq!(a.tokens.len(), 2);
    assert_eq!(a.tokens[0].name, "deploy-bot");
    assert_eq!(a.tokens[0].role, Role::Operator);
    assert_eq!(
        a.tokens[0].secret,
        SecretSource::File("/etc/cutover/deploy-bot.token".into())
    );
    assert_eq!(
        (a.tokens[0].at.line, a.tokens[0].at.key.as_str()),
        (Some(10), "admin.tokens[0].secret_file")
    );
    assert_eq!(a.tokens[1].role, Role::Viewer);
    assert_eq!(
        a.tokens[1].secret,
        SecretSource::Env("CUTOVER_TOKEN_GRAFANA".into())
    );
    // Defaults, and the audit log beside the state file.
    let d = parse("t.toml", GOOD).unwrap();
    assert!(!d.admin.metrics_public && d.admin.tokens.is_empty());
    assert_eq!(
        (d.admin.audit_max_bytes, d.admin.audit_keep),
        (10 * 1024 * 1024, 5)
    );
    assert_eq!(d.audit_log(), None);
    let s = parse(
        "t.toml",
        &format!("state_file = \"/var/lib/cutover/state.json\"\n{GOOD}"),
    )
    .unwrap();
    assert_eq!(
        s.audit_log(),
        Some("/var/lib/cutover/cutover-audit.jsonl".into())
    );
}

#[test]
fn bad_admin_tokens_are_refused_with_line_and_key() {
    let t = |old: &str, new: &str| errors(&format!("{}{GOOD}", TOKENS.replace(old, new)));
    let errs = t("name = \"grafana\"", "name = \"deploy-bot\"");
    has(
        &errs,
        13,
        "admin.tokens[1].name",
        "already used by admin.tokens[0]",
    );
    let errs = t("role = \"viewer\"", "role = \"root\"");
    has(&errs, 14, "admin.tokens[1].role", "allowed: \"operator\"");
    let errs = t(
        "secret_env = \"CUTOVER_TOKEN_GRAFANA\"",
        "secret_env = \"X\"\nsecret_file = \"/x\"",
    );
    has(&errs, 15, "admin.tokens[1].secret_env", "not both");
    let errs = t("secret_env = \"CUTOVER_TOKEN_GRAFANA\"", "");
    has(
        &errs,
        12,
        "admin.tokens[1]",
        "from `secret_file` or `secret_env`",
    );
    let errs = t(
        "secret_env = \"CUTOVER_TOKEN_GRAFANA\"",
        "secret = \"hunter2\"",
    );
    has(
        &errs,
        15,
        "admin.tokens[1].secret",
        "unknown key; allowed here: name, role, secret_file, secret_env",
    );
    let errs = t("name = \"grafana\"\n", "");
    has(&errs, 12, "admin.tokens[1]", "needs a `name`");
    let errs = t("name = \"grafana\"", "name = \"graf ana\"");
    has(&errs, 13, "admin.tokens[1].name", "letters, digits");
    let errs = t(
        "listen = \"0.0.0.0:9901\"",
        "listen = \"0.0.0.0:9901\"\ntoken = \"t\"\nnoise = 1",
    );
    has(
        &errs,
        4,
        "admin.noise",
        "allowed here: listen, token, tokens, metrics_public",
    );
    let both = TOKENS.replace("metrics_public = true", "token = \"t\"");
    assert!(
        parse("t.toml", &format!("{both}{GOOD}")).is_ok(),
        "admin.token and named tokens go together"
    );
    let errs = errors(&format!(
        "{}{GOOD}",
        both.replace("name = \"deploy-bot\"", "name = \"admin\"")
    ));
    has(&errs, 8, "admin.tokens[0].name", "taken by admin.token");
    let errs = t("audit_max_bytes = 65536", "audit_max_bytes = 100");
    has(&errs, 4, "admin.audit_max_bytes", "at least 4096");
    let errs = t("audit_keep = 3", "audit_keep = 0");
    has(&errs, 5, "admin.audit_keep", "allowed: 1 to 1000");
    // Without any token, a non-loopback listener is refused.
    let errs = errors(&format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{GOOD}"));
    has(&errs, 2, "admin.listen", "[[admin.tokens]]");
}
