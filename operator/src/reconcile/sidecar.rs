//! The sidecar stage: with a ready pod, act on a new `tradestore.io/backup-request` value
//! (`POST /v1/snapshots`), then read `GET /v1/status` and copy its facts — the sidecar report,
//! the newest snapshot, sync, journal, integrity — into the status.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::warn;

use super::Context;
use super::apply::pod::PodOutcome;
use super::context::key_of;
use super::pod_facts::sidecar_base;
use super::status::sync_condition;
use crate::crd::conditions::{SYNC_HEALTHY, remove_condition, set_condition, set_condition_unknown};
use crate::crd::{BackupStatus, IntegrityStatus, JournalStatus, SyncStatus, TradeStoreStatus};
use crate::names::BACKUP_REQUEST_ANNOTATION;
use crate::sidecar::client::{Manifest, SidecarError, SidecarStatus, integrity_has_run};
use crate::validate::Validated;

/// Runs the stage; returns when to look again (sooner while a backup request waits for the
/// sidecar).
pub(crate) async fn exchange(
    store: &Validated<'_>,
    ctx: &Context,
    pod: Option<&Pod>,
    outcome: &PodOutcome,
    token: Option<&str>,
    st: &mut TradeStoreStatus,
    now: Timestamp,
) -> Duration {
    let base = pod.filter(|_| outcome.ready && ctx.settings.probe_sidecar).and_then(sidecar_base);
    let mut requeue = outcome.requeue;
    if !backup_request(store, ctx, base.as_deref(), token, st, now).await {
        requeue = requeue.min(ctx.settings.poll);
    }
    let facts = match &base {
        Some(base) => read_status(store, ctx, base, token).await,
        None => None,
    };
    if !outcome.ready {
        st.sidecar = None;
    }
    sidecar_facts(store, st, facts, outcome.ready, now);
    requeue
}

/// `GET /v1/status` (with the token when reads are protected); `None` when unreachable.
async fn read_status(store: &Validated<'_>, ctx: &Context, base: &str, token: Option<&str>) -> Option<SidecarStatus> {
    let read_token = if store.spec.auth.protect_reads { token } else { None };
    match ctx.sidecar.status(base, read_token).await {
        Ok(facts) => Some(facts),
        Err(e) => {
            warn!(store = key_of(&store.metadata), error = %e, "sidecar /v1/status unreachable");
            None
        }
    }
}

/// Acts on a new `tradestore.io/backup-request` value: asks the sidecar for a snapshot once per
/// value (remembered in `status.backup.lastRequest`, also when it failed). Returns false while a
/// request waits for the sidecar to become reachable.
async fn backup_request(
    store: &Validated<'_>,
    ctx: &Context,
    base: Option<&str>,
    token: Option<&str>,
    st: &mut TradeStoreStatus,
    now: Timestamp,
) -> bool {
    let Some(request) = store.annotations().get(BACKUP_REQUEST_ANNOTATION) else { return true };
    let mut backup = st.backup.clone().unwrap_or_default();
    if backup.last_request.as_deref() == Some(request.as_str()) {
        return true;
    }
    let result = match (base, token) {
        (Some(base), Some(token)) => ctx.sidecar.snapshot(base, token).await,
        _ if !ctx.settings.probe_sidecar => Err(SidecarError::ProbingOff),
        // Not ready yet (or the token Secret was only just created): try again soon.
        _ => return false,
    };
    backup.last_request = Some(request.clone());
    match result {
        Ok(snap) => {
            let note = format!(
                "snapshot {} taken on request {request:?}: seq {}, {} trades, {} bytes",
                snap.id, snap.seq, snap.trade_rows, snap.size_bytes
            );
            record_snapshot(&mut backup, &snap, true);
            ctx.events.publish(store, EventType::Normal, "BackupTaken", "Backup", note).await;
        }
        Err(e) => {
            let msg = super::Error::Sidecar(e).to_string();
            backup.last_failure = Some(msg.clone());
            backup.last_failure_time = Some(Time(now));
            let note = format!("snapshot on request {request:?} failed: {msg}; set a new value to try again");
            ctx.events.publish(store, EventType::Warning, "BackupFailed", "Backup", note).await;
        }
    }
    st.backup = Some(backup);
    true
}

