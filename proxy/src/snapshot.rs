//! The routing snapshot: services, pools, backends and splits as one
//! immutable value. Every change builds a new snapshot with a new generation
//! and swaps it in whole, so a reader never sees new weights with old
//! backends. Runtime state that must outlive a snapshot (upstream connection
//! pools, in-flight counters) lives in `Arc`s that the next snapshot reuses.
//!
//! Each pool also holds its backends' health ([`Health`]), set by the
//! control plane's active checks: a change of health is a new snapshot
//! too (built by [`Snapshot::with_health`], same backends, same
//! generation), so a request reads health and weights from the one
//! snapshot it loaded, with no lock and no atomic.
//!
//! Passive ejections ([`Ejection`], decided by the control plane's
//! ejector from the backends' failure counts, see [`crate::outlier`]) are
//! held beside health the same way ([`Snapshot::with_ejection`]).
//!
//! With slow start ([`crate::slow_start`]) a service routes through
//! effective bounds that may lag its configured split, and a pool draws
//! its backends by effective weights that may lag their configured ones;
//! the control plane moves both on in steps ([`Snapshot::step`]: same
//! backends, same generation).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use cutover_config::{Protocol, ServiceConfig};
use http::uri::Authority;
use http::HeaderName;

use prometheus::IntCounter;

use crate::metrics::{PoolMetrics, ProxyMetrics, UpstreamMetrics};
use crate::outlier::{Ejection, Passive, Signal};
use crate::slow_start::{self, SplitRamp, Warmup, WEIGHT_SCALE};
use crate::ticket::{Bounds, Split, Ticket};
use crate::upstream::{ConnRegistry, Upstream, UpstreamSettings};

pub struct Snapshot {
    pub generation: u64,
    pub services: Vec<Arc<Service>>,
}

#[derive(Clone)]
pub struct Service {
    pub config: Arc<ServiceConfig>,
    pub pools: Vec<Arc<Pool>>,
    /// The configured split: what the operator set (the state file and the
    /// audit record it).
    pub split: Split,
    /// Where tickets map now: the split's bounds, or during a slow start
    /// part of the way there. Routing reads this.
    effective: Bounds,
    /// The slow start of the split in progress, if any.
    ramp: Option<SplitRamp>,
    pub override_header: Option<HeaderName>,
    /// `; Max-Age=...; Path=/; HttpOnly; SameSite=Lax[; Secure]`, built once.
    pub cookie_attributes: String,
    /// `cutover_failovers_total` for each pair of different pools (from,
    /// to), at `from * pools + to`; resolved once.
    failovers: Arc<[Option<IntCounter>]>,
    /// Wakes the control plane's ejector (the process's one signal).
    pub(crate) outlier: Arc<Signal>,
}

/// A backend's health as the active checks last found it. Backends start
/// up (a start or a new backend never refuses traffic before its first
/// checks), and a backend of a pool without checks stays up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up,
    Down {
        /// The last failed check, e.g. `connect refused`, `answered 500`.
        reason: String,
        since: SystemTime,
    },
}

impl Health {
    pub fn is_up(&self) -> bool {
        matches!(self, Health::Up)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down { .. } => "down",
        }
    }
}

pub struct Pool {
    pub name: String,
    /// Send a PROXY v2 header to backends on tcp-listener connections.
    pub send_proxy_protocol: bool,
    pub backends: Vec<Arc<Backend>>,
    /// Each backend's configured weight, aligned with `backends`: held by
    /// the pool, not the backend, so a reload that re-weights a backend
    /// keeps its `Arc<Backend>` (its connections and in-flight counts).
    weights: Vec<u32>,
    /// Each backend's health, aligned with `backends`.
    health: Vec<Health>,
    /// Each backend's passive ejection, if any, aligned with `backends`.
    ejections: Vec<Option<Ejection>>,
    /// No backend with a positive weight would be available but for
    /// ejections: they are ignored, so ejections never empty a pool (the
    /// others went down by their checks after the ejections).
    ejections_waived: bool,
    /// Backends warming up after they came back up (slow start), aligned
    /// with `backends`.
    warmups: Vec<Option<Warmup>>,
    /// Whether any backend is warming up (then the pick weighs load by
    /// effective weights, else by configured ones: the same ratios).
    warming: bool,
    /// Cumulative effective weights, for the weighted draw: each
    /// backend's weight in [`WEIGHT_SCALE`] units (its configured weight,
    /// less while it warms up, 0 when unavailable, so the pick never lands
    /// on it) is the step from the entry before.
    cum_weights: Vec<u64>,
    /// Backends with a positive weight that are available.
    available: usize,
    pub metrics: PoolMetrics,
}

