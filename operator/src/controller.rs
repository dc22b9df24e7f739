//! The reconcile pipeline: read → validate → build (pure, [`crate::resources`]) → server-side
//! apply with the field manager → status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::crd::{
    BackupStatus, FenceStatus, FinalSnapshotStatus, IntegrityStatus, JournalStatus, Phase, RetentionPolicy,
    StorageStatus, SyncStatus, TradeStore, TradeStoreStatus,
};
use crate::metrics::Metrics;
use crate::resources::{self, BACKUP_REQUEST_ANNOTATION, CLEAR_FENCE_ANNOTATION, SPEC_HASH_ANNOTATION};
use crate::sidecar_api::{SidecarClient, SidecarStatus, Snapshot};
use crate::sidecar_config::{PORT, TOKEN_KEY};
use crate::status::{
    self, BACKUP_READY, DEGRADED, PROGRESSING, READY, SYNC_HEALTHY, remove_condition, set_condition,
    set_condition_unknown,
};
use crate::validate::{parse_quantity, validate};

/// Finalizer on every TradeStore: deletion waits for the pod to stop and applies the PVC
/// retention policy.
pub const FINALIZER: &str = "tradestore.io/finalizer";
/// Default field manager of server-side apply.
pub const FIELD_MANAGER: &str = "tradestore-operator";

/// Errors of one reconciliation. Each requeues with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object the store needs is owned by something else.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A referenced object is missing or wrong.
    #[error("missing dependency: {0}")]
    Dependency(String),
    /// A sidecar API call failed (unreachable, timed out, or answered with an error).
    #[error("sidecar: {0}")]
    Sidecar(String),
}

impl Error {
    /// Short label for the errors metric.
    pub fn reason(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(s)) if !s.reason.is_empty() => s.reason.clone(),
            Error::Kube(kube::Error::Api(s)) => format!("Http{}", s.code),
            Error::Kube(_) => "ClientError".into(),
            Error::Conflict(_) => "Conflict".into(),
            Error::Dependency(_) => "Dependency".into(),
            Error::Sidecar(_) => "Sidecar".into(),
        }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tunables of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Field manager of server-side apply.
    pub field_manager: String,
    /// Call the sidecar's API: `/v1/status`, on-demand and final snapshots (needs network access
    /// to pod IPs).
    pub probe_sidecar: bool,
    /// Requeue interval of a healthy store (status refresh).
    pub resync: Duration,
    /// Requeue interval while something is in progress.
    pub poll: Duration,
    /// How long a deletion retries the final snapshot (`finalSnapshotOnDelete`) before it goes on
    /// without one.
    pub final_snapshot_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            field_manager: FIELD_MANAGER.into(),
            probe_sidecar: true,
            resync: Duration::from_secs(60),
            poll: Duration::from_secs(2),
            final_snapshot_timeout: Duration::from_secs(600),
        }
    }
}

