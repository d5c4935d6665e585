//! The difference between two validated configs: what a reload changes.

use crate::model::{Config, ListenerConfig, PoolConfig, ServiceConfig};

/// What changed between an old and a new config.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    pub services_added: Vec<String>,
    pub services_removed: Vec<String>,
    /// Services whose pools or backends changed.
    pub pools_changed: Vec<String>,
    /// Services whose split in the file changed (only these override the
    /// runtime split on reload).
    pub split_changed: Vec<String>,
    /// Services whose listeners changed (needs a restart to rebind).
    pub listeners_changed: Vec<String>,
    /// Services whose other settings (timeouts, stickiness, ...) changed.
    pub settings_changed: Vec<String>,
    pub admin_changed: bool,
    pub workers_changed: bool,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

fn split_by_name(s: &ServiceConfig) -> Vec<(&str, u32)> {
    let mut v: Vec<(&str, u32)> = s
        .pools
        .iter()
        .map(|p| p.name.as_str())
        .zip(s.split.iter().copied())
        .collect();
    v.sort();
    v
}

pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut d = ConfigDiff {
        admin_changed: old.admin != new.admin,
        workers_changed: old.workers != new.workers,
        ..ConfigDiff::default()
    };
    for n in &new.services {
        let Some(o) = old.services.iter().find(|o| o.name == n.name) else {
            d.services_added.push(n.name.clone());
            continue;
        };
        if o.pools != n.pools {
            d.pools_changed.push(n.name.clone());
        }
        if split_by_name(o) != split_by_name(n) {
            d.split_changed.push(n.name.clone());
        }
        if o.listeners != n.listeners {
            d.listeners_changed.push(n.name.clone());
        }
        let settings = |s: &ServiceConfig| {
            (
                s.sticky,
                s.cookie.clone(),
                s.drain_timeout,
                s.override_header.clone(),
                s.override_token.clone(),
                s.access_log,
                s.timeouts.clone(),
                s.limits.clone(),
                s.failover,
                s.retries,
                s.outlier.clone(),
                (s.allowed_upgrades.clone(), s.error_detail, s.slow_start),
            )
        };
        if settings(o) != settings(n) {
            d.settings_changed.push(n.name.clone());
        }
    }
    for o in &old.services {
        if !new.services.iter().any(|n| n.name == o.name) {
            d.services_removed.push(o.name.clone());
        }
    }
    d
}

/// What a reload does, in words: one line per item that changes live
/// (`changes`), and the settings that only a restart applies
/// (`needs_restart`: `workers`, `admin.listen`, `admin.token`, `state_file`,
/// `[edge]`). Pure: the reload report and its log are made of these.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    pub changes: Vec<String>,
    pub needs_restart: Vec<String>,
}

fn fmt_split(s: &ServiceConfig) -> String {
    let pairs: Vec<String> = s
        .pools
        .iter()
        .zip(&s.split)
        .map(|(p, w)| format!("{}={w}", p.name))
        .collect();
    pairs.join(" ")
}

fn fmt_duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The changes between `old` and `new`, in words (see [`ReloadPlan`]).
pub fn describe(old: &Config, new: &Config) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    let restart = &mut plan.needs_restart;
    if old.workers != new.workers {
        let w = |w: Option<usize>| w.map_or("one per core".to_string(), |n| n.to_string());
        restart.push(format!("workers: {} -> {}", w(old.workers), w(new.workers)));
    }
    if old.admin.listen != new.admin.listen {
        restart.push(format!(
            "admin.listen: {} -> {}",
            old.admin.listen, new.admin.listen
        ));
    }
    if old.admin.token != new.admin.token {
        restart.push("admin.token changed".into());
    }
    if old.admin.tokens != new.admin.tokens || old.admin.metrics_public != new.admin.metrics_public
    {
        restart.push("admin.tokens or admin.metrics_public changed".into());
    }
    if (
        &old.admin.audit_log,
        old.admin.audit_max_bytes,
        old.admin.audit_keep,
    ) != (
        &new.admin.audit_log,
        new.admin.audit_max_bytes,
        new.admin.audit_keep,
    ) {
        restart.push("admin.audit_log, audit_max_bytes or audit_keep changed".into());
    }
    if old.state_file != new.state_file {
        let p = |p: &Option<std::path::PathBuf>| {
            p.as_ref()
                .map_or("none".to_string(), |p| p.display().to_string())
        };
        restart.push(format!(
            "state_file: {} -> {}",
            p(&old.state_file),
            p(&new.state_file)
        ));
    }
    if old.edge != new.edge {
        restart.push("[edge] changed".into());
    }
    let changes = &mut plan.changes;
    for (key, o, n) in [
        (
            "shutdown_timeout",
            old.shutdown_timeout,
            new.shutdown_timeout,
        ),
        ("shutdown_delay", old.shutdown_delay, new.shutdown_delay),
    ] {
        if o != n {
            changes.push(format!("{key}: {} -> {}", fmt_duration(o), fmt_duration(n)));
        }
    }
    for n in &new.services {
        match old.services.iter().find(|o| o.name == n.name) {
            None => changes.push(format!(
                "services.{}: added ({} pools, {} listeners, split {})",
                n.name,
                n.pools.len(),
                n.listeners.len(),
                fmt_split(n)
            )),
            Some(o) => describe_service(o, n, changes),
        }
    }
    for o in &old.services {
        if !new.services.iter().any(|n| n.name == o.name) {
            changes.push(format!("services.{}: removed", o.name));
        }
    }
    plan
}

