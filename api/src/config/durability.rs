//! The durability sections: snapshots and where they go, integrity checks, start-up
//! recovery.

use std::path::PathBuf;
use std::time::Duration;

use croner::Cron;
use serde::{Deserialize, Serialize};

use super::{ConfigError, bad, schedule};

/// Start-up recovery: how long it waits for the journal, and whether it may come up
/// without proof that it restored every change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// How long start-up waits for Redis when it needs the journal: to rebuild a file,
    /// or to check that the store does not end below the journal.
    #[serde(with = "humantime_serde")]
    pub journal_wait: Duration,
    /// Come up even when recovery cannot prove it holds every change (journal
    /// unreachable, empty or trimmed past the snapshot); the recovery report then says
    /// `complete: false` and why. Off: start-up fails with that reason instead.
    pub accept_data_loss: bool,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig { journal_wait: Duration::from_secs(30), accept_data_loss: false }
    }
}

/// Integrity check schedule and what a failure does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {
    /// Pause between checks (seed: every minute); 0s disables them.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// What a failed check does besides failing readiness.
    pub on_failure: OnIntegrityFailure,
}

/// Reaction to a failed integrity check.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnIntegrityFailure {
    /// Fail readiness, log and report; a human decides.
    Report,
    /// Also quarantine the database file and restart into recovery (newest verified
    /// snapshot + Redis journal), but only once the journal holds every committed
    /// change, so that nothing acknowledged is lost.
    Recover,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig { interval: Duration::from_secs(60), on_failure: OnIntegrityFailure::Report }
    }
}

/// Where snapshots go, when they are taken and how long they are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Directory of snapshots (in Kubernetes a second volume, not the data volume).
    /// With `s3` set it is the staging area: each snapshot is written here, uploaded,
    /// and only the newest stays here (for fast recovery and the integrity check).
    pub dir: PathBuf,
    /// Always keep at least this many of the newest snapshots.
    pub keep_last: usize,
    /// Older snapshots beyond `keep_last` are pruned once older than this (seed: 1 h);
    /// `0s` keeps nothing beyond `keep_last`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Cron schedule of automatic snapshots, UTC, as [`schedule::parse`] reads it
    /// (e.g. `0 * * * *`); none when unset.
    pub schedule: Option<String>,
    /// When the database file does not exist at start, restore this snapshot first
    /// (checksum verified) instead of starting empty: a snapshot directory path, or a
    /// snapshot id looked up in `dir` and then in `s3`.
    pub bootstrap_from: Option<String>,
    /// Also keep snapshots in an S3-compatible object store.
    pub s3: Option<S3Config>,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            dir: PathBuf::from("./snapshots"),
            keep_last: 3,
            max_age: Duration::from_secs(3600),
            schedule: None,
            bootstrap_from: None,
            s3: None,
        }
    }
}

/// An S3-compatible bucket. Credentials come from the standard `AWS_ACCESS_KEY_ID` /
/// `AWS_SECRET_ACCESS_KEY` (and optional `AWS_SESSION_TOKEN`) variables, never from
/// this file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix under which snapshots live (`<prefix>/<id>/...`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Endpoint of a non-AWS store, e.g. `http://minio:9000`; AWS when unset.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region.
    #[serde(default = "default_region")]
    pub region: String,
}

/// `snapshots.s3.region` when unset.
pub const DEFAULT_REGION: &str = "us-east-1";

fn default_region() -> String {
    DEFAULT_REGION.into()
}

impl SnapshotConfig {
    /// `schedule`, parsed by the one cron rule ([`schedule::parse`]).
    pub fn cron(&self) -> Result<Option<Cron>, ConfigError> {
        let parse = |expr: &String| {
            schedule::parse(expr).map_err(|source| ConfigError::Schedule { schedule: expr.clone(), source })
        };
        self.schedule.as_ref().map(parse).transpose()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.keep_last == 0 {
            return bad("snapshots.keep_last must be >= 1");
        }
        self.cron()?;
        if let Some(s3) = &self.s3 {
            if s3.bucket.is_empty() {
                return bad("snapshots.s3.bucket must not be empty");
            }
            if let Some(e) = &s3.endpoint
                && !(e.starts_with("http://") || e.starts_with("https://"))
            {
                return bad(format!("snapshots.s3.endpoint {e:?} must start with http:// or https://"));
            }
        }
        Ok(())
    }
}
