//! Condition types of a TradeStore and how they are set: the status of one kind changes only
//! through these functions, so `lastTransitionTime` moves exactly when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The sidecar is ready to serve.
pub const READY: &str = "Ready";
/// The store is moving towards its desired state (pod being created or replaced).
pub const PROGRESSING: &str = "Progressing";
/// The store needs a human (fenced after too many restarts, invalid spec, conflicts, a missing
/// backup claim).
pub const DEGRADED: &str = "Degraded";
/// A snapshot exists and the last one asked for or scheduled did not fail (with `spec.backup`).
pub const BACKUP_READY: &str = "BackupReady";
/// The ClickHouse sync is running and not degraded (with `spec.clickhouse`).
pub const SYNC_HEALTHY: &str = "SyncHealthy";

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