pub struct Backend {
    pub addr: String,
    pub authority: Authority,
    pub protocol: Protocol,
    in_flight: AtomicI64,
    pub(crate) upstream: Upstream,
    /// Consecutive failures, for passive ejection.
    pub passive: Passive,
    /// The upstream connections this backend opened.
    pub connections: Arc<ConnRegistry>,
    settings: UpstreamSettings,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            generation: 0,
            services: Vec::new(),
        }
    }

    /// Builds a snapshot from validated service configs and the split to use
    /// for each (aligned with `services`), reusing the backends and pool
    /// metrics of `prev` where they are the same. `outlier` is the signal
    /// the backends' failure streaks wake the ejector with.
    pub fn build(
        services: &[ServiceConfig],
        splits: &[Vec<u32>],
        generation: u64,
        prev: Option<&Snapshot>,
        metrics: &ProxyMetrics,
        outlier: &Arc<Signal>,
    ) -> Snapshot {
        let services = services
            .iter()
            .zip(splits)
            .map(|(sc, split)| Arc::new(Service::build(sc, split.clone(), prev, metrics, outlier)))
            .collect();
        Snapshot {
            generation,
            services,
        }
    }

    pub fn service(&self, name: &str) -> Option<(usize, &Arc<Service>)> {
        self.services
            .iter()
            .enumerate()
            .find(|(_, s)| s.config.name == name)
    }

    /// A new snapshot with one service's split replaced, in force at once,
    /// and the generation bumped; everything else is shared with `self`.
    /// A pool that loses all its traffic gets fresh backends: the old
    /// clients (and their idle keep-alive connections) go away as soon as
    /// no in-flight request holds them, and the drainer cuts what is left
    /// at the drain deadline.
    pub fn with_split(&self, service: usize, split: Vec<u32>) -> Snapshot {
        self.with_service(service, self.generation + 1, |s| {
            let split = Split::new(split);
            let mut s2 = s.with_effective(split.bounds().clone(), None);
            s2.split = split;
            s2
        })
    }

    /// Like [`Snapshot::with_split`], but tickets keep mapping where they
    /// map now: [`Snapshot::step`] moves them to the new split over the
    /// service's `slow_start` window, from `now`.
    pub fn with_ramped_split(&self, service: usize, split: Vec<u32>, now: Instant) -> Snapshot {
        self.with_service(service, self.generation + 1, |s| {
            let mut s2 = Service::clone(s);
            s2.split = Split::new(split);
            s2.ramp = Some(SplitRamp::start(s.effective.clone(), now));
            s2
        })
    }

    /// Every ramp moved on to `now` (split ramps and warming backends),
    /// same generation, same backends (but a pool whose last tickets the
    /// ramp took gets fresh ones, as in [`Snapshot::with_split`]). `None`
    /// when nothing ramps.
    pub fn step(&self, now: Instant) -> Option<Snapshot> {
        let mut stepped = false;
        let services = self
            .services
            .iter()
            .map(|s| match s.stepped(now) {
                Some(s2) => {
                    stepped = true;
                    Arc::new(s2)
                }
                None => s.clone(),
            })
            .collect();
        stepped.then(|| Snapshot {
            generation: self.generation,
            services,
        })
    }

    /// How soon the next [`Snapshot::step`] is due: the shortest step of
    /// the services with a ramp in progress; `None` when none has.
    pub fn step_interval(&self) -> Option<Duration> {
        self.services
            .iter()
            .filter(|s| s.ramping())
            .map(|s| slow_start::step_interval(s.config.slow_start.unwrap_or_default()))
            .min()
    }

    /// A new snapshot in which one backend (indices) starts warming up
    /// from `now`: its weight in its pool's draw ramps up over the
    /// service's `slow_start` window. Same generation, same backends.
    /// `None` without slow start, or when there is no such backend or it
    /// is not available (down or ejected).
    pub fn with_warmup(
        &self,
        service: usize,
        pool: usize,
        backend: usize,
        now: Instant,
    ) -> Option<Snapshot> {
        let s = self.services.get(service)?;
        s.config.slow_start?;
        let p = s.pools.get(pool)?;
        if backend >= p.backends.len() || !p.is_available(backend) {
            return None;
        }
        let mut warmups = p.warmups.clone();
        warmups[backend] = Some(Warmup::start(now));
        let p2 = p.rebuilt(p.health.clone(), p.ejections.clone(), warmups);
        Some(self.with_service(service, self.generation, |s| {
            let mut s2 = Service::clone(s);
            s2.pools[pool] = Arc::new(p2);
            s2
        }))
    }

    /// A new snapshot with service `i` replaced by `f` of it, at `generation`.
    fn with_service(
        &self,
        i: usize,
        generation: u64,
        f: impl FnOnce(&Service) -> Service,
    ) -> Snapshot {
        let mut services = self.services.clone();
        if let Some(s) = services.get_mut(i) {
            *s = Arc::new(f(s));
        }
        Snapshot {
            generation,
            services,
        }
    }

    /// A new snapshot with one backend's health replaced (`service`,
    /// `pool`, `backend` are indices), everything else shared with `self`:
    /// the backends keep their connections and in-flight counts. `None`
    /// when there is no such backend or its health is already `health`.
    ///
    /// The generation stays: it counts operator changes (a compare-and-set
    /// on it must not fail because a backend flapped), and health is shown
    /// on its own in the status.
    pub fn with_health(
        &self,
        service: usize,
        pool: usize,
        backend: usize,
        health: Health,
    ) -> Option<Snapshot> {
        self.with_pool(service, pool, |p| {
            if *p.health.get(backend)? == health {
                return None;
            }
            let mut all = p.health.clone();
            all[backend] = health;
            Some(p.with_state(all, p.ejections.clone()))
        })
    }

    /// A new snapshot with one backend's passive ejection set (`Some`) or
    /// lifted (`None`); like [`Snapshot::with_health`], everything else is
    /// shared and the generation stays. `None` when there is no such
    /// backend or nothing changes.
    pub fn with_ejection(
        &self,
        service: usize,
        pool: usize,
        backend: usize,
        ejection: Option<Ejection>,
    ) -> Option<Snapshot> {
        self.with_pool(service, pool, |p| {
            if *p.ejections.get(backend)? == ejection {
                return None;
            }
            let mut all = p.ejections.clone();
            all[backend] = ejection;
            Some(p.with_state(p.health.clone(), all))
        })
    }

    /// The same snapshot (and generation) with one pool replaced by what
    /// `f` makes of it; `None` when there is no such pool or `f` says so.
    fn with_pool(
        &self,
        service: usize,
        pool: usize,
        f: impl FnOnce(&Pool) -> Option<Pool>,
    ) -> Option<Snapshot> {
        let s = self.services.get(service)?;
        let new_pool = f(s.pools.get(pool)?)?;
        let mut s2 = Service::clone(s);
        s2.pools[pool] = Arc::new(new_pool);
        let mut services = self.services.clone();
        services[service] = Arc::new(s2);
        Some(Snapshot {
            generation: self.generation,
            services,
        })
    }
}

