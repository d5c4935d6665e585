//! Passive outlier ejection, the control-plane half: the ejector. The data
//! plane only counts each backend's failures in a row
//! ([`cutover_proxy::outlier`]) and wakes this task when a count reaches
//! the service's `consecutive_failures`. The ejector then decides:
//!
//! - at most [`max_ejected`] of a pool's backends (those with a positive
//!   weight) are ejected at once, and never the pool's last available
//!   one, so a bad signal cannot empty a pool by itself;
//! - an ejection lasts `base_ejection`, doubled for each ejection in a row
//!   up to `max_ejection` ([`ejection_time`]); the doubling starts over
//!   once a backend has been back for `max_ejection` without being
//!   ejected again ([`doublings`]).
//!
//! An ejection, and a backend's return when its time is up, is a health
//! change like any other: a new snapshot with the same backends and the
//! same generation ([`Controller::set_ejection`]). A passing active check
//! lifts an ejection early ([`Controller::active_check_passed`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cutover_proxy::{Ejection, Pool, Snapshot};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::controller::Controller;

/// How many of a pool's `n` backends (with a positive weight) may be
/// ejected at once: `n × percent / 100` rounded down, but at least one
/// when `n ≥ 2` and `percent > 0` (else a pool of 2 to 9 backends at 10%
/// could never eject anything), and never all `n`: a pool of one backend
/// is never ejected (only active checks take it down), and at 100% one
/// backend always stays.
pub fn max_ejected(n: usize, percent: u8) -> usize {
    if n < 2 || percent == 0 {
        return 0;
    }
    (n * usize::from(percent) / 100).clamp(1, n - 1)
}

/// Why one more backend of a pool may not be ejected now: `n` backends
/// with a positive weight, `ejected` of them ejected already, `others`
/// other backends available (up and not ejected). `None`: it may.
fn refusal(n: usize, ejected: usize, others: usize, percent: u8) -> Option<String> {
    let cap = max_ejected(n, percent);
    if n < 2 {
        return Some("the only backend of its pool is never ejected".into());
    }
    if ejected >= cap {
        return Some(format!(
            "{ejected} of the pool's {n} backends are ejected already, the most max_ejected_percent = {percent} allows"
        ));
    }
    if others == 0 {
        return Some("it is the last available backend of its pool".into());
    }
    None
}

/// An ejection's length after `doublings`: `base` doubled that many times,
/// at most `max`.
pub fn ejection_time(base: Duration, max: Duration, doublings: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(doublings.min(31)))
        .min(max)
}

/// The doublings of a new ejection: one more than the last ejection's
/// when the backend came back from it less than `max` ago (it is still
/// flaky), else none. `last` is the last ejection's doublings and return.
pub fn doublings(last: Option<(u32, Instant)>, now: Instant, max: Duration) -> u32 {
    match last {
        Some((d, back)) if now.saturating_duration_since(back) < max => d.saturating_add(1).min(31),
        _ => 0,
    }
}

/// (service, pool, backend address)
type Key = (String, String, String);

/// What the ejector remembers of a backend.
#[derive(Debug, Default)]
struct Record {
    /// The doublings of its last ejection.
    doublings: u32,
    /// While ejected: when it is due back.
    until: Option<Instant>,
    /// When it last came back.
    back: Option<Instant>,
    /// A refusal was logged for it since its last ejection (logged once).
    refusal_logged: bool,
}

