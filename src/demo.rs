//! `cutover demo`: built-in blue and green backends, the proxy, a preview
//! listener and the admin API, from an embedded config.

use std::sync::Arc;

use cutover_config::{Config, ConfigErrors};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::{self, BackendStats};
use crate::cli::DemoArgs;
use crate::App;

/// The embedded default config; `{...}` are filled from the flags.
pub const DEMO_CONFIG: &str = r#"
[admin]
listen = "{admin}"

[services.web]
split = { blue = 100, green = 0 }
sticky = "none"
override_header = "x-cutover-pool"
drain_timeout = "5s"

[[services.web.listeners]]
listen = "{listen}"

[[services.web.listeners]]
listen = "{preview}"
pool = "green"

[services.web.pools.blue]
backends = ["{blue}"]

[services.web.pools.green]
backends = ["{green}"]
"#;

pub fn demo_config(args: &DemoArgs) -> Result<Config, ConfigErrors> {
    let text = DEMO_CONFIG
        .replace("{admin}", &args.admin.to_string())
        .replace("{listen}", &args.listen.to_string())
        .replace("{preview}", &args.preview.to_string())
        .replace("{blue}", &args.blue.to_string())
        .replace("{green}", &args.green.to_string());
    let mut config = cutover_config::parse("<embedded demo config>", &text)?;
    config.workers = args.workers;
    config.shutdown_timeout = std::time::Duration::from_secs(5);
    Ok(config)
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the built-in {pool} backend on {addr} (flag --{pool}): {source}")]
    Backend {
        pool: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("demo config: {0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Start(#[from] crate::StartError),
}

/// Runs the demo until `stop` resolves.
pub async fn run(
    args: DemoArgs,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DemoError> {
    let config = demo_config(&args)?;
    let (tx, rx) = watch::channel(false);
    let mut addrs = Vec::new();
    for (pool, addr) in [("blue", args.blue), ("green", args.green)] {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| DemoError::Backend { pool, addr, source })?;
        addrs.push(l.local_addr().unwrap_or(addr));
        tokio::spawn(backend::serve(
            l,
            pool.to_string(),
            Arc::new(BackendStats::default()),
            rx.clone(),
        ));
    }
    let app = App::start(config).await?;
    let proxy = app.listener("web", 0).unwrap_or(args.listen);
    let preview = app.listener("web", 1).unwrap_or(args.preview);
    let admin = app.admin_addr;
    let exe = std::env::args().next().unwrap_or_else(|| "cutover".into());
    let ctl = if exe.ends_with("cutover") && !exe.contains('/') {
        "cutover".to_string()
    } else {
        exe.clone()
    };
    println!(
        r#"cutover demo is running.

  blue backend   http://{blue}
  green backend  http://{green}
  proxy          http://{proxy}      (all traffic on blue)
  preview        http://{preview}      (always green)
  admin API      http://{admin}

Try:
  curl -s http://{proxy}/                         # -> blue
  curl -s http://{preview}/                         # -> green (preview listener)
  curl -s -H 'x-cutover-pool: green' http://{proxy}/   # -> green (override header)
  {ctl} ctl --admin http://{admin} split web blue=90 green=10
  {ctl} ctl --admin http://{admin} switch web green
  curl -s http://{proxy}/                         # -> green, on the very next request
  {ctl} ctl --admin http://{admin} rollback web
  {ctl} ctl --admin http://{admin} status
  curl -s http://{admin}/metrics | grep cutover_requests_total

Ctrl-C stops it."#,
        blue = addrs[0],
        green = addrs[1],
    );
    stop.await;
    println!("stopping...");
    app.shutdown().await;
    tx.send_replace(true);
    Ok(())
}
