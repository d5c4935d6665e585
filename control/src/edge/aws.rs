//! The AWS side of edge sync: read the actual state of the declared items
//! and apply a plan.
//!
//! Retries: every call goes through the SDK's standard retry strategy
//! (exponential backoff with jitter, up to [`MAX_ATTEMPTS`] attempts) which
//! retries throttling errors (`Throttling`, `RequestLimitExceeded`,
//! `PriorRequestNotComplete`, ...), 5xx answers and connection failures.
//! Each attempt and each operation is bounded by a timeout, so a pass never
//! hangs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::types::{Filter, InstanceStateName};
use aws_sdk_route53::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{
    AliasTarget, Change as R53Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord,
    ResourceRecordSet, RrType,
};
use cutover_config::edge::{Candidates, EdgeConfig, ElasticIpConfig, RecordType};
use tokio::task::JoinSet;

use super::health::HealthChecker;
use super::plan::{
    expand_health_url, normalize_name, ActualState, AddressState, AliasValue, CandidateHealth,
    Change, InstanceInfo, Plan, RecordKey, RecordValue,
};
use super::EdgeError;

/// Attempts per AWS call, the first included.
pub const MAX_ATTEMPTS: u32 = 5;

/// How GetChange is polled until Route 53 reports INSYNC: the first wait,
/// doubled after each PENDING answer up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        }
    }
}

/// The AWS clients (and the health checker) edge sync uses.
#[derive(Clone)]
pub struct EdgeClients {
    route53: aws_sdk_route53::Client,
    ec2: aws_sdk_ec2::Client,
    health: HealthChecker,
    poll: PollPolicy,
}

fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(500))
        .with_max_backoff(Duration::from_secs(20))
}

fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(120))
        .build()
}

