//! Liveness and readiness, as plain state the probes read, and the two reasons the
//! process stops by itself ([`StopReason`]), which the serve loop waits for.
//!
//! Liveness: the process answers and the writer made progress within the deadline
//! (the writer beats while idle and around every commit, so a wedged commit or a
//! dead writer thread fails it), and no fatal storage error was seen. A fatal error
//! also makes the process stop by itself ([`Health::stop_requested`]): DuckDB refuses
//! every later statement, so waiting for a liveness restart would only prolong the
//! outage.
//! Readiness: live, migrations applied and recovery done, and not shutting down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

/// Why the sidecar stops without a signal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StopReason {
    /// An integrity check failed and `integrity.on_failure` is `recover`: stop cleanly,
    /// quarantine the file once the journal holds everything, restart into recovery.
    Recover(String),
    /// DuckDB invalidated the database (e.g. a checkpoint failed on a full disk): every
    /// later statement fails, so stop (non-zero) and let the restart reopen the file
    /// and replay the WAL, which holds every acknowledged commit.
    Fatal(String),
}

/// Shared health flags.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    last_beat_ms: AtomicU64,
    deadline: Duration,
    ready: AtomicBool,
    shutting_down: AtomicBool,
    fatal: watch::Sender<Option<String>>,
    recover: watch::Sender<Option<String>>,
    integrity: Mutex<Option<String>>,
    apply: Mutex<Option<String>>,
}

impl Health {
    /// New health state with the given writer liveness deadline.
    pub fn new(deadline: Duration) -> Self {
        Health {
            started: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            deadline,
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            fatal: watch::channel(None).0,
            recover: watch::channel(None).0,
            integrity: Mutex::new(None),
            apply: Mutex::new(None),
        }
    }

    /// Called by the writer whenever it makes progress.
    pub fn beat(&self) {
        self.last_beat_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the writer's last beat.
    pub fn since_beat(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_beat_ms.load(Ordering::Relaxed)))
    }

    /// Marks start-up (migrations, recovery) complete.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Marks the start of shutdown: readiness fails from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Records an unrecoverable error (e.g. DuckDB invalidated the database): liveness
    /// fails and [`Health::fatal`] resolves, so the process stops and its restart
    /// reopens the file and replays the WAL. The first error is kept.
    pub fn set_fatal(&self, why: String) {
        keep_first(&self.fatal, why);
    }

    /// Resolves with the first fatal error, once there is one.
    pub async fn fatal(&self) -> String {
        first(&self.fatal).await
    }

    /// Asks the process to stop cleanly and restart into recovery (an integrity check
    /// found damage, see [`StopReason::Recover`]). The first request is kept.
    pub fn request_recovery(&self, why: String) {
        keep_first(&self.recover, why);
    }

    /// Resolves once the process should stop by itself, with the reason.
    pub async fn stop_requested(&self) -> StopReason {
        tokio::select! {
            why = first(&self.recover) => StopReason::Recover(why),
            why = self.fatal() => StopReason::Fatal(why),
        }
    }

    /// Records the last integrity check's failure (None when it passed); a failure
    /// makes readiness fail.
    pub fn set_integrity(&self, failure: Option<String>) {
        *self.integrity.lock() = failure;
    }

    /// Records that applying the commit log to DuckDB fails (None once it works
    /// again): readiness fails and the writer acknowledges nothing meanwhile, while
    /// the process stays up to retry (see [`crate::applier`]).
    pub fn set_apply(&self, failure: Option<String>) {
        *self.apply.lock() = failure;
    }

    /// Why applying fails, if it does.
    pub fn apply_failure(&self) -> Option<String> {
        self.apply.lock().clone()
    }

    /// Ok when the process should be left running.
    pub fn liveness(&self) -> Result<(), String> {
        if let Some(why) = self.fatal.borrow().clone() {
            return Err(format!("fatal: {why}"));
        }
        let idle = self.since_beat();
        if idle > self.deadline {
            return Err(format!("writer unresponsive for {:.1}s (deadline {:?})", idle.as_secs_f64(), self.deadline));
        }
        Ok(())
    }

    /// Ok when the pod should receive traffic.
    pub fn readiness(&self) -> Result<(), String> {
        self.liveness()?;
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        if !self.ready.load(Ordering::SeqCst) {
            return Err("starting: migrations or recovery not finished".into());
        }
        if let Some(why) = self.integrity.lock().clone() {
            return Err(format!("integrity check failed: {why}"));
        }
        if let Some(why) = self.apply_failure() {
            return Err(format!("applying the commit log to DuckDB fails: {why}"));
        }
        Ok(())
    }
}

/// Stores `why` unless a reason is already there (the first one is what happened).
fn keep_first(reason: &watch::Sender<Option<String>>, why: String) {
    reason.send_if_modified(|r| {
        let first = r.is_none();
        if first {
            *r = Some(why);
        }
        first
    });
}

/// The reason in `reason`, once there is one.
async fn first(reason: &watch::Sender<Option<String>>) -> String {
    let mut rx = reason.subscribe();
    let why = rx.wait_for(Option::is_some).await.expect("the sender lives in Health");
    why.clone().expect("waited for Some")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_lifecycle() {
        let h = Health::new(Duration::from_secs(10));
        h.beat();
        assert!(h.liveness().is_ok());
        assert!(h.readiness().unwrap_err().contains("starting"));
        h.set_ready();
        assert!(h.readiness().is_ok());
        h.begin_shutdown();
        assert_eq!(h.readiness().unwrap_err(), "shutting down");
        assert!(h.liveness().is_ok(), "still live while draining");
    }

    #[test]
    fn a_silent_writer_fails_liveness() {
        let h = Health::new(Duration::from_millis(1));
        h.beat();
        std::thread::sleep(Duration::from_millis(20));
        assert!(h.liveness().unwrap_err().contains("unresponsive"));
        h.beat();
        assert!(h.liveness().is_ok());
    }

    #[test]
    fn a_failed_integrity_check_fails_readiness_until_one_passes() {
        let h = Health::new(Duration::from_secs(10));
        h.beat();
        h.set_ready();
        h.set_integrity(Some("checksum".into()));
        assert!(h.readiness().unwrap_err().contains("integrity"));
        assert!(h.liveness().is_ok());
        h.set_integrity(None);
        assert!(h.readiness().is_ok());
    }

    #[tokio::test]
    async fn fatal_errors_stick_and_are_announced() {
        let h = Health::new(Duration::from_secs(10));
        h.beat();
        h.set_fatal("database invalidated".into());
        h.set_fatal("a later one".into());
        h.beat();
        assert!(h.liveness().unwrap_err().contains("invalidated"));
        assert_eq!(h.fatal().await, "database invalidated", "the first error is the one reported");
    }

    #[tokio::test]
    async fn a_recovery_request_stops_the_process_without_failing_liveness() {
        let h = Health::new(Duration::from_secs(10));
        h.beat();
        h.request_recovery("duplicate sequences".into());
        h.request_recovery("a later one".into());
        assert!(h.liveness().is_ok(), "the process stops cleanly; it is not dead");
        assert_eq!(h.stop_requested().await, StopReason::Recover("duplicate sequences".into()));
    }
}
