//! `sidecar serve`: start the store, serve HTTP until a signal or a reason to stop by
//! itself, then stop in order (see [`shutdown`]) and choose the exit.

mod shutdown;

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::time::Instant;

use shutdown::{Http, Signals};

use crate::app::{App, Tasks};
use crate::config::Config;
use crate::durability::{quarantine, recovery};
use crate::error::{Error, Result};
use crate::http;
use crate::telemetry::health::StopReason;

/// Runs the store until SIGTERM/SIGINT (Ok: a clean stop, exit 0) or until it must
/// stop by itself (Err, so the container restarts; see [`StopReason`]).
pub(crate) fn serve(cfg: Config, env: HashMap<String, String>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut signals = Signals::install()?;
        let grace = cfg.lifecycle.shutdown_grace;
        let listener = bind(cfg.listen).await?;
        let tasks = Tasks::default();
        let (app, writer_thread) = App::start(cfg, &env, &tasks).await?;
        let http = start_http(&app, listener, &tasks)?;
        let stop = tokio::select! {
            signal = signals.recv() => {
                tracing::info!(signal, grace = ?grace, "shutting down");
                None
            }
            reason = app.health.stop_requested() => {
                tracing::error!(?reason, grace = ?grace, "stopping by itself");
                Some(reason)
            }
        };
        let deadline = Instant::now() + grace;
        if tokio::time::timeout_at(deadline, shutdown::drain(&app, http, writer_thread)).await.is_err() {
            return Err(Error::Internal(format!("shutdown did not finish within {grace:?}")));
        }
        let outcome = exit(&app, stop, deadline).await;
        shutdown::stop_tasks(&tasks, deadline).await;
        outcome
    })
}

async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen).await.map_err(|e| Error::Config(format!("cannot listen on {listen}: {e}")))
}

fn start_http(app: &std::sync::Arc<App>, listener: TcpListener, tasks: &Tasks) -> Result<Http> {
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let limits = http::server::Limits::new(&app.cfg.http, app.cfg.lifecycle.shutdown_grace);
    tracing::info!(max_connections = limits.max_connections, "serving HTTP");
    let stop = tasks.child_token();
    let server = http::server::serve(listener, http::routes(app.clone()), limits, app.metrics.clone(), stop.clone());
    Ok(Http { stop, done: tasks.spawn(server) })
}

/// The outcome once the store is closed: a signal stops cleanly; a failed integrity
/// check quarantines the file (once a rebuild can hold everything) and a fatal storage
/// error does not (the file is not damaged, and reopening it replays the WAL); both
/// exit non-zero so the container restarts.
async fn exit(app: &App, stop: Option<StopReason>, deadline: Instant) -> Result<()> {
    match stop {
        None => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Some(StopReason::Recover(why)) => {
            let last = app.metrics.last_seq.get();
            let local = recovery::local_log(&app.cfg.commit_log_dir());
            let from_log = recovery::log_rebuilds(&local, app.backups.last().map(|m| m.seq), last);
            let journal = app.journal.as_ref();
            quarantine::when_recoverable(&app.cfg.database_path(), &why, last, from_log, journal, deadline).await
        }
        Some(StopReason::Fatal(why)) => {
            Err(Error::Internal(format!("fatal storage error ({why}); restarting to reopen the database")))
        }
    }
}