impl EdgeClients {
    /// Clients from the standard AWS chain (environment, profile, instance
    /// role via IMDSv2), with `[edge]`'s `region` and `endpoint_url` on top.
    pub async fn from_env(cfg: &EdgeConfig) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = &cfg.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(u) = &cfg.endpoint_url {
            loader = loader.endpoint_url(u.clone());
        }
        Self::from_sdk_config(&loader.load().await)
    }

    /// Clients from an already loaded SDK config (tests give explicit
    /// credentials, region and endpoint here). The retry and timeout policy
    /// of edge sync is applied on top.
    pub fn from_sdk_config(sdk: &SdkConfig) -> Self {
        let r53 = aws_sdk_route53::config::Builder::from(sdk)
            .retry_config(retry_config())
            .timeout_config(timeout_config())
            .build();
        let ec2 = aws_sdk_ec2::config::Builder::from(sdk)
            .retry_config(retry_config())
            .timeout_config(timeout_config())
            .build();
        EdgeClients {
            route53: aws_sdk_route53::Client::from_conf(r53),
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            health: HealthChecker::new(),
            poll: PollPolicy::default(),
        }
    }

    /// Change how GetChange is polled.
    pub fn with_poll_policy(mut self, poll: PollPolicy) -> Self {
        self.poll = poll;
        self
    }

    // ------------------------------------------------------------------ read

    /// Read the actual state of every declared item, and health-check the
    /// Elastic IP candidates.
    pub async fn read_actual(&self, cfg: &EdgeConfig) -> Result<ActualState, EdgeError> {
        let mut state = ActualState::default();
        let mut groups: Vec<(&str, &str, RecordType)> = Vec::new();
        for r in &cfg.records {
            let g = (r.zone_id.as_str(), r.name.as_str(), r.rtype);
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        for (zone, name, rtype) in groups {
            self.read_records(zone, name, rtype, &mut state.records)
                .await?;
        }
        for e in &cfg.elastic_ips {
            let addr = self.read_address(&e.allocation_id).await?;
            let instances = self.read_candidates(e).await?;
            let health = self.check_candidates(e, instances).await;
            state.addresses.insert(e.allocation_id.clone(), addr);
            state.candidates.insert(e.allocation_id.clone(), health);
        }
        Ok(state)
    }

    /// ListResourceRecordSets from `name`/`type`: every record set of that
    /// name and type (all set identifiers), nothing else.
    async fn read_records(
        &self,
        zone: &str,
        name: &str,
        rtype: RecordType,
        out: &mut HashMap<RecordKey, RecordValue>,
    ) -> Result<(), EdgeError> {
        let item = format!("record {zone} {name} {}", rtype.as_str());
        let want = rr_type(rtype);
        let mut start: (String, RrType, Option<String>) = (name.to_string(), want.clone(), None);
        // A name and type rarely has more than a few weighted sets; the page
        // bound only guards against an endless listing.
        for _page in 0..100 {
            let mut req = self
                .route53
                .list_resource_record_sets()
                .hosted_zone_id(zone)
                .start_record_name(start.0.clone())
                .start_record_type(start.1.clone())
                .max_items(100);
            if let Some(id) = &start.2 {
                req = req.start_record_identifier(id.clone());
            }
            let page = req
                .send()
                .await
                .map_err(|e| sdk_error("ListResourceRecordSets", &item, e))?;
            let mut past = false;
            for rr in page.resource_record_sets() {
                // Listing starts at name/type; the first other one ends it.
                if normalize_name(rr.name()) != name || rr.r#type() != &want {
                    past = true;
                    break;
                }
                out.insert(
                    RecordKey {
                        zone_id: zone.to_string(),
                        name: name.to_string(),
                        rtype,
                        set_identifier: rr.set_identifier().map(str::to_string),
                    },
                    record_value(rr),
                );
            }
            if past || !page.is_truncated() {
                return Ok(());
            }
            match page.next_record_name() {
                Some(n) => {
                    start = (
                        n.to_string(),
                        page.next_record_type().cloned().unwrap_or(want.clone()),
                        page.next_record_identifier().map(str::to_string),
                    )
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    async fn read_address(&self, allocation_id: &str) -> Result<AddressState, EdgeError> {
        let item = format!("elastic IP {allocation_id}");
        let out = self
            .ec2
            .describe_addresses()
            .allocation_ids(allocation_id)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeAddresses", &item, e))?;
        let Some(a) = out
            .addresses()
            .iter()
            .find(|a| a.allocation_id() == Some(allocation_id))
        else {
            return Err(EdgeError::Invalid {
                item,
                message: "DescribeAddresses did not return this allocation".to_string(),
            });
        };
        let some = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        Ok(AddressState {
            public_ip: some(a.public_ip()),
            instance_id: some(a.instance_id()),
            network_interface_id: some(a.network_interface_id()),
        })
    }

    /// Running candidate instances (DescribeInstances with filters: an
    /// instance ID that no longer exists is simply not a candidate).
    async fn read_candidates(&self, e: &ElasticIpConfig) -> Result<Vec<InstanceInfo>, EdgeError> {
        let item = format!("elastic IP {} candidates", e.allocation_id);
        let mut filters = vec![Filter::builder()
            .name("instance-state-name")
            .values("running")
            .build()];
        match &e.candidates {
            Candidates::Instances(ids) => filters.push(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(ids.clone()))
                    .build(),
            ),
            Candidates::Tags(tags) => {
                for (k, v) in tags {
                    filters.push(Filter::builder().name(format!("tag:{k}")).values(v).build());
                }
            }
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _page in 0..100 {
            let page = self
                .ec2
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|err| sdk_error("DescribeInstances", &item, err))?;
            for inst in page.reservations().iter().flat_map(|r| r.instances()) {
                let running =
                    inst.state().and_then(|s| s.name()) == Some(&InstanceStateName::Running);
                let Some(id) = inst.instance_id().filter(|_| running) else {
                    continue;
                };
                if let Candidates::Instances(ids) = &e.candidates {
                    if !ids.iter().any(|x| x == id) {
                        continue;
                    }
                }
                out.push(InstanceInfo {
                    instance_id: id.to_string(),
                    private_ip: inst.private_ip_address().map(str::to_string),
                    public_ip: inst.public_ip_address().map(str::to_string),
                    tags: inst
                        .tags()
                        .iter()
                        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                        .collect(),
                });
            }
            match page.next_token().filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        out.dedup_by(|a, b| a.instance_id == b.instance_id);
        Ok(out)
    }

    /// Health-check every candidate at once.
    async fn check_candidates(
        &self,
        e: &ElasticIpConfig,
        instances: Vec<InstanceInfo>,
    ) -> Vec<CandidateHealth> {
        let mut set = JoinSet::new();
        let mut out = Vec::new();
        for inst in instances {
            match expand_health_url(&e.health_url, &inst) {
                Err(why) => out.push(CandidateHealth {
                    instance_id: inst.instance_id,
                    healthy: false,
                    detail: format!("health_url `{}`: {why}", e.health_url.raw),
                }),
                Ok(url) => {
                    let checker = self.health.clone();
                    let timeout = e.health_timeout;
                    set.spawn(async move {
                        let r = checker.check(&url, timeout).await;
                        CandidateHealth {
                            instance_id: inst.instance_id,
                            healthy: r.is_ok(),
                            detail: match r {
                                Ok(status) => format!("GET {url}: {status}"),
                                Err(e) => e,
                            },
                        }
                    });
                }
            }
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok(h) => out.push(h),
                // A check task cannot panic on its own input; if the runtime
                // cancelled it, the candidate just does not count.
                Err(e) => tracing::warn!(error = %e, "edge health check task failed"),
            }
        }
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        out
    }

    // ----------------------------------------------------------------- apply

    /// Make `plan` true: Elastic IP associations first (failover should not
    /// wait for DNS), one ChangeResourceRecordSets batch of UPSERTs per
    /// zone, then wait until Route 53 reports each batch INSYNC, all within
    /// `timeout`. Returns one line per call made, for the operator.
    pub async fn apply(&self, plan: &Plan, timeout: Duration) -> Result<Vec<String>, EdgeError> {
        let started = Instant::now();
        let deadline = cutover_proxy::time::later(started, timeout);
        let mut report = Vec::new();
        let mut zones: BTreeMap<&str, Vec<(&RecordKey, &RecordValue)>> = BTreeMap::new();
        for change in plan.changes() {
            match change {
                Change::UpsertRecord { key, value } => zones
                    .entry(key.zone_id.as_str())
                    .or_default()
                    .push((key, value)),
                Change::Associate {
                    allocation_id,
                    instance_id,
                } => report.push(self.associate(allocation_id, instance_id).await?),
            }
        }
        let mut pending = Vec::new();
        for (zone, records) in zones {
            pending.push(self.submit_zone(zone, &records).await?);
        }
        for (item, id, n, in_sync) in pending {
            if !in_sync {
                self.wait_in_sync(&item, &id, deadline).await?;
            }
            report.push(format!(
                "{item}: {n} record(s) upserted, change {id} INSYNC after {:.1}s",
                started.elapsed().as_secs_f64()
            ));
        }
        Ok(report)
    }

    /// Associate an Elastic IP with an instance; returns the report line.
    async fn associate(&self, allocation_id: &str, instance_id: &str) -> Result<String, EdgeError> {
        let item = format!("elastic IP {allocation_id}");
        self.ec2
            .associate_address()
            .allocation_id(allocation_id)
            .instance_id(instance_id)
            .allow_reassociation(true)
            .send()
            .await
            .map_err(|e| sdk_error("AssociateAddress", &item, e))?;
        tracing::info!(allocation_id, instance_id, "edge: elastic IP associated");
        Ok(format!("{allocation_id}: associated with {instance_id}"))
    }

    /// Submit one zone's upserts as one change batch. Returns the item (for
    /// messages), the change ID, how many records, and whether Route 53
    /// already reports the change INSYNC.
    async fn submit_zone(
        &self,
        zone: &str,
        records: &[(&RecordKey, &RecordValue)],
    ) -> Result<(String, String, usize, bool), EdgeError> {
        let item = format!(
            "zone {zone} ({})",
            records
                .iter()
                .map(|(k, _)| format!("{} {}", k.name, k.rtype.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let batch = change_batch(records, &item)?;
        let out = self
            .route53
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| sdk_error("ChangeResourceRecordSets", &item, e))?;
        let Some(info) = out.change_info() else {
            return Err(EdgeError::Invalid {
                item,
                message: "ChangeResourceRecordSets answered without ChangeInfo".to_string(),
            });
        };
        let id = info.id().to_string();
        tracing::info!(zone, change_id = %id, upserts = records.len(), "edge: Route 53 change submitted");
        let in_sync = info.status() == &ChangeStatus::Insync;
        Ok((item, id, records.len(), in_sync))
    }

    /// Poll GetChange with backoff until INSYNC or `deadline`.
    async fn wait_in_sync(&self, item: &str, id: &str, deadline: Instant) -> Result<(), EdgeError> {
        let started = Instant::now();
        let mut delay = self.poll.initial;
        loop {
            let out = self
                .route53
                .get_change()
                .id(id)
                .send()
                .await
                .map_err(|e| sdk_error("GetChange", item, e))?;
            let status = out.change_info().map(|c| c.status().clone());
            if status == Some(ChangeStatus::Insync) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(EdgeError::NotInSync {
                    item: item.to_string(),
                    change_id: id.to_string(),
                    status: status.map_or("unknown".to_string(), |s| s.as_str().to_string()),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(self.poll.max);
        }
    }
}

fn rr_type(t: RecordType) -> RrType {
    match t {
        RecordType::A => RrType::A,
        RecordType::Aaaa => RrType::Aaaa,
    }
}

fn record_value(rr: &ResourceRecordSet) -> RecordValue {
    RecordValue::new(
        rr.alias_target().map(|a| AliasValue {
            dns_name: a.dns_name().to_string(),
            zone_id: a.hosted_zone_id().to_string(),
            evaluate_target_health: a.evaluate_target_health(),
        }),
        rr.resource_records()
            .iter()
            .map(|r| r.value().to_string())
            .collect(),
        rr.ttl(),
        rr.weight(),
    )
}

/// One UPSERT per record, as one change batch; `item` names the zone in
/// errors.
fn change_batch(
    records: &[(&RecordKey, &RecordValue)],
    item: &str,
) -> Result<ChangeBatch, EdgeError> {
    let mut batch = ChangeBatch::builder().comment("cutover edge sync");
    for (key, value) in records {
        let rrset = build_rrset(key, value).map_err(|e| EdgeError::Invalid {
            item: format!("record {key}"),
            message: format!("cannot build the record set: {e}"),
        })?;
        let change = R53Change::builder()
            .action(ChangeAction::Upsert)
            .resource_record_set(rrset)
            .build()
            .map_err(|e| EdgeError::Invalid {
                item: format!("record {key}"),
                message: format!("cannot build the change: {e}"),
            })?;
        batch = batch.changes(change);
    }
    batch.build().map_err(|e| EdgeError::Invalid {
        item: item.to_string(),
        message: format!("cannot build the change batch: {e}"),
    })
}

fn build_rrset(
    key: &RecordKey,
    v: &RecordValue,
) -> Result<ResourceRecordSet, aws_sdk_route53::error::BuildError> {
    let mut b = ResourceRecordSet::builder()
        .name(&key.name)
        .r#type(rr_type(key.rtype));
    if let Some(s) = &key.set_identifier {
        b = b.set_identifier(s);
    }
    if let Some(w) = v.weight {
        b = b.weight(w);
    }
    match &v.alias {
        Some(a) => {
            b = b.alias_target(
                AliasTarget::builder()
                    .dns_name(&a.dns_name)
                    .hosted_zone_id(&a.zone_id)
                    .evaluate_target_health(a.evaluate_target_health)
                    .build()?,
            );
        }
        None => {
            if let Some(t) = v.ttl {
                b = b.ttl(t);
            }
            for val in &v.values {
                b = b.resource_records(ResourceRecord::builder().value(val).build()?);
            }
        }
    }
    b.build()
}

/// An SDK error as an [`EdgeError`]: AWS's code and message when AWS
/// answered with an error, the whole error chain otherwise.
pub(crate) fn sdk_error<E, R>(operation: &'static str, item: &str, e: SdkError<E, R>) -> EdgeError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.code() {
        Some(code) => EdgeError::Aws {
            operation,
            item: item.to_string(),
            code: code.to_string(),
            message: e.message().unwrap_or("(no message)").to_string(),
        },
        None => EdgeError::Transport {
            operation,
            item: item.to_string(),
            message: DisplayErrorContext(&e).to_string(),
        },
    }
}
