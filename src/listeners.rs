//! The proxy listeners the app serves, keyed by address (by service,
//! address and rank for port 0), each with its own stop signals: a reload
//! binds what the new config adds before anything changes
//! ([`Listeners::bind_new`]), then, once the new snapshot is in force,
//! serves them, stops those it removed and restarts those whose settings
//! changed ([`Listeners::commit`]).
//!
//! A listener whose address stays keeps its socket. When its settings
//! change (the service's timeouts or limits, its mode, its preview pool),
//! a new accept loop starts on a duplicate of the same listening socket
//! (no connection is refused meanwhile) and the old loop stops accepting:
//! connections it accepted go on with the settings they started with until
//! they end (or the shutdown closes them). A removed listener stops
//! accepting at once, its socket closes, and its open connections are
//! closed gracefully and cut after its service's `drain_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cutover_config::{Config, TlsConfig};
use cutover_control::ListenerInfo;
use cutover_proxy::tls::{ListenerTls, Loaded};
use cutover_proxy::{ListenerControl, ListenerSpec, Shared};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::StartError;
use crate::tls_watch::TlsListener;

/// Connections the kernel completes and queues while the accept loop is
/// busy. std's and mio's 128 overflows when a few hundred clients connect at
/// once (a reconnect storm, a load test's 256 connections): the kernel then
/// drops their handshakes and those clients wait a second or more for a
/// retransmit, and h2load was seen never finishing. nginx uses 511; the
/// kernel caps this at `net.core.somaxconn` (4096 by default since 5.4).
const LISTEN_BACKLOG: u32 = 4096;

pub(crate) async fn bind(addr: SocketAddr, key: String) -> Result<TcpListener, StartError> {
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

/// Which listener of the config this is, across reloads: its address, or
/// for port 0 (tests) its service, address and rank among those.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Addr(SocketAddr),
    Ephemeral(String, SocketAddr, usize),
}

/// One listener the config asks for.
struct Wanted {
    key: Key,
    listen: SocketAddr,
    /// `services.web.listeners[0].listen`, for errors.
    config_key: String,
    /// Its settings, TLS aside (`spec.tls` is set when it is served).
    spec: ListenerSpec,
    /// Its `tls` table, if it terminates TLS.
    tls: Option<TlsConfig>,
    /// Its service's `drain_timeout` (when a reload removes it).
    drain: Duration,
}

fn wanted(config: &Config) -> Vec<Wanted> {
    let mut out: Vec<Wanted> = Vec::new();
    for sc in &config.services {
        for (i, lc) in sc.listeners.iter().enumerate() {
            let key = if lc.listen.port() == 0 {
                let rank = out
                    .iter()
                    .filter(|w| w.spec.service == sc.name && w.listen == lc.listen)
                    .count();
                Key::Ephemeral(sc.name.clone(), lc.listen, rank)
            } else {
                Key::Addr(lc.listen)
            };
            let pool = lc
                .pool
                .and_then(|p| sc.pools.get(p))
                .map(|p| p.name.clone());
            out.push(Wanted {
                key,
                listen: lc.listen,
                config_key: format!("services.{}.listeners[{i}].listen", sc.name),
                spec: ListenerSpec {
                    service: sc.name.clone(),
                    pool,
                    timeouts: sc.timeouts.clone(),
                    limits: sc.limits.clone(),
                    drain_timeout: config.shutdown_timeout,
                    mode: lc.mode,
                    proxy_protocol: lc.proxy_protocol,
                    trust_forwarded: lc.trust_forwarded,
                    tls: None,
                },
                tls: lc.tls.clone(),
                drain: sc.drain_timeout,
            });
        }
    }
    out
}

/// An accept loop and the connections it accepted.
struct Loop {
    stop_accepting: watch::Sender<bool>,
    close: watch::Sender<Option<Duration>>,
    task: JoinHandle<()>,
}

impl Loop {
    fn spawn(tcp: TcpListener, spec: ListenerSpec, shared: Arc<Shared>) -> Loop {
        let (stop_accepting, stop_rx) = watch::channel(false);
        let (close, close_rx) = watch::channel(None);
        let control = ListenerControl {
            stop_accepting: stop_rx,
            close: close_rx,
        };
        let task = tokio::spawn(cutover_proxy::serve_with(tcp, spec, shared, control));
        Loop {
            stop_accepting,
            close,
            task,
        }
    }
}

/// A listener served now.
struct Served {
    key: Key,
    spec: ListenerSpec,
    bound: SocketAddr,
    drain: Duration,
    /// A duplicate of the listening socket: a new accept loop starts on
    /// another duplicate when the settings change. Dropped with the entry.
    socket: std::net::TcpListener,
    current: Loop,
    /// Its TLS, if it terminates TLS (kept across a settings change that
    /// leaves its `tls` table alone).
    tls: Option<Arc<TlsListener>>,
}

impl Served {
    /// Its settings as the config gives them: TLS aside.
    fn plain_spec(&self) -> ListenerSpec {
        ListenerSpec {
            tls: None,
            ..self.spec.clone()
        }
    }

