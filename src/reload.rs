//! Config hot reload, the binary's part: read and validate the file whole,
//! bind every listener it adds, then have the controller apply it as a
//! diff in one snapshot swap ([`Controller::reload`]), then serve the new
//! listeners and stop the removed ones ([`Listeners::commit`]). A bad file
//! or a listener that cannot be bound changes nothing: the error (file,
//! line and key; or the listener's key and address) is logged, counted and
//! shown in `/v1/status` until a good config loads.
//!
//! Triggers: SIGHUP (`src/main.rs`), `POST /v1/reload` (through the
//! controller's reloader), and a watch on the config file's directory
//! ([`watch`]): editors and tools replace files by rename, which a watch
//! on the file itself would miss. Bursts of events are debounced.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cutover_control::{Controller, ReloadReport};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::listeners::Listeners;

/// How long the watch waits for a burst of file events to end.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

pub struct Reloader {
    path: PathBuf,
    controller: Arc<Controller>,
    listeners: Arc<Listeners>,
    /// One reload at a time, from whichever trigger.
    one: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub(crate) fn new(
        path: PathBuf,
        controller: Arc<Controller>,
        listeners: Arc<Listeners>,
    ) -> Reloader {
        Reloader {
            path,
            controller,
            listeners,
            one: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the config file and applies it; `Err` says why nothing
    /// changed (already logged, counted and in the status).
    pub async fn reload(&self, trigger: &str) -> Result<ReloadReport, String> {
        let _one = self.one.lock().await;
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || cutover_config::load(&path)).await;
        let config = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(errs)) => return Err(self.failed(trigger, errs.to_string())),
            Err(e) => return Err(self.failed(trigger, format!("reading the config failed: {e}"))),
        };
        // Certificates, keys and CA files the new config names must load.
        let (_, tls_errors) = crate::app::check_tls(&config);
        if !tls_errors.is_empty() {
            let errs = cutover_config::ConfigErrors(tls_errors);
            return Err(self.failed(trigger, errs.to_string()));
        }
        // Every new listener bound first: one that cannot be fails the
        // whole reload before anything changed.
        let bound = match self.listeners.bind_new(&config).await {
            Ok(b) => b,
            Err(e) => return Err(self.failed(trigger, e.to_string())),
        };
        let report = self
            .controller
            .reload(config, trigger)
            .await
            .map_err(|e| e.to_string())?;
        // The config in force now (settings that need a restart kept).
        match self
            .listeners
            .commit(&self.controller.config(), bound)
            .await
        {
            Ok(served) => self.controller.set_listeners(served),
            Err(e) => tracing::error!("after the reload, a new listener could not be served: {e}"),
        }
        // A reload reads the certificate files again too (rotation on
        // SIGHUP and `POST /v1/reload`, not only on the files' watch).
        self.listeners.reload_tls();
        Ok(report)
    }

    fn failed(&self, trigger: &str, error: String) -> String {
        self.controller.reload_failed(trigger, &error);
        error
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Watches the config file's directory and reloads when the file changes
/// (after [`DEBOUNCE`] without further events), until `shutdown`.
pub fn watch(reloader: Arc<Reloader>, mut shutdown: watch::Receiver<bool>) -> notify::Result<()> {
    let path = reloader.path();
    let name = path.file_name().map(|n| n.to_os_string());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
        if ours {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tracing::info!(config = %path.display(), dir = %dir.display(), "watching the config file for changes");
    tokio::spawn(async move {
        // Kept alive by this task: dropping it ends the watch.
        let _watcher = watcher;
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { break },
                _ = shutdown.wait_for(|s| *s) => break,
            }
            // Debounce: a save is often several events (truncate, write,
            // rename, chmod); wait until they stop.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            let _ = reloader.reload("file watch").await;
        }
    });
    Ok(())
}
