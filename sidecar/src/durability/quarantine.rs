//! Quarantine: the marker a failed integrity check leaves next to the database file
//! (`integrity.on_failure: recover`), which sends the next start into recovery.
//!
//! The file is marked only once a rebuild can hold every committed change
//! ([`when_recoverable`]): at once when the local commit log reaches back to the newest
//! snapshot (the rebuild replays it), else once the Redis journal holds them all — a
//! marker written earlier would lose the changes neither had.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::telemetry::Shared;
use tradestore_api::status::JournalStatus;

/// What the marker holds.
#[derive(Serialize, Deserialize)]
struct Marker {
    reason: String,
    last_seq: i64,
}

/// After an integrity failure: quarantines `database` for recovery at the next start,
/// but only once the rebuild can hold every change up to `last_seq`: at once when the
/// local log can (`from_log`), else once `journal` holds them (waiting until
/// `deadline`). Returns the error the process exits with either way, so the container
/// restarts.
pub(crate) async fn when_recoverable(
    database: &Path,
    why: &str,
    last_seq: i64,
    from_log: bool,
    journal: Option<&Shared<JournalStatus>>,
    deadline: Instant,
) -> Result<()> {
    loop {
        let journaled = journal.map_or(0, |j| j.lock().watermark);
        if from_log || journaled >= last_seq {
            mark(database, why, last_seq)?;
            return Err(Error::Internal(format!("integrity check failed ({why}); restarting into recovery")));
        }
        if Instant::now() >= deadline {
            return Err(Error::Internal(format!(
                "integrity check failed ({why}); the local commit log does not reach back to the newest snapshot \
                 and the journal holds seq {journaled} of {last_seq}, so the file is not quarantined (recovery \
                 would lose changes): a human must decide"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Marks the database file for recovery at the next start.
fn mark(database: &Path, reason: &str, last_seq: i64) -> Result<()> {
    let marker = marker_path(database);
    let body = Marker { reason: reason.to_string(), last_seq };
    std::fs::write(&marker, serde_json::to_vec(&body).expect("marker serializes"))?;
    std::fs::File::open(&marker)?.sync_all()?;
    tracing::error!(marker = %marker.display(), reason, "database quarantined; the next start recovers it");
    Ok(())
}

/// The reason and the last sequence of a quarantine marker on `database`, if there is
/// one (`None` for the sequence: a marker of an older sidecar, plain text).
pub(crate) fn read(database: &Path) -> Result<Option<(String, Option<i64>)>> {
    let marker = marker_path(database);
    if !marker.exists() {
        return Ok(None);
    }
    let raw = std::fs::read_to_string(&marker)?;
    Ok(Some(match serde_json::from_str::<Marker>(&raw) {
        Ok(q) => (q.reason, Some(q.last_seq)),
        Err(_) => (raw.trim().to_string(), None),
    }))
}

/// Removes the marker once recovery has replaced the file.
pub(crate) fn clear(database: &Path) -> Result<()> {
    let marker = marker_path(database);
    if marker.exists() {
        std::fs::remove_file(&marker)?;
    }
    Ok(())
}

/// The file whose presence sends the next start into recovery.
fn marker_path(database: &Path) -> PathBuf {
    database.with_extension("quarantine")
}
