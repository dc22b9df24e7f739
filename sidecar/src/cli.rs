//! The `sidecar` command: serve the store, or manage its schema and snapshots by hand.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tradestore_api::wire::CONFIG_ENV;

use crate::config::{self, Config};
use crate::durability::backup::Backups;
use crate::error::{Error, Result};
use crate::serve;
use crate::store::change::Change;
use crate::store::{db, log, migrations};
use crate::telemetry::logging;

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
    /// Read the commit log (read only; safe while the sidecar runs).
    Log {
        #[command(subcommand)]
        action: LogAction,
    },
    /// Restore a snapshot into the (empty) data directory; the checksum is verified first.
    Restore {
        /// A snapshot directory (holding trades.duckdb and manifest.json), or a snapshot
        /// id looked up in `snapshots.dir` and then in `snapshots.s3`.
        #[arg(long)]
        from: String,
    },
}

#[derive(Subcommand)]
enum LogAction {
    /// Check every group's checksum and that seqs run on; print the segments as JSON.
    /// Exits 1 on corruption or a gap (a torn end is reported: the next start cuts it).
    Verify,
    /// Print the changes from --from on, one JSON object a line.
    Dump {
        /// First seq to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most changes to print.
        #[arg(long)]
        limit: Option<usize>,
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

/// Parses the command line, loads the configuration and runs the command; exit 2 for
/// a configuration error, 1 for any other failure.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let cfg = match config::load(cli.config.as_deref(), env.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(&cfg.log);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve::serve(cfg, env),
        Command::Migrate { action } => migrate(&cfg, action),
        Command::Restore { from } => restore(&cfg, &from),
        Command::Log { action: LogAction::Verify } => verify_log(&cfg),
        Command::Log { action: LogAction::Dump { from, limit } } => dump_log(&cfg, from, limit.unwrap_or(usize::MAX)),
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
    let m = runtime.block_on(async {
        Backups::new(&cfg.snapshots, Default::default())?.restore(from, &cfg.database_path()).await
    })?;
    println!("{}", serde_json::to_string_pretty(&m).expect("manifest serializes"));
    Ok(())
}

fn verify_log(cfg: &Config) -> Result<()> {
    let report = log::verify(&cfg.commit_log_dir()).map_err(|e| Error::Internal(e.to_string()))?;
    println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    Ok(())
}

fn dump_log(cfg: &Config, from: u64, limit: usize) -> Result<()> {
    let mut reader = log::read_dir(&cfg.commit_log_dir(), from).map_err(|e| Error::Internal(e.to_string()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0;
    while printed < limit {
        let records = reader.next_records().map_err(|e| Error::Internal(e.to_string()))?;
        if records.is_empty() {
            break;
        }
        for r in records.iter().take(limit - printed) {
            let change = Change::from_record(r).map_err(Error::Internal)?;
            let line = serde_json::json!({
                "seq": r.seq, "change": change.kind_name(), "trade": change.trade(), "before": change.before
            });
            writeln!(out, "{line}")?;
            printed += 1;
        }
    }
    Ok(out.flush()?)
}