    fn tls_config(&self) -> Option<&TlsConfig> {
        self.tls.as_ref().map(|t| &t.config)
    }
}

#[derive(Default)]
struct State {
    served: Vec<Served>,
    /// Accept loops that stopped accepting (replaced or removed) while
    /// their connections run on.
    retired: Vec<Loop>,
    closed: bool,
}

/// Listeners bound for a reload, not served yet (dropped: closed).
pub(crate) struct Bound {
    new: Vec<(Key, TcpListener)>,
    /// Certificates read and checked for every listener whose `tls` is
    /// new or changed.
    tls: Vec<(Key, Loaded)>,
}

pub(crate) struct Listeners {
    shared: Arc<Shared>,
    state: tokio::sync::Mutex<State>,
    /// The TLS listeners served now, for status and the certificate
    /// watch; `tls_changed` ticks when the set changes.
    tls: std::sync::Mutex<Vec<Arc<TlsListener>>>,
    tls_changed: watch::Sender<u64>,
}

/// A duplicate of `tcp`'s socket, as a std listener.
fn dup(tcp: &TcpListener) -> std::io::Result<std::net::TcpListener> {
    let sock = socket2::SockRef::from(tcp).try_clone()?;
    Ok(sock.into())
}

fn from_dup(socket: &std::net::TcpListener) -> std::io::Result<TcpListener> {
    let s = socket.try_clone()?;
    s.set_nonblocking(true)?;
    TcpListener::from_std(s)
}

impl Listeners {
    pub(crate) fn new(shared: Arc<Shared>) -> Listeners {
        Listeners {
            shared,
            state: tokio::sync::Mutex::default(),
            tls: Default::default(),
            tls_changed: watch::channel(0).0,
        }
    }

