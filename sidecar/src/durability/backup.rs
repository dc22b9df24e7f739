//! Backups: where snapshots go and when they are taken.
//!
//! A snapshot is always taken into the local directory first ([`Snapshots`]). With an
//! S3 target it is then uploaded ([`Remote`]), retention applies to the bucket, and
//! the local directory keeps only the newest snapshot (for fast recovery and the
//! integrity check). A cron schedule (`snapshots.schedule`) takes snapshots
//! automatically; `POST /v1/snapshots` takes one on demand.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use croner::Cron;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tradestore_api::snapshot::{MANIFEST, Manifest};
use tradestore_api::status::BackupStatus;

use crate::config::SnapshotConfig;
use crate::durability::remote::Remote;
use crate::durability::snapshot::{self, Retention, Snapshots};
use crate::error::{Error, Result};
use crate::store::model::{format_micros, now_micros};
use crate::store::reader::Reader;
use crate::telemetry::metrics::Metrics;

/// The backup target(s) and their retention.
pub struct Backups {
    local: Arc<Snapshots>,
    remote: Option<Remote>,
    retention: Retention,
    status: Mutex<BackupStatus>,
    /// The newest snapshot, for `/v1/status`.
    last: Mutex<Option<Manifest>>,
    /// The sequence the newest snapshot covers; the journal watches it to keep every
    /// change above it (only the number: followers need no more of the manifest).
    covered: watch::Sender<Option<i64>>,
    metrics: Arc<Metrics>,
}

impl Backups {
    /// The targets in `cfg`; snapshots taken are counted in `metrics`.
    pub fn new(cfg: &SnapshotConfig, metrics: Arc<Metrics>) -> Result<Self> {
        let retention = Retention { keep_last: cfg.keep_last, max_age: cfg.max_age };
        let remote = cfg.s3.as_ref().map(Remote::new).transpose()?;
        // With a bucket the directory is a staging area holding only the newest snapshot.
        let local_retention = match remote {
            Some(_) => Retention { keep_last: 1, max_age: Duration::ZERO },
            None => retention,
        };
        let status = BackupStatus {
            target: remote.as_ref().map_or_else(|| cfg.dir.display().to_string(), |r| r.url().to_string()),
            schedule: cfg.schedule.clone(),
            ..Default::default()
        };
        Ok(Backups {
            local: Arc::new(Snapshots::new(cfg.dir.clone(), local_retention)),
            remote,
            retention,
            status: Mutex::new(status),
            last: Mutex::new(None),
            covered: watch::channel(None).0,
            metrics,
        })
    }

    /// Reads the newest snapshot from the target, for `/v1/status` (logged, not
    /// fatal, when the bucket cannot be listed).
    pub async fn refresh(&self) {
        match self.list().await {
            Ok(mut all) => self.set_last(all.pop()),
            Err(e) => tracing::warn!(error = %e, "cannot list snapshots"),
        }
    }

    fn set_last(&self, m: Option<Manifest>) {
        self.covered.send_replace(m.as_ref().map(|m| m.seq));
        *self.last.lock() = m;
    }

    /// The sequence the newest snapshot covers, as it changes.
    pub fn watch_covered(&self) -> watch::Receiver<Option<i64>> {
        self.covered.subscribe()
    }

    /// The newest snapshot known (taken by this process or listed at start).
    pub fn last(&self) -> Option<Manifest> {
        self.last.lock().clone()
    }

    /// Takes a consistent snapshot on a read connection of the live database while
    /// writes continue, uploads it when a bucket is configured, and applies retention.
    pub async fn take(&self, reader: &Reader, schema_version: i64) -> Result<Manifest> {
        let taken = self.take_uncounted(reader, schema_version).await;
        match &taken {
            Ok(_) => self.metrics.snapshots.inc(),
            Err(_) => self.metrics.snapshot_failures.inc(),
        }
        taken
    }

    async fn take_uncounted(&self, reader: &Reader, schema_version: i64) -> Result<Manifest> {
        let result: Result<Manifest> = async {
            // A snapshot holds every change acknowledged before it was asked for.
            reader.caught_up().await?;
            let local = self.local.clone();
            let m = reader.with_conn(move |conn| local.take(conn, schema_version)).await?;
            if let Some(remote) = &self.remote {
                remote.upload(&self.local.path_of(&m.id), &m).await?;
                for id in self.retention.expired(&remote.list().await?, now_micros()) {
                    remote.delete(&id).await?;
                    tracing::info!(id, "pruned remote snapshot");
                }
            }
            self.set_last(Some(m.clone()));
            Ok(m)
        }
        .await;
        self.status.lock().last_error = result.as_ref().err().map(|e: &Error| {
            tracing::error!(error = %e, "snapshot failed");
            e.to_string()
        });
        result
    }