/// One service's changes: pools, backends, split, listeners, settings.
fn describe_service(o: &ServiceConfig, n: &ServiceConfig, out: &mut Vec<String>) {
    let name = &n.name;
    for np in &n.pools {
        let Some(op) = o.pools.iter().find(|p| p.name == np.name) else {
            let addrs: Vec<&str> = np.backends.iter().map(|b| b.addr.as_str()).collect();
            out.push(format!(
                "services.{name}.pools.{}: added (backends {})",
                np.name,
                addrs.join(", ")
            ));
            continue;
        };
        describe_pool(name, op, np, out);
    }
    for op in &o.pools {
        if !n.pools.iter().any(|p| p.name == op.name) {
            out.push(format!("services.{name}.pools.{}: removed", op.name));
        }
    }
    if split_by_name(o) != split_by_name(n) {
        out.push(format!(
            "services.{name}.split: {} -> {} (the file's split changed: applied)",
            fmt_split(o),
            fmt_split(n)
        ));
    }
    for (i, nl) in n.listeners.iter().enumerate() {
        match same_listener(&n.listeners, i, &o.listeners) {
            None => out.push(format!("services.{name}.listeners: {} added", nl.listen)),
            Some(ol) if ol != nl => {
                out.push(format!("services.{name}.listeners: {} changed", nl.listen))
            }
            Some(_) => {}
        }
    }
    for (i, ol) in o.listeners.iter().enumerate() {
        if same_listener(&o.listeners, i, &n.listeners).is_none() {
            out.push(format!("services.{name}.listeners: {} removed", ol.listen));
        }
    }
    let changed = changed_settings(o, n);
    if !changed.is_empty() {
        out.push(format!("services.{name}: {} changed", changed.join(", ")));
    }
}

/// The listener of `other` that is `list[i]` across a reload: the one
/// with the same address, and for several on one address (port 0) the
/// same rank among them.
fn same_listener<'a>(
    list: &[ListenerConfig],
    i: usize,
    other: &'a [ListenerConfig],
) -> Option<&'a ListenerConfig> {
    let addr = list.get(i)?.listen;
    let rank = list[..i].iter().filter(|l| l.listen == addr).count();
    other.iter().filter(|l| l.listen == addr).nth(rank)
}

fn describe_pool(service: &str, o: &PoolConfig, n: &PoolConfig, out: &mut Vec<String>) {
    let key = format!("services.{service}.pools.{}", n.name);
    for nb in &n.backends {
        match o.backends.iter().find(|b| b.addr == nb.addr) {
            None => out.push(format!("{key}: backend {} added", nb.addr)),
            Some(ob) => {
                if ob.weight != nb.weight {
                    out.push(format!(
                        "{key}: backend {} weight {} -> {}",
                        nb.addr, ob.weight, nb.weight
                    ));
                }
                if ob.protocol != nb.protocol {
                    out.push(format!(
                        "{key}: backend {} protocol {} -> {}",
                        nb.addr,
                        ob.protocol.as_str(),
                        nb.protocol.as_str()
                    ));
                }
            }
        }
    }
    for ob in &o.backends {
        if !n.backends.iter().any(|b| b.addr == ob.addr) {
            out.push(format!("{key}: backend {} removed", ob.addr));
        }
    }
    if o.health_check != n.health_check {
        out.push(format!("{key}: health_check changed"));
    }
    if o.send_proxy_protocol != n.send_proxy_protocol {
        out.push(format!(
            "{key}: send_proxy_protocol {} -> {}",
            o.send_proxy_protocol, n.send_proxy_protocol
        ));
    }
}

