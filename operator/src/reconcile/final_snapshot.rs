//! The final snapshot of a store being deleted (`backup.finalSnapshotOnDelete`): taken before the
//! pod stops, retried with backoff for at most `final_snapshot_timeout`, then given up so deletion
//! is never blocked forever. The attempt count and the earliest next attempt live in the status,
//! so status writes (which trigger reconciles at once) do not shorten the backoff.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::EventType;

use super::apply::is_terminating;
use super::apply::token;
use super::context::backoff_delay;
use super::pod_facts::{sidecar_base, sidecar_ready};
use super::sidecar::record_snapshot;
use super::status_patch::patch_status;
use super::{Context, Result};
use crate::crd::{FinalSnapshotStatus, TradeStore, TradeStoreStatus};
use crate::sidecar::client::{Manifest, SidecarError};

/// `finalSnapshotOnDelete` is set and the final snapshot is not finished yet.
pub(crate) fn wanted(ts: &TradeStore) -> bool {
    ts.spec.backup.as_ref().is_some_and(|b| b.final_snapshot_on_delete)
        && !ts
            .status
            .as_ref()
            .and_then(|s| s.backup.as_ref())
            .and_then(|b| b.final_snapshot.as_ref())
            .is_some_and(|f| f.done)
}

/// One step of the final snapshot. `None`: finished (taken, given up, or skipped because no
/// sidecar runs), the pod may go. `Some(wait)`: retry after `wait`. `ts` is updated to the stored
/// object after each status write.
pub(crate) async fn take(
    ts: &mut TradeStore,
    api: &Api<TradeStore>,
    ctx: &Context,
    pod: Option<&Pod>,
) -> Result<Option<Duration>> {
    match pod {
        Some(p) if !is_terminating(p) => attempt(ts, api, ctx, p).await,
        // No sidecar runs (stopped, fenced, or already stopping): nothing can take it.
        _ => {
            skip(ts, api, ctx).await?;
            Ok(None)
        }
    }
}

async fn attempt(ts: &mut TradeStore, api: &Api<TradeStore>, ctx: &Context, pod: &Pod) -> Result<Option<Duration>> {
    let now = ctx.now();
    let mut st = ts.status.clone().unwrap_or_default();
    let mut fin = st.backup.as_ref().and_then(|b| b.final_snapshot.clone()).unwrap_or(FinalSnapshotStatus {
        started: Time(now),
        attempts: 0,
        next_attempt: None,
        done: false,
        snapshot_id: None,
        last_error: None,
    });
    if let Some(next) = &fin.next_attempt
        && next.0 > now
    {
        return Ok(Some(until(now, next.0)));
    }
    let result = snapshot(ts, ctx, pod).await;
    fin.attempts += 1;
    match result {
        Ok(snap) => {
            taken(ts, api, ctx, &mut st, fin, &snap).await?;
            Ok(None)
        }
        Err(e) => failed(ts, api, ctx, &mut st, fin, e, now).await,
    }
}

/// Asks the sidecar for the snapshot.
async fn snapshot(ts: &TradeStore, ctx: &Context, pod: &Pod) -> Result<Manifest> {
    if !ctx.settings.probe_sidecar {
        return Err(SidecarError::ProbingOff.into());
    }
    let base = sidecar_base(pod).filter(|_| sidecar_ready(pod)).ok_or(SidecarError::NotReady)?;
    let token = token::read(ts, ctx).await?.ok_or(SidecarError::NoToken)?;
    Ok(ctx.sidecar.snapshot(&base, &token).await?)
}

async fn taken(
    ts: &mut TradeStore,
    api: &Api<TradeStore>,
    ctx: &Context,
    st: &mut TradeStoreStatus,
    mut fin: FinalSnapshotStatus,
    snap: &Manifest,
) -> Result<()> {
    let mut backup = st.backup.clone().unwrap_or_default();
    record_snapshot(&mut backup, snap, true);
    let note = format!("final snapshot {} (seq {}) taken before stopping the pod", snap.id, snap.seq);
    st.message = Some(format!("deleting: final snapshot {} taken; waiting for the pod to stop", snap.id));
    fin.done = true;
    fin.snapshot_id = Some(snap.id.clone());
    fin.last_error = None;
    fin.next_attempt = None;
    backup.final_snapshot = Some(fin);
    st.backup = Some(backup);
    *ts = patch_status(api, ts, st).await?;
    ctx.events.publish(ts, EventType::Normal, "FinalSnapshotTaken", "Delete", note).await;
    Ok(())
}

/// A failed attempt: retry after a backoff, or give up once the time limit has passed.
async fn failed(
    ts: &mut TradeStore,
    api: &Api<TradeStore>,
    ctx: &Context,
    st: &mut TradeStoreStatus,
    mut fin: FinalSnapshotStatus,
    err: super::Error,
    now: Timestamp,
) -> Result<Option<Duration>> {
    let elapsed = now.duration_since(fin.started.0).unsigned_abs();
    let limit = ctx.settings.final_snapshot_timeout;
    let give_up = elapsed >= limit || !ctx.settings.probe_sidecar;
    let msg = err.to_string();
    fin.last_error = Some(msg.clone());
    let (reason, note, wait) = if give_up {
        fin.done = true;
        fin.next_attempt = None;
        st.message = Some("deleting without a final snapshot: waiting for the pod to stop".into());
        let note = format!(
            "final snapshot failed {} time(s) over {}s (last: {msg}); deleting without a final snapshot",
            fin.attempts,
            elapsed.as_secs()
        );
        ("FinalSnapshotAbandoned", note, None)
    } else {
        let wait = backoff_delay(fin.attempts.max(1) as u32).min(limit - elapsed).max(Duration::from_secs(1));
        fin.next_attempt = Some(Time(now + wait));
        st.message = Some(format!(
            "deleting: the final snapshot failed {} time(s), retrying (at most {}s in all)",
            fin.attempts,
            limit.as_secs()
        ));
        let note = format!(
            "final snapshot attempt {} failed: {msg}; retrying in {}s (deletion goes on without it after {}s)",
            fin.attempts,
            wait.as_secs(),
            limit.as_secs()
        );
        ("FinalSnapshotFailed", note, Some(wait))
    };
    let mut backup = st.backup.clone().unwrap_or_default();
    backup.final_snapshot = Some(fin);
    st.backup = Some(backup);
    *ts = patch_status(api, ts, st).await?;
    ctx.events.publish(ts, EventType::Warning, reason, "Delete", note).await;
    Ok(wait)
}

/// Marks the final snapshot finished without one (nothing could take it), with a Warning.
async fn skip(ts: &mut TradeStore, api: &Api<TradeStore>, ctx: &Context) -> Result<()> {
    let now = ctx.now();
    let why = "no running sidecar (stopped, fenced or already stopping): deleting without a final snapshot";
    let mut st = ts.status.clone().unwrap_or_default();
    let mut backup = st.backup.clone().unwrap_or_default();
    let earlier = backup.final_snapshot.as_ref();
    backup.final_snapshot = Some(FinalSnapshotStatus {
        started: earlier.map(|f| f.started.clone()).unwrap_or(Time(now)),
        attempts: earlier.map(|f| f.attempts).unwrap_or(0),
        next_attempt: None,
        done: true,
        snapshot_id: None,
        last_error: Some(why.into()),
    });
    st.backup = Some(backup);
    *ts = patch_status(api, ts, &st).await?;
    ctx.events.publish(ts, EventType::Warning, "FinalSnapshotSkipped", "Delete", why.into()).await;
    Ok(())
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    then.duration_since(now).unsigned_abs().max(Duration::from_secs(1))
}
