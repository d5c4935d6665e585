//! Assembles a running cutover from a validated config: binds every
//! listener (a busy port names its config key), builds the controller and
//! the first snapshot, serves the proxy listeners and the admin API, and
//! shuts everything down gracefully.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cutover_config::{Config, ConfigError};
use cutover_control::{Admin, ControlError, Controller, ReloadReport};
use cutover_proxy::{ProxyMetrics, Shared};
use prometheus::Registry;
use tokio::sync::watch;

use crate::listeners::{bind, Listeners};
use crate::reload::Reloader;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} (config key `{key}`): {source}")]
    Bind {
        addr: SocketAddr,
        key: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("{0}")]
    Secrets(cutover_config::ConfigErrors),
    #[error("TLS certificates:\n{0}")]
    Tls(cutover_config::ConfigErrors),
    #[error("metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
    #[cfg(feature = "edge")]
    #[error("edge sync: {0}")]
    Edge(#[from] cutover_control::edge::EdgeError),
}

/// Loads and checks every TLS listener's certificates and every pool's
/// TLS files (`cutover check`, start and reload run this): the warnings
/// (expired certificates) and the errors.
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
    /// (service, bound address, preview pool) for each proxy listener at
    /// start; [`App::listener`] answers for the listeners served now.
    pub listeners: Vec<(String, SocketAddr, Option<String>)>,
    pub controller: Arc<Controller>,
    pub admin: Arc<Admin>,
    pub shared: Arc<Shared>,
    /// The proxy listeners, which a reload adds, removes and restarts.
    served: Arc<Listeners>,
    reloader: Option<Arc<Reloader>>,
    shutdown_tx: watch::Sender<bool>,
    /// The admin API stops last, when the drain is over.
    admin_shutdown_tx: watch::Sender<bool>,
    admin_task: tokio::task::JoinHandle<()>,
    tasks: JoinSet<()>,
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
        let served = Arc::new(Listeners::new(shared.clone()));
        let bound = served.bind_new(&config).await?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.admin.listen,
                key: "admin.listen".into(),
                source,
            })?;

        // Served from here on (the first snapshot is in force).
        let listeners = served.commit(&config, bound).await?;
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
        {
            let served = served.clone();
            admin
                .extra
                .push(("tls", Arc::new(move || served.tls_status())));
        }
        let admin = Arc::new(admin);
        let mut tasks = JoinSet::new();
        // Certificate rotation: reloads a TLS listener's certificates when
        // their files change (and follows the listeners a reload changes).
        tasks.spawn(crate::tls_watch::run(served.clone(), shutdown_rx.clone()));
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
            served,
            reloader: None,
            shutdown_tx,
            admin_shutdown_tx,
            admin_task,
            tasks,
        })
    }

    /// Starts from the config file at `path` (already loaded as `config`)
    /// and reloads it when it changes (a watch on its directory), on
    /// `POST /v1/reload` and on [`App::reload`] (SIGHUP).
    pub async fn start_watching(path: &Path, config: Config) -> Result<App, StartError> {
        let mut app = App::start(config).await?;
        let reloader = Arc::new(Reloader::new(
            path.to_path_buf(),
            app.controller.clone(),
            app.served.clone(),
        ));
        let r = reloader.clone();
        app.controller.set_reloader(Arc::new(move |trigger| {
            let r = r.clone();
            Box::pin(async move { r.reload(&trigger).await })
        }));
        match crate::reload::watch(reloader.clone(), app.shutdown_tx.subscribe()) {
            Ok(()) => {}
            Err(e) => tracing::warn!(
                config = %path.display(),
                "cannot watch the config file ({e}): reload with SIGHUP or POST /v1/reload"
            ),
        }
        app.reloader = Some(reloader);
        Ok(app)
    }

    /// Reloads the config file; `None` when the app was not started
    /// from one.
    pub async fn reload(&self, trigger: &str) -> Option<Result<ReloadReport, String>> {
        match &self.reloader {
            Some(r) => Some(r.reload(trigger).await),
            None => None,
        }
    }

    /// What reloads the config file (for SIGHUP); `None` when the app was
    /// not started from one.
    pub fn reloader(&self) -> Option<Arc<Reloader>> {
        self.reloader.clone()
    }

    /// The bound address of the `n`th listener of `service` served now.
    pub fn listener(&self, service: &str, n: usize) -> Option<SocketAddr> {
        self.controller
            .listeners()
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
        // As reloaded last.
        let config = self.controller.config();
        let (shutdown_delay, shutdown_timeout) = (config.shutdown_delay, config.shutdown_timeout);
        if !shutdown_delay.is_zero() {
            tracing::info!(
                delay = ?shutdown_delay,
                "not ready (/readyz answers 503); listeners keep accepting until shutdown_delay is over"
            );
            tokio::time::sleep(shutdown_delay).await;
        }
        tracing::info!("listeners stop accepting; draining");
        self.shutdown_tx.send_replace(true);
        // Tunnels (upgraded connections, tcp) get the same deadline as requests.
        let tunnel_deadline =
            cutover_proxy::time::later_tokio(tokio::time::Instant::now(), shutdown_timeout);
        self.shared.tunnels.drain_all(tunnel_deadline);
        self.served.shutdown(shutdown_timeout).await;
        let deadline = Duration::from_secs(2);
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
