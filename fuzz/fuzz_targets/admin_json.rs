//! The admin API's change bodies (control/src/admin.rs `change_request`,
//! then `Controller::apply`): a sequence of bodies sent to the split,
//! switch and rollback endpoints of one controller. Never a panic; a
//! refusal is a 4xx with a message and changes nothing; an accepted change
//! names every pool of the service and moves the generation by one.
#![no_main]

use std::sync::{Arc, OnceLock};

use cutover_control::fuzzing::{change, Endpoint};
use cutover_control::Controller;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[services.web]
split = { blue = 100, green = 0 }
[[services.web.listeners]]
listen = "127.0.0.1:0"
[services.web.pools.blue]
backends = ["127.0.0.1:1", "127.0.0.1:2"]
[services.web.pools.green]
backends = ["127.0.0.1:3"]

[services.api]
split = { a = 1, b = 1, c = 0 }
slow_start = "30s"
[[services.api.listeners]]
listen = "127.0.0.1:0"
[services.api.pools.a]
backends = ["127.0.0.1:4"]
[services.api.pools.b]
backends = ["127.0.0.1:5"]
[services.api.pools.c]
backends = ["127.0.0.1:6"]
"#;

fn config() -> cutover_config::Config {
    static CONFIG_PARSED: OnceLock<cutover_config::Config> = OnceLock::new();
    CONFIG_PARSED
        .get_or_init(|| cutover_config::parse("fuzz.toml", CONFIG).expect("the fuzz config"))
        .clone()
}

/// The data plane's metrics, shared by every run: creating their labelled
/// handles anew each time made this target ten times slower. They hold no
/// state a change reads.
fn proxy_metrics() -> Arc<cutover_proxy::ProxyMetrics> {
    static METRICS: OnceLock<Arc<cutover_proxy::ProxyMetrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| {
            let registry = prometheus::Registry::new();
            Arc::new(cutover_proxy::ProxyMetrics::new(&registry).expect("proxy metrics"))
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let registry = prometheus::Registry::new();
    let controller =
        Arc::new(Controller::new(config(), &registry, proxy_metrics()).expect("controller"));
    // Changes are separated by 0xff (never in UTF-8 JSON); each starts with
    // a byte that picks the endpoint and the service.
    for part in data.split(|b| *b == 0xff).take(16) {
        let Some((&pick, body)) = part.split_first() else {
            continue;
        };
        let endpoint = match pick % 3 {
            0 => Endpoint::Split,
            1 => Endpoint::Switch,
            _ => Endpoint::Rollback,
        };
        let (service, pools): (&str, &[&str]) = match (pick / 3) % 3 {
            0 => ("web", &["blue", "green"]),
            1 => ("api", &["a", "b", "c"]),
            _ => ("nope", &[]),
        };
        let before = controller.snapshot().load().generation;
        match change(&controller, endpoint, service, body) {
            Ok(outcome) => {
                assert_eq!(outcome.service, service);
                let named: Vec<&str> = outcome.split.keys().map(String::as_str).collect();
                assert_eq!(named, pools, "the split names every pool, in order");
                assert!(outcome
                    .split
                    .values()
                    .any(|w| w.as_u64().is_some_and(|w| w > 0)));
                let after = controller.snapshot().load().generation;
                let step = u64::from(outcome.changed);
                assert_eq!(after, before + step, "generation after {outcome:?}");
                assert_eq!(outcome.generation, after);
            }
            Err((status, message)) => {
                assert!((400..500).contains(&status), "{status}: {message}");
                assert!(!message.is_empty());
                assert_eq!(controller.snapshot().load().generation, before);
            }
        }
    }
});
