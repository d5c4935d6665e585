//! The routing snapshot: services, pools, backends and splits as one
//! immutable value. Every change builds a new snapshot with a new generation
//! and swaps it in whole, so a reader never sees new weights with old
//! backends. Runtime state that must outlive a snapshot (upstream connection
//! pools, in-flight counters) lives in `Arc`s that the next snapshot reuses.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover_config::{Protocol, ServiceConfig};
use http::uri::Authority;
use http::HeaderName;

use crate::metrics::{PoolMetrics, ProxyMetrics, UpstreamMetrics};
use crate::ticket::{Split, Ticket};
use crate::upstream::{ConnRegistry, Upstream};

pub struct Snapshot {
    pub generation: u64,
    pub services: Vec<Arc<Service>>,
}

#[derive(Clone)]
pub struct Service {
    pub config: Arc<ServiceConfig>,
    pub pools: Vec<Arc<Pool>>,
    pub split: Split,
    pub override_header: Option<HeaderName>,
    /// `; Max-Age=...; Path=/; HttpOnly; SameSite=Lax[; Secure]`, built once.
    pub cookie_attributes: String,
}

pub struct Pool {
    pub name: String,
    /// Send a PROXY v2 header to backends on tcp-listener connections.
    pub send_proxy_protocol: bool,
    pub backends: Vec<Arc<Backend>>,
    /// Cumulative backend weights, for the weighted draw.
    cum_weights: Vec<u64>,
    pub metrics: PoolMetrics,
}

pub struct Backend {
    pub addr: String,
    pub authority: Authority,
    pub protocol: Protocol,
    pub weight: u32,
    in_flight: AtomicI64,
    pub(crate) upstream: Upstream,
    /// The upstream connections this backend opened.
    pub connections: Arc<ConnRegistry>,
    connect_timeout: Duration,
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
    /// metrics of `prev` where they are the same.
    pub fn build(
        services: &[ServiceConfig],
        splits: &[Vec<u32>],
        generation: u64,
        prev: Option<&Snapshot>,
        metrics: &ProxyMetrics,
    ) -> Snapshot {
        let services = services
            .iter()
            .zip(splits)
            .map(|(sc, split)| Arc::new(Service::build(sc, split.clone(), prev, metrics)))
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

    /// A new snapshot with one service's split replaced and the generation
    /// bumped; everything else is shared with `self`.
    pub fn with_split(&self, service: usize, split: Vec<u32>) -> Snapshot {
        let services = self
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i == service {
                    let mut s2 = Service::clone(s);
                    // A pool that loses all its traffic gets fresh backends:
                    // the old clients (and their idle keep-alive connections)
                    // go away as soon as no in-flight request holds them, and
                    // the drainer cuts what is left at the drain deadline.
                    s2.pools = s
                        .pools
                        .iter()
                        .zip(s.split.weights())
                        .zip(&split)
                        .map(|((p, old), new)| {
                            if *old > 0 && *new == 0 {
                                Arc::new(p.refreshed())
                            } else {
                                p.clone()
                            }
                        })
                        .collect();
                    s2.split = Split::new(split.clone());
                    Arc::new(s2)
                } else {
                    s.clone()
                }
            })
            .collect();
        Snapshot {
            generation: self.generation + 1,
            services,
        }
    }
}

