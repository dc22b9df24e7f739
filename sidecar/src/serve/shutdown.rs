//! Signal handling and the orderly stop: readiness off and writes refused at once,
//! the HTTP server drained, queued writes committed, a final CHECKPOINT; then every
//! background task is cancelled and awaited.

use std::thread::JoinHandle;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::app::{App, Tasks};

/// SIGTERM/SIGINT handlers, installed before anything else starts so a signal
/// that arrives during start-up is not lost to the default action.
pub(super) struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Resolves on the first SIGTERM or SIGINT, naming it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The HTTP server task and the token that starts its drain.
pub(super) struct Http {
    pub stop: CancellationToken,
    pub done: tokio::task::JoinHandle<()>,
}

/// Stops accepting work, drains the HTTP server, then lets the writer commit what is
/// queued, run the final CHECKPOINT and end, and joins its thread.
pub(super) async fn drain(app: &App, http: Http, writer_thread: JoinHandle<()>) {
    app.health.begin_shutdown();
    app.writer.close();
    http.stop.cancel();
    let _ = http.done.await;
    app.writer.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
}

/// Cancels the background tasks and waits for them until `deadline`. Called last: the
/// journal must go on until a quarantine has seen it hold every change. A task still
/// running at the deadline (a check or snapshot that takes longer) is logged and left
/// to the runtime's end; the store itself is already closed cleanly by then.
pub(super) async fn stop_tasks(tasks: &Tasks, deadline: tokio::time::Instant) {
    if tokio::time::timeout_at(deadline, tasks.stop()).await.is_err() {
        tracing::warn!("background tasks still running at the end of the shutdown grace; leaving them");
    }
}
