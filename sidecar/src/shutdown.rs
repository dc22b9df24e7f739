//! Signal handling and the orderly stop: readiness off and writes refused at once,
//! in-flight requests answered, queued writes committed, a final CHECKPOINT, exit.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::signal::unix::{SignalKind, signal};

use crate::app::App;

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signalled() -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
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