/// Shared state of every reconciliation.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Metrics,
    /// Tunables.
    pub settings: Settings,
    /// Client of the sidecars' API.
    pub sidecar: Arc<dyn SidecarClient>,
    /// Current time (replaceable in tests).
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context with the real clock.
    pub fn new(client: Client, metrics: Metrics, settings: Settings, sidecar: Arc<dyn SidecarClient>) -> Self {
        let reporter = Reporter { controller: "tradestore-operator".into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            settings,
            sidecar,
            clock: Arc::new(Timestamp::now),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Exponential backoff of an object's consecutive failures: 1 s, 2 s, 4 s … capped at 5 min.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().expect("backoff lock");
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    fn reset_backoff(&self, key: &str) {
        self.failures.lock().expect("backoff lock").remove(key);
    }

    async fn event(&self, ts: &TradeStore, type_: EventType, reason: &str, action: &str, note: String) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&ev, &ts.object_ref(&())).await {
            warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// Delay after `n` consecutive failures (n ≥ 1).
pub fn backoff_delay(n: u32) -> Duration {
    let secs = 1u64 << (n.saturating_sub(1)).min(9);
    Duration::from_secs(secs.min(300))
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}

/// Controller entry point: an object that does not even deserialize gets a Warning event and is
/// left alone (the watch goes on).
pub async fn reconcile(obj: Arc<DeserializeGuard<TradeStore>>, ctx: Arc<Context>) -> Result<Action> {
    match &obj.0 {
        Ok(ts) => {
            let key = key_of(&ts.metadata);
            let started = Instant::now();
            ctx.metrics.reconciliations.inc();
            let res = reconcile_store(Arc::new(ts.clone()), ctx.clone()).await;
            ctx.metrics.duration.observe(started.elapsed().as_secs_f64());
            match &res {
                Ok(_) => ctx.reset_backoff(&key),
                Err(e) => {
                    ctx.metrics.failures.with_label_values(&[e.reason().as_str()]).inc();
                    // Optimistic-concurrency conflicts are routine (retried at once); the rest is
                    // worth telling the owner of the store.
                    let routine = matches!(e, Error::Kube(kube::Error::Api(s)) if s.is_conflict());
                    if !routine {
                        let msg = truncate(&e.to_string(), 1000);
                        ctx.event(ts, EventType::Warning, "ReconcileFailed", "Reconcile", msg).await;
                    }
                }
            }
            res
        }
        Err(invalid) => {
            ctx.metrics.reconciliations.inc();
            ctx.metrics.failures.with_label_values(&["InvalidObject"]).inc();
            warn!(object = key_of(&invalid.metadata), error = %invalid.error, "TradeStore does not deserialize");
            let m = &invalid.metadata;
            let reference = ObjectReference {
                api_version: Some(format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION)),
                kind: Some("TradeStore".into()),
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                ..ObjectReference::default()
            };
            let ev = Event {
                type_: EventType::Warning,
                reason: "InvalidObject".into(),
                note: Some(truncate(&invalid.error, 1000)),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
                warn!(error = %e, "could not publish event");
            }
            Ok(Action::await_change())
        }
    }
}

/// Requeue with backoff after an error.
pub fn error_policy(obj: Arc<DeserializeGuard<TradeStore>>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = match &obj.0 {
        Ok(ts) => key_of(&ts.metadata),
        Err(inv) => key_of(&inv.metadata),
    };
    let delay = ctx.backoff(&key);
    warn!(object = key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Reconciles one (deserialized) store: finalizer first, then the pipeline.
pub async fn reconcile_store(cached: Arc<TradeStore>, ctx: Arc<Context>) -> Result<Action> {
    let ns = cached.namespace().unwrap_or_else(|| "default".into());
    let api: Api<TradeStore> = Api::namespaced(ctx.client.clone(), &ns);
    // Decisions depend on our own last status (restart window, fence): read the object fresh,
    // because the watch cache may not have seen the previous reconciliation's status write yet.
    let Some(ts) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let has_finalizer = ts.finalizers().iter().any(|f| f == FINALIZER);
    if ts.metadata.deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        return cleanup(&ts, &api, &ctx).await;
    }
    if !has_finalizer {
        add_finalizer(&ts, &api).await?;
        return Ok(Action::await_change());
    }
    apply(&ts, &api, &ctx).await
}

async fn add_finalizer(ts: &TradeStore, api: &Api<TradeStore>) -> Result<()> {
    let mut finalizers = ts.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    set_finalizers(ts, api, finalizers).await
}

async fn remove_finalizer(ts: &TradeStore, api: &Api<TradeStore>) -> Result<()> {
    let finalizers: Vec<String> = ts.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    match set_finalizers(ts, api, finalizers).await {
        Err(Error::Kube(kube::Error::Api(s))) if s.is_not_found() => Ok(()),
        other => other,
    }
}

/// Merge patch of the finalizer list, guarded by the resourceVersion it was computed from (a
/// concurrent change makes it fail with a conflict and retry).
async fn set_finalizers(ts: &TradeStore, api: &Api<TradeStore>, finalizers: Vec<String>) -> Result<()> {
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": ts.resource_version()}});
    api.patch(&ts.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

fn is_terminating<K: Resource>(o: &K) -> bool {
    o.meta().deletion_timestamp.is_some()
}

fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, ts: &TradeStore) -> bool {
    let uid = ts.metadata.uid.as_deref();
    meta.owner_references.iter().flatten().any(|o| Some(o.uid.as_str()) == uid)
}

fn has_foreign_controller(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, ts: &TradeStore) -> bool {
    let uid = ts.metadata.uid.as_deref();
    meta.owner_references.iter().flatten().any(|o| o.controller == Some(true) && Some(o.uid.as_str()) != uid)
}

/// Deletion: the final snapshot when `finalSnapshotOnDelete` asks for it (bounded retries), then
/// stop the pod gracefully (the sidecar drains and checkpoints), then keep or delete the volume,
/// then drop the finalizer.
async fn cleanup(ts: &TradeStore, api: &Api<TradeStore>, ctx: &Context) -> Result<Action> {
    let ns = ts.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let name = resources::pod_name(ts);

    let mut st = ts.status.clone().unwrap_or_default();
    let mut ts = ts.clone();
    let ts = &mut ts;
    if st.phase != Some(Phase::Terminating) {
        st.phase = Some(Phase::Terminating);
        st.message = Some("deleting: waiting for the pod to stop".into());
        // Keep the new resourceVersion: the finalizer patch below is guarded by it.
        *ts = patch_status(api, ts, &st).await?;
    }

    let pod = pods.get_opt(&name).await?.filter(|p| owned_by(&p.metadata, ts));
    if wants_final_snapshot(ts) {
        match &pod {
            Some(p) if !is_terminating(p) => {
                if let Some(wait) = final_snapshot(ts, api, ctx, p).await? {
                    return Ok(Action::requeue(wait));
                }
            }
            // No sidecar runs (stopped, fenced, or already stopping): nothing can take it.
            _ => {
                let now = (ctx.clock)();
                let note =
                    "no running sidecar (stopped, fenced or already stopping): deleting without a final snapshot";
                finish_final_snapshot(ts, api, now, note.to_string()).await?;
                ctx.event(ts, EventType::Warning, "FinalSnapshotSkipped", "Delete", note.into()).await;
            }
        }
    }

    if let Some(pod) = pod {
        if !is_terminating(&pod) {
            delete_pod(&pods, &pod).await?;
            ctx.event(ts, EventType::Normal, "Stopping", "Delete", format!("deleting pod {name}")).await;
        }
        return Ok(Action::requeue(ctx.settings.poll));
    }

    let pvc_name = resources::pvc_name(ts);
    if let Some(pvc) = pvcs.get_opt(&pvc_name).await?
        && owned_by(&pvc.metadata, ts)
    {
        match ts.spec.storage.retention_policy {
            RetentionPolicy::Retain => {
                let others: Vec<_> = pvc
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|o| Some(o.uid.as_str()) != ts.metadata.uid.as_deref())
                    .cloned()
                    .collect();
                let patch = json!({"metadata": {"ownerReferences": others}});
                pvcs.patch(&pvc_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                ctx.event(ts, EventType::Normal, "VolumeRetained", "Delete", format!("kept volume claim {pvc_name}"))
                    .await;
            }
            RetentionPolicy::Delete => {
                pvcs.delete(&pvc_name, &DeleteParams::default()).await?;
                ctx.event(ts, EventType::Normal, "VolumeDeleted", "Delete", format!("deleted volume claim {pvc_name}"))
                    .await;
            }
        }
    }
    remove_finalizer(ts, api).await?;
    info!(store = key_of(&ts.metadata), "finalized");
    Ok(Action::await_change())
}

/// `finalSnapshotOnDelete` is set and the final snapshot is not finished yet.
fn wants_final_snapshot(ts: &TradeStore) -> bool {
    ts.spec.backup.as_ref().is_some_and(|b| b.final_snapshot_on_delete)
        && !ts
            .status
            .as_ref()
            .and_then(|s| s.backup.as_ref())
            .and_then(|b| b.final_snapshot.as_ref())
            .is_some_and(|f| f.done)
}

/// One attempt at the final snapshot of a store being deleted. `None`: finished (taken, or given
/// up after `final_snapshot_timeout`), the pod may go. `Some(wait)`: retry after `wait`. The
/// attempt count and the earliest next attempt live in the status, so the status writes (which
/// trigger reconciles at once) do not shorten the backoff.
async fn final_snapshot(
    ts: &mut TradeStore,
    api: &Api<TradeStore>,
    ctx: &Context,
    pod: &Pod,
) -> Result<Option<Duration>> {
    let now = (ctx.clock)();
    let mut st = ts.status.clone().unwrap_or_default();
    let mut backup = st.backup.clone().unwrap_or_default();
    let mut fin = backup.final_snapshot.clone().unwrap_or(FinalSnapshotStatus {
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
    let attempt = async {
        if !ctx.settings.probe_sidecar {
            return Err(Error::Sidecar("the operator does not call sidecars (--probe-sidecar=false)".into()));
        }
        let base = sidecar_base(pod)
            .filter(|_| status::sidecar_ready(pod))
            .ok_or_else(|| Error::Sidecar("the sidecar is not ready".into()))?;
        let token = read_token(ts, ctx).await?.ok_or_else(|| Error::Sidecar("no API token yet".into()))?;
        ctx.sidecar.snapshot(&base, &token).await
    };
    let result = attempt.await;
    fin.attempts += 1;
    match result {
        Ok(snap) => {
            record_snapshot(&mut backup, &snap, true);
            let note = format!("final snapshot {} (seq {}) taken before stopping the pod", snap.id, snap.seq);
            fin.done = true;
            st.message = Some(format!("deleting: final snapshot {} taken; waiting for the pod to stop", snap.id));
            fin.snapshot_id = Some(snap.id);
            fin.last_error = None;
            fin.next_attempt = None;
            backup.final_snapshot = Some(fin);
            st.backup = Some(backup);
            *ts = patch_status(api, ts, &st).await?;
            ctx.event(ts, EventType::Normal, "FinalSnapshotTaken", "Delete", note).await;
            Ok(None)
        }
        Err(e) => {
            let elapsed = now.duration_since(fin.started.0).unsigned_abs();
            let limit = ctx.settings.final_snapshot_timeout;
            let give_up = elapsed >= limit || !ctx.settings.probe_sidecar;
            let msg = e.to_string();
            fin.last_error = Some(msg.clone());
            if give_up {
                fin.done = true;
                st.message = Some("deleting without a final snapshot: waiting for the pod to stop".into());
                fin.next_attempt = None;
                let note = format!(
                    "final snapshot failed {} time(s) over {}s (last: {msg}); deleting without a final snapshot",
                    fin.attempts,
                    elapsed.as_secs()
                );
                backup.final_snapshot = Some(fin);
                st.backup = Some(backup);
                *ts = patch_status(api, ts, &st).await?;
                ctx.event(ts, EventType::Warning, "FinalSnapshotAbandoned", "Delete", truncate(&note, 1000)).await;
                return Ok(None);
            }
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
            backup.final_snapshot = Some(fin);
            st.backup = Some(backup);
            *ts = patch_status(api, ts, &st).await?;
            ctx.event(ts, EventType::Warning, "FinalSnapshotFailed", "Delete", truncate(&note, 1000)).await;
            Ok(Some(wait))
        }
    }
}

/// Marks the final snapshot finished without one (nothing could take it).
async fn finish_final_snapshot(ts: &mut TradeStore, api: &Api<TradeStore>, now: Timestamp, why: String) -> Result<()> {
    let mut st = ts.status.clone().unwrap_or_default();
    let mut backup = st.backup.clone().unwrap_or_default();
    let attempts = backup.final_snapshot.as_ref().map(|f| f.attempts).unwrap_or(0);
    let started = backup.final_snapshot.as_ref().map(|f| f.started.clone()).unwrap_or(Time(now));
    backup.final_snapshot = Some(FinalSnapshotStatus {
        started,
        attempts,
        next_attempt: None,
        done: true,
        snapshot_id: None,
        last_error: Some(why),
    });
    st.backup = Some(backup);
    *ts = patch_status(api, ts, &st).await?;
    Ok(())
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    then.duration_since(now).unsigned_abs().max(Duration::from_secs(1))
}

/// `http://<pod IP>:8080`, once the pod has an IP.
fn sidecar_base(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
    Some(format!("http://{host}:{PORT}"))
}

/// Records a snapshot the sidecar reported or took as the newest one. `asked`: the operator
/// asked for it, so the failure of an earlier request is settled.
fn record_snapshot(backup: &mut BackupStatus, snap: &Snapshot, asked: bool) {
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

async fn delete_pod(pods: &Api<Pod>, pod: &Pod) -> Result<()> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
        ..DeleteParams::default()
    };
    match pods.delete(&pod.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `st` as the whole status: a JSON merge patch from the stored status to `st`, with
/// explicit nulls for fields that went away (a plain merge patch would keep them).
async fn patch_status(api: &Api<TradeStore>, ts: &TradeStore, st: &TradeStoreStatus) -> Result<TradeStore> {
    let old = serde_json::to_value(ts.status.clone().unwrap_or_default()).expect("status serializes");
    let new = serde_json::to_value(st).expect("status serializes");
    let patch = json!({"status": merge_patch(&old, &new)});
    Ok(api.patch_status(&ts.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?)
}

/// The RFC 7386 merge patch that turns `old` into `new`.
pub fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov) if ov.is_object() && nv.is_object() => {
                        patch.insert(k.clone(), merge_patch(ov, nv));
                    }
                    _ => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// What the pod step decided.
struct PodOutcome {
    phase: Phase,
    ready: bool,
    progressing: Option<(&'static str, String)>,
    requeue: Duration,
}

/// A pod step that started something (create, delete): its event, and an outcome that is not
/// ready, shows the step as Progressing (with the event's reason) and looks again after `poll`.
struct Transition {
    phase: Phase,
    type_: EventType,
    reason: &'static str,
    action: &'static str,
    note: String,
    progress: String,
}

impl Transition {
    async fn publish(self, ctx: &Context, ts: &TradeStore) -> PodOutcome {
        ctx.event(ts, self.type_, self.reason, self.action, self.note).await;
        PodOutcome {
            phase: self.phase,
            ready: false,
            progressing: Some((self.reason, self.progress)),
            requeue: ctx.settings.poll,
        }
    }
}

/// The main pipeline for a live store.
async fn apply(ts: &TradeStore, api: &Api<TradeStore>, ctx: &Context) -> Result<Action> {
    let now = (ctx.clock)();
    let generation = ts.metadata.generation;
    let old = ts.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let spec_changed = old.observed_generation != generation;

    // Validate.
    let errors = validate(ts);
    if !errors.is_empty() {
        let msg = errors.join("; ");
        st.phase = Some(Phase::Invalid);
        st.message = Some(msg.clone());
        st.observed_generation = generation;
        set_condition(&mut st.conditions, READY, false, "InvalidSpec", &msg, generation, now);
        set_condition(&mut st.conditions, PROGRESSING, false, "InvalidSpec", &msg, generation, now);
        set_condition(&mut st.conditions, DEGRADED, true, "InvalidSpec", &msg, generation, now);
        if st != old {
            ctx.event(ts, EventType::Warning, "InvalidSpec", "Validate", truncate(&msg, 1000)).await;
            patch_status(api, ts, &st).await?;
        }
        return Ok(Action::await_change());
    }

    let ns = ts.namespace().unwrap_or_default();
    let client = ctx.client.clone();
    let pp = PatchParams::apply(&ctx.settings.field_manager).force();

    // Token Secret: created once, never applied again.
    let token = ensure_token_secret(ts, ctx, &ns).await?;

    // ConfigMap and Service: server-side apply (a no-op on the server when unchanged).
    let cm = resources::config_map(ts);
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns)
        .patch(&resources::config_map_name(ts), &pp, &Patch::Apply(&cm))
        .await?;
    let svc = resources::service(ts);
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), &ns)
        .patch(&resources::service_name(ts), &pp, &Patch::Apply(&svc))
        .await?;

    // Data volume.
    st.storage = Some(ensure_pvc(ts, ctx, &ns, &pp, spec_changed).await?);

    // Pod.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod_name = resources::pod_name(ts);
    let current = pods.get_opt(&pod_name).await?;
    if let Some(p) = &current
        && !owned_by(&p.metadata, ts)
    {
        let msg = format!("pod {pod_name} exists and is not owned by this TradeStore; not touching it");
        set_condition(&mut st.conditions, DEGRADED, true, "PodNameConflict", &msg, generation, now);
        set_condition(&mut st.conditions, READY, false, "PodNameConflict", &msg, generation, now);
        st.message = Some(msg.clone());
        if st != old {
            ctx.event(ts, EventType::Warning, "PodNameConflict", "Reconcile", msg.clone()).await;
            patch_status(api, ts, &st).await?;
        }
        return Err(Error::Conflict(msg));
    }

    // Restart accounting.
    let window = ts.spec.restart_policy.window_seconds;
    st.restarts = status::account_restarts(&old.restarts, current.as_ref(), window, now);

    // A human clears an automatic fence by setting a new clear-fence token.
    if let Some(token) = ts.annotations().get(CLEAR_FENCE_ANNOTATION)
        && old.cleared_fence_token.as_deref() != Some(token.as_str())
    {
        st.cleared_fence_token = Some(token.clone());
        if st.fence.take().is_some() {
            st.restarts.recent.clear();
            st.restarts.in_window = 0;
            ctx.event(ts, EventType::Normal, "FenceCleared", "Unfence", format!("fence cleared (token {token})")).await;
        }
    }

    // Too many restarts in the window: fence.
    let max = ts.spec.restart_policy.max_restarts;
    if st.fence.is_none() && st.restarts.in_window >= max {
        let msg = format!(
            "the sidecar restarted {} times within {window}s (maximum {max}); the pod was stopped. Investigate, then set the annotation {CLEAR_FENCE_ANNOTATION} to a new value",
            st.restarts.in_window
        );
        st.fence = Some(FenceStatus { reason: "TooManyRestarts".into(), message: msg.clone(), since: Time(now) });
        ctx.event(ts, EventType::Warning, "TooManyRestarts", "Fence", msg).await;
    }

    let outcome = reconcile_pod(ts, ctx, &pods, current.as_ref(), &mut st, now).await?;

    // The sidecar's API: on-demand snapshot, then its facts.
    let base = current.as_ref().filter(|_| outcome.ready && ctx.settings.probe_sidecar).and_then(sidecar_base);
    let mut requeue = outcome.requeue;
    if !backup_request(ts, ctx, base.as_deref(), token.as_deref(), &mut st, now).await {
        requeue = requeue.min(ctx.settings.poll);
    }
    let facts = match &base {
        Some(base) => {
            let read_token = if ts.spec.auth.protect_reads { token.as_deref() } else { None };
            match ctx.sidecar.status(base, read_token).await {
                Ok(facts) => Some(facts),
                Err(e) => {
                    warn!(store = key_of(&ts.metadata), error = %e, "sidecar /v1/status unreachable");
                    None
                }
            }
        }
        None => None,
    };
    if !outcome.ready {
        st.sidecar = None;
    }
    sidecar_facts(ts, &mut st, facts, outcome.ready, generation, now);

    // Conditions and phase.
    st.phase = Some(outcome.phase);
    st.observed_generation = generation;
    let (ready_reason, ready_msg) = match outcome.phase {
        Phase::Running => ("SidecarReady", "the sidecar is ready".to_string()),
        Phase::Stopped => ("Stopped", "spec.stopped is true: no pod runs, the volume is kept".into()),
        Phase::Fenced if ts.spec.fenced => ("Fenced", "spec.fenced is true: no pod may run".into()),
        Phase::Fenced => ("TooManyRestarts", st.fence.as_ref().map(|f| f.message.clone()).unwrap_or_default()),
        Phase::Updating => ("RollingOut", "the pod is being replaced".into()),
        _ => ("PodNotReady", "waiting for the pod to become ready".into()),
    };
    set_condition(&mut st.conditions, READY, outcome.ready, ready_reason, &ready_msg, generation, now);
    match &outcome.progressing {
        Some((reason, msg)) => set_condition(&mut st.conditions, PROGRESSING, true, reason, msg, generation, now),
        None => set_condition(&mut st.conditions, PROGRESSING, false, "Stable", "", generation, now),
    }
    match &st.fence {
        Some(f) => {
            let (r, m) = (f.reason.clone(), f.message.clone());
            set_condition(&mut st.conditions, DEGRADED, true, &r, m, generation, now)
        }
        None => set_condition(&mut st.conditions, DEGRADED, false, "AsExpected", "", generation, now),
    }
    st.message = Some(ready_msg);
    match &ts.spec.backup {
        Some(spec) => {
            let (ok, reason, msg) = status::backup_condition(spec, st.backup.as_ref(), now);
            set_condition(&mut st.conditions, BACKUP_READY, ok, reason, msg, generation, now);
        }
        None => remove_condition(&mut st.conditions, BACKUP_READY),
    }

    if old.phase != st.phase {
        let from = old.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "-".into());
        let note = format!("phase {from} → {:?}", outcome.phase);
        ctx.event(ts, EventType::Normal, "PhaseChanged", "Reconcile", note).await;
    }
    if st != old {
        patch_status(api, ts, &st).await?;
    }
    Ok(Action::requeue(requeue))
}

/// Acts on a new `tradestore.io/backup-request` value: asks the sidecar for a snapshot once per
/// value (remembered in `status.backup.lastRequest`, also when it failed). Returns false while a
/// request waits for the sidecar to become reachable.
async fn backup_request(
    ts: &TradeStore,
    ctx: &Context,
    base: Option<&str>,
    token: Option<&str>,
    st: &mut TradeStoreStatus,
    now: Timestamp,
) -> bool {
    let Some(request) = ts.annotations().get(BACKUP_REQUEST_ANNOTATION) else { return true };
    let mut backup = st.backup.clone().unwrap_or_default();
    if backup.last_request.as_deref() == Some(request.as_str()) {
        return true;
    }
    let result = match (base, token) {
        (Some(base), Some(token)) => ctx.sidecar.snapshot(base, token).await,
        _ if !ctx.settings.probe_sidecar => {
            Err(Error::Sidecar("the operator does not call sidecars (--probe-sidecar=false)".into()))
        }
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
            ctx.event(ts, EventType::Normal, "BackupTaken", "Backup", note).await;
        }
        Err(e) => {
            let msg = e.to_string();
            backup.last_failure = Some(msg.clone());
            backup.last_failure_time = Some(Time(now));
            let note = format!("snapshot on request {request:?} failed: {msg}; set a new value to try again");
            ctx.event(ts, EventType::Warning, "BackupFailed", "Backup", truncate(&note, 1000)).await;
        }
    }
    st.backup = Some(backup);
    true
}

/// Copies what the sidecar reported (`None`: not reachable now) into the status: the sidecar
/// report, the newest snapshot, sync, journal and integrity, and the `SyncHealthy` condition.
fn sidecar_facts(
    ts: &TradeStore,
    st: &mut TradeStoreStatus,
    facts: Option<SidecarStatus>,
    ready: bool,
    generation: Option<i64>,
    now: Timestamp,
) {
    let spec = &ts.spec;
    if let Some(f) = facts {
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
        st.integrity = f.integrity.has_run().then(|| IntegrityStatus {
            last_run: f.integrity.last_run.clone(),
            state: f.integrity.state.clone(),
            ok: f.integrity.ok,
            error: f.integrity.error.clone(),
        });
        if spec.clickhouse.is_some() {
            let (ok, reason, msg) = status::sync_condition(&f.sync);
            set_condition(&mut st.conditions, SYNC_HEALTHY, ok, reason, msg, generation, now);
        }
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

/// Creates, keeps, replaces or removes the pod.
async fn reconcile_pod(
    ts: &TradeStore,
    ctx: &Context,
    pods: &Api<Pod>,
    current: Option<&Pod>,
    st: &mut TradeStoreStatus,
    now: Timestamp,
) -> Result<PodOutcome> {
    let poll = ctx.settings.poll;
    let want_pod = !ts.spec.stopped && !ts.spec.fenced && st.fence.is_none();
    let desired_hash = resources::pod_spec_hash(ts);
    let idle_phase = if ts.spec.fenced || st.fence.is_some() { Phase::Fenced } else { Phase::Stopped };

    let Some(pod) = current else {
        if !want_pod {
            st.pod = None;
            return Ok(PodOutcome { phase: idle_phase, ready: false, progressing: None, requeue: ctx.settings.resync });
        }
        let desired = resources::pod(ts);
        let pp = PatchParams::apply(&ctx.settings.field_manager).force();
        let created = pods.patch(&resources::pod_name(ts), &pp, &Patch::Apply(&desired)).await?;
        st.pod = Some(crate::crd::PodStatusRef {
            name: created.name_any(),
            uid: created.metadata.uid.clone().unwrap_or_default(),
            spec_hash: desired_hash.clone(),
        });
        return Ok(Transition {
            phase: Phase::Pending,
            type_: EventType::Normal,
            reason: "PodCreated",
            action: "Create",
            note: format!("created pod {} ({desired_hash})", created.name_any()),
            progress: "waiting for the new pod to become ready".into(),
        }
        .publish(ctx, ts)
        .await);
    };

    let current_hash = pod.annotations().get(SPEC_HASH_ANNOTATION).cloned().unwrap_or_default();
    st.pod = Some(crate::crd::PodStatusRef {
        name: pod.name_any(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        spec_hash: current_hash.clone(),
    });

    if is_terminating(pod) {
        // Never start a second pod while the old one may still hold the volume.
        let phase = if want_pod { Phase::Updating } else { idle_phase };
        return Ok(PodOutcome {
            phase,
            ready: false,
            progressing: Some(("PodTerminating", "waiting for the old pod to stop".into())),
            requeue: poll,
        });
    }

    if !want_pod {
        delete_pod(pods, pod).await?;
        let (reason, note) = match idle_phase {
            Phase::Fenced => ("Fencing", format!("deleting pod {}: the store is fenced", pod.name_any())),
            _ => ("Stopping", format!("deleting pod {}: spec.stopped is true", pod.name_any())),
        };
        return Ok(Transition {
            phase: idle_phase,
            type_: EventType::Normal,
            reason,
            action: "Delete",
            note,
            progress: "waiting for the pod to stop".into(),
        }
        .publish(ctx, ts)
        .await);
    }

    if current_hash != desired_hash {
        delete_pod(pods, pod).await?;
        return Ok(Transition {
            phase: Phase::Updating,
            type_: EventType::Normal,
            reason: "RollingOut",
            action: "Delete",
            note: format!("replacing pod {}: spec hash {current_hash} → {desired_hash}", pod.name_any()),
            progress: "replacing the pod after a spec change".into(),
        }
        .publish(ctx, ts)
        .await);
    }

    let phase = status::pod_phase(pod);
    if phase == "Failed" || phase == "Succeeded" {
        // The pod will not come back by itself (e.g. evicted): count it as a restart and replace it.
        status::add_restarts(&mut st.restarts, 1, now);
        delete_pod(pods, pod).await?;
        let reason = pod.status.as_ref().and_then(|s| s.reason.clone()).unwrap_or_else(|| phase.to_string());
        return Ok(Transition {
            phase: Phase::Pending,
            type_: EventType::Warning,
            reason: "PodFailed",
            action: "Delete",
            note: format!("pod {} ended ({reason}); replacing it", pod.name_any()),
            progress: format!("replacing the pod that ended ({reason})"),
        }
        .publish(ctx, ts)
        .await);
    }

    let ready = status::sidecar_ready(pod);
    if ready {
        Ok(PodOutcome { phase: Phase::Running, ready, progressing: None, requeue: ctx.settings.resync })
    } else {
        Ok(PodOutcome {
            phase: Phase::Pending,
            ready,
            progressing: Some(("PodNotReady", "waiting for the pod to become ready".into())),
            requeue: poll.max(Duration::from_secs(5)),
        })
    }
}

fn token_of(secret: &Secret) -> Option<String> {
    let raw = secret.data.as_ref()?.get(TOKEN_KEY)?;
    Some(String::from_utf8_lossy(&raw.0).trim().to_string())
}

/// The store's API token from its Secret, without creating anything.
async fn read_token(ts: &TradeStore, ctx: &Context) -> Result<Option<String>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ts.namespace().unwrap_or_default());
    Ok(secrets.get_opt(&resources::token_secret_name(ts)).await?.as_ref().and_then(token_of))
}

/// Creates the generated token Secret once; checks a user-provided one. Returns the token (the
/// operator needs it to read `/v1/status` when reads are protected).
async fn ensure_token_secret(ts: &TradeStore, ctx: &Context, ns: &str) -> Result<Option<String>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = resources::token_secret_name(ts);
    if ts.spec.auth.token_secret_name.is_some() {
        let Some(secret) = secrets.get_opt(&name).await? else {
            let msg = format!("token Secret {name} does not exist");
            ctx.event(ts, EventType::Warning, "TokenSecretMissing", "Reconcile", msg.clone()).await;
            return Err(Error::Dependency(msg));
        };
        let token = token_of(&secret).unwrap_or_default();
        if token.len() < 16 {
            let msg = format!("token Secret {name} needs a key {TOKEN_KEY:?} of at least 16 characters");
            ctx.event(ts, EventType::Warning, "TokenSecretInvalid", "Reconcile", msg.clone()).await;
            return Err(Error::Dependency(msg));
        }
        return Ok(Some(token));
    }
    if let Some(existing) = secrets.get_opt(&name).await? {
        return Ok(token_of(&existing));
    }
    let token = resources::generate_token();
    let secret = resources::token_secret(ts, &token);
    match secrets
        .create(
            &PostParams { field_manager: Some(ctx.settings.field_manager.clone()), ..PostParams::default() },
            &secret,
        )
        .await
    {
        Ok(_) => {
            ctx.event(ts, EventType::Normal, "TokenCreated", "Create", format!("generated API token Secret {name}"))
                .await;
            Ok(Some(token))
        }
        // Someone else created it meanwhile: theirs wins, read it next time.
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Creates the data PVC, or grows it when the spec asks for more and the storage class allows it.
async fn ensure_pvc(
    ts: &TradeStore,
    ctx: &Context,
    ns: &str,
    pp: &PatchParams,
    spec_changed: bool,
) -> Result<StorageStatus> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let name = resources::pvc_name(ts);
    let desired = resources::pvc(ts);
    let want = &ts.spec.storage.size;
    let Some(cur) = pvcs.get_opt(&name).await? else {
        let created = pvcs.patch(&name, pp, &Patch::Apply(&desired)).await?;
        ctx.event(
            ts,
            EventType::Normal,
            "VolumeCreated",
            "Create",
            format!("created volume claim {name} ({})", want.0),
        )
        .await;
        return Ok(storage_status(&created));
    };
    if has_foreign_controller(&cur.metadata, ts) {
        return Err(Error::Conflict(format!("volume claim {name} is controlled by another object")));
    }
    let cur_spec = cur.spec.clone().unwrap_or_default();
    let requested =
        cur_spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).cloned();
    let (want_b, cur_b) = (parse_quantity(&want.0), requested.as_ref().and_then(|q| parse_quantity(&q.0)));

    // Adopt a retained claim (e.g. the store was deleted with Retain and created again).
    let needs_owner = !owned_by(&cur.metadata, ts);
    let grow = matches!((want_b, cur_b), (Some(w), Some(c)) if w > c);
    if spec_changed {
        if let (Some(w), Some(c)) = (want_b, cur_b)
            && w < c
        {
            let note = format!(
                "volume claim {name} is {} and cannot shrink to {}",
                requested.as_ref().map(|q| q.0.as_str()).unwrap_or("?"),
                want.0
            );
            ctx.event(ts, EventType::Warning, "VolumeShrinkRefused", "Resize", note).await;
        }
        let modes = cur_spec.access_modes.clone().unwrap_or_default();
        let class_differs = ts.spec.storage.storage_class_name.is_some()
            && ts.spec.storage.storage_class_name != cur_spec.storage_class_name;
        if class_differs || modes != vec![ts.spec.storage.access_mode.as_str().to_string()] {
            ctx.event(
                ts,
                EventType::Warning,
                "VolumeSpecImmutable",
                "Resize",
                format!(
                    "storage class and access mode of volume claim {name} cannot change; keeping {:?} {:?}",
                    cur_spec.storage_class_name, modes
                ),
            )
            .await;
        }
    }
    let mut size = requested.clone();
    if grow {
        let expandable = match &cur_spec.storage_class_name {
            Some(class) => Api::<StorageClass>::all(ctx.client.clone())
                .get_opt(class)
                .await?
                .and_then(|c| c.allow_volume_expansion)
                .unwrap_or(false),
            None => false,
        };
        if expandable {
            size = Some(want.clone());
            ctx.event(
                ts,
                EventType::Normal,
                "VolumeExpanding",
                "Resize",
                format!("expanding volume claim {name} to {}", want.0),
            )
            .await;
        } else if spec_changed {
            ctx.event(
                ts,
                EventType::Warning,
                "VolumeResizeUnsupported",
                "Resize",
                format!(
                    "storage class {:?} does not allow volume expansion; volume claim {name} stays at {}",
                    cur_spec.storage_class_name,
                    requested.as_ref().map(|q| q.0.as_str()).unwrap_or("?")
                ),
            )
            .await;
        }
    }
    if needs_owner || size != requested {
        // A JSON merge patch of only what may change (labels, our owner reference, the requested
        // size). Not server-side apply: an apply without the immutable fields would drop our
        // ownership of them, and the API server would try to remove them.
        let mut owners: Vec<_> = cur
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|o| Some(o.uid.as_str()) != ts.metadata.uid.as_deref())
            .cloned()
            .collect();
        owners.extend(desired.metadata.owner_references.clone().unwrap_or_default());
        let mut patch = json!({"metadata": {"labels": desired.metadata.labels, "ownerReferences": owners}});
        if let Some(size) = &size {
            patch["spec"] = json!({"resources": {"requests": {"storage": size}}});
        }
        let mp = PatchParams { field_manager: Some(ctx.settings.field_manager.clone()), ..PatchParams::default() };
        let updated = pvcs.patch(&name, &mp, &Patch::Merge(&patch)).await?;
        return Ok(storage_status(&updated));
    }
    Ok(storage_status(&cur))
}

fn storage_status(pvc: &PersistentVolumeClaim) -> StorageStatus {
    StorageStatus {
        claim_name: pvc.name_any(),
        requested: pvc
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .cloned(),
        capacity: pvc.status.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage")).cloned(),
    }
}
