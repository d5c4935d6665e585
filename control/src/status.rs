//! The `/v1/status` document.

use std::net::SocketAddr;

use cutover_proxy::{Health, Service};
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
                        "backends": p.backends.iter().zip(p.health()).enumerate().map(|(j, (b, h))| {
                            let mut v = json!({
                                "addr": b.addr,
                                "weight": b.weight,
                                "effective_weight": p.effective_weight(j),
                                "protocol": b.protocol.as_str(),
                                "in_flight": b.in_flight(),
                                "state": h.as_str(),
                            });
                            if let Health::Down { reason, since } = h {
                                v["reason"] = json!(reason);
                                v["since"] = json!(humantime::format_rfc3339_seconds(*since).to_string());
                            }
                            if p.warmup(j).is_some() {
                                v["warming"] = json!(true);
                            }
                            v
                        }).collect::<Vec<_>>(),
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
        "services": services,
        "last_change": controller.audit().last(),
    })
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