    /// Complete snapshots, oldest first: the bucket's when configured, else the directory's.
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        match &self.remote {
            Some(r) => r.list().await,
            None => self.local.list(),
        }
    }

    /// The local snapshot directory (the integrity check takes its attach lock and
    /// verifies the newest snapshot in it).
    pub fn local(&self) -> Arc<Snapshots> {
        self.local.clone()
    }

    /// A local directory holding snapshot `from`: `from` is a snapshot directory path,
    /// or an id found in the local directory or else downloaded from the bucket. Not
    /// verified here: [`snapshot::restore`] checks size and SHA-256 before using it.
    async fn fetch(&self, from: &str) -> Result<PathBuf> {
        if from.contains('/') {
            Ok(PathBuf::from(from))
        } else if self.local.path_of(from).join(MANIFEST).is_file() {
            Ok(self.local.path_of(from))
        } else if let Some(remote) = &self.remote {
            remote.download(from, self.local.dir()).await
        } else {
            Err(Error::NotFound(format!("snapshot {from} in {}", self.local.dir().display())))
        }
    }

    /// Restores snapshot `from` (a path or an id) as `database`, which must not exist.
    pub async fn restore(&self, from: &str, database: &Path) -> Result<Manifest> {
        snapshot::restore(&self.fetch(from).await?, database)
    }

    /// Restores the newest snapshot that verifies, local or in the bucket, as `database`
    /// (which must not exist); unusable ones are skipped with an error log. `None` when
    /// there is no usable snapshot.
    pub async fn restore_newest(&self, database: &Path) -> Result<Option<Manifest>> {
        let mut candidates: Vec<(Manifest, bool)> = self.local.list()?.into_iter().map(|m| (m, false)).collect();
        if let Some(remote) = &self.remote {
            match remote.list().await {
                Ok(list) => candidates.extend(list.into_iter().map(|m| (m, true))),
                Err(e) => tracing::error!(error = %e, "cannot list remote snapshots; using local ones only"),
            }
        }
        // Newest first by sequence; a local copy beats a download of the same snapshot.
        candidates.sort_by_key(|(m, is_remote)| (m.seq, !is_remote));
        for (m, is_remote) in candidates.into_iter().rev() {
            let restored = match is_remote {
                true => match self.remote.as_ref().expect("remote candidate").download(&m.id, self.local.dir()).await {
                    Ok(dir) => snapshot::restore(&dir, database),
                    Err(e) => Err(e),
                },
                false => snapshot::restore(&self.local.path_of(&m.id), database),
            };
            match restored {
                Ok(m) => return Ok(Some(m)),
                Err(e) => tracing::error!(id = m.id, error = %e, "skipping unusable snapshot"),
            }
        }
        Ok(None)
    }

    /// The backup status, for `/v1/status`.
    pub fn status(&self) -> BackupStatus {
        self.status.lock().clone()
    }

    fn set_next_run(&self, next: Option<String>) {
        self.status.lock().next_run = next;
    }
}

/// Takes a snapshot at every time `schedule` names, until `stop` is cancelled (a
/// snapshot in progress finishes first: it holds a read connection and leaves a
/// partial directory behind if dropped). A failed snapshot is logged, counted and
/// shown in `/v1/status`; the schedule goes on.
pub async fn run_schedule(
    backups: Arc<Backups>,
    reader: Reader,
    schema_version: i64,
    schedule: Cron,
    stop: CancellationToken,
) {
    loop {
        let now = Utc::now();
        let next = match schedule.find_next_occurrence(&now, false) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "snapshot schedule has no next run; scheduled snapshots stop");
                backups.set_next_run(None);
                return;
            }
        };
        backups.set_next_run(Some(format_micros(next.timestamp_micros())));
        let wait = (next - now).to_std().unwrap_or_default();
        if stop.run_until_cancelled(tokio::time::sleep(wait)).await.is_none() {
            return;
        }
        if let Ok(m) = backups.take(&reader, schema_version).await {
            tracing::info!(id = m.id, seq = m.seq, "scheduled snapshot taken");
        }
    }
}
