//! The difference between two validated configs: what a reload changes.

use crate::model::{Config, ServiceConfig};

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
