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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stop_cancels_every_task_and_waits_until_each_has_ended() {
        let tasks = Tasks::default();
        let ended = Arc::new(AtomicUsize::new(0));
        for pause_ms in [10, 50] {
            let (stop, ended) = (tasks.token(), ended.clone());
            tasks.spawn(async move {
                stop.cancelled().await;
                // A task that still has work to finish once cancelled, like a check in progress.
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
        let http = tasks.child_token();
        tasks.stop().await;
        assert_eq!(ended.load(Ordering::SeqCst), 2, "stop returned before every task ended");
        assert!(http.is_cancelled(), "a child token is cancelled with the rest");
    }
}
