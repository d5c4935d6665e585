//! The real cutover app in process: loopback backends that say which pool
//! they are, cutover on port 0 in front of them, its addresses read back
//! from the app (nothing picks a port to bind later).
//!
//! ```ignore
//! let h = Harness::new().blue(2).green(1).service("sticky = \"cookie\"").start().await;
//! let a = get_once(h.proxy, "/", &[]).await?;
//! ```

use std::net::SocketAddr;

use cutover::App;
use http::StatusCode;
use serde_json::Value;

use crate::backend::TestBackend;
use crate::client::admin_with_token;

pub struct Harness {
    blue: usize,
    green: usize,
    service_extra: String,
    top_extra: String,
    backends_override: Option<(String, String)>,
    tcp: bool,
    proxy_protocol: bool,
    pool_extra: String,
    admin_token: Option<String>,
    admin_extra: String,
    listener_extra: String,
}

/// A started harness: the app, its addresses, its backends.
pub struct Running {
    pub app: Option<App>,
    pub proxy: SocketAddr,
    pub preview: SocketAddr,
    pub admin: SocketAddr,
    pub backends: Vec<TestBackend>,
    pub config_text: String,
    /// The admin token, when [`Harness::admin_token`] set one.
    pub token: Option<String>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness {
            blue: 1,
            green: 1,
            service_extra: String::new(),
            top_extra: String::new(),
            backends_override: None,
            tcp: false,
            proxy_protocol: false,
            pool_extra: String::new(),
            admin_token: None,
            admin_extra: String::new(),
            listener_extra: String::new(),
        }
    }

    /// Extra TOML lines in the main (non-preview) listener's table.
    pub fn listener(mut self, toml: &str) -> Self {
        self.listener_extra.push_str(toml);
        self.listener_extra.push('\n');
        self
    }

    /// The admin API wants `Authorization: Bearer <token>` (health checks
    /// and metrics aside); [`Running::admin`] sends it.
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_string());
        self
    }

    /// Extra TOML lines in `[admin]` (keys first; `[[admin.tokens]]`
    /// tables may follow).
    pub fn admin(mut self, toml: &str) -> Self {
        self.admin_extra.push_str(toml);
        self.admin_extra.push('\n');
        self
    }

    /// Both listeners in `mode = "tcp"`, with TCP echo backends.
    pub fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }

    /// The main listener reads a PROXY protocol header first.
    pub fn proxy_protocol(mut self) -> Self {
        self.proxy_protocol = true;
        self
    }

    /// Extra TOML lines in both pools' tables.
    pub fn pools(mut self, toml: &str) -> Self {
        self.pool_extra.push_str(toml);
        self.pool_extra.push('\n');
        self
    }

    pub fn blue(mut self, n: usize) -> Self {
        self.blue = n;
        self
    }

    pub fn green(mut self, n: usize) -> Self {
        self.green = n;
        self
    }

    /// Extra TOML lines inside `[services.web]` (split defaults to 100/0).
    pub fn service(mut self, toml: &str) -> Self {
        self.service_extra.push_str(toml);
        self.service_extra.push('\n');
        self
    }

    /// Extra top-level TOML lines (before any table).
    pub fn top(mut self, toml: &str) -> Self {
        self.top_extra.push_str(toml);
        self.top_extra.push('\n');
        self
    }

    /// Use these backend lists (TOML arrays) instead of started backends.
    pub fn backends(mut self, blue: &str, green: &str) -> Self {
        self.backends_override = Some((blue.into(), green.into()));
        self
    }

    pub async fn start(self) -> Running {
        // Logs in test output when RUST_LOG is set (e.g. RUST_LOG=cutover=debug).
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let mut backends = Vec::new();
        for (pool, n) in [("blue", self.blue), ("green", self.green)] {
            for _ in 0..n {
                backends.push(if self.tcp {
                    TestBackend::start_tcp(pool).await
                } else {
                    TestBackend::start(pool).await
                });
            }
        }
        let mode = if self.tcp { "mode = \"tcp\"\n" } else { "" };
        let pp = if self.proxy_protocol {
            "proxy_protocol = true\n"
        } else {
            ""
        };
        let list = |pool: &str| {
            let v: Vec<String> = backends
                .iter()
                .filter(|b| b.pool == pool)
                .map(|b| format!("\"{}\"", b.addr))
                .collect();
            format!("[{}]", v.join(", "))
        };
        let (blue_list, green_list) = self
            .backends_override
            .clone()
            .unwrap_or_else(|| (list("blue"), list("green")));
        let split = if self.service_extra.contains("split") {
            String::new()
        } else {
            "split = { blue = 100, green = 0 }\n".to_string()
        };
        let token = match &self.admin_token {
            Some(t) => format!("token = {t:?}\n"),
            None => String::new(),
        };
        let text = format!(
            r#"{top}
shutdown_timeout = "2s"

[admin]
listen = "127.0.0.1:0"
{token}{admin_extra}
[services.web]
{split}{extra}
[[services.web.listeners]]
listen = "127.0.0.1:0"
{mode}{pp}{listener_extra}
[[services.web.listeners]]
listen = "127.0.0.1:0"
pool = "green"
{mode}
[services.web.pools.blue]
backends = {blue_list}
{pool_extra}
[services.web.pools.green]
backends = {green_list}
{pool_extra}
"#,
            top = self.top_extra,
            extra = self.service_extra,
            pool_extra = self.pool_extra,
            listener_extra = self.listener_extra,
            admin_extra = self.admin_extra,
        );
        let config = cutover_config::parse("harness.toml", &text)
            .unwrap_or_else(|e| panic!("harness config:\n{e}\n{text}"));
        let app = App::start(config).await.expect("app starts");
        Running {
            proxy: app.listener("web", 0).expect("proxy listener"),
            preview: app.listener("web", 1).expect("preview listener"),
            admin: app.admin_addr,
            app: Some(app),
            backends,
            config_text: text,
            token: self.admin_token,
        }
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

impl Running {
    /// An admin API call with the harness's token (if any).
    pub async fn api(&self, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        admin_with_token(self.admin, self.token.as_deref(), method, path, body).await
    }
}
