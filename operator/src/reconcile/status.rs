//! The status stage: phase, conditions and message from what the other stages found, the
//! `PhaseChanged` event, and the write (only when something changed, so an unchanged store costs
//! no status write). Also the two stops before the pipeline ends: an invalid spec, and a pod
//! name taken by a foreign pod.

use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::apply::pod::PodOutcome;
use super::status_patch::patch_status;
use super::{Context, Error, Result};
use crate::crd::conditions::{BACKUP_READY, DEGRADED, PROGRESSING, READY, remove_condition, set_condition};
use crate::crd::{BackupSpec, BackupStatus, Phase, TradeStore, TradeStoreStatus};
use crate::sidecar::client::SyncStatus;
use crate::validate::{Invalid, Validated};

/// How late a scheduled snapshot may be (taking it, clock skew) before `ScheduleMissed`.
pub(crate) const SCHEDULE_GRACE_SECONDS: i64 = 900;

/// An invalid spec: phase `Invalid`, `Degraded=True/InvalidSpec`, a Warning event; nothing else
/// is touched, and nothing happens until the spec changes.
pub(crate) async fn report_invalid(
    ts: &TradeStore,
    api: &Api<TradeStore>,
    ctx: &Context,
    old: &TradeStoreStatus,
    invalid: &Invalid,
    now: Timestamp,
) -> Result<Action> {
    let generation = ts.metadata.generation;
    let msg = invalid.to_string();
    let mut st = old.clone();
    st.phase = Some(Phase::Invalid);
    st.message = Some(msg.clone());
    st.observed_generation = generation;
    set_condition(&mut st.conditions, READY, false, "InvalidSpec", &msg, generation, now);
    set_condition(&mut st.conditions, PROGRESSING, false, "InvalidSpec", &msg, generation, now);
    set_condition(&mut st.conditions, DEGRADED, true, "InvalidSpec", &msg, generation, now);
    if st != *old {
        ctx.events.publish(ts, EventType::Warning, "InvalidSpec", "Validate", msg).await;
        phase_changed(ts, ctx, old, &st).await;
        patch_status(api, ts, &st).await?;
    }
    Ok(Action::await_change())
}

/// The pod's name is taken by a pod the store does not own: Degraded, and the error (retried with
/// backoff until the name is free).
pub(crate) async fn report_foreign_pod(
    ts: &TradeStore,
    api: &Api<TradeStore>,
    ctx: &Context,
    old: &TradeStoreStatus,
    mut st: TradeStoreStatus,
    pod: String,
    now: Timestamp,
) -> Result<Action> {
    let generation = ts.metadata.generation;
    let msg = format!("pod {pod} exists and is not owned by this TradeStore; not touching it");
    set_condition(&mut st.conditions, DEGRADED, true, "PodNameConflict", &msg, generation, now);
    set_condition(&mut st.conditions, READY, false, "PodNameConflict", &msg, generation, now);
    st.message = Some(msg.clone());
    if st != *old {
        ctx.events.publish(ts, EventType::Warning, "PodNameConflict", "Reconcile", msg).await;
        patch_status(api, ts, &st).await?;
    }
    Err(Error::ForeignPod(pod))
}

/// Phase, observed generation, conditions and message of a live store.
pub(crate) fn conclude(store: &Validated<'_>, outcome: &PodOutcome, st: &mut TradeStoreStatus, now: Timestamp) {
    let generation = store.metadata.generation;
    st.phase = Some(outcome.phase);
    st.observed_generation = generation;
    let (ready_reason, ready_msg) = ready_reason(store, outcome, st);
    set_condition(&mut st.conditions, READY, outcome.ready, ready_reason, &ready_msg, generation, now);
    match &outcome.progressing {
        Some((reason, msg)) => set_condition(&mut st.conditions, PROGRESSING, true, reason, msg, generation, now),
        None => set_condition(&mut st.conditions, PROGRESSING, false, "Stable", "", generation, now),
    }
    match st.fence.clone() {
        Some(f) => set_condition(&mut st.conditions, DEGRADED, true, &f.reason, f.message, generation, now),
        None => set_condition(&mut st.conditions, DEGRADED, false, "AsExpected", "", generation, now),
    }
    st.message = Some(ready_msg);
    match &store.spec.backup {
        Some(spec) => {
            let (ok, reason, msg) = backup_condition(spec, store.schedule(), st.backup.as_ref(), now);
            set_condition(&mut st.conditions, BACKUP_READY, ok, reason, msg, generation, now);
        }
        None => remove_condition(&mut st.conditions, BACKUP_READY),
    }
}

/// The backup claim does not exist: `Degraded=True` and `BackupReady=False` with reason
/// `BackupClaimMissing` (a fence, which needs a human anyway, keeps its own `Degraded`), the status
/// message, and a Warning when it starts.
pub(crate) async fn backup_claim_missing(
    ts: &TradeStore,
    ctx: &Context,
    old: &TradeStoreStatus,
    st: &mut TradeStoreStatus,
    claim: &str,
    now: Timestamp,
) {
    const REASON: &str = "BackupClaimMissing";
    let generation = ts.metadata.generation;
    let ns = ts.metadata.namespace.as_deref().unwrap_or_default();
    let msg = format!(
        "the backup volume claim {claim} (spec.backup.target.volume.claimName) does not exist in namespace {ns}: the pod cannot start until it does"
    );
    if st.fence.is_none() {
        set_condition(&mut st.conditions, DEGRADED, true, REASON, &msg, generation, now);
    }
    set_condition(&mut st.conditions, BACKUP_READY, false, REASON, &msg, generation, now);
    st.message = Some(msg.clone());
    let was_missing = old.conditions.iter().any(|c| c.type_ == BACKUP_READY && c.reason == REASON);
    if !was_missing {
        ctx.events.publish(ts, EventType::Warning, REASON, "Reconcile", msg).await;
    }
}