impl Service {
    fn build(
        sc: &ServiceConfig,
        split: Vec<u32>,
        prev: Option<&Snapshot>,
        metrics: &ProxyMetrics,
        outlier: &Arc<Signal>,
    ) -> Service {
        let prev_service = prev
            .and_then(|p| p.service(&sc.name))
            .map(|(_, s)| s.clone());
        let base = UpstreamSettings::from_timeouts(&sc.timeouts);
        let pools = sc
            .pools
            .iter()
            .map(|pc| {
                let prev_pool = prev_service
                    .as_ref()
                    .and_then(|s| s.pools.iter().find(|p| p.name == pc.name).cloned());
                let settings = UpstreamSettings {
                    tls: pool_tls(pc, prev_pool.as_deref()),
                    ..base.clone()
                };
                let pool_metrics = metrics.pool(&sc.name, &pc.name);
                // Health and ejections carry over by address: a rebuilt
                // snapshot must not bring a down or ejected backend back
                // before its checks or its time do.
                let carried = |bc: &cutover_config::BackendConfig| {
                    let p = prev_pool.as_ref()?;
                    let i = p.backends.iter().position(|b| b.addr == bc.addr)?;
                    Some((p.health.get(i)?.clone(), p.ejections.get(i)?.clone()))
                };
                let (health, ejections): (Vec<Health>, Vec<Option<Ejection>>) = pc
                    .backends
                    .iter()
                    .map(|bc| carried(bc).unwrap_or((Health::Up, None)))
                    .unzip();
                // Warm-ups too (a reload in the middle of one goes on).
                let warmups: Vec<Option<Warmup>> = pc
                    .backends
                    .iter()
                    .map(|bc| {
                        let p = prev_pool.as_ref()?;
                        let i = p.backends.iter().position(|b| b.addr == bc.addr)?;
                        p.warmups.get(i).copied().flatten()
                    })
                    .collect();
                let weights: Vec<u32> = pc.backends.iter().map(|bc| bc.weight).collect();
                let backends: Vec<Arc<Backend>> = pc
                    .backends
                    .iter()
                    .map(|bc| {
                        let reuse = prev_pool.as_ref().and_then(|p| {
                            p.backends
                                .iter()
                                .find(|b| {
                                    b.addr == bc.addr
                                        && b.protocol == bc.protocol
                                        && b.settings == settings
                                })
                                .cloned()
                        });
                        reuse.unwrap_or_else(|| {
                            Arc::new(Backend::new(
                                &bc.addr,
                                bc.protocol,
                                settings.clone(),
                                pool_metrics.upstream.clone(),
                            ))
                        })
                    })
                    .collect();
                Arc::new(Pool::assemble(
                    pc.name.clone(),
                    pc.send_proxy_protocol,
                    (backends, weights),
                    health,
                    ejections,
                    warmups,
                    pool_metrics,
                ))
            })
            .collect();
        let n = sc.pools.len();
        let failovers = (0..n * n)
            .map(|i| {
                let (from, to) = (&sc.pools[i / n].name, &sc.pools[i % n].name);
                (from != to).then(|| metrics.failover(&sc.name, from, to))
            })
            .collect();
        let mut cookie_attributes = format!(
            "; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
            sc.cookie.max_age.as_secs()
        );
        if sc.cookie.secure {
            cookie_attributes.push_str("; Secure");
        }
        let built = Service {
            override_header: sc
                .override_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            config: Arc::new(sc.clone()),
            pools,
            effective: Split::new(split.clone()).bounds().clone(),
            ramp: None,
            split: Split::new(split),
            cookie_attributes,
            failovers,
            outlier: outlier.clone(),
        };
        match prev_service {
            Some(prev) => built.carried_from(&prev),
            None => built,
        }
    }