/// Runs the ejector until `shutdown` turns true (or its sender goes).
pub async fn run(controller: Arc<Controller>, mut shutdown: watch::Receiver<bool>) {
    let signal = controller.outlier_signal();
    let mut ejector = Ejector::default();
    loop {
        let due = ejector.next_return();
        tokio::select! {
            _ = signal.woken() => {}
            _ = sleep_until(due) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        ejector.pass(&controller, Instant::now());
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[derive(Default)]
struct Ejector {
    records: HashMap<Key, Record>,
}

impl Ejector {
    fn next_return(&self) -> Option<Instant> {
        self.records.values().filter_map(|r| r.until).min()
    }

    /// Returns the backends whose time is up, then ejects those whose
    /// failure streak reached the threshold, as far as the cap allows.
    fn pass(&mut self, controller: &Controller, now: Instant) {
        self.returns(controller, now);
        let snap = controller.snapshot().load_full();
        let mut tripped = Vec::new();
        for s in snap.services.iter().filter(|s| s.config.outlier.enabled) {
            for p in &s.pools {
                for b in &p.backends {
                    let failures = b.passive.failures();
                    if failures >= s.config.outlier.consecutive_failures {
                        // Acted on, whatever the decision: a refused
                        // backend is looked at again after a new streak.
                        b.passive.reset();
                        let key = (s.name().to_string(), p.name.clone(), b.addr.clone());
                        tripped.push((key, failures));
                    }
                }
            }
        }
        for (key, failures) in tripped {
            self.consider(controller, key, failures, now);
        }
        let snap = controller.snapshot().load_full();
        self.records
            .retain(|k, r| r.until.is_some() || locate(&snap, k).is_some());
    }

    /// Lifts the ejections that are due, and notes the returns of those an
    /// active check lifted early.
    fn returns(&mut self, controller: &Controller, now: Instant) {
        let snap = controller.snapshot().load_full();
        for (key, r) in self.records.iter_mut() {
            let Some(until) = r.until else { continue };
            let ejected = locate(&snap, key)
                .is_some_and(|(s, p, b)| snap.services[s].pools[p].ejections()[b].is_some());
            if ejected && until > now {
                continue;
            }
            if ejected {
                controller.set_ejection(&key.0, &key.1, &key.2, None);
                tracing::info!(service = %key.0, pool = %key.1, backend = %key.2, "ejection over: the backend gets requests again");
            }
            r.until = None;
            r.back = Some(now);
        }
    }

    /// Ejects the backend `key` after `failures` in a row, unless the cap
    /// or the pool's last available backend forbids it. Reads the snapshot
    /// in force now: each ejection counts for the next decision.
    fn consider(&mut self, controller: &Controller, key: Key, failures: u32, now: Instant) {
        let snap = controller.snapshot().load_full();
        let Some((si, pi, bi)) = locate(&snap, &key) else {
            return;
        };
        let s = &snap.services[si];
        let (p, o) = (&s.pools[pi], &s.config.outlier);
        if p.ejections()[bi].is_some() {
            return; // Already ejected: failures of requests sent before.
        }
        let rec = self.records.entry(key.clone()).or_default();
        let (n, ejected, others) = pool_counts(p, bi);
        if let Some(why) = refusal(n, ejected, others, o.max_ejected_percent) {
            if !std::mem::replace(&mut rec.refusal_logged, true) {
                tracing::warn!(service = %key.0, pool = %key.1, backend = %key.2, "not ejected after {failures} consecutive failures: {why}");
            }
            return;
        }
        let d = doublings(rec.back.map(|t| (rec.doublings, t)), now, o.max_ejection);
        let length = ejection_time(o.base_ejection, o.max_ejection, d);
        let last = p.backends[bi].passive.last_failure();
        let reason = format!(
            "{failures} consecutive failures: {}",
            last.map_or_else(|| "unknown".to_string(), |f| f.describe())
        );
        let since = SystemTime::now();
        let ejection = Ejection {
            reason: reason.clone(),
            since,
            // Bounded by validation (1 hour); never a panic all the same.
            until: since.checked_add(length).unwrap_or(since),
        };
        if controller.set_ejection(&key.0, &key.1, &key.2, Some(ejection)) {
            p.metrics.ejections.inc();
            *rec = Record {
                doublings: d,
                until: Some(cutover_proxy::time::later_tokio(now, length)),
                back: rec.back,
                refusal_logged: false,
            };
            tracing::warn!(service = %key.0, pool = %key.1, backend = %key.2, "backend ejected for {}: {reason}", humantime::format_duration(length));
        }
    }
}

/// For a decision on backend `bi` of `p`: its backends with a positive
/// weight, how many of them are ejected, and how many others are
/// available (up and not ejected).
fn pool_counts(p: &Pool, bi: usize) -> (usize, usize, usize) {
    let (mut n, mut ejected, mut others) = (0, 0, 0);
    for (i, ((w, h), e)) in p
        .weights()
        .iter()
        .zip(p.health())
        .zip(p.ejections())
        .enumerate()
    {
        if *w == 0 {
            continue;
        }
        n += 1;
        if e.is_some() {
            ejected += 1;
        } else if i != bi && h.is_up() {
            others += 1;
        }
    }
    (n, ejected, others)
}

/// A backend's indices in `snap`, by name.
fn locate(snap: &Snapshot, (service, pool, addr): &Key) -> Option<(usize, usize, usize)> {
    let (si, s) = snap.service(service)?;
    let pi = s.pool_index(pool)?;
    let bi = s.pools[pi].backends.iter().position(|b| &b.addr == addr)?;
    Some((si, pi, bi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(outlier: &str) -> Controller {
        let text = format!(
            "[services.web]\nsplit = {{ blue = 1, green = 0 }}\noutlier = {{ {outlier} }}\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[services.web.pools.blue]\nbackends = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\", {{ addr = \"127.0.0.1:4\", weight = 0 }}]\n[services.web.pools.green]\nbackends = [\"127.0.0.1:5\"]\n"
        );
        let config = cutover_config::parse("t.toml", &text).unwrap();
        let registry = prometheus::Registry::new();
        let metrics = Arc::new(cutover_proxy::ProxyMetrics::new(&registry).unwrap());
        Controller::new(config, &registry, metrics).unwrap()
    }

    /// `n` refused connects on backend `b` of pool `p`.
    fn fail(c: &Controller, p: usize, b: usize, n: u32) {
        let snap = c.snapshot().load_full();
        let signal = c.outlier_signal();
        for _ in 0..n {
            let backend = &snap.services[0].pools[p].backends[b];
            backend
                .passive
                .failure(cutover_proxy::outlier::Failure::ConnectRefused, 3, &signal);
        }
    }

    fn ejection(c: &Controller, p: usize, b: usize) -> Option<Ejection> {
        c.snapshot().load().services[0].pools[p].ejections()[b].clone()
    }

    #[tokio::test]
    async fn the_ejector_ejects_returns_and_doubles_within_the_cap() {
        let c =
            controller("consecutive_failures = 3, base_ejection = \"10s\", max_ejection = \"25s\"");
        let mut e = Ejector::default();
        let t0 = Instant::now();
        fail(&c, 0, 0, 2);
        e.pass(&c, t0);
        assert_eq!(ejection(&c, 0, 0), None, "two are not a streak of three");
        fail(&c, 0, 0, 1);
        e.pass(&c, t0);
        let first = ejection(&c, 0, 0).unwrap();
        assert_eq!(first.reason, "3 consecutive failures: connect refused");
        assert_eq!(
            first.until.duration_since(first.since).unwrap().as_secs(),
            10
        );
        assert_eq!(c.snapshot().load().generation, 1, "not an operator change");
        assert_eq!(e.next_return(), Some(t0 + Duration::from_secs(10)));

        // Three weighted backends at 50%: one at a time. The weight-0 one
        // does not count.
        fail(&c, 0, 1, 3);
        e.pass(&c, t0);
        assert_eq!(ejection(&c, 0, 1), None, "the cap holds");
        // Green's only backend is never ejected.
        fail(&c, 1, 0, 5);
        e.pass(&c, t0);
        assert_eq!(ejection(&c, 1, 0), None);

        // Back when its time is up; a new streak soon after: twice as long.
        e.pass(&c, t0 + Duration::from_secs(9));
        assert!(ejection(&c, 0, 0).is_some(), "not yet");
        let back = t0 + Duration::from_secs(10);
        e.pass(&c, back);
        assert_eq!(ejection(&c, 0, 0), None, "back after base_ejection");
        assert_eq!(e.next_return(), None);
        fail(&c, 0, 0, 3);
        e.pass(&c, back + Duration::from_secs(1));
        let second = ejection(&c, 0, 0).unwrap();
        assert_eq!(
            second.until.duration_since(second.since).unwrap().as_secs(),
            20
        );
        // A passing active check lifts it early; the ejector notes the return.
        c.active_check_passed("web", "blue", "127.0.0.1:1");
        assert_eq!(ejection(&c, 0, 0), None);
        let lifted = back + Duration::from_secs(2);
        e.pass(&c, lifted);
        assert_eq!(e.next_return(), None);
        // Ejected again right away: doubled again, capped at 25s.
        fail(&c, 0, 0, 3);
        e.pass(&c, lifted);
        let third = ejection(&c, 0, 0).unwrap();
        assert_eq!(
            third.until.duration_since(third.since).unwrap().as_secs(),
            25
        );
        // After max_ejection back without an ejection, it starts over.
        let later = lifted + Duration::from_secs(25);
        e.pass(&c, later);
        fail(&c, 0, 0, 3);
        e.pass(&c, later + Duration::from_secs(25));
        let fresh = ejection(&c, 0, 0).unwrap();
        assert_eq!(
            fresh.until.duration_since(fresh.since).unwrap().as_secs(),
            10
        );
    }

    #[tokio::test]
    async fn a_disabled_service_ejects_nothing() {
        let c = controller("enabled = false");
        let mut e = Ejector::default();
        fail(&c, 0, 0, 10);
        e.pass(&c, Instant::now());
        assert_eq!(ejection(&c, 0, 0), None);
    }

    #[test]
    fn the_cap_rounds_down_but_ejects_one_of_two_and_never_a_whole_pool() {
        // (backends, percent) -> at most this many ejected at once.
        let table = [
            ((0, 50), 0),
            ((1, 50), 0),
            ((1, 100), 0),
            ((2, 50), 1),
            ((2, 10), 1),
            ((2, 100), 1),
            ((3, 50), 1),
            ((4, 50), 2),
            ((5, 50), 2),
            ((10, 10), 1),
            ((10, 25), 2),
            ((10, 100), 9),
            ((20, 10), 2),
            ((4, 0), 0),
        ];
        for ((n, pct), want) in table {
            assert_eq!(max_ejected(n, pct), want, "{n} backends at {pct}%");
        }
    }

    #[test]
    fn refusals_name_the_rule() {
        assert!(refusal(1, 0, 0, 50).is_some_and(|w| w.contains("only backend")));
        assert!(refusal(4, 2, 2, 50).is_some_and(|w| w.contains("2 of the pool's 4")));
        assert!(refusal(4, 1, 0, 50).is_some_and(|w| w.contains("last available")));
        assert_eq!(refusal(4, 1, 2, 50), None);
        assert_eq!(refusal(2, 0, 1, 50), None);
        assert!(refusal(2, 1, 0, 50).is_some());
    }

    #[test]
    fn ejections_double_up_to_the_max() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(300));
        let got: Vec<u64> = (0..8)
            .map(|d| ejection_time(base, max, d).as_secs())
            .collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(ejection_time(base, max, u32::MAX), max, "no overflow");
        let odd = ejection_time(Duration::from_millis(300), Duration::from_secs(1), 2);
        assert_eq!(odd, Duration::from_secs(1));
    }

    #[test]
    fn the_doubling_starts_over_after_max_ejection_back() {
        let max = Duration::from_secs(300);
        let now = Instant::now() + Duration::from_secs(1000);
        assert_eq!(doublings(None, now, max), 0, "first ejection");
        let recently = now - Duration::from_secs(299);
        assert_eq!(doublings(Some((0, recently)), now, max), 1);
        assert_eq!(doublings(Some((4, recently)), now, max), 5);
        let long_ago = now - Duration::from_secs(300);
        assert_eq!(doublings(Some((4, long_ago)), now, max), 0);
        assert_eq!(doublings(Some((31, recently)), now, max), 31);
    }
}
