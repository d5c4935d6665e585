//! Assembles a running cutover from a validated config: binds every
//! listener (a busy port names its config key), builds the controller and
//! the first snapshot, serves the proxy listeners and the admin API, and
//! shuts everything down gracefully.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cutover_config::{Config, ConfigError};
use cutover_control::{Admin, ControlError, Controller};
use cutover_proxy::tls::ListenerTls;

use crate::tls_watch::TlsListener;
use cutover_proxy::{ListenerSpec, ProxyMetrics, Shared};
use prometheus::Registry;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} (config key `{key}`): {source}")]
    Bind {
        addr: SocketAddr,
        key: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Secrets(cutover_config::ConfigErrors),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("TLS certificates:\n{0}")]
    Tls(cutover_config::ConfigErrors),
    #[error("metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
    #[cfg(feature = "edge")]
    #[error("edge sync: {0}")]
    Edge(#[from] cutover_control::edge::EdgeError),
}

/// Starts the edge reconcile loop: every `interval`, and after each routing
/// change that moves a `weight_from` record. Never on the request path.
#[cfg(feature = "edge")]
fn spawn_edge(
    edge: cutover_config::edge::EdgeConfig,
    controller: &Arc<Controller>,
    registry: &Registry,
    mut shutdown: watch::Receiver<bool>,
) -> Result<cutover_control::edge::ReconcilerHandle, StartError> {
    let snapshot = controller.snapshot();
    let splits: cutover_control::edge::SplitsFn = Arc::new(move || {
        let snap = snapshot.load();
        snap.services
            .iter()
            .flat_map(|s| {
                let total: u32 = s.split.weights().iter().sum();
                s.pools
                    .iter()
                    .zip(s.split.weights())
                    .map(move |(p, w)| (s.name().to_string(), p.name.clone(), *w, total))
            })
            .collect()
    });
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    Ok(cutover_control::edge::spawn_reconciler(
        edge,
        splits,
        controller.subscribe(),
        registry,
        stop,
    )?)
}

/// A running cutover.
pub struct App {
    pub admin_addr: SocketAddr,
    /// (service, bound address, preview pool) for each proxy listener.
    pub listeners: Vec<(String, SocketAddr, Option<String>)>,
    pub controller: Arc<Controller>,
    pub admin: Arc<Admin>,
    pub shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    /// The admin API stops last, when the drain is over.
    admin_shutdown_tx: watch::Sender<bool>,
    admin_task: tokio::task::JoinHandle<()>,
    tasks: JoinSet<()>,
    shutdown_timeout: Duration,
    shutdown_delay: Duration,
}

/// Connections the kernel completes and queues while the accept loop is
/// busy. std's and mio's 128 overflows when a few hundred clients connect at
/// once (a reconnect storm, a load test's 256 connections): the kernel then
/// drops their handshakes and those clients wait a second or more for a
/// retransmit, and h2load was seen never finishing. nginx uses 511; the
/// kernel caps this at `net.core.somaxconn` (4096 by default since 5.4).
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr, key: String) -> Result<TcpListener, StartError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restart may rebind at once.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| StartError::Bind { addr, key, source })
}

/// Loads and checks every TLS listener's certificates (`cutover check`
/// runs this too): the warnings (expired certificates) and the errors.
pub fn check_tls(config: &Config) -> (Vec<ConfigError>, Vec<ConfigError>) {
    let (mut warnings, mut errors) = (Vec::new(), Vec::new());
    for lc in config.services.iter().flat_map(|s| s.listeners.iter()) {
        if let Some(tls) = &lc.tls {
            match cutover_proxy::tls::load(tls) {
                Ok(loaded) => warnings.extend(loaded.warnings),
                Err(e) => errors.extend(e),
            }
        }
    }
    // TLS to backends: the CA file (or the platform's roots) and any
    // client certificate.
    for pc in config.services.iter().flat_map(|s| s.pools.iter()) {
        if let Some(tls) = &pc.tls {
            if let Err(e) = cutover_proxy::upstream::tls::UpstreamTls::load(tls) {
                errors.push(e);
            }
        }
    }
    (warnings, errors)
}

/// A TLS listener's certificates, loaded and checked; expired ones are
/// logged and served.
fn listener_tls(
    tls: &cutover_config::TlsConfig,
    label: &str,
    metrics: &ProxyMetrics,
) -> Result<Arc<ListenerTls>, StartError> {
    let loaded = cutover_proxy::tls::load(tls)
        .map_err(|e| StartError::Tls(cutover_config::ConfigErrors(e)))?;
    for w in &loaded.warnings {
        tracing::warn!(listener = %label, "{w}");
    }
    Ok(Arc::new(ListenerTls::new(loaded, tls, metrics.tls(label))))
}