    /// This (rebuilt) service with where tickets map now taken from `prev`
    /// when both have the same pools in the same order: the same split
    /// keeps its slow start ramp, if one runs; a new split is in force at
    /// once, and a pool that loses its last tickets gets fresh backends,
    /// as after [`Snapshot::with_split`].
    fn carried_from(mut self, prev: &Service) -> Service {
        let same_pools = self.pools.len() == prev.pools.len()
            && self
                .pools
                .iter()
                .zip(&prev.pools)
                .all(|(a, b)| a.name == b.name);
        if !same_pools {
            return self;
        }
        if self.split.weights() == prev.split.weights() {
            self.effective = prev.effective.clone();
            self.ramp = prev.ramp.clone();
            return self;
        }
        let to = self.split.bounds().clone();
        self.effective = prev.effective.clone();
        self.with_effective(to, None)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The pool a ticket maps to now (through the effective bounds).
    pub fn pool_for(&self, ticket: Ticket) -> usize {
        self.effective.pool_for(ticket)
    }

    /// Where tickets map now: the configured split's bounds, or during a
    /// slow start part of the way there.
    pub fn effective(&self) -> &Bounds {
        &self.effective
    }

    /// The slow start of the split in progress, if any.
    pub fn ramp(&self) -> Option<&SplitRamp> {
        self.ramp.as_ref()
    }

    /// Whether a slow start is in progress: of the split, or of a backend.
    pub fn ramping(&self) -> bool {
        self.ramp.is_some() || self.pools.iter().any(|p| p.warming())
    }

    /// This service with tickets mapping through `effective`: a pool that
    /// loses its last ticket gets fresh backends (see
    /// [`Snapshot::with_split`]).
    fn with_effective(&self, effective: Bounds, ramp: Option<SplitRamp>) -> Service {
        let mut s2 = Service::clone(self);
        s2.pools = self
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if self.effective.has_share(i) && !effective.has_share(i) {
                    Arc::new(p.refreshed())
                } else {
                    p.clone()
                }
            })
            .collect();
        s2.effective = effective;
        s2.ramp = ramp;
        s2
    }

    /// This service one step on at `now`: its split ramp (paused while a
    /// pool it raises has no backend up) and its warming backends. `None`
    /// when nothing ramps.
    fn stepped(&self, now: Instant) -> Option<Service> {
        if !self.ramping() {
            return None;
        }
        // Without a window (none configured) a ramp ends at once.
        let window = self.config.slow_start.unwrap_or_default();
        let mut s2 = match &self.ramp {
            Some(r) => {
                let r = r.advanced(now, self.ramp_blocked(r));
                if r.done(window) {
                    self.with_effective(self.split.bounds().clone(), None)
                } else {
                    let bounds = r.bounds(self.split.bounds(), window);
                    self.with_effective(bounds, Some(r))
                }
            }
            None => Service::clone(self),
        };
        for p in s2.pools.iter_mut().filter(|p| p.warming()) {
            *p = Arc::new(p.warmed(now, window));
        }
        Some(s2)
    }

    /// A pool the ramp `r` gives more tickets has no backend up.
    fn ramp_blocked(&self, r: &SplitRamp) -> bool {
        let to = self.split.bounds();
        self.pools
            .iter()
            .enumerate()
            .any(|(i, p)| to.width(i) > r.from.width(i) && p.all_down())
    }

    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }

    /// With `failover = true`, when every backend of pool `from` is down:
    /// the next pool after it in ticket order (wrapping) that has a share
    /// of the split and an available backend; failing that, the next pool
    /// with an available backend even at weight 0 (after `switch web green`
    /// to a dead green, blue still runs: serving from it is what failover
    /// is for). Returns the pool's index, the pool and the backend, counted
    /// in `cutover_failovers_total`. `None` without failover or such a
    /// pool. Only called once `from` had no backend to pick.
    pub fn failover(&self, from: usize) -> Option<(usize, &Arc<Pool>, &Arc<Backend>)> {
        if !self.config.failover {
            return None;
        }
        let n = self.pools.len();
        let others = || (1..n).map(|k| (from + k) % n);
        let with_share = others().filter(|to| self.effective.has_share(*to));
        let (to, pool, backend) = with_share.chain(others()).find_map(|to| {
            let pool = self.pools.get(to)?;
            pool.pick().map(|b| (to, pool, b))
        })?;
        if let Some(Some(c)) = self.failovers.get(from * n + to) {
            c.inc();
        }
        Some((to, pool, backend))
    }
}

impl Pool {
    /// A pool whose backends are all up.
    pub fn new(
        name: String,
        backends: Vec<Arc<Backend>>,
        weights: Vec<u32>,
        metrics: PoolMetrics,
    ) -> Pool {
        let health = vec![Health::Up; backends.len()];
        let ejections = vec![None; backends.len()];
        Pool::assemble(
            name,
            false,
            (backends, weights),
            health,
            ejections,
            Vec::new(),
            metrics,
        )
    }

    /// A pool with its backends (and their weights), health, ejections and
    /// warm-ups (aligned with `backends`; missing ones are up, not ejected
    /// and warm; a missing weight is 0): the
    /// weighted draw covers the available backends only, each by its
    /// effective weight, and `cutover_backend_up` follows.
    fn assemble(
        name: String,
        send_proxy_protocol: bool,
        (backends, mut weights): (Vec<Arc<Backend>>, Vec<u32>),
        mut health: Vec<Health>,
        mut ejections: Vec<Option<Ejection>>,
        mut warmups: Vec<Option<Warmup>>,
        metrics: PoolMetrics,
    ) -> Pool {
        weights.resize(backends.len(), 0);
        health.resize(backends.len(), Health::Up);
        ejections.resize(backends.len(), None);
        warmups.resize(backends.len(), None);
        // Ejections are waived when only ejected backends could serve.
        let could_serve = |ejected: bool| {
            weights
                .iter()
                .zip(health.iter().zip(&ejections))
                .any(|(w, (h, e))| *w > 0 && h.is_up() && e.is_some() == ejected)
        };
        let ejections_waived = !could_serve(false) && could_serve(true);
        let mut pool = Pool {
            name,
            send_proxy_protocol,
            backends,
            weights,
            health,
            ejections,
            ejections_waived,
            warming: warmups.iter().any(Option::is_some),
            warmups,
            cum_weights: Vec::new(),
            available: 0,
            metrics,
        };
        let mut cum = 0u64;
        let mut available = 0;
        let mut cum_weights = Vec::with_capacity(pool.backends.len());
        for (i, b) in pool.backends.iter().enumerate() {
            let weight = pool.weights[i];
            let w = match (pool.is_available(i), pool.warmups[i]) {
                (false, _) => 0,
                (true, Some(warm)) => warm.weight(weight),
                (true, None) => u64::from(weight) * WEIGHT_SCALE,
            };
            if w > 0 {
                available += 1;
            }
            cum += w;
            cum_weights.push(cum);
            pool.metrics.set_backend_up(&b.addr, pool.is_available(i));
        }
        pool.cum_weights = cum_weights;
        pool.available = available;
        pool
    }

    /// The same backends (connections, in-flight counts) with new health
    /// and ejections; a backend no longer available stops warming up (it
    /// starts again when it comes back).
    fn with_state(&self, health: Vec<Health>, ejections: Vec<Option<Ejection>>) -> Pool {
        let warmups = self
            .warmups
            .iter()
            .zip(health.iter().zip(&ejections))
            .map(|(w, (h, e))| w.filter(|_| h.is_up() && e.is_none()))
            .collect();
        self.rebuilt(health, ejections, warmups)
    }

