//! cutover: parse the command line, build the runtime, run.

use std::process::ExitCode;

use clap::Parser;
use cutover::cli::{Cli, Command};
use cutover::{ctl, demo, fds, logging, App};

/// One worker: a current-thread runtime (no work-stealing queues, no
/// cross-thread wake-ups; the load benchmark showed it matters). More: the
/// multi-thread scheduler.
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().thread_name("cutover-worker").build()
}

/// SIGTERM and SIGINT, caught from the moment this is made: made before
/// anything starts serving, so a SIGTERM that comes as soon as `/readyz`
/// says ready is a graceful shutdown, never the default action's kill.
/// Must be made inside the runtime.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let catch = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("cannot handle {name} ({e}); it will end the process at once");
                    None
                }
            };
            Signals {
                term: catch(SignalKind::terminate(), "SIGTERM"),
                int: catch(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.term) => {}
                _ = recv(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM; a second one exits at once.
async fn shutdown_signal(mut signals: Signals) {
    signals.next().await;
    tracing::info!("shutdown signal received; shutting down (send it again to exit at once)");
    tokio::spawn(async move {
        signals.next().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

/// SIGHUP reloads the config file (the systemd unit's `ExecReload`). Its
/// default action ends the process, so it is caught from the start (made
/// before anything serves); `reload_on_sighup` acts on it once the app
/// runs. Must run inside the runtime.
#[cfg(unix)]
fn catch_sighup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP ({e}); it will end the process");
            None
        }
    }
}

#[cfg(unix)]
fn reload_on_sighup(
    hup: Option<tokio::signal::unix::Signal>,
    reloader: Option<std::sync::Arc<cutover::reload::Reloader>>,
) {
    let (Some(mut hup), Some(reloader)) = (hup, reloader) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the config file");
            // The outcome is logged (and counted) by the reload itself.
            let _ = reloader.reload("SIGHUP").await;
        }
    });
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for the whole program (TLS termination, TLS to
    // backends, the AWS SDK's client): aws-lc-rs.
    cutover_proxy::tls::install_provider();
    logging::init(cli.log_level.as_deref(), cli.log_format);
    match cli.command {
        Command::Check { configs } => {
            let mut bad = false;
            for path in &configs {
                // The tokens' secrets and the TLS files too: `run` would
                // refuse to start without them.
                let loaded = cutover_config::load(path)
                    .and_then(|c| cutover_config::secrets::resolve(&c.admin).map(|_| c))
                    .and_then(|cfg| {
                        let (warnings, errors) = cutover::app::check_tls(&cfg);
                        for w in &warnings {
                            eprintln!("warning: {w}");
                        }
                        if errors.is_empty() {
                            Ok(cfg)
                        } else {
                            Err(cutover_config::ConfigErrors(errors))
                        }
                    });
                match loaded {
                    Ok(_) => println!("{}: ok", path.display()),
                    Err(errs) => {
                        bad = true;
                        eprintln!("{errs}");
                        eprintln!("{}: {} error(s)", path.display(), errs.0.len());
                    }
                }
            }
            if bad {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Run { config, workers } => {
            let cfg = match cutover_config::load(&config) {
                Ok(c) => c,
                Err(errs) => return fail(format!("invalid config:\n{errs}")),
            };
            fds::raise_and_check(&cfg);
            let rt = match runtime(workers.or(cfg.workers)) {
                Ok(rt) => rt,
                Err(e) => return fail(format!("cannot start the runtime: {e}")),
            };
            rt.block_on(async {
                let signals = Signals::install();
                #[cfg(unix)]
                let hup = catch_sighup();
                let app = match App::start_watching(&config, cfg).await {
                    Ok(a) => a,
                    Err(e) => return fail(e),
                };
                #[cfg(unix)]
                reload_on_sighup(hup, app.reloader());
                shutdown_signal(signals).await;
                app.shutdown().await;
                ExitCode::SUCCESS
            })
        }
        Command::Demo(args) => {
            let rt = match runtime(args.workers) {
                Ok(rt) => rt,
                Err(e) => return fail(format!("cannot start the runtime: {e}")),
            };
            let run = async {
                let signals = Signals::install();
                demo::run(args, shutdown_signal(signals)).await
            };
            match rt.block_on(run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Ctl(args) => {
            let rt = match runtime(Some(1)) {
                Ok(rt) => rt,
                Err(e) => return fail(format!("cannot start the runtime: {e}")),
            };
            match rt.block_on(ctl::run(&args)) {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        #[cfg(feature = "edge")]
        Command::Edge(cmd) => edge_command(cmd),
    }
}

#[cfg(feature = "edge")]
fn edge_command(cmd: cutover::cli::EdgeCommand) -> ExitCode {
    use cutover::cli::EdgeCommand;
    let path = match &cmd {
        EdgeCommand::Plan { config, .. } | EdgeCommand::Apply { config, .. } => config.clone(),
    };
    let cfg = match cutover_config::load(&path) {
        Ok(c) => c,
        Err(errs) => return fail(format!("invalid config:\n{errs}")),
    };
    let Some(edge) = cfg.edge else {
        return fail(format!(
            "{}: no [edge] section: nothing to plan or apply",
            path.display()
        ));
    };
    let rt = match runtime(Some(1)) {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let mut out = std::io::stdout();
    let result = rt.block_on(async {
        match cmd {
            EdgeCommand::Plan { json, .. } => {
                cutover_control::edge::plan_command(&edge, json, &mut out).await
            }
            EdgeCommand::Apply { timeout, .. } => match cutover_config::parse_duration(&timeout) {
                Ok(t) => cutover_control::edge::apply_command(&edge, t, &mut out).await,
                Err(e) => Ok({
                    eprintln!("error: --timeout: {e}");
                    1
                }),
            },
        }
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => fail(e),
    }
}
