//! Certificate rotation without a restart: watches the directories of
//! every TLS listener's certificate and key files (a directory, not the
//! files: certbot and cert-manager replace files by renaming, or by
//! swapping a symlinked directory) and reloads a listener's certificates
//! when one of its files, or a `..name` (Kubernetes' swapped directory),
//! changed in one of its directories. Bursts are gathered
//! for [`DEBOUNCE`] first, so a cert and its key written one after the
//! other are read together. A bad pair keeps the old one (see
//! [`ListenerTls::reload`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cutover_config::TlsConfig;
use cutover_proxy::tls::{ListenerTls, Reloaded};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::listeners::Listeners;

/// How long a burst of file events is gathered before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// One TLS listener: its label (bound address), its live TLS, its config.
pub struct TlsListener {
    pub label: String,
    pub tls: Arc<ListenerTls>,
    pub config: TlsConfig,
}

impl TlsListener {
    /// Its certificate and key files, as configured.
    fn files(&self) -> impl Iterator<Item = &Path> + '_ {
        self.config
            .certificates
            .iter()
            .flat_map(|c| [c.cert.as_path(), c.key.as_path()])
    }

    /// The directories its files are in.
    fn dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.files().map(dir_of)
    }

    /// Whether a change to `path` may change its certificates: one of its
    /// files, or a name starting with `..`, as the symlinked directories
    /// Kubernetes swaps for a secret's new version (`..data`). Other files
    /// in the same directory (a log, say) are not read for.
    fn concerns(&self, path: &Path) -> bool {
        let Some(name) = path.file_name() else {
            return false;
        };
        if name.as_encoded_bytes().starts_with(b"..") {
            return self.dirs().any(|d| same_dir(&d, &dir_of(path)));
        }
        self.files()
            .any(|f| f.file_name() == Some(name) && same_dir(&dir_of(f), &dir_of(path)))
    }

    /// Reloads its certificates and logs what changed.
    pub fn reload(&self) -> Reloaded {
        let r = self.tls.reload(&self.config);
        match &r {
            Reloaded::Unchanged => {}
            Reloaded::Rotated => {
                tracing::info!(listener = %self.label, "TLS certificates rotated; new handshakes use them");
            }
            Reloaded::Refused(why) => {
                tracing::warn!(listener = %self.label, "new TLS certificates refused, the old ones stay: {why}");
            }
        }
        r
    }
}

/// `configured` (maybe relative) and `seen` (an event's, absolute) are one directory.
fn same_dir(configured: &Path, seen: &Path) -> bool {
    configured == seen || std::fs::canonicalize(configured).is_ok_and(|c| c == seen)
}

fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Watches until `shutdown` turns true, following the TLS listeners
/// `served` has (a reload adds, removes and changes them). Without a
/// working watcher (no inotify instance left, say) it logs why and
/// returns: rotation then needs a reload (SIGHUP, `POST /v1/reload`) or a
/// restart.
pub(crate) async fn run(served: Arc<Listeners>, mut shutdown: watch::Receiver<bool>) {
    let mut changed = served.subscribe_tls();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Opens and reads change nothing, and a reload's own reads of the
        // files would otherwise set off the next reload, forever.
        match res {
            Ok(ev) if !matches!(ev.kind, EventKind::Access(_)) => {
                let _ = tx.send(ev.paths);
            }
            _ => {}
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(
                "cannot watch certificate files ({e}); rotating them needs a reload or a restart"
            );
            return;
        }
    };
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut listeners = Vec::new();
    loop {
        // The directories of the TLS listeners served now.
        if changed.has_changed().unwrap_or(false) || listeners.is_empty() {
            changed.borrow_and_update();
            listeners = served.tls_listeners();
            let dirs: BTreeSet<PathBuf> = listeners.iter().flat_map(|l| l.dirs()).collect();
            for gone in watched.difference(&dirs) {
                let _ = watcher.unwatch(gone);
            }
            for d in dirs.difference(&watched) {
                if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %d.display(), "cannot watch for certificate changes ({e})");
                }
            }
            watched = dirs;
            // A change between a listener's first read of its files and
            // the watch above made no event: read them once more now (an
            // unchanged set changes nothing and logs nothing).
            for l in &listeners {
                l.reload();
            }
        }
        let first = tokio::select! {
            paths = rx.recv() => match paths {
                Some(p) => p,
                None => return,
            },
            c = changed.changed() => {
                if c.is_err() {
                    return;
                }
                continue;
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let mut touched: BTreeSet<PathBuf> = first.into_iter().collect();
        let gather = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(gather);
        loop {
            tokio::select! {
                more = rx.recv() => match more {
                    Some(p) => touched.extend(p),
                    None => break,
                },
                _ = &mut gather => break,
            }
        }
        for l in &listeners {
            if touched.iter().any(|p| l.concerns(p)) {
                l.reload();
            }
        }
    }
}
