//! The owner of every background task: one cancellation token they all watch and one
//! tracker that knows them all, so that a stop cancels every task and waits until
//! each has ended; none is left running detached while the process exits.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The background tasks of one running sidecar.
#[derive(Default)]
pub(crate) struct Tasks {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// The token a task watches; each task decides where it may stop (see its `run`).
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// A token of its own for a task that must stop before the others (the HTTP
    /// server drains first); [`Tasks::stop`] cancels it too.
    pub fn child_token(&self) -> CancellationToken {
        self.stop.child_token()
    }

    /// Starts `task` and keeps track of it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Cancels every task and resolves once all have ended.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
