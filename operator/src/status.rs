//! Pure status computations: restart accounting over a sliding window, conditions.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{BackupSpec, BackupStatus, RestartStatus};
use crate::resources::SIDECAR_CONTAINER;
use crate::sidecar_api::SyncReport;
use crate::validate::parse_schedule;

/// Condition types.
pub const READY: &str = "Ready";
/// The store is moving towards its desired state (pod being created or replaced).
pub const PROGRESSING: &str = "Progressing";
/// The store needs a human (fenced after too many restarts, invalid spec, conflicts).
pub const DEGRADED: &str = "Degraded";
/// A snapshot exists and the last one asked for or scheduled did not fail (with `spec.backup`).
pub const BACKUP_READY: &str = "BackupReady";
/// The ClickHouse sync is running and not degraded (with `spec.clickhouse`).
pub const SYNC_HEALTHY: &str = "SyncHealthy";
/// How late a scheduled snapshot may be (taking it, clock skew) before `ScheduleMissed`.
pub const SCHEDULE_GRACE_SECONDS: i64 = 900;

/// The sidecar container's restart count in a pod (native sidecar or regular container).
pub fn sidecar_restart_count(pod: &Pod) -> i32 {
    let Some(st) = &pod.status else { return 0 };
    st.init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .filter(|c| c.name == SIDECAR_CONTAINER)
        .map(|c| c.restart_count)
        .sum()
}

/// Whether the sidecar container reports ready (its `/readyz` passes). This, not the pod's Ready
/// condition, makes the store Ready: a user container that is not ready yet does not make the
/// database unavailable to it.
pub fn sidecar_ready(pod: &Pod) -> bool {
    let Some(st) = &pod.status else { return false };
    st.phase.as_deref() == Some("Running")
        && st
            .init_container_statuses
            .iter()
            .flatten()
            .chain(st.container_statuses.iter().flatten())
            .any(|c| c.name == SIDECAR_CONTAINER && c.ready)
}

/// The pod's phase (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
pub fn pod_phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// Updates restart accounting from the current pod (if any) at `now`: new restarts of the sidecar
/// container are recorded with the time they were observed; entries older than the window drop out.
pub fn account_restarts(prev: &RestartStatus, pod: Option<&Pod>, window_seconds: i64, now: Timestamp) -> RestartStatus {
    let mut next = prev.clone();
    if let Some(pod) = pod {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let count = sidecar_restart_count(pod);
        let delta =
            if prev.pod_uid.as_deref() == Some(uid.as_str()) { (count - prev.last_count).max(0) } else { count };
        add_restarts(&mut next, delta, now);
        next.pod_uid = Some(uid);
        next.last_count = count;
    }
    prune(&mut next, window_seconds, now);
    next
}

/// Records `n` restarts observed at `now` (e.g. a failed pod the operator replaces).
pub fn add_restarts(st: &mut RestartStatus, n: i32, now: Timestamp) {
    for _ in 0..n {
        st.recent.push(Time(now));
    }
    st.total += i64::from(n);
    st.in_window = st.recent.len() as i32;
}

/// Drops restarts older than the window.
pub fn prune(st: &mut RestartStatus, window_seconds: i64, now: Timestamp) {
    let oldest = now - SignedDuration::from_secs(window_seconds);
    st.recent.retain(|t| t.0 > oldest);
    st.in_window = st.recent.len() as i32;
}

/// Sets a condition, keeping `lastTransitionTime` when the status did not change.
pub fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" };
    put_condition(conds, type_, status, reason, message.into(), generation, now);
}

/// Sets a condition to `Unknown` (the facts it depends on cannot be read now).
pub fn set_condition_unknown(
    conds: &mut Vec<Condition>,
    type_: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    put_condition(conds, type_, "Unknown", reason, message.into(), generation, now);
}

/// Drops a condition that no longer applies (e.g. `SyncHealthy` once ClickHouse is unset).
pub fn remove_condition(conds: &mut Vec<Condition>, type_: &str) {
    conds.retain(|c| c.type_ != type_);
}

fn put_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = status.to_string();
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Time(now);
        }
        c.status = status;
        c.reason = reason.into();
        c.message = message;
        c.observed_generation = generation;
    } else {
        conds.push(Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        });
    }
}

/// Whether a condition is currently True.
pub fn condition_true(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// `BackupReady` from the backup status: (status, reason, message). False when the last snapshot
/// the operator asked for failed (`BackupFailed`), when the sidecar's last attempt — scheduled or
/// requested — failed (`SnapshotFailing`), when there is none yet (`NoSnapshotYet`), or
/// when the newest one is older than the last scheduled time plus [`SCHEDULE_GRACE_SECONDS`]
/// (`ScheduleMissed`: scheduled snapshots fail, or no sidecar ran to take them).
pub fn backup_condition(spec: &BackupSpec, b: Option<&BackupStatus>, now: Timestamp) -> (bool, &'static str, String) {
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
    if let (Some(taken), Ok(cron)) = (taken, parse_schedule(&spec.schedule)) {
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
pub fn sync_condition(sync: &SyncReport) -> (bool, &'static str, String) {
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
