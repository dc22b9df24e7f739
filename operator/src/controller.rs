//! The reconcile pipeline: read → validate → build (pure, [`crate::resources`]) → server-side
//! apply with the field manager → status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
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

use crate::crd::{FenceStatus, Phase, RetentionPolicy, SidecarReport, StorageStatus, TradeStore, TradeStoreStatus};
use crate::metrics::Metrics;
use crate::resources::{self, CLEAR_FENCE_ANNOTATION, SPEC_HASH_ANNOTATION};
use crate::sidecar_config::{PORT, TOKEN_KEY};
use crate::status::{self, DEGRADED, PROGRESSING, READY, set_condition};
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
        }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Asks a running sidecar for its `/v1/status`.
pub trait SidecarProbe: Send + Sync {
    /// `base` is `http://<pod IP>:8080`; `token` is sent as a bearer token when reads are protected.
    fn status<'a>(&'a self, base: &'a str, token: Option<&'a str>) -> BoxFuture<'a, Result<SidecarReport, String>>;
}

/// The real probe: an HTTP GET with a short timeout.
pub struct HttpSidecarProbe {
    client: reqwest::Client,
}

impl HttpSidecarProbe {
    /// A probe with a 2 s timeout.
    pub fn new() -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("reqwest client");
        HttpSidecarProbe { client }
    }
}

impl Default for HttpSidecarProbe {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(serde::Deserialize)]
struct SidecarStatusDoc {
    schema_version: Option<i64>,
    last_seq: Option<i64>,
    trade_rows: Option<i64>,
    wal_bytes: Option<i64>,
    last_checkpoint_unix: Option<i64>,
    queue_depth: Option<i64>,
    ready: Option<bool>,
    not_ready_reason: Option<String>,
}

impl SidecarProbe for HttpSidecarProbe {
    fn status<'a>(&'a self, base: &'a str, token: Option<&'a str>) -> BoxFuture<'a, Result<SidecarReport, String>> {
        Box::pin(async move {
            let mut req = self.client.get(format!("{base}/v1/status"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("GET /v1/status: HTTP {}", resp.status()));
            }
            let d: SidecarStatusDoc = resp.json().await.map_err(|e| e.to_string())?;
            Ok(SidecarReport {
                schema_version: d.schema_version,
                last_seq: d.last_seq,
                trade_rows: d.trade_rows,
                wal_bytes: d.wal_bytes,
                last_checkpoint_unix: d.last_checkpoint_unix,
                queue_depth: d.queue_depth,
                ready: d.ready,
                not_ready_reason: d.not_ready_reason,
            })
        })
    }
}

/// Tunables of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Field manager of server-side apply.
    pub field_manager: String,
    /// Query the sidecar's `/v1/status` (needs network access to pod IPs).
    pub probe_sidecar: bool,
    /// Requeue interval of a healthy store (status refresh).
    pub resync: Duration,
    /// Requeue interval while something is in progress.
    pub poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            field_manager: FIELD_MANAGER.into(),
            probe_sidecar: true,
            resync: Duration::from_secs(60),
            poll: Duration::from_secs(2),
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
    /// `/v1/status` client.
    pub probe: Arc<dyn SidecarProbe>,
    /// Current time (replaceable in tests).
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context with the real clock.
    pub fn new(client: Client, metrics: Metrics, settings: Settings, probe: Arc<dyn SidecarProbe>) -> Self {
        let reporter = Reporter { controller: "tradestore-operator".into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            settings,
            probe,
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

/// Deletion: stop the pod gracefully (the sidecar drains and checkpoints), then keep or delete
/// the volume, then drop the finalizer.
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
        if ts.spec.backup.as_ref().is_some_and(|b| b.final_snapshot_on_delete) {
            ctx.event(
                ts,
                EventType::Warning,
                "FinalSnapshotSkipped",
                "Delete",
                "finalSnapshotOnDelete is not implemented yet; no snapshot was taken".into(),
            )
            .await;
        }
    }

    if let Some(pod) = pods.get_opt(&name).await?
        && owned_by(&pod.metadata, ts)
    {
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

    // Sidecar facts.
    if outcome.ready && ctx.settings.probe_sidecar {
        if let Some(ip) = current.as_ref().and_then(|p| p.status.as_ref()).and_then(|s| s.pod_ip.clone()) {
            let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
            let token = if ts.spec.auth.protect_reads { token.as_deref() } else { None };
            match ctx.probe.status(&format!("http://{host}:{PORT}"), token).await {
                Ok(report) => st.sidecar = Some(report),
                Err(e) => warn!(store = key_of(&ts.metadata), error = %e, "sidecar /v1/status unreachable"),
            }
        }
    } else if !outcome.ready {
        st.sidecar = None;
    }

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

    if old.phase != st.phase {
        let from = old.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "-".into());
        let note = format!("phase {from} → {:?}", outcome.phase);
        ctx.event(ts, EventType::Normal, "PhaseChanged", "Reconcile", note).await;
    }
    if st != old {
        patch_status(api, ts, &st).await?;
    }
    Ok(Action::requeue(outcome.requeue))
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
        ctx.event(
            ts,
            EventType::Normal,
            "PodCreated",
            "Create",
            format!("created pod {} ({desired_hash})", created.name_any()),
        )
        .await;
        return Ok(PodOutcome {
            phase: Phase::Pending,
            ready: false,
            progressing: Some(("PodCreated", "waiting for the new pod to become ready".into())),
            requeue: poll,
        });
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
        ctx.event(ts, EventType::Normal, reason, "Delete", note).await;
        return Ok(PodOutcome {
            phase: idle_phase,
            ready: false,
            progressing: Some((reason, "waiting for the pod to stop".into())),
            requeue: poll,
        });
    }

    if current_hash != desired_hash {
        delete_pod(pods, pod).await?;
        ctx.event(
            ts,
            EventType::Normal,
            "RollingOut",
            "Delete",
            format!("replacing pod {}: spec hash {current_hash} → {desired_hash}", pod.name_any()),
        )
        .await;
        return Ok(PodOutcome {
            phase: Phase::Updating,
            ready: false,
            progressing: Some(("RollingOut", "replacing the pod after a spec change".into())),
            requeue: poll,
        });
    }

    let phase = status::pod_phase(pod);
    if phase == "Failed" || phase == "Succeeded" {
        // The pod will not come back by itself (e.g. evicted): count it as a restart and replace it.
        status::add_restarts(&mut st.restarts, 1, now);
        delete_pod(pods, pod).await?;
        let reason = pod.status.as_ref().and_then(|s| s.reason.clone()).unwrap_or_else(|| phase.to_string());
        ctx.event(
            ts,
            EventType::Warning,
            "PodFailed",
            "Delete",
            format!("pod {} ended ({reason}); replacing it", pod.name_any()),
        )
        .await;
        return Ok(PodOutcome {
            phase: Phase::Pending,
            ready: false,
            progressing: Some(("PodFailed", format!("replacing the pod that ended ({reason})"))),
            requeue: poll,
        });
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
