//! The config loader (config/): TOML text to a validated config. Never a
//! panic; every refusal names its file, a real line and a cause; a config
//! that validates builds a controller (the first routing snapshot) and
//! differs in nothing from itself.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match cutover_config::parse("fuzz.toml", text) {
        Ok(mut config) => {
            assert!(cutover_config::diff(&config, &config).is_empty());
            // No state file: the fuzzer must not read (or write) files.
            config.state_file = None;
            let registry = prometheus::Registry::new();
            let metrics = Arc::new(
                cutover_proxy::ProxyMetrics::new(&registry).expect("proxy metrics register"),
            );
            if let Err(e) = cutover_control::Controller::new(config, &registry, metrics) {
                panic!("a validated config did not build a controller: {e}");
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without an error");
            let lines = text.lines().count().max(1) + 1;
            for e in &errors.0 {
                assert_eq!(e.origin, "fuzz.toml");
                assert!(!e.message.is_empty(), "an error without a message: {e:?}");
                if let Some(line) = e.line {
                    assert!(line >= 1 && line <= lines, "line {line} of {lines}: {e:?}");
                }
            }
        }
    }
});
