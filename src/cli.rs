//! Command-line interface definitions (clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "cutover",
    version,
    about = "Blue/green traffic-switching reverse proxy",
    long_about = "cutover sits in front of a blue and a green pool of backends and owns the switch between them: \
                  atomic or weighted, drained, with an admin API and this CLI.",
    after_help = "Examples:\n  cutover demo\n  cutover check cutover.toml\n  cutover run --config cutover.toml\n  cutover ctl switch web green"
)]
pub struct Cli {
    /// Log filter, like `info` or `cutover=debug` (default: $RUST_LOG, else info).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy with a config file.
    #[command(
        after_help = "Example:\n  cutover run --config /etc/cutover/cutover.toml --workers 4"
    )]
    Run {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Runtime worker threads (overrides `workers` in the config; default: one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate config files: prints every error with file, line and key, or `ok`.
    #[command(after_help = "Example:\n  cutover check cutover.toml && echo valid")]
    Check {
        /// Config files to check.
        #[arg(required = true)]
        configs: Vec<PathBuf>,
    },
    /// Start built-in blue and green backends, the proxy and the admin API, and print what to try.
    #[command(
        after_help = "Example:\n  cutover demo --listen 127.0.0.1:18080 --admin 127.0.0.1:19901"
    )]
    Demo(DemoArgs),
    /// Talk to a running cutover's admin API.
    #[command(
        after_help = "Examples:\n  cutover ctl status\n  cutover ctl split web blue=90 green=10 --reason canary\n  cutover ctl switch web green\n  cutover ctl rollback web\n  cutover ctl health\n  CUTOVER_ADMIN=http://10.0.0.5:9901 CUTOVER_TOKEN=... cutover ctl status --json"
    )]
    Ctl(CtlArgs),
    /// Route 53 records and Elastic IPs that point at the proxy tier.
    #[cfg(feature = "edge")]
    #[command(subcommand)]
    Edge(EdgeCommand),
}

#[cfg(feature = "edge")]
#[derive(Subcommand, Debug)]
pub enum EdgeCommand {
    /// Show what `apply` would change. Exit 0: nothing; 2: changes pending; 1: error.
    #[command(after_help = "Example:\n  cutover edge plan --config cutover.toml --json")]
    Plan {
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make the edge match the config (UPSERT records, move Elastic IPs).
    #[command(after_help = "Example:\n  cutover edge apply --config cutover.toml --timeout 5m")]
    Apply {
        #[arg(long, short)]
        config: PathBuf,
        /// How long to wait for Route 53 to report INSYNC.
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// The proxy listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The preview listener (always green).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub preview: SocketAddr,
    /// The admin API.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// The built-in blue backend.
    #[arg(long, default_value = "127.0.0.1:8091")]
    pub blue: SocketAddr,
    /// The built-in green backend.
    #[arg(long, default_value = "127.0.0.1:8092")]
    pub green: SocketAddr,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
}

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Admin API base URL.
    #[arg(
        long,
        env = "CUTOVER_ADMIN",
        default_value = "http://127.0.0.1:9901",
        global = true
    )]
    pub admin: String,
    /// A file holding the bearer token for the admin API (one trailing
    /// newline is ignored). Without it: $CUTOVER_TOKEN.
    #[arg(long, global = true, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself. It shows in `ps` and shell history:
    /// prefer --token-file or $CUTOVER_TOKEN.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a readable summary.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ChangeArgs {
    /// Why (goes to the audit log).
    #[arg(long)]
    pub reason: Option<String>,
    /// Refuse the change unless the routing generation is still this one:
    /// N, or N@RUN_ID (as `ctl status` shows it) to also refuse it if
    /// cutover restarted since (generations can restart without a state file).
    #[arg(long, value_name = "N[@RUN_ID]")]
    pub expect_generation: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Show generation, splits, pools, backends and in-flight requests.
    #[command(after_help = "Example:\n  cutover ctl status")]
    Status,
    /// Set a service's split: every pool with a weight.
    #[command(
        after_help = "Example:\n  cutover ctl split web blue=90 green=10 --reason 'canary 10%'"
    )]
    Split {
        service: String,
        /// POOL=WEIGHT pairs, one per pool.
        #[arg(required = true)]
        weights: Vec<String>,
        #[command(flatten)]
        change: ChangeArgs,
        /// Apply even if a pool that gains weight has no backend up (audited as forced).
        #[arg(long)]
        force: bool,
    },
    /// Send all of a service's traffic to one pool.
    #[command(
        after_help = "Examples:\n  cutover ctl switch web green --reason 'release 42'\n  cutover ctl switch web green --wait-drained   # then show what is left on the old pool until it is empty"
    )]
    Switch {
        service: String,
        pool: String,
        #[command(flatten)]
        change: ChangeArgs,
        /// Apply even if the pool has no backend up (audited as forced).
        #[arg(long)]
        force: bool,
        /// After the switch, wait until the pools that lost all traffic are drained
        /// (exit 0), or until the deadline passes (exit 1 with what is left).
        #[arg(long)]
        wait_drained: bool,
        /// How long --wait-drained waits (default: the service's drain timeout plus 5s).
        #[arg(long, requires = "wait_drained")]
        timeout: Option<String>,
    },
    /// Show what is left on each pool: in-flight requests, open and draining tunnels.
    #[command(after_help = "Example:\n  cutover ctl drain web")]
    Drain { service: String },
    /// Return a service to the split before its last change.
    #[command(after_help = "Example:\n  cutover ctl rollback web --reason 'errors on green'")]
    Rollback {
        service: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Show the audit log, newest first: accepted changes, refused attempts, reloads.
    #[command(
        after_help = "Examples:\n  cutover ctl audit\n  cutover ctl audit --service web --limit 20 --since 2026-11-30T00:00:00Z"
    )]
    Audit {
        /// Only this service's entries.
        #[arg(long)]
        service: Option<String>,
        /// At most this many entries (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only entries at or after this time (RFC 3339 in UTC).
        #[arg(long)]
        since: Option<String>,
    },
    /// Reload the config file now (POST /v1/reload) and print what changed,
    /// what needs a restart, or why nothing changed (exit 1).
    #[command(after_help = "Example:\n  cutover ctl reload")]
    Reload,
    /// Check that cutover is ready to serve (GET /readyz): exit 0 when it is,
    /// 1 with a one-line reason otherwise. For container health checks.
    #[command(
        after_help = "Examples:\n  cutover ctl health\n  cutover ctl --admin http://127.0.0.1:9901 health --timeout 1s"
    )]
    Health {
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s")]
        timeout: String,
    },
}