    /// The same backends (connections, in-flight counts) with new health,
    /// ejections and warm-ups.
    fn rebuilt(
        &self,
        health: Vec<Health>,
        ejections: Vec<Option<Ejection>>,
        warmups: Vec<Option<Warmup>>,
    ) -> Pool {
        Pool::assemble(
            self.name.clone(),
            self.send_proxy_protocol,
            (self.backends.clone(), self.weights.clone()),
            health,
            ejections,
            warmups,
            self.metrics.clone(),
        )
    }

    /// The same backends with their warm-ups moved on to `now`.
    fn warmed(&self, now: Instant, window: Duration) -> Pool {
        let warmups = self
            .warmups
            .iter()
            .map(|w| w.and_then(|w| w.at(now, window)))
            .collect();
        self.rebuilt(self.health.clone(), self.ejections.clone(), warmups)
    }

    /// The same pool with fresh backends (same addresses, weights, health,
    /// warm-ups, metrics).
    fn refreshed(&self) -> Pool {
        let backends = self.backends.iter().map(|b| Arc::new(b.fresh())).collect();
        Pool::assemble(
            self.name.clone(),
            self.send_proxy_protocol,
            (backends, self.weights.clone()),
            self.health.clone(),
            self.ejections.clone(),
            self.warmups.clone(),
            self.metrics.clone(),
        )
    }

    /// Whether backend `i` may get new requests and tunnels: the one
    /// place that decides. Up by its active checks and not ejected by
    /// passive signals (unless ejections are waived: nothing else is
    /// available). Read when the pool is built, never per request.
    fn is_available(&self, i: usize) -> bool {
        let up = self.health.get(i).is_some_and(Health::is_up);
        let ejected = self.ejections.get(i).is_some_and(Option::is_some);
        up && (!ejected || self.ejections_waived)
    }

    /// Backend `i`'s configured weight in this pool (0 for no such backend).
    #[inline]
    pub fn configured_weight(&self, i: usize) -> u32 {
        self.weights.get(i).copied().unwrap_or(0)
    }

    /// Each backend's configured weight, aligned with `backends`.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// Each backend's health, aligned with `backends`.
    pub fn health(&self) -> &[Health] {
        &self.health
    }

    /// Each backend's passive ejection, aligned with `backends`.
    pub fn ejections(&self) -> &[Option<Ejection>] {
        &self.ejections
    }

    /// Ejections are ignored because without them no backend with a
    /// positive weight would be available.
    pub fn ejections_waived(&self) -> bool {
        self.ejections_waived
    }

    /// Whether a backend of this pool is warming up.
    pub fn warming(&self) -> bool {
        self.warming
    }

    /// Backend `i`'s warm-up, while it lasts.
    pub fn warmup(&self, i: usize) -> Option<&Warmup> {
        self.warmups.get(i).and_then(Option::as_ref)
    }

    /// Backend `i`'s weight in the draw now: its configured weight, a part
    /// of it while it warms up, 0 when it is not available.
    pub fn effective_weight(&self, i: usize) -> f64 {
        self.weight(i) as f64 / WEIGHT_SCALE as f64
    }

    /// How many backends with a positive weight are available.
    pub fn available(&self) -> usize {
        self.available
    }

    /// Every backend that could get traffic (positive weight) is down.
    pub fn all_down(&self) -> bool {
        self.available == 0 && self.weights.iter().any(|w| *w > 0)
    }

    /// Why nothing can be picked: `all 2 backends of pool green are down:
    /// 127.0.0.1:9001 connect refused, 127.0.0.1:9002 answered 500`.
    pub fn down_message(&self) -> String {
        let down: Vec<String> = self
            .backends
            .iter()
            .zip(&self.health)
            .zip(&self.weights)
            .filter(|(_, w)| **w > 0)
            .map(|((b, h), _)| match h {
                Health::Down { reason, .. } => format!("{} {reason}", b.addr),
                Health::Up => format!("{} unavailable", b.addr),
            })
            .collect();
        let n = down.len();
        let all = if n == 1 {
            format!("the only backend of pool {} is down", self.name)
        } else {
            format!("all {n} backends of pool {} are down", self.name)
        };
        format!("{all}: {}", down.join(", "))
    }

    /// Requests in flight on this pool (all snapshots' requests included).
    pub fn in_flight(&self) -> i64 {
        self.metrics.in_flight.get()
    }

    /// The effective weights of backends `a` and `b`, for a pick while a
    /// backend warms up (rare: kept off the usual path).
    #[cold]
    #[inline(never)]
    fn weights_of(&self, a: usize, b: usize) -> (u64, u64) {
        (self.weight(a), self.weight(b))
    }

    /// Backend `i`'s effective weight in [`WEIGHT_SCALE`] units: its step
    /// of `cum_weights`.
    fn weight(&self, i: usize) -> u64 {
        let upto = self.cum_weights.get(i).copied().unwrap_or(0);
        let before = match i {
            0 => 0,
            _ => self.cum_weights.get(i - 1).copied().unwrap_or(0),
        };
        upto.saturating_sub(before)
    }

    fn draw(&self, total: u64) -> usize {
        let x = fastrand::u64(..total);
        self.cum_weights.partition_point(|c| *c <= x)
    }