/// Binds every service's listeners, in config order, with what each serves.
async fn bind_listeners(
    config: &Config,
    metrics: &ProxyMetrics,
) -> Result<(Vec<(TcpListener, ListenerSpec)>, Vec<TlsListener>), StartError> {
    let mut bound = Vec::new();
    let mut tls_listeners = Vec::new();
    for sc in &config.services {
        for (i, lc) in sc.listeners.iter().enumerate() {
            let key = format!("services.{}.listeners[{i}].listen", sc.name);
            let tcp = bind(lc.listen, key).await?;
            let tls = match &lc.tls {
                None => None,
                Some(t) => {
                    let label = tcp
                        .local_addr()
                        .map_or_else(|_| lc.listen.to_string(), |a| a.to_string());
                    let tls = listener_tls(t, &label, metrics)?;
                    tls_listeners.push(TlsListener {
                        label,
                        tls: tls.clone(),
                        config: t.clone(),
                    });
                    Some(tls)
                }
            };
            let pool = lc
                .pool
                .and_then(|p| sc.pools.get(p))
                .map(|p| p.name.clone());
            let spec = ListenerSpec {
                service: sc.name.clone(),
                pool,
                timeouts: sc.timeouts.clone(),
                limits: sc.limits.clone(),
                drain_timeout: config.shutdown_timeout,
                mode: lc.mode,
                proxy_protocol: lc.proxy_protocol,
                trust_forwarded: lc.trust_forwarded,
                tls,
            };
            bound.push((tcp, spec));
        }
    }
    Ok((bound, tls_listeners))
}

/// Service, bound address and preview pool of each listener.
fn listener_addrs(
    bound: &[(TcpListener, ListenerSpec)],
) -> Vec<(String, SocketAddr, Option<String>)> {
    bound
        .iter()
        .map(|(tcp, spec)| {
            let addr = tcp
                .local_addr()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            (spec.service.clone(), addr, spec.pool.clone())
        })
        .collect()
}

