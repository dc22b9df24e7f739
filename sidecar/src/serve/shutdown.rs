//! Signal handling and the orderly stop: readiness off and writes refused at once,
//! in-flight requests answered, queued writes committed, a final CHECKPOINT, exit.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::app::App;

/// SIGTERM/SIGINT handlers, installed before anything else starts so a signal
/// that arrives during start-up is not lost to the default action.
pub struct Signals {
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

/// Stops accepting work; call first when a signal arrives.
pub fn begin(app: &App) {
    app.health.begin_shutdown();
    app.writer.close();
}

/// Drains the writer (it commits what is queued and checkpoints) and joins it.
pub async fn finish_writer(app: Arc<App>, writer_thread: JoinHandle<()>) {
    app.writer.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
}