    /// Another backend for a retry: drawn by weight among the available
    /// ones that speak `protocol` and are not in `tried`. (Off the hot
    /// path: only a request that never reached its backend comes here.)
    pub fn pick_other(&self, tried: &[Arc<Backend>], protocol: Protocol) -> Option<&Arc<Backend>> {
        let weight = |i: usize, b: &Arc<Backend>| {
            let usable = self.is_available(i)
                && b.protocol == protocol
                && !tried.iter().any(|t| Arc::ptr_eq(t, b));
            if usable {
                u64::from(self.configured_weight(i))
            } else {
                0
            }
        };
        let total: u64 = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| weight(i, b))
            .sum();
        if total == 0 {
            return None;
        }
        let mut x = fastrand::u64(..total);
        for (i, b) in self.backends.iter().enumerate() {
            let w = weight(i, b);
            if x < w {
                return Some(b);
            }
            x -= w;
        }
        None
    }

    /// Weighted power of two choices: draw two backends by weight, take the
    /// one with fewer requests in flight per unit of weight.
    pub fn pick(&self) -> Option<&Arc<Backend>> {
        let total = *self.cum_weights.last()?;
        if total == 0 {
            return None;
        }
        if self.backends.len() == 1 {
            return self.backends.first();
        }
        let a = self.draw(total);
        let mut b = self.draw(total);
        if b == a {
            b = self.draw(total);
        }
        let (ba, bb) = (self.backends.get(a)?, self.backends.get(b)?);
        // While a backend warms up its weight is less than configured.
        let (wa, wb) = if self.warming {
            self.weights_of(a, b)
        } else {
            (
                u64::from(self.configured_weight(a)),
                u64::from(self.configured_weight(b)),
            )
        };
        // load_a / w_a <= load_b / w_b, without division.
        let la = ba.in_flight() as i128 * i128::from(wb);
        let lb = bb.in_flight() as i128 * i128::from(wa);
        Some(if la <= lb { ba } else { bb })
    }
}

/// A pool's TLS to its backends: the previous snapshot's when its config
/// is the same (files are read when the config changes, not per build),
/// else loaded now. Files that cannot be loaded any more (start and
/// reload check them first) give a TLS that fails every connect, never
/// plain TCP.
fn pool_tls(
    pc: &cutover_config::PoolConfig,
    prev: Option<&Pool>,
) -> Option<Arc<crate::upstream::tls::UpstreamTls>> {
    use crate::upstream::tls::UpstreamTls;
    let cfg = pc.tls.as_ref()?;
    let kept = prev
        .and_then(|p| p.backends.first())
        .and_then(|b| b.settings.tls.clone())
        .filter(|t| t.config() == cfg);
    if kept.is_some() {
        return kept;
    }
    Some(Arc::new(UpstreamTls::load(cfg).unwrap_or_else(|e| {
        tracing::error!(pool = %pc.name, "TLS to the pool's backends: {e}; its connects fail until this is fixed");
        UpstreamTls::failed(cfg, e.to_string())
    })))
}

impl Backend {
    pub fn new(
        addr: &str,
        protocol: Protocol,
        settings: UpstreamSettings,
        metrics: UpstreamMetrics,
    ) -> Backend {
        let connections = Arc::new(ConnRegistry::new(metrics));
        Backend {
            addr: addr.to_string(),
            // Validated config guarantees host:port; a fallback keeps this total.
            authority: Authority::try_from(addr)
                .unwrap_or_else(|_| Authority::from_static("invalid.invalid:1")),
            protocol,
            in_flight: AtomicI64::new(0),
            upstream: Upstream::new(addr, protocol, settings.clone(), connections.clone()),
            passive: Passive::default(),
            connections,
            settings,
        }
    }

