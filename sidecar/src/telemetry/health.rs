//! Liveness and readiness, as plain state the probes read.
//!
//! Liveness: the process answers and the writer made progress within the deadline
//! (the writer beats while idle and around every commit, so a wedged commit or a
//! dead writer thread fails it), and no fatal storage error was seen. A fatal error
//! also makes the process stop by itself ([`Health::fatal`], watched by
//! [`crate::app::App::stop_requested`]): DuckDB refuses every later statement, so
//! waiting for a liveness restart would only prolong the outage.
//! Readiness: live, migrations applied and recovery done, and not shutting down.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared health flags.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    last_beat_ms: AtomicU64,
    deadline: Duration,
    ready: AtomicBool,
    shutting_down: AtomicBool,
    fatal: tokio::sync::watch::Sender<Option<String>>,
    integrity: Mutex<Option<String>>,
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
            fatal: tokio::sync::watch::channel(None).0,
            integrity: Mutex::new(None),
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
        self.fatal.send_if_modified(|f| {
            let first = f.is_none();
            if first {
                *f = Some(why);
            }
            first
        });
    }

    /// Resolves with the first fatal error, once there is one.
    pub async fn fatal(&self) -> String {
        let mut rx = self.fatal.subscribe();
        let why = rx.wait_for(Option::is_some).await.expect("the sender lives in Health");
        why.clone().expect("waited for Some")
    }

    /// Records the last integrity check's failure (None when it passed); a failure
    /// makes readiness fail.
    pub fn set_integrity(&self, failure: Option<String>) {
        *self.integrity.lock().unwrap_or_else(|e| e.into_inner()) = failure;
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
        if let Some(why) = self.integrity.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(format!("integrity check failed: {why}"));
        }
        Ok(())
    }
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
}
