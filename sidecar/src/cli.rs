//! The `sidecar` command: serve the store, or manage its schema by hand.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::app::{App, StopReason};
use crate::config::{CONFIG_ENV, Config, LogFormat};
use crate::durability::{backup, recovery};
use crate::error::{Error, Result};
use crate::http;
use crate::serve::shutdown;
use crate::store::{db, migrations};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sidecar", version, about = "TradeStore DuckDB sidecar")]
struct Cli {
    /// YAML config file (defaults apply without one; TRADESTORE_* variables override).
    #[arg(long, short, env = CONFIG_ENV, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Inspect or change the schema version (the sidecar must not be running).
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Validate the configuration and print the effective values as JSON.
    Config,
    /// Restore a snapshot into the (empty) data directory; the checksum is verified first.
    Restore {
        /// A snapshot directory (holding trades.duckdb and manifest.json), or a snapshot
        /// id looked up in `snapshots.dir` and then in `snapshots.s3`.
        #[arg(long)]
        from: String,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Show applied and pending migrations.
    Status,
    /// Apply pending migrations (up to --to).
    Up {
        /// Stop at this version.
        #[arg(long)]
        to: Option<i64>,
    },
    /// Roll back to version --to (0 = empty schema).
    Down {
        /// Target version.
        #[arg(long)]
        to: i64,
    },
}

/// Runs the `sidecar` command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let cfg = match Config::load(cli.config.as_deref(), env.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cfg, env),
        Command::Migrate { action } => migrate(&cfg, action),
        Command::Restore { from } => restore(&cfg, &from),
        Command::Config => {
            println!("{}", serde_json::to_string_pretty(&cfg).expect("config serializes"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}

/// After an integrity failure: quarantines the file for recovery at the next start,
/// but only once the Redis journal holds every committed change (waiting until
/// `deadline`); exits non-zero either way so the container restarts.
async fn quarantine_when_journaled(app: &App, why: &str, deadline: tokio::time::Instant) -> Result<()> {
    let last = app.metrics.last_seq.get();
    loop {
        let journaled = app.journal.as_ref().map_or(0, |j| j.lock().unwrap_or_else(|e| e.into_inner()).watermark);
        if journaled >= last {
            recovery::quarantine(&app.cfg.database_path(), why, last)?;
            return Err(Error::Internal(format!("integrity check failed ({why}); restarting into recovery")));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Internal(format!(
                "integrity check failed ({why}); the journal holds seq {journaled} of {last}, so the file is not \
                 quarantined (recovery would lose changes): a human must decide"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn migrate(cfg: &Config, action: MigrateAction) -> Result<()> {
    let conn = db::open(&cfg.database_path(), &cfg.duckdb)?;
    let known = migrations::embedded();
    match action {
        MigrateAction::Status => {
            let st = migrations::status(&conn, known)?;
            println!("{}", serde_json::to_string_pretty(&st).expect("status serializes"));
            migrations::check(&conn, known)?;
        }
        MigrateAction::Up { to } => {
            let done = migrations::up(&conn, known, to)?;
            println!("applied: {done:?}");
        }
        MigrateAction::Down { to } => {
            let done = migrations::down(&conn, known, to)?;
            println!("rolled back: {done:?}");
        }
    }
    conn.execute_batch("CHECKPOINT")?;
    Ok(())
}

fn restore(cfg: &Config, from: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let m =
        runtime.block_on(async { backup::Backups::new(&cfg.snapshots)?.restore(from, &cfg.database_path()).await })?;
    println!("{}", serde_json::to_string_pretty(&m).expect("manifest serializes"));
    Ok(())
}

fn serve(cfg: Config, env: HashMap<String, String>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut signals = shutdown::Signals::install()?;
        let listen = cfg.listen;
        let grace = cfg.lifecycle.shutdown_grace;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {listen}: {e}")))?;
        let (app, writer_thread) = App::start(cfg, &env).await?;
        tracing::info!(addr = %listener.local_addr()?, "listening");
        let limits = http::server::Limits::new(&app.cfg.http, grace);
        tracing::info!(max_connections = limits.max_connections, "serving HTTP");
        let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(http::server::serve(
            listener,
            http::routes(app.clone()),
            limits,
            app.metrics.clone(),
            http_stopped,
        ));
        let stop = tokio::select! {
            signal = signals.recv() => {
                tracing::info!(signal, grace = ?grace, "shutting down");
                None
            }
            reason = app.stop_requested() => {
                tracing::error!(?reason, grace = ?grace, "stopping by itself");
                Some(reason)
            }
        };
        let deadline = tokio::time::Instant::now() + grace;
        shutdown::begin(&app);
        stop_http.send_replace(true);
        let drained = tokio::time::timeout_at(deadline, async {
            let _ = server.await;
            shutdown::finish_writer(app.clone(), writer_thread).await;
        })
        .await;
        if drained.is_err() {
            return Err(Error::Internal(format!("shutdown did not finish within {grace:?}")));
        }
        match stop {
            None => {
                tracing::info!("stopped cleanly");
                Ok(())
            }
            Some(StopReason::Recover(why)) => quarantine_when_journaled(&app, &why, deadline).await,
            // Non-zero, so the container is restarted; the file is not quarantined: it is
            // not damaged, and reopening it replays the WAL.
            Some(StopReason::Fatal(why)) => {
                Err(Error::Internal(format!("fatal storage error ({why}); restarting to reopen the database")))
            }
        }
    })
}