    /// The same backend with no pooled connections.
    pub fn fresh(&self) -> Backend {
        Backend::new(
            &self.addr,
            self.protocol,
            self.settings.clone(),
            self.connections.metrics().clone(),
        )
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Its pool's TLS, if the pool has `tls` (health checks use it too).
    pub fn tls(&self) -> Option<&Arc<crate::upstream::tls::UpstreamTls>> {
        self.settings.tls.as_ref()
    }

    pub(crate) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Pool {
        fn with_health(&self, health: Vec<Health>) -> Pool {
            self.with_state(health, self.ejections.clone())
        }
    }

    fn pool(weights: &[u32]) -> Pool {
        let reg = prometheus::Registry::new();
        let m = ProxyMetrics::new(&reg).unwrap();
        let pm = m.pool("s", "p");
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, _)| {
                Arc::new(Backend::new(
                    &format!("127.0.0.1:{}", 1000 + i),
                    Protocol::Http1,
                    UpstreamSettings {
                        tls: None,
                        connect_timeout: std::time::Duration::from_secs(1),
                        h2_ping: None,
                        tcp_keepalive: None,
                    },
                    pm.upstream.clone(),
                ))
            })
            .collect();
        Pool::new("p".into(), backends, weights.to_vec(), pm)
    }

    #[tokio::test]
    async fn pick_follows_weights_when_idle() {
        let p = pool(&[1, 3, 0]);
        let mut counts = [0usize; 3];
        for _ in 0..8000 {
            let b = p.pick().unwrap();
            counts[p.backends.iter().position(|x| Arc::ptr_eq(x, b)).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0, "a weight-0 backend gets nothing");
        // Two choices skew toward heavier backends less than 1:3 but keep the order.
        assert!(counts[1] > counts[0], "{counts:?}");
    }

    #[tokio::test]
    async fn pick_avoids_the_loaded_backend() {
        let p = pool(&[1, 1]);
        for _ in 0..50 {
            p.backends[0].enter();
        }
        let to_idle = (0..1000)
            .filter(|_| Arc::ptr_eq(p.pick().unwrap(), &p.backends[1]))
            .count();
        // Whenever the two draws differ the idle one wins: about 3/4 of picks.
        assert!(to_idle > 650, "{to_idle}");
    }

    fn down(reason: &str) -> Health {
        Health::Down {
            reason: reason.into(),
            since: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn a_down_backend_is_never_picked_and_an_all_down_pool_says_why() {
        let p = pool(&[1, 1, 1]);
        let p = p.with_health(vec![Health::Up, down("connect refused"), Health::Up]);
        assert_eq!(p.available(), 2);
        assert!(!p.all_down());
        for _ in 0..2000 {
            let b = p.pick().unwrap();
            assert!(!Arc::ptr_eq(b, &p.backends[1]));
        }
        let p = p.with_health(vec![
            down("answered 500"),
            down("connect refused"),
            down("x"),
        ]);
        assert!(p.pick().is_none());
        assert!(p.all_down());
        assert_eq!(
            p.down_message(),
            "all 3 backends of pool p are down: 127.0.0.1:1000 answered 500, \
             127.0.0.1:1001 connect refused, 127.0.0.1:1002 x"
        );
        let one = pool(&[1]).with_health(vec![down("answered 503")]);
        assert!(one.pick().is_none());
        assert_eq!(
            one.down_message(),
            "the only backend of pool p is down: 127.0.0.1:1000 answered 503"
        );
    }

    #[tokio::test]
    async fn a_health_change_keeps_the_backends_and_the_generation() {
        let reg = prometheus::Registry::new();
        let m = ProxyMetrics::new(&reg).unwrap();
        let config = cutover_config::parse(
            "t.toml",
            "[services.web]\nsplit = { blue = 1, green = 1 }\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[services.web.pools.blue]\nbackends = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n[services.web.pools.green]\nbackends = [\"127.0.0.1:3\"]\n",
        )
        .unwrap();
        let snap = Snapshot::build(
            &config.services,
            &[vec![1, 1]],
            7,
            None,
            &m,
            &Arc::default(),
        );
        assert!(snap.with_health(0, 0, 0, Health::Up).is_none(), "no change");
        let next = snap.with_health(0, 0, 1, down("connect refused")).unwrap();
        assert_eq!(next.generation, 7);
        let (a, b) = (&snap.services[0].pools[0], &next.services[0].pools[0]);
        assert!(Arc::ptr_eq(&a.backends[0], &b.backends[0]));
        assert!(Arc::ptr_eq(&a.backends[1], &b.backends[1]));
        assert_eq!(b.available(), 1);
        assert!(Arc::ptr_eq(
            &snap.services[0].pools[1],
            &next.services[0].pools[1]
        ));
        // A split change, and a rebuild from the previous snapshot, keep it.
        let split = next.with_split(0, vec![0, 1]);
        assert!(!split.services[0].pools[0].health()[1].is_up());
        let rebuilt = Snapshot::build(
            &config.services,
            &[vec![1, 1]],
            8,
            Some(&next),
            &m,
            &Arc::default(),
        );
        assert!(!rebuilt.services[0].pools[0].health()[1].is_up());
        assert!(rebuilt.services[0].pools[0].health()[0].is_up());
        let gauge = crate::metrics::names::BACKEND_UP;
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&reg.gather())
            .unwrap();
        let line = |addr: &str| {
            text.lines()
                .find(|l| l.starts_with(gauge) && l.contains(&format!("\"{addr}\"")))
                .map(str::to_string)
        };
        assert!(
            line("127.0.0.1:2").is_some_and(|l| l.ends_with(" 0")),
            "{text}"
        );
        assert!(
            line("127.0.0.1:1").is_some_and(|l| l.ends_with(" 1")),
            "{text}"
        );
    }

    #[tokio::test]
    async fn failover_takes_the_next_pool_with_a_share_then_any_pool_up() {
        let reg = prometheus::Registry::new();
        let m = ProxyMetrics::new(&reg).unwrap();
        let mut text = String::from(
            "[services.web]\nsplit = { a = 1, b = 0, c = 1 }\nfailover = true\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n",
        );
        for (p, port) in [("a", 1), ("b", 2), ("c", 3)] {
            text.push_str(&format!(
                "[services.web.pools.{p}]\nbackends = [\"127.0.0.1:{port}\"]\n"
            ));
        }
        let config = cutover_config::parse("t.toml", &text).unwrap();
        let snap = Snapshot::build(
            &config.services,
            &[vec![1, 0, 1]],
            1,
            None,
            &m,
            &Arc::default(),
        );
        let snap = snap.with_health(0, 0, 0, down("connect refused")).unwrap();
        let s = &snap.services[0];
        // From a: b has no share, c has one.
        assert_eq!(s.failover(0).map(|(to, _, _)| to), Some(2));
        // c down too: b, at weight 0, is the only pool up.
        let snap = snap.with_health(0, 2, 0, down("answered 500")).unwrap();
        let s = &snap.services[0];
        assert_eq!(s.failover(0).map(|(to, _, _)| to), Some(1));
        // Without failover = true: nothing.
        let mut plain = Service::clone(s);
        let mut sc = ServiceConfig::clone(&plain.config);
        sc.failover = false;
        plain.config = Arc::new(sc);
        assert!(plain.failover(0).is_none());
    }

    fn ejected(reason: &str) -> Option<Ejection> {
        let now = SystemTime::now();
        Some(Ejection {
            reason: reason.into(),
            since: now,
            until: now + std::time::Duration::from_secs(10),
        })
    }

    #[tokio::test]
    async fn an_ejected_backend_is_never_picked_and_its_ejection_outlives_rebuilds() {
        let reg = prometheus::Registry::new();
        let m = ProxyMetrics::new(&reg).unwrap();
        let config = cutover_config::parse(
            "t.toml",
            "[services.web]\nsplit = { blue = 1, green = 1 }\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[services.web.pools.blue]\nbackends = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"]\n[services.web.pools.green]\nbackends = [\"127.0.0.1:4\"]\n",
        )
        .unwrap();
        let signal = Arc::default();
        let snap = Snapshot::build(&config.services, &[vec![1, 1]], 3, None, &m, &signal);
        assert!(snap.with_ejection(0, 0, 1, None).is_none(), "no change");
        let why = "5 consecutive failures: connect refused";
        let next = snap.with_ejection(0, 0, 1, ejected(why)).unwrap();
        assert_eq!(next.generation, 3);
        let p = &next.services[0].pools[0];
        assert!(Arc::ptr_eq(
            &p.backends[1],
            &snap.services[0].pools[0].backends[1]
        ));
        assert_eq!(p.available(), 2);
        assert!(p.health()[1].is_up(), "ejection is not health");
        assert_eq!(
            p.ejections()[1].as_ref().map(|e| e.reason.as_str()),
            Some(why)
        );
        for _ in 0..2000 {
            assert!(!Arc::ptr_eq(p.pick().unwrap(), &p.backends[1]));
        }
        let gauge = |addr: &str| {
            let text = prometheus::TextEncoder::new()
                .encode_to_string(&reg.gather())
                .unwrap();
            text.lines()
                .find(|l| {
                    l.starts_with(crate::metrics::names::BACKEND_UP)
                        && l.contains(&format!("\"{addr}\""))
                })
                .map(|l| l.ends_with(" 1"))
        };
        assert_eq!(gauge("127.0.0.1:2"), Some(false), "backend_up: available");
        // A split change and a rebuild keep it; lifting it brings it back.
        let split = next.with_split(0, vec![0, 1]);
        assert!(split.services[0].pools[0].ejections()[1].is_some());
        let rebuilt = Snapshot::build(&config.services, &[vec![1, 1]], 4, Some(&next), &m, &signal);
        assert!(rebuilt.services[0].pools[0].ejections()[1].is_some());
        assert_eq!(rebuilt.services[0].pools[0].available(), 2);
        let back = rebuilt.with_ejection(0, 0, 1, None).unwrap();
        assert_eq!(back.services[0].pools[0].available(), 3);
        assert_eq!(gauge("127.0.0.1:2"), Some(true));
        // Down and ejected at once: each is lifted on its own.
        let both = next.with_health(0, 0, 1, down("answered 500")).unwrap();
        let lifted = both.with_ejection(0, 0, 1, None).unwrap();
        assert_eq!(lifted.services[0].pools[0].available(), 2, "still down");
    }

    #[tokio::test]
    async fn ejections_never_leave_a_pool_with_nothing_available() {
        let p = pool(&[1, 1, 0]);
        let p = p.with_state(
            vec![Health::Up, down("connect refused"), Health::Up],
            vec![
                ejected("5 consecutive failures: connect refused"),
                None,
                None,
            ],
        );
        // The one backend up is ejected and the other down: ejections are
        // waived, the ejected one serves rather than a 503.
        assert!(p.ejections_waived());
        assert_eq!(p.available(), 1);
        assert!(!p.all_down());
        assert!(Arc::ptr_eq(p.pick().unwrap(), &p.backends[0]));
        // Both down: nothing to waive.
        let both = p.with_health(vec![down("x"), down("y"), Health::Up]);
        assert!(!both.ejections_waived());
        assert!(both.all_down());
        // Once the other is back, the ejection holds again.
        let p = p.with_health(vec![Health::Up; 3]);
        assert!(!p.ejections_waived());
        assert_eq!(p.available(), 1);
        assert!(Arc::ptr_eq(p.pick().unwrap(), &p.backends[1]));
    }

    #[tokio::test]
    async fn backends_are_rebuilt_when_their_connection_settings_change() {
        let reg = prometheus::Registry::new();
        let m = ProxyMetrics::new(&reg).unwrap();
        let text = |timeouts: &str| {
            format!("[services.web]\nsplit = {{ blue = 1 }}\ntimeouts = {{ {timeouts} }}\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[services.web.pools.blue]\nprotocol = \"h2c\"\nbackends = [\"127.0.0.1:1\"]\n")
        };
        let signal = Arc::new(crate::outlier::Signal::default());
        let build = |timeouts: &str, prev: Option<&Snapshot>| {
            let config = cutover_config::parse("t.toml", &text(timeouts)).unwrap();
            Snapshot::build(&config.services, &[vec![1]], 1, prev, &m, &signal)
        };
        let backend = |s: &Snapshot| s.services[0].pools[0].backends[0].clone();
        let a = build("h2_ping_interval = \"10s\"", None);
        let same = build(
            "h2_ping_interval = \"10s\", response_header = \"5s\"",
            Some(&a),
        );
        assert!(Arc::ptr_eq(&backend(&a), &backend(&same)), "kept");
        for changed in [
            "h2_ping_interval = \"5s\"",
            "h2_ping_timeout = \"1s\"",
            "h2_ping_interval = \"0s\"",
            "connect = \"1s\"",
        ] {
            let b = build(changed, Some(&a));
            assert!(!Arc::ptr_eq(&backend(&a), &backend(&b)), "{changed}");
        }
        let off = build("h2_ping_interval = \"0s\"", None);
        assert_eq!(backend(&off).settings.h2_ping, None);
        assert_eq!(
            backend(&a).settings.h2_ping,
            Some(crate::upstream::H2Ping {
                interval: std::time::Duration::from_secs(10),
                timeout: std::time::Duration::from_secs(5),
            })
        );
    }

    #[tokio::test]
    async fn empty_pool_picks_nothing() {
        assert!(pool(&[]).pick().is_none());
        assert!(pool(&[0, 0]).pick().is_none());
    }
}

#[cfg(test)]
#[path = "snapshot_reload_tests.rs"]
mod reload_tests;