impl App {
    /// Binds and starts everything. Must run inside a tokio runtime.
    pub async fn start(config: Config) -> Result<App, StartError> {
        // The admin tokens' secrets, read before anything starts.
        let auth =
            cutover_control::Auth::from_config(&config.admin).map_err(StartError::Secrets)?;
        // Certificates and keys are read and checked before anything starts.
        let (_, tls_errors) = check_tls(&config);
        if !tls_errors.is_empty() {
            return Err(StartError::Tls(cutover_config::ConfigErrors(tls_errors)));
        }
        let registry = Registry::new();
        let proxy_metrics = Arc::new(ProxyMetrics::new(&registry)?);
        let controller = Arc::new(Controller::new(
            config.clone(),
            &registry,
            proxy_metrics.clone(),
        )?);
        let shared = Arc::new(Shared::new(controller.snapshot(), proxy_metrics));

        // Bind everything before serving anything: a busy port fails the start whole.
        let admin_listener = bind(config.admin.listen, "admin.listen".into()).await?;
        let (bound, tls_listeners) = bind_listeners(&config, &shared.metrics).await?;
        let tls_listeners = Arc::new(tls_listeners);
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.admin.listen,
                key: "admin.listen".into(),
                source,
            })?;
        let listeners = listener_addrs(&bound);

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        #[allow(unused_mut)]
        let mut admin = Admin::new(
            controller.clone(),
            shared.clone(),
            registry.clone(),
            auth,
            listeners.clone(),
        )?;
        #[cfg(feature = "edge")]
        if let Some(edge) = config.edge.clone() {
            let handle = spawn_edge(edge, &controller, &registry, shutdown_rx.clone())?;
            admin.extra.push((
                "edge",
                Arc::new(move || serde_json::to_value(handle.status()).unwrap_or_default()),
            ));
        }
        if !tls_listeners.is_empty() {
            let tls = tls_listeners.clone();
            admin.extra.push((
                "tls",
                Arc::new(move || {
                    let map: serde_json::Map<String, serde_json::Value> = tls
                        .iter()
                        .map(|l| (l.label.clone(), l.tls.status_json()))
                        .collect();
                    serde_json::Value::Object(map)
                }),
            ));
        }
        let admin = Arc::new(admin);
        let mut tasks = JoinSet::new();
        for (tcp, spec) in bound {
            tasks.spawn(cutover_proxy::serve(
                tcp,
                spec,
                shared.clone(),
                shutdown_rx.clone(),
            ));
        }
        // Certificate rotation: reloads a TLS listener's certificates
        // when their files change.
        tasks.spawn(crate::tls_watch::run(
            tls_listeners.clone(),
            shutdown_rx.clone(),
        ));
        // Active health checks (pools with a `health_check`); they stop
        // with the shutdown signal.
        tasks.spawn(cutover_control::health::run(
            controller.clone(),
            shutdown_rx.clone(),
        ));
        // The ejector: acts on the backends' passive failure streaks.
        tasks.spawn(cutover_control::outlier::run(
            controller.clone(),
            shutdown_rx.clone(),
        ));
        // Slow start: moves ramps on in steps while one runs.
        tasks.spawn(cutover_control::slow_start::run(
            controller.clone(),
            shutdown_rx.clone(),
        ));
        // Its own stop signal: it answers (`/readyz` 503, `/metrics`, drain
        // status) through the whole shutdown, until the process exits.
        let (admin_shutdown_tx, admin_shutdown_rx) = watch::channel(false);
        let admin_task = tokio::spawn(cutover_control::admin::serve(
            admin_listener,
            admin.clone(),
            admin_shutdown_rx,
        ));
        drop(shutdown_rx);
        // Tunnels are re-evaluated after every change and every slow start
        // step that moved tickets; ends when the controller goes.
        tokio::spawn(cutover_proxy::drain::follow_changes(
            shared.clone(),
            controller.subscribe_routing(),
        ));
        tracing::info!(
            admin = %admin_addr,
            generation = controller.snapshot().load().generation,
            run_id = controller.run_id(),
            audit_log = %controller.audit_log().path().map(|p| p.display().to_string()).unwrap_or_else(|| "memory only".into()),
            "cutover started"
        );
        Ok(App {
            admin_addr,
            listeners,
            controller,
            admin,
            shared,
            shutdown_tx,
            admin_shutdown_tx,
            admin_task,
            tasks,
            shutdown_timeout: config.shutdown_timeout,
            shutdown_delay: config.shutdown_delay,
        })
    }

    /// The bound address of the `n`th listener of `service`.
    pub fn listener(&self, service: &str, n: usize) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .filter(|(s, _, _)| s == service)
            .nth(n)
            .map(|(_, a, _)| *a)
    }

    /// Graceful shutdown, in the order a load balancer needs: `/readyz`
    /// turns 503 at once while the listeners keep accepting for
    /// `shutdown_delay` (so the balancer sees it and stops sending), then
    /// the listeners stop accepting and in-flight work gets until
    /// `shutdown_timeout`; the rest is cut. The admin API stops last.
    pub async fn shutdown(mut self) {
        self.admin.ready.store(false, Ordering::Relaxed);
        if !self.shutdown_delay.is_zero() {
            tracing::info!(
                delay = ?self.shutdown_delay,
                "not ready (/readyz answers 503); listeners keep accepting until shutdown_delay is over"
            );
            tokio::time::sleep(self.shutdown_delay).await;
        }
        tracing::info!("listeners stop accepting; draining");
        self.shutdown_tx.send_replace(true);
        // Tunnels (upgraded connections, tcp) get the same deadline as requests.
        let tunnel_deadline =
            cutover_proxy::time::later_tokio(tokio::time::Instant::now(), self.shutdown_timeout);
        self.shared.tunnels.drain_all(tunnel_deadline);
        let deadline = self.shutdown_timeout.saturating_add(Duration::from_secs(2));
        if tokio::time::timeout(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("shutdown deadline passed; aborting what remains");
            self.tasks.abort_all();
        }
        // Bounded poll: tunnels close themselves at their deadline.
        let tunnels = self.shared.tunnels.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while !tunnels.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let left = self.shared.tunnels.len();
        if left > 0 {
            tracing::warn!(tunnels = left, "tunnels still open at exit; cut");
        }
        self.admin_shutdown_tx.send_replace(true);
        // The admin server gives its open connections 5 s.
        if tokio::time::timeout(Duration::from_secs(6), &mut self.admin_task)
            .await
            .is_err()
        {
            self.admin_task.abort();
        }
        tracing::info!("cutover stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of connections waits in the accept queue instead of being
    /// dropped. The test holds the runtime's only thread, so nothing is
    /// accepted while 600 clients connect; with a backlog of 128 the 130th
    /// handshake would not complete (the kernel drops it and retries after
    /// 1 s, past the timeout).
    #[tokio::test(flavor = "current_thread")]
    async fn six_hundred_connections_at_once_all_complete_their_handshake() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test".into())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut open = Vec::new();
        for i in 0..600 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(700)) {
                Ok(s) => open.push(s),
                Err(e) => panic!("connection {i} did not complete its handshake: {e}"),
            }
        }
        assert_eq!(open.len(), 600);
    }
}