    /// The TLS listeners served now.
    pub(crate) fn tls_listeners(&self) -> Vec<Arc<TlsListener>> {
        self.tls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ticks whenever the set of TLS listeners changes.
    pub(crate) fn subscribe_tls(&self) -> watch::Receiver<u64> {
        self.tls_changed.subscribe()
    }

    /// `/v1/status`'s `tls`: per TLS listener, its certificates and the
    /// last refused rotation.
    pub(crate) fn tls_status(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .tls_listeners()
            .iter()
            .map(|l| (l.label.clone(), l.tls.status_json()))
            .collect();
        serde_json::Value::Object(map)
    }

    /// Reads every TLS listener's certificate files again (a reload: SIGHUP,
    /// `POST /v1/reload`, the config file's watch).
    pub(crate) fn reload_tls(&self) {
        for l in self.tls_listeners() {
            l.reload();
        }
    }

    /// Binds every listener of `config` that is not served yet, in config
    /// order; the first that cannot be bound fails the whole (nothing
    /// bound stays open).
    pub(crate) async fn bind_new(&self, config: &Config) -> Result<Bound, StartError> {
        let state = self.state.lock().await;
        let mut new = Vec::new();
        let mut tls = Vec::new();
        for w in wanted(config) {
            let served = state.served.iter().find(|s| s.key == w.key);
            if let Some(cfg) = &w.tls {
                if served.and_then(|s| s.tls_config()) != Some(cfg) {
                    let loaded = cutover_proxy::tls::load(cfg)
                        .map_err(|e| StartError::Tls(cutover_config::ConfigErrors(e)))?;
                    tls.push((w.key.clone(), loaded));
                }
            }
            if served.is_some() {
                continue;
            }
            new.push((w.key, bind(w.listen, w.config_key).await?));
        }
        Ok(Bound { new, tls })
    }

    /// Serves what `config` asks for: the `bound` listeners start, removed
    /// ones stop, changed ones restart their accept loop on the same
    /// socket. Returns the listeners served now, in config order.
    pub(crate) async fn commit(
        &self,
        config: &Config,
        mut bound: Bound,
    ) -> Result<Vec<ListenerInfo>, StartError> {
        let mut state = self.state.lock().await;
        if state.closed {
            return Ok(Vec::new());
        }
        state.retired.retain(|l| !l.task.is_finished());
        let mut old = std::mem::take(&mut state.served);
        let mut served = Vec::new();
        for w in wanted(config) {
            let loaded = bound
                .tls
                .iter()
                .position(|(k, _)| *k == w.key)
                .map(|i| bound.tls.swap_remove(i).1);
            if let Some(i) = old.iter().position(|s| s.key == w.key) {
                let mut s = old.swap_remove(i);
                if s.plain_spec() != w.spec || s.tls_config() != w.tls.as_ref() {
                    if w.tls.is_none() {
                        s.tls = None;
                    } else if let (Some(cfg), Some(loaded)) = (&w.tls, loaded) {
                        s.tls = Some(self.listener_tls(s.bound, cfg, loaded));
                    }
                    self.restart(&mut s, &w, &mut state.retired);
                }
                s.drain = w.drain;
                served.push(s);
            } else if let Some(i) = bound.new.iter().position(|(k, _)| *k == w.key) {
                let (key, tcp) = bound.new.swap_remove(i);
                served.push(self.start(key, tcp, &w, loaded)?);
            }
        }
        for s in old {
            tracing::info!(listener = %s.bound, service = %s.spec.service, "listener removed by the reload: stops accepting; its connections drain");
            s.current.stop_accepting.send_replace(true);
            s.current.close.send_replace(Some(s.drain));
            state.retired.push(s.current);
        }
        let info = served
            .iter()
            .map(|s| (s.spec.service.clone(), s.bound, s.spec.pool.clone()))
            .collect();
        self.set_tls(served.iter().filter_map(|s| s.tls.clone()).collect());
        state.served = served;
        Ok(info)
    }

    fn start(
        &self,
        key: Key,
        tcp: TcpListener,
        w: &Wanted,
        loaded: Option<Loaded>,
    ) -> Result<Served, StartError> {
        let err = |source| StartError::Bind {
            addr: w.listen,
            key: w.config_key.clone(),
            source,
        };
        let bound = tcp.local_addr().map_err(err)?;
        let socket = dup(&tcp).map_err(err)?;
        let tls = match (&w.tls, loaded) {
            (Some(cfg), Some(loaded)) => Some(self.listener_tls(bound, cfg, loaded)),
            _ => None,
        };
        let spec = ListenerSpec {
            tls: tls.as_ref().map(|t| t.tls.clone()),
            ..w.spec.clone()
        };
        Ok(Served {
            key,
            spec: spec.clone(),
            bound,
            drain: w.drain,
            socket,
            current: Loop::spawn(tcp, spec, self.shared.clone()),
            tls,
        })
    }

    /// A listener's TLS from its checked certificates; expired ones are
    /// logged and served.
    fn listener_tls(&self, bound: SocketAddr, cfg: &TlsConfig, loaded: Loaded) -> Arc<TlsListener> {
        let label = bound.to_string();
        for w in &loaded.warnings {
            tracing::warn!(listener = %label, "{w}");
        }
        let metrics = self.shared.metrics.tls(&label);
        Arc::new(TlsListener {
            tls: Arc::new(ListenerTls::new(loaded, cfg, metrics)),
            label,
            config: cfg.clone(),
        })
    }

    fn set_tls(&self, now: Vec<Arc<TlsListener>>) {
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = now;
        self.tls_changed.send_modify(|n| *n += 1);
    }

    /// A new accept loop with `w`'s settings on `s`'s socket; the old one
    /// stops accepting, its connections run on.
    fn restart(&self, s: &mut Served, w: &Wanted, retired: &mut Vec<Loop>) {
        match from_dup(&s.socket) {
            Ok(tcp) => {
                let spec = ListenerSpec {
                    tls: s.tls.as_ref().map(|t| t.tls.clone()),
                    ..w.spec.clone()
                };
                let next = Loop::spawn(tcp, spec.clone(), self.shared.clone());
                let old = std::mem::replace(&mut s.current, next);
                old.stop_accepting.send_replace(true);
                retired.push(old);
                s.spec = spec;
                tracing::info!(listener = %s.bound, service = %s.spec.service, "listener settings changed: accepting with the new ones; open connections keep theirs");
            }
            Err(e) => {
                tracing::error!(listener = %s.bound, "cannot duplicate the listening socket ({e}): the listener keeps its old settings until a restart");
            }
        }
    }

    /// Shutdown: every accept loop stops and its connections drain until
    /// `deadline`; waits for them (at most `deadline` plus 2 s, then cuts).
    pub(crate) async fn shutdown(&self, deadline: Duration) {
        let mut state = self.state.lock().await;
        state.closed = true;
        self.set_tls(Vec::new());
        let served = std::mem::take(&mut state.served);
        let mut loops: Vec<Loop> = served.into_iter().map(|s| s.current).collect();
        loops.append(&mut state.retired);
        for l in &loops {
            l.stop_accepting.send_replace(true);
            l.close.send_modify(|c| {
                *c = Some(c.map_or(deadline, |d| d.min(deadline)));
            });
        }
        let wait = deadline.saturating_add(Duration::from_secs(2));
        let handles: Vec<_> = loops.into_iter().map(|l| l.task).collect();
        let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
        let all = async {
            for h in handles {
                let _ = h.await;
            }
        };
        if tokio::time::timeout(wait, all).await.is_err() {
            tracing::warn!("shutdown deadline passed; aborting what remains");
            for a in aborts {
                a.abort();
            }
        }
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

    #[test]
    fn port_zero_listeners_are_told_apart_by_service_and_rank() {
        let text = "[services.web]\nsplit = { blue = 1 }\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[[services.web.listeners]]\nlisten = \"127.0.0.1:0\"\n[[services.web.listeners]]\nlisten = \"127.0.0.1:8080\"\n[services.web.pools.blue]\nbackends = [\"127.0.0.1:1\"]\n";
        let config = cutover_config::parse("t.toml", text).unwrap();
        let keys: Vec<Key> = wanted(&config).into_iter().map(|w| w.key).collect();
        let zero: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(
            keys,
            vec![
                Key::Ephemeral("web".into(), zero, 0),
                Key::Ephemeral("web".into(), zero, 1),
                Key::Addr("127.0.0.1:8080".parse().unwrap()),
            ]
        );
    }
}