/// The keys of a service's other settings that differ.
fn changed_settings(o: &ServiceConfig, n: &ServiceConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key: &'static str, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    check("sticky", o.sticky != n.sticky);
    check("cookie", o.cookie != n.cookie);
    check("drain_timeout", o.drain_timeout != n.drain_timeout);
    check("override_header", o.override_header != n.override_header);
    check("override_token", o.override_token != n.override_token);
    check("access_log", o.access_log != n.access_log);
    check("timeouts", o.timeouts != n.timeouts);
    check("limits", o.limits != n.limits);
    check("failover", o.failover != n.failover);
    check("retries", o.retries != n.retries);
    check("outlier", o.outlier != n.outlier);
    check("slow_start", o.slow_start != n.slow_start);
    check("allowed_upgrades", o.allowed_upgrades != n.allowed_upgrades);
    check("error_detail", o.error_detail != n.error_detail);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_top: &str, web: &str) -> Config {
        let text = format!(
            "{extra_top}\n[services.web]\nsplit = {{ blue = 100, green = 0 }}\n{web}\n[[services.web.listeners]]\nlisten = \"127.0.0.1:8080\"\n[services.web.pools.blue]\nbackends = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n[services.web.pools.green]\nbackends = [\"127.0.0.1:3\"]\n"
        );
        crate::parse("t.toml", &text).unwrap()
    }

    #[test]
    fn nothing_changed_says_nothing() {
        let a = config("", "");
        assert_eq!(describe(&a, &a.clone()), ReloadPlan::default());
    }

    #[test]
    fn backends_added_removed_and_reweighted_are_one_line_each() {
        let a = config("", "");
        let text = "\n[services.web]\nsplit = { blue = 100, green = 0 }\n[[services.web.listeners]]\nlisten = \"127.0.0.1:8080\"\n[[services.web.listeners]]\nlisten = \"127.0.0.1:8081\"\n[services.web.pools.blue]\nbackends = [{ addr = \"127.0.0.1:1\", weight = 3 }]\n[services.web.pools.green]\nbackends = [\"127.0.0.1:3\", \"127.0.0.1:4\"]\n";
        let b = crate::parse("t.toml", text).unwrap();
        let plan = describe(&a, &b);
        assert_eq!(
            plan.changes,
            vec![
                "services.web.pools.blue: backend 127.0.0.1:1 weight 1 -> 3",
                "services.web.pools.blue: backend 127.0.0.1:2 removed",
                "services.web.pools.green: backend 127.0.0.1:4 added",
                "services.web.listeners: 127.0.0.1:8081 added",
            ]
        );
        assert!(plan.needs_restart.is_empty());
    }

    #[test]
    fn split_settings_and_services_are_described() {
        let a = config("", "");
        let b = config(
            "shutdown_timeout = \"5s\"",
            "timeouts = { connect = \"1s\" }\naccess_log = true",
        );
        let mut b2 = b.clone();
        b2.services[0].split = vec![50, 50];
        let mut api = b2.services[0].clone();
        api.name = "api".into();
        b2.services.push(api);
        let plan = describe(&a, &b2);
        assert_eq!(
            plan.changes,
            vec![
                "shutdown_timeout: 30s -> 5s",
                "services.web.split: blue=100 green=0 -> blue=50 green=50 (the file's split changed: applied)",
                "services.web: access_log, timeouts changed",
                "services.api: added (2 pools, 1 listeners, split blue=50 green=50)",
            ]
        );
        let back = describe(&b2, &a);
        assert!(back.changes.contains(&"services.api: removed".to_string()));
    }

    #[test]
    fn listeners_on_one_address_are_matched_by_rank() {
        let text = |pool: &str| {
            format!("[services.web]\nsplit = {{ blue = 1, green = 0 }}\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n{pool}\n[services.web.pools.blue]\nbackends = [\"127.0.0.1:1\"]\n[services.web.pools.green]\nbackends = [\"127.0.0.1:2\"]\n")
        };
        let a = crate::parse("t.toml", &text("pool = \"green\"")).unwrap();
        assert!(describe(&a, &a.clone()).changes.is_empty());
        let b = crate::parse("t.toml", &text("")).unwrap();
        assert_eq!(
            describe(&a, &b).changes,
            vec!["services.web.listeners: 127.0.0.1:0 changed"]
        );
    }

    #[test]
    fn settings_that_need_a_restart_are_set_apart() {
        let a = config("", "");
        let b = config(
            "workers = 2\nstate_file = \"/tmp/x.json\"\n[admin]\nlisten = \"127.0.0.1:9999\"",
            "",
        );
        let plan = describe(&a, &b);
        assert!(plan.changes.is_empty(), "{plan:?}");
        assert_eq!(
            plan.needs_restart,
            vec![
                "workers: one per core -> 2",
                "admin.listen: 127.0.0.1:9901 -> 127.0.0.1:9999",
                "state_file: none -> /tmp/x.json",
            ]
        );
        let c = config(
            "[admin]\nmetrics_public = true\naudit_keep = 9\n[[admin.tokens]]\nname = \"bot\"\nrole = \"viewer\"\nsecret_env = \"BOT\"",
            "",
        );
        assert_eq!(
            describe(&a, &c).needs_restart,
            vec![
                "admin.tokens or admin.metrics_public changed",
                "admin.audit_log, audit_max_bytes or audit_keep changed",
            ]
        );
    }
}
