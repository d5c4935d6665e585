//! Elastic IPs: candidate instances, their health URLs, the choice rule and
//! where an address is now.

use cutover_config::edge::{Candidates, UrlPart, UrlTemplate};
use serde::Serialize;

/// An instance as DescribeInstances reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceInfo {
    pub instance_id: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// Expand a `health_url` template for one instance. `Err` names the missing
/// value (an instance without a public IP, a missing tag).
pub fn expand_health_url(t: &UrlTemplate, inst: &InstanceInfo) -> Result<String, String> {
    let mut out = String::new();
    for part in &t.parts {
        match part {
            UrlPart::Literal(s) => out.push_str(s),
            UrlPart::InstanceId => out.push_str(&inst.instance_id),
            UrlPart::PrivateIp => match &inst.private_ip {
                Some(ip) => out.push_str(ip),
                None => return Err("the instance has no private IP address".to_string()),
            },
            UrlPart::PublicIp => match &inst.public_ip {
                Some(ip) => out.push_str(ip),
                None => return Err("the instance has no public IP address".to_string()),
            },
            UrlPart::Tag(k) => match inst.tags.iter().find(|(tk, _)| tk == k) {
                Some((_, v)) => out.push_str(v),
                None => return Err(format!("the instance has no tag `{k}`")),
            },
        }
    }
    Ok(out)
}

/// A candidate instance and the outcome of its health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CandidateHealth {
    pub instance_id: String,
    pub healthy: bool,
    /// Why it is unhealthy (or the URL that answered).
    pub detail: String,
}

/// The Elastic IP rule: stay on the current instance while it is a healthy
/// candidate (no flapping); otherwise the healthy candidate with the lowest
/// instance ID (the same answer on every cutover instance). `None` when no
/// candidate is healthy.
pub fn choose_instance<'a>(
    current: Option<&str>,
    candidates: &'a [CandidateHealth],
) -> Option<&'a str> {
    if let Some(cur) = current {
        if let Some(c) = candidates
            .iter()
            .find(|c| c.instance_id == cur && c.healthy)
        {
            return Some(&c.instance_id);
        }
    }
    candidates
        .iter()
        .filter(|c| c.healthy)
        .map(|c| c.instance_id.as_str())
        .min()
}

/// Where an Elastic IP is now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressState {
    pub public_ip: Option<String>,
    pub instance_id: Option<String>,
    /// Set when it is associated with a network interface but no instance.
    pub network_interface_id: Option<String>,
}

/// Which declared Elastic IP candidates to look up, for the AWS side.
pub fn candidate_ids(c: &Candidates) -> Option<&[String]> {
    match c {
        Candidates::Instances(ids) => Some(ids),
        Candidates::Tags(_) => None,
    }
}
