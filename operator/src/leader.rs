//! Leader election. The Lease itself is handled by `kube-lease-manager` (server-side apply on a
//! `coordination.k8s.io/v1` Lease, renewed before it expires); this module decides what runs
//! when: the controller starts once this replica holds the Lease, and stops the moment it is
//! lost (the process then exits so it can rejoin as a candidate with a clean state).

use std::future::Future;

use tokio::sync::watch;

/// How a leader term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Shutdown was requested (SIGTERM); the work was stopped gracefully.
    Shutdown,
    /// The Lease was lost (or the elector stopped): the work was aborted.
    LostLeadership,
    /// The work ended by itself.
    WorkEnded,
}

/// Waits for leadership, then runs `work(stop)` until it ends, leadership is lost, or `shutdown`
/// fires. On shutdown, `stop` is set to true and the work is awaited (graceful drain); on lost
/// leadership the work is dropped at once, because another replica may already be acting.
pub async fn run_while_leader<W, Fut>(
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    work: W,
) -> Outcome
where
    W: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    // Wait to become leader (or for shutdown).
    loop {
        if *shutdown.borrow() {
            return Outcome::Shutdown;
        }
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            r = leader.changed() => if r.is_err() { return Outcome::LostLeadership },
            _ = shutdown.changed() => {}
        }
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let work = work(stop_rx);
    tokio::pin!(work);
    loop {
        tokio::select! {
            _ = &mut work => return Outcome::WorkEnded,
            r = leader.changed() => {
                if r.is_err() || !*leader.borrow_and_update() {
                    return Outcome::LostLeadership;
                }
            }
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    let _ = stop_tx.send(true);
                    work.await;
                    return Outcome::Shutdown;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    async fn until_stopped(mut stop: watch::Receiver<bool>, runs: Arc<AtomicU32>, drained: Arc<AtomicBool>) {
        runs.fetch_add(1, Ordering::SeqCst);
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                return;
            }
        }
        drained.store(true, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn work_starts_only_after_winning_the_lease() {
        let (lead_tx, lead_rx) = watch::channel(false);
        let (_sd_tx, sd_rx) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let drained = Arc::new(AtomicBool::new(false));
        let (r, d) = (runs.clone(), drained.clone());
        let task = tokio::spawn(run_while_leader(lead_rx, sd_rx, move |stop| until_stopped(stop, r, d)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0, "standby must not run the controller");
        lead_tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Losing the lease aborts at once (no drain: someone else may lead already).
        lead_tx.send(false).unwrap();
        assert_eq!(task.await.unwrap(), Outcome::LostLeadership);
        assert!(!drained.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn shutdown_drains_the_work() {
        let (_lead_tx, lead_rx) = watch::channel(true);
        let (sd_tx, sd_rx) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let drained = Arc::new(AtomicBool::new(false));
        let (r, d) = (runs.clone(), drained.clone());
        let task = tokio::spawn(run_while_leader(lead_rx, sd_rx, move |stop| until_stopped(stop, r, d)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        sd_tx.send(true).unwrap();
        assert_eq!(task.await.unwrap(), Outcome::Shutdown);
        assert!(drained.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn shutdown_while_standby_never_starts_work() {
        let (_lead_tx, lead_rx) = watch::channel(false);
        let (sd_tx, sd_rx) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let drained = Arc::new(AtomicBool::new(false));
        let (r, d) = (runs.clone(), drained.clone());
        let task = tokio::spawn(run_while_leader(lead_rx, sd_rx, move |stop| until_stopped(stop, r, d)));
        sd_tx.send(true).unwrap();
        assert_eq!(task.await.unwrap(), Outcome::Shutdown);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn elector_gone_counts_as_lost() {
        let (lead_tx, lead_rx) = watch::channel(true);
        let (_sd_tx, sd_rx) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let drained = Arc::new(AtomicBool::new(false));
        let (r, d) = (runs.clone(), drained.clone());
        let task = tokio::spawn(run_while_leader(lead_rx, sd_rx, move |stop| until_stopped(stop, r, d)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(lead_tx);
        assert_eq!(task.await.unwrap(), Outcome::LostLeadership);
    }
}
