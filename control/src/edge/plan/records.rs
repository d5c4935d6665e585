//! Records: their identity, their normalised value (so desired and actual
//! compare equal when Route 53 would serve the same answer), and the value
//! the config wants.

use std::fmt;

use cutover_config::edge::{RecordConfig, RecordTarget, RecordType, RecordWeight};

use super::weights::{route53_weight, SplitLookup};

/// Which record: Route 53 identifies a record set by zone, name, type and
/// set identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    pub zone_id: String,
    pub name: String,
    pub rtype: RecordType,
    pub set_identifier: Option<String>,
}

impl RecordKey {
    pub fn of(r: &RecordConfig) -> Self {
        RecordKey {
            zone_id: r.zone_id.clone(),
            name: r.name.clone(),
            rtype: r.rtype,
            set_identifier: r.set_identifier.clone(),
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.zone_id, self.name, self.rtype.as_str())?;
        if let Some(s) = &self.set_identifier {
            write!(f, " [{s}]")?;
        }
        Ok(())
    }
}

/// An alias target, normalised: lower-case DNS name with the trailing dot,
/// zone ID without `/hostedzone/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasValue {
    pub dns_name: String,
    pub zone_id: String,
    pub evaluate_target_health: bool,
}

/// A record's content, normalised so that desired and actual compare equal
/// when Route 53 would serve the same answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordValue {
    pub alias: Option<AliasValue>,
    /// Sorted addresses (order does not matter in DNS).
    pub values: Vec<String>,
    pub ttl: Option<i64>,
    pub weight: Option<i64>,
}

impl RecordValue {
    pub fn new(
        alias: Option<AliasValue>,
        mut values: Vec<String>,
        ttl: Option<i64>,
        weight: Option<i64>,
    ) -> Self {
        values.sort();
        RecordValue {
            alias: alias.map(|a| AliasValue {
                dns_name: normalize_name(&a.dns_name),
                zone_id: a
                    .zone_id
                    .strip_prefix("/hostedzone/")
                    .unwrap_or(&a.zone_id)
                    .to_string(),
                evaluate_target_health: a.evaluate_target_health,
            }),
            values,
            ttl,
            weight,
        }
    }
}

impl fmt::Display for RecordValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.alias {
            Some(a) => {
                write!(f, "ALIAS {} (zone {}", a.dns_name, a.zone_id)?;
                if a.evaluate_target_health {
                    write!(f, ", evaluate health")?;
                }
                write!(f, ")")?;
            }
            None => {
                if self.values.is_empty() {
                    write!(f, "(no values)")?;
                } else {
                    write!(f, "{}", self.values.join(","))?;
                }
                if let Some(t) = self.ttl {
                    write!(f, " ttl {t}")?;
                }
            }
        }
        if let Some(w) = self.weight {
            write!(f, " weight {w}")?;
        }
        Ok(())
    }
}

/// A DNS name as Route 53 returns it, made comparable with the config's:
/// lower case, trailing dot, `\ooo` octal escapes (like `\052` for `*`)
/// decoded.
pub fn normalize_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Some(c) = char::from_u32(v) {
                out.push(c);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    let mut out = out.to_ascii_lowercase();
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// The value the config wants for a record, given the split source for
/// `weight_from`. `Err` says why it cannot be computed (an unknown service
/// in the live split).
pub fn desired_record(r: &RecordConfig, split: SplitLookup<'_>) -> Result<RecordValue, String> {
    let weight = match &r.weight {
        None => None,
        Some(RecordWeight::Fixed(w)) => Some(i64::from(*w)),
        Some(RecordWeight::From { service, pool, .. }) => match split(service, pool) {
            Some((w, total)) => Some(i64::from(route53_weight(w, total))),
            None => {
                return Err(format!(
                    "weight_from `{service}.{pool}`: no such service and pool in the running split"
                ))
            }
        },
    };
    Ok(match &r.target {
        RecordTarget::Alias(a) => RecordValue::new(
            Some(AliasValue {
                dns_name: a.dns_name.clone(),
                zone_id: a.zone_id.clone(),
                evaluate_target_health: a.evaluate_target_health,
            }),
            Vec::new(),
            None,
            weight,
        ),
        RecordTarget::Values { values, ttl } => {
            RecordValue::new(None, values.clone(), Some(i64::from(*ttl)), weight)
        }
    })
}
