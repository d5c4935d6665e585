//! The `/v1/status` document.

use std::net::SocketAddr;

use cutover_proxy::{Backend, Ejection, Health};
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
                .map(|(p, w)| {
                    json!({
                        "name": p.name,
                        "weight": w,
                        "share": *w as f64 / total as f64,
                        "in_flight": p.in_flight(),
                        "available": p.available(),
                        "ejections_waived": p.ejections_waived(),
                        "backends": p.backends.iter().zip(p.health()).zip(p.ejections())
                            .map(|((b, h), e)| backend_json(b, h, e.as_ref()))
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
                "pools": pools,
                "listeners": ls,
            })
        })
        .collect();
    json!({
        "generation": snap.generation,
        "services": services,
        "last_change": controller.audit().last(),
    })
}

/// One backend: `state` is `down` (by its active checks, with the last
/// failure's `reason` and `since`, and `ejected_until` if it is ejected
/// too), else `ejected` (with the ejection's `reason`, `since` and
/// `until`, to the millisecond: ejections can be short), else `up`.
fn backend_json(b: &Backend, h: &Health, e: Option<&Ejection>) -> Value {
    let mut v = json!({
        "addr": b.addr,
        "weight": b.weight,
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
