//! The `/v1/status` document.

use std::net::SocketAddr;

use cutover_proxy::{Backend, Ejection, Health, Service};
use serde_json::{json, Value};

use crate::controller::Controller;

pub fn status_json(
    controller: &Controller,
    listeners: &[(String, SocketAddr, Option<String>)],
) -> Value {
    let snap = controller.snapshot().load_full();
    let total_of = |w: &[u32]| w.iter().map(|x| u64::from(*x)).sum::<u64>().max(1);
    let services: Vec<Value> = snap
        .services
        .iter()
        .map(|s| {
            let weights = s.split.weights();
            let total = total_of(weights);
            let split: serde_json::Map<String, Value> = s
                .pools
                .iter()
                .zip(weights)
                .map(|(p, w)| (p.name.clone(), json!(w)))
                .collect();
            let pools: Vec<Value> = s
                .pools
                .iter()
                .zip(weights)
                .enumerate()
                .map(|(i, (p, w))| {
                    json!({
                        "name": p.name,
                        "weight": w,
                        "share": *w as f64 / total as f64,
                        "effective_share": s.effective().share(i),
                        "in_flight": p.in_flight(),
                        "available": p.available(),
                        "ejections_waived": p.ejections_waived(),
                        "backends": p.backends.iter().zip(p.health()).zip(p.ejections()).enumerate()
                            .map(|(j, ((b, h), e))| {
                                let mut v = backend_json(b, p.configured_weight(j), h, e.as_ref());
                                v["effective_weight"] = json!(p.effective_weight(j));
                                if p.warmup(j).is_some() {
                                    v["warming"] = json!(true);
                                }
                                v
                            })
                            .collect::<Vec<_>>(),
                    })
                })
                .collect();
            let ls: Vec<Value> = listeners
                .iter()
                .filter(|(svc, _, _)| svc == s.name())
                .map(|(_, addr, pool)| json!({"listen": addr.to_string(), "pool": pool}))
                .collect();
            json!({
                "name": s.name(),
                "split": split,
                "sticky": s.config.sticky.as_str(),
                "drain_timeout": humantime::format_duration(s.config.drain_timeout).to_string(),
                "failover": s.config.failover,
                "slow_start": s.config.slow_start.map(|d| humantime::format_duration(d).to_string()),
                "ramp": ramp_json(s),
                "pools": pools,
                "listeners": ls,
            })
        })
        .collect();
    json!({
        "generation": snap.generation,
        "run_id": controller.run_id(),
        "services": services,
        "last_change": controller.audit().last(),
        "config": controller.config_status(),
    })
}

/// One backend: `state` is `down` (by its active checks, with the last
/// failure's `reason` and `since`, and `ejected_until` if it is ejected
/// too), else `ejected` (with the ejection's `reason`, `since` and
/// `until`, to the millisecond: ejections can be short), else `up`.
fn backend_json(b: &Backend, weight: u32, h: &Health, e: Option<&Ejection>) -> Value {
    let mut v = json!({
        "addr": b.addr,
        "weight": weight,
        "protocol": b.protocol.as_str(),
        "in_flight": b.in_flight(),
        "state": h.as_str(),
    });
    let millis = |t| json!(humantime::format_rfc3339_millis(t).to_string());
    match (h, e) {
        (Health::Down { reason, since }, e) => {
            v["reason"] = json!(reason);
            v["since"] = json!(humantime::format_rfc3339_seconds(*since).to_string());
            if let Some(e) = e {
                v["ejected_until"] = millis(e.until);
            }
        }
        (Health::Up, Some(e)) => {
            v["state"] = json!("ejected");
            v["reason"] = json!(e.reason);
            v["since"] = millis(e.since);
            v["until"] = millis(e.until);
        }
        (Health::Up, None) => {}
    }
    v
}

/// A split ramp in progress: how far along its window (0 to 1), and
/// whether it waits for a pool it raises to have a backend up; `null`
/// when none runs.
fn ramp_json(s: &Service) -> Value {
    let (Some(r), Some(window)) = (s.ramp(), s.config.slow_start) else {
        return Value::Null;
    };
    json!({
        "progress": r.progress(window),
        "paused": r.paused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_backend_shows_up_down_or_ejected_and_down_wins() {
        let registry = prometheus::Registry::new();
        let m = cutover_proxy::ProxyMetrics::new(&registry).unwrap();
        let b = Backend::new(
            "10.0.1.12:8080",
            cutover_config::Protocol::Http1,
            cutover_proxy::upstream::UpstreamSettings::from_timeouts(
                &cutover_config::Timeouts::default(),
            ),
            m.pool("web", "blue").upstream,
        );
        let since = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_250);
        let e = Ejection {
            reason: "5 consecutive failures: connect refused".into(),
            since,
            until: since + Duration::from_secs(10),
        };
        let up = backend_json(&b, 1, &Health::Up, None);
        assert_eq!(up["state"], "up");
        assert!(up.get("reason").is_none() && up.get("until").is_none());
        let ejected = backend_json(&b, 1, &Health::Up, Some(&e));
        assert_eq!(ejected["state"], "ejected");
        assert_eq!(ejected["reason"], "5 consecutive failures: connect refused");
        assert_eq!(ejected["since"], "2027-01-15T08:00:00.250Z");
        assert_eq!(ejected["until"], "2027-01-15T08:00:10.250Z");
        let down = Health::Down {
            reason: "answered 500".into(),
            since,
        };
        let both = backend_json(&b, 1, &down, Some(&e));
        assert_eq!(both["state"], "down");
        assert_eq!(both["reason"], "answered 500");
        assert_eq!(both["since"], "2027-01-15T08:00:00Z");
        assert_eq!(both["ejected_until"], "2027-01-15T08:00:10.250Z");
        assert!(both.get("until").is_none());
    }
}