/// Records a snapshot the sidecar reported or took as the newest one. `asked`: the operator
/// asked for it, so the failure of an earlier request is settled.
pub(crate) fn record_snapshot(backup: &mut BackupStatus, snap: &Manifest, asked: bool) {
    let taken = snap.created_at.parse::<Timestamp>().ok();
    let newer_than_failure = match (&backup.last_failure_time, taken) {
        (Some(f), Some(t)) => t > f.0,
        (Some(_), None) => false,
        (None, _) => true,
    };
    if asked || newer_than_failure {
        backup.last_failure = None;
        backup.last_failure_time = None;
    }
    backup.last_snapshot = Some(snap.id.clone());
    backup.last_seq = Some(snap.seq);
    backup.last_successful_time = taken.map(Time);
}

/// Copies what the sidecar reported (`None`: not reachable now) into the status: the sidecar
/// report, the newest snapshot, sync, journal and integrity, and the `SyncHealthy` condition.
fn sidecar_facts(
    store: &Validated<'_>,
    st: &mut TradeStoreStatus,
    facts: Option<SidecarStatus>,
    ready: bool,
    now: Timestamp,
) {
    let spec = &store.spec;
    let generation = store.metadata.generation;
    if let Some(f) = facts {
        copy_facts(store, st, f, now);
    } else if !ready {
        // No sidecar to ask: its live facts are gone, the last snapshot stays known.
        st.sync = None;
        st.journal = None;
        if spec.clickhouse.is_some() {
            let msg = "the sidecar is not ready: sync state unknown";
            set_condition_unknown(&mut st.conditions, SYNC_HEALTHY, "SidecarNotReady", msg, generation, now);
        }
    }
    if spec.clickhouse.is_none() {
        st.sync = None;
        remove_condition(&mut st.conditions, SYNC_HEALTHY);
    }
    if spec.redis.is_none() {
        st.journal = None;
    }
}

fn copy_facts(store: &Validated<'_>, st: &mut TradeStoreStatus, f: SidecarStatus, now: Timestamp) {
    let spec = &store.spec;
    st.sidecar = Some(f.report);
    if f.last_snapshot.is_some() || f.backup.last_error.is_some() || st.backup.is_some() {
        let mut backup = st.backup.clone().unwrap_or_default();
        if let Some(snap) = &f.last_snapshot {
            record_snapshot(&mut backup, snap, false);
        }
        backup.sidecar_error = f.backup.last_error.clone();
        st.backup = Some(backup);
    }
    st.sync = spec.clickhouse.as_ref().map(|_| SyncStatus {
        watermark: Some(f.sync.watermark),
        lag: Some(f.sync.lag),
        degraded: f.sync.degraded,
        last_error: f.sync.last_error.clone(),
    });
    st.journal = spec.redis.as_ref().map(|_| JournalStatus {
        watermark: Some(f.journal.watermark),
        lag: Some(f.journal.lag),
        healthy: f.journal.healthy,
        last_error: f.journal.last_error.clone(),
    });
    st.integrity = integrity_has_run(&f.integrity).then(|| IntegrityStatus {
        last_run: f.integrity.last_run.clone(),
        state: Some(f.integrity.state.as_str().into()),
        ok: f.integrity.ok,
        error: f.integrity.error.clone(),
    });
    if spec.clickhouse.is_some() {
        let (ok, reason, msg) = sync_condition(&f.sync);
        set_condition(&mut st.conditions, SYNC_HEALTHY, ok, reason, msg, store.metadata.generation, now);
    }
}
