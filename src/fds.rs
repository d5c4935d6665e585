//! File descriptors: at start the soft `RLIMIT_NOFILE` is raised to the
//! hard limit, and a warning says when that is below what the configured
//! `max_connections` need.
//!
//! What a connection costs (docs/configuration.md says the same):
//! - an `http` listener connection: its socket, the watchdog's duplicate of
//!   it (to notice a client that left), and for each upstream connection it
//!   uses its socket and the registry's duplicate (to cut it at a drain
//!   deadline): 4 while it has one request in flight to an HTTP/1.1 or
//!   h2c backend. An HTTP/2 client with many streams in flight to HTTP/1.1
//!   backends uses one upstream connection per stream (2 descriptors each).
//! - a `tcp` listener connection: its socket and the backend's: 2.
//! - fixed: each listener's socket, the admin listener, one socket per
//!   backend while its health check runs, and a margin for the runtime,
//!   standard streams, the admin API's clients and the state file.
//!
//! Idle keep-alive upstream connections (up to 1024 per backend, closed
//! after 90 s unused) come on top: 2 descriptors each.

use cutover_config::{Config, ListenerMode};

/// Descriptors per `http` listener connection with one upstream connection.
pub const PER_HTTP_CONNECTION: u64 = 4;
/// Descriptors per `tcp` listener connection.
pub const PER_TCP_CONNECTION: u64 = 2;
/// The runtime, standard streams, logs, the state file, admin clients.
pub const MARGIN: u64 = 64;

/// Descriptors `config` needs with every listener at its `max_connections`
/// (each with one upstream connection) and every health check running.
pub fn needed(config: &Config) -> u64 {
    let mut need = MARGIN + 1; // + the admin listener
    for sc in &config.services {
        let max = sc.limits.max_connections as u64;
        for lc in &sc.listeners {
            let per = match lc.mode {
                ListenerMode::Http => PER_HTTP_CONNECTION,
                ListenerMode::Tcp => PER_TCP_CONNECTION,
            };
            need = need
                .saturating_add(1)
                .saturating_add(max.saturating_mul(per));
        }
        let checked: usize = sc
            .pools
            .iter()
            .filter(|p| p.health_check.is_some())
            .map(|p| p.backends.len())
            .sum();
        need = need.saturating_add(checked as u64);
    }
    need
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, logs the figure, and
/// warns when it is below [`needed`]. Returns the soft limit in force.
pub fn raise_and_check(config: &Config) -> Option<u64> {
    let need = needed(config);
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(
                need,
                "cannot read or raise the file descriptor limit (RLIMIT_NOFILE): {e}"
            );
            return None;
        }
    };
    tracing::info!(
        limit,
        need,
        "file descriptor limit (RLIMIT_NOFILE, soft raised to the hard limit)"
    );
    if limit < need {
        tracing::warn!(
            limit,
            need,
            "the file descriptor limit is below what max_connections need ({}); raise it (systemd LimitNOFILE=, docker --ulimit nofile=, ulimit -n) or lower max_connections: past it, accepts fail and wait",
            breakdown(config)
        );
    }
    Some(limit)
}

/// How [`needed`] adds up, for the warning.
fn breakdown(config: &Config) -> String {
    let mut parts = Vec::new();
    for sc in &config.services {
        for lc in &sc.listeners {
            let per = match lc.mode {
                ListenerMode::Http => PER_HTTP_CONNECTION,
                ListenerMode::Tcp => PER_TCP_CONNECTION,
            };
            parts.push(format!(
                "{} {}: {} x {per}",
                sc.name, lc.listen, sc.limits.max_connections
            ));
        }
    }
    format!("{} + {MARGIN} for the rest", parts.join(", "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(text: &str) -> Config {
        cutover_config::parse("t.toml", text).unwrap()
    }

    #[test]
    fn the_figure_counts_each_listener_at_its_limit_and_each_checked_backend() {
        let c = config(
            r#"
[services.web]
split = { blue = 1, green = 0 }
limits = { max_connections = 1000 }
[[services.web.listeners]]
listen = "127.0.0.1:8080"
[[services.web.listeners]]
listen = "127.0.0.1:8081"
pool = "green"
[services.web.pools.blue]
backends = ["127.0.0.1:1", "127.0.0.1:2"]
health_check = { path = "/health" }
[services.web.pools.green]
backends = ["127.0.0.1:3"]
[services.db]
split = { a = 1 }
limits = { max_connections = 10 }
[[services.db.listeners]]
listen = "127.0.0.1:5432"
mode = "tcp"
[services.db.pools.a]
backends = ["127.0.0.1:4"]
"#,
        );
        // 2 http listeners x (1 + 1000 x 4), 1 tcp listener x (1 + 10 x 2),
        // 2 checked backends, the admin listener, the margin.
        assert_eq!(needed(&c), 2 * (1 + 4000) + (1 + 20) + 2 + 1 + 64);
        let b = breakdown(&c);
        assert!(b.contains("web 127.0.0.1:8080: 1000 x 4"), "{b}");
        assert!(b.contains("db 127.0.0.1:5432: 10 x 2"), "{b}");
    }

    #[test]
    fn the_default_limit_needs_forty_thousand_per_listener() {
        let c = config(
            "[services.web]\nsplit = { blue = 1 }\n[[services.web.listeners]]\nlisten = \"127.0.0.1:8080\"\n[services.web.pools.blue]\nbackends = [\"127.0.0.1:1\"]\n",
        );
        assert_eq!(needed(&c), 1 + 10_000 * 4 + 1 + 64);
    }
}