impl Service {
    fn build(
        sc: &ServiceConfig,
        split: Vec<u32>,
        prev: Option<&Snapshot>,
        metrics: &ProxyMetrics,
    ) -> Service {
        let prev_service = prev
            .and_then(|p| p.service(&sc.name))
            .map(|(_, s)| s.clone());
        let pools = sc
            .pools
            .iter()
            .map(|pc| {
                let prev_pool = prev_service
                    .as_ref()
                    .and_then(|s| s.pools.iter().find(|p| p.name == pc.name).cloned());
                let pool_metrics = metrics.pool(&sc.name, &pc.name);
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
                                        && b.weight == bc.weight
                                        && b.connect_timeout == sc.timeouts.connect
                                })
                                .cloned()
                        });
                        reuse.unwrap_or_else(|| {
                            Arc::new(Backend::new(
                                &bc.addr,
                                bc.protocol,
                                bc.weight,
                                sc.timeouts.connect,
                                pool_metrics.upstream.clone(),
                            ))
                        })
                    })
                    .collect();
                let mut pool = Pool::new(pc.name.clone(), backends, pool_metrics);
                pool.send_proxy_protocol = pc.send_proxy_protocol;
                Arc::new(pool)
            })
            .collect();
        let mut cookie_attributes = format!(
            "; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
            sc.cookie.max_age.as_secs()
        );
        if sc.cookie.secure {
            cookie_attributes.push_str("; Secure");
        }
        Service {
            override_header: sc
                .override_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            config: Arc::new(sc.clone()),
            pools,
            split: Split::new(split),
            cookie_attributes,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn pool_for(&self, ticket: Ticket) -> usize {
        self.split.pool_for(ticket)
    }

    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }
}

impl Pool {
    pub fn new(name: String, backends: Vec<Arc<Backend>>, metrics: PoolMetrics) -> Pool {
        let mut cum = 0u64;
        let cum_weights = backends
            .iter()
            .map(|b| {
                cum += u64::from(b.weight);
                cum
            })
            .collect();
        Pool {
            name,
            send_proxy_protocol: false,
            backends,
            cum_weights,
            metrics,
        }
    }

    /// The same pool with fresh backends (same addresses, weights, metrics).
    fn refreshed(&self) -> Pool {
        let backends = self.backends.iter().map(|b| Arc::new(b.fresh())).collect();
        let mut p = Pool::new(self.name.clone(), backends, self.metrics.clone());
        p.send_proxy_protocol = self.send_proxy_protocol;
        p
    }

    /// Requests in flight on this pool (all snapshots' requests included).
    pub fn in_flight(&self) -> i64 {
        self.metrics.in_flight.get()
    }

    fn draw(&self, total: u64) -> usize {
        let x = fastrand::u64(..total);
        self.cum_weights.partition_point(|c| *c <= x)
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
        // load_a / w_a <= load_b / w_b, without division.
        let la = ba.in_flight() as i128 * i128::from(bb.weight);
        let lb = bb.in_flight() as i128 * i128::from(ba.weight);
        Some(if la <= lb { ba } else { bb })
    }
}

impl Backend {
    pub fn new(
        addr: &str,
        protocol: Protocol,
        weight: u32,
        connect_timeout: Duration,
        metrics: UpstreamMetrics,
    ) -> Backend {
        let connections = Arc::new(ConnRegistry::new(metrics));
        Backend {
            addr: addr.to_string(),
            // Validated config guarantees host:port; a fallback keeps this total.
            authority: Authority::try_from(addr)
                .unwrap_or_else(|_| Authority::from_static("invalid.invalid:1")),
            protocol,
            weight,
            in_flight: AtomicI64::new(0),
            upstream: Upstream::new(addr, protocol, connect_timeout, connections.clone()),
            connections,
            connect_timeout,
        }
    }

    /// The same backend with no pooled connections.
    pub fn fresh(&self) -> Backend {
        Backend::new(
            &self.addr,
            self.protocol,
            self.weight,
            self.connect_timeout,
            self.connections.metrics().clone(),
        )
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
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

    fn pool(weights: &[u32]) -> Pool {
        let reg = prometheus::Registry::new();
        let m = ProxyMetrics::new(&reg).unwrap();
        let pm = m.pool("s", "p");
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Backend::new(
                    &format!("127.0.0.1:{}", 1000 + i),
                    Protocol::Http1,
                    *w,
                    Duration::from_secs(1),
                    pm.upstream.clone(),
                ))
            })
            .collect();
        Pool::new("p".into(), backends, pm)
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

    #[tokio::test]
    async fn empty_pool_picks_nothing() {
        assert!(pool(&[]).pick().is_none());
        assert!(pool(&[0, 0]).pick().is_none());
    }
}