/// Reason and message of `Ready` (the message is also the status message).
fn ready_reason(store: &Validated<'_>, outcome: &PodOutcome, st: &TradeStoreStatus) -> (&'static str, String) {
    match outcome.phase {
        Phase::Running => ("SidecarReady", "the sidecar is ready".to_string()),
        Phase::Stopped => ("Stopped", "spec.stopped is true: no pod runs, the volume is kept".into()),
        Phase::Fenced if store.spec.fenced => ("Fenced", "spec.fenced is true: no pod may run".into()),
        Phase::Fenced => ("TooManyRestarts", st.fence.as_ref().map(|f| f.message.clone()).unwrap_or_default()),
        Phase::Updating => ("RollingOut", "the pod is being replaced".into()),
        // Why the pod is not ready, when the operator knows more than that it is not.
        _ => match &outcome.progressing {
            Some((reason @ "NodeNotReady", msg)) => (reason, msg.clone()),
            _ => ("PodNotReady", "waiting for the pod to become ready".into()),
        },
    }
}

/// `PhaseChanged` when the phase moved, then the status write when anything changed.
pub(crate) async fn publish(
    ts: &TradeStore,
    api: &Api<TradeStore>,
    ctx: &Context,
    old: &TradeStoreStatus,
    st: &TradeStoreStatus,
) -> Result<()> {
    phase_changed(ts, ctx, old, st).await;
    if st != old {
        patch_status(api, ts, st).await?;
    }
    Ok(())
}

/// `BackupReady` from the backup status: (status, reason, message). False when the last snapshot
/// the operator asked for failed (`BackupFailed`), when the sidecar's last attempt — scheduled or
/// requested — failed (`SnapshotFailing`), when there is none yet (`NoSnapshotYet`), or
/// when the newest one is older than the last scheduled time plus [`SCHEDULE_GRACE_SECONDS`]
/// (`ScheduleMissed`: scheduled snapshots fail, or no sidecar ran to take them).
pub(crate) fn backup_condition(
    spec: &BackupSpec,
    schedule: Option<&croner::Cron>,
    b: Option<&BackupStatus>,
    now: Timestamp,
) -> (bool, &'static str, String) {
    let b = b.cloned().unwrap_or_default();
    if let Some(err) = &b.last_failure {
        let when = b.last_failure_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
        return (false, "BackupFailed", format!("the last requested snapshot failed at {when}: {err}"));
    }
    if let Some(err) = &b.sidecar_error {
        return (false, "SnapshotFailing", format!("the sidecar's last snapshot attempt failed: {err}"));
    }
    let Some(id) = &b.last_snapshot else {
        return (false, "NoSnapshotYet", "no snapshot exists yet".into());
    };
    let seq = b.last_seq.unwrap_or(0);
    let taken = b.last_successful_time.as_ref().map(|t| t.0);
    if let (Some(taken), Some(cron)) = (taken, schedule) {
        let cutoff = (now - SignedDuration::from_secs(SCHEDULE_GRACE_SECONDS)).to_zoned(TimeZone::UTC);
        if let Ok(due) = cron.find_previous_occurrence(&cutoff, true)
            && taken < due.timestamp()
        {
            let msg = format!(
                "the newest snapshot {id} was taken at {taken}, before the scheduled time {} ({})",
                due.timestamp(),
                spec.schedule
            );
            return (false, "ScheduleMissed", msg);
        }
    }
    let at = taken.map(|t| t.to_string()).unwrap_or_else(|| "an unknown time".into());
    (true, "SnapshotAvailable", format!("snapshot {id} (seq {seq}) taken at {at}"))
}

/// `SyncHealthy` from the sidecar's sync report: (status, reason, message).
pub(crate) fn sync_condition(sync: &SyncStatus) -> (bool, &'static str, String) {
    if !sync.enabled {
        return (false, "SyncNotRunning", "the sidecar reports the ClickHouse sync as not configured".into());
    }
    if sync.degraded {
        let err = sync.last_error.as_deref().unwrap_or("unknown error");
        let msg = format!(
            "{} consecutive failures, {} changes behind (watermark {}): {err}",
            sync.consecutive_failures, sync.lag, sync.watermark
        );
        return (false, "SyncDegraded", msg);
    }
    (true, "SyncRunning", format!("{} changes behind (watermark {})", sync.lag, sync.watermark))
}

/// `PhaseChanged` when the phase moved, saying from what, to what, and why (the status message).
async fn phase_changed(ts: &TradeStore, ctx: &Context, old: &TradeStoreStatus, st: &TradeStoreStatus) {
    let Some(to) = st.phase.filter(|to| old.phase != Some(*to)) else { return };
    let why = st.message.as_deref().unwrap_or_default();
    let note = match old.phase {
        None => format!("the store is now {to:?}: {why}"),
        Some(from) => format!("the store went from {from:?} to {to:?}: {why}"),
    };
    ctx.events.publish(ts, EventType::Normal, "PhaseChanged", "Reconcile", note).await;
}
