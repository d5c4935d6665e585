//! The pure part of edge sync: desired state from the config (and the live
//! split), actual state as read from AWS, the difference between them, the
//! Elastic IP choice rule, health URL templates and the weight mapping. No
//! I/O here, so all of it is unit-tested.
//!
//! - `weights`: split to Route 53 weight, and the split sources.
//! - `records`: record identity and values, desired and normalised.
//! - `eips`: candidates, health URLs, the Elastic IP choice rule.
//! - here: the plan itself, one item per declared record and address.

use std::collections::HashMap;

use cutover_config::edge::{EdgeConfig, ElasticIpConfig, RecordConfig};
use serde::Serialize;

mod eips;
mod records;
mod weights;

pub use eips::*;
pub use records::*;
pub use weights::*;

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
pub fn compute_plan(cfg: &EdgeConfig, actual: &ActualState, split: SplitLookup<'_>) -> Plan {
    let mut items = Vec::new();
    for r in &cfg.records {
        items.push(record_item(r, actual, split));
    }
    for e in &cfg.elastic_ips {
        items.push(elastic_ip_item(e, actual));
    }
    Plan { items }
}

/// One record: create it, update it, or leave it.
fn record_item(r: &RecordConfig, actual: &ActualState, split: SplitLookup<'_>) -> PlanItem {
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
    PlanItem {
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
    }
}

/// One Elastic IP: associate it with the chosen candidate, or leave it
/// (and say why when no candidate is healthy).
fn elastic_ip_item(e: &ElasticIpConfig, actual: &ActualState) -> PlanItem {
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
    let mut notes = candidate_notes(current, cands);
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
    PlanItem {
        kind: ItemKind::ElasticIp,
        id,
        actual: actual_s,
        desired: chosen.map(str::to_string),
        action,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        change,
    }
}

/// What is worth saying about the candidates: the current instance is not
/// one of them, and which are unhealthy and why.
fn candidate_notes(current: Option<&str>, cands: &[CandidateHealth]) -> Vec<String> {
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
    notes
}

#[cfg(test)]
mod tests;
