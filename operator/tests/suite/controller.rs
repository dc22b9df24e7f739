//! Reconcile decisions against a mocked Kubernetes API (kube-rs's tower-test pattern with a small
//! in-memory API behind it, see fake_api): create, no-op on unchanged, rollout on change, restart
//! annotation, fence after max restarts (and clearing it), stopped, fence switch, invalid spec,
//! volume resize, finalizer with both retention policies, objects that do not deserialize.

use crate::fake_api;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_api::FakeApi;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tradestore_operator::crd::{SidecarReport, TradeStore};
use tradestore_operator::metrics::Metrics;
use tradestore_operator::reconcile::{self, Context, Settings};
use tradestore_operator::sidecar::client::{
    BackupStatus, CheckStatus, HttpSidecarClient, Manifest, SidecarClient, SidecarError, SidecarStatus, SyncStatus,
    integrity_has_run,
};

const NS: &str = "trading";
const TS: &str = "/apis/tradestore.io/v1alpha1/namespaces/trading/tradestores/minimal";
const POD: &str = "/api/v1/namespaces/trading/pods/minimal";
const PVC: &str = "/api/v1/namespaces/trading/persistentvolumeclaims/minimal-data";
const LOG_PVC: &str = "/api/v1/namespaces/trading/persistentvolumeclaims/minimal-commit-log";
const CM: &str = "/api/v1/namespaces/trading/configmaps/minimal-config";
const SVC: &str = "/api/v1/namespaces/trading/services/minimal";
const SECRET: &str = "/api/v1/namespaces/trading/secrets/minimal-token";

/// A sidecar that answers a settable status, takes snapshots (or fails to, while `failing`), and
/// remembers what it was asked.
#[derive(Default)]
struct FakeSidecar {
    last_token: Mutex<Option<String>>,
    snapshot_calls: Mutex<Vec<(String, String)>>,
    failing: Mutex<bool>,
    last_snapshot: Mutex<Option<Manifest>>,
    backup_error: Mutex<Option<String>>,
    sync: Mutex<SyncStatus>,
    integrity: Mutex<CheckStatus>,
}

impl FakeSidecar {
    fn snapshots_taken(&self) -> usize {
        self.snapshot_calls.lock().unwrap().len()
    }
    fn fail(&self, on: bool) {
        *self.failing.lock().unwrap() = on;
    }
}

fn manifest(id: &str, created_at: &str, seq: i64) -> Manifest {
    Manifest { id: id.into(), created_at: created_at.into(), seq, trade_rows: seq, ..Default::default() }
}

impl SidecarClient for FakeSidecar {
    fn status<'a>(
        &'a self,
        _base: &'a str,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SidecarStatus, SidecarError>> {
        *self.last_token.lock().unwrap() = token.map(str::to_string);
        Box::pin(async {
            Ok(SidecarStatus {
                report: SidecarReport {
                    schema_version: Some(3),
                    last_seq: Some(42),
                    ready: Some(true),
                    ..Default::default()
                },
                last_snapshot: self.last_snapshot.lock().unwrap().clone(),
                backup: BackupStatus { last_error: self.backup_error.lock().unwrap().clone(), ..Default::default() },
                sync: self.sync.lock().unwrap().clone(),
                integrity: self.integrity.lock().unwrap().clone(),
                ..Default::default()
            })
        })
    }

    fn snapshot<'a>(&'a self, base: &'a str, token: &'a str) -> BoxFuture<'a, Result<Manifest, SidecarError>> {
        self.snapshot_calls.lock().unwrap().push((base.to_string(), token.to_string()));
        Box::pin(async move {
            if *self.failing.lock().unwrap() {
                return Err(SidecarError::Status {
                    what: "POST /v1/snapshots",
                    status: reqwest::StatusCode::INTERNAL_SERVER_ERROR,
                    body: "disk full".into(),
                });
            }
            let n = self.snapshots_taken() as i64;
            let snap = manifest(&format!("snap-{n}"), "2026-11-01T12:00:00Z", 40 + n);
            *self.last_snapshot.lock().unwrap() = Some(snap.clone());
            Ok(snap)
        })
    }
}

struct Harness {
    fake: FakeApi,
    ctx: Arc<Context>,
    now: Arc<Mutex<Timestamp>>,
    probe: Arc<FakeSidecar>,
}

impl Harness {
    fn new(spec: Value) -> Harness {
        let (fake, client) = FakeApi::new();
        let now = Arc::new(Mutex::new("2026-11-01T12:00:00Z".parse::<Timestamp>().unwrap()));
        let probe = Arc::new(FakeSidecar::default());
        let mut ctx = Context::new(client, Metrics::new(), Settings::default(), probe.clone());
        let n = now.clone();
        ctx.clock = Arc::new(move || *n.lock().unwrap());
        if let Some(claim) = spec["backup"]["target"]["volume"]["claimName"].as_str() {
            fake.put(
                &format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/{claim}"),
                json!({"metadata": {"name": claim, "namespace": NS}, "spec": {"accessModes": ["ReadWriteOnce"]}}),
            );
        }
        fake.put(
            TS,
            json!({
                "apiVersion": "tradestore.io/v1alpha1", "kind": "TradeStore",
                "metadata": {"name": "minimal", "namespace": NS, "uid": "ts-uid-1", "generation": 1},
                "spec": spec,
            }),
        );
        Harness { fake, ctx: Arc::new(ctx), now, probe }
    }

    fn store(&self) -> TradeStore {
        serde_json::from_value(self.fake.get(TS).expect("store exists")).expect("store deserializes")
    }

    async fn reconcile(&self) -> Action {
        let obj = Arc::new(DeserializeGuard(Ok(self.store())));
        reconcile::reconcile(obj, self.ctx.clone()).await.expect("reconcile succeeds")
    }

    fn advance(&self, secs: i64) {
        let mut n = self.now.lock().unwrap();
        *n += SignedDuration::from_secs(secs);
    }

    fn status(&self) -> Value {
        self.fake.get(TS).unwrap()["status"].clone()
    }

    fn condition(&self, type_: &str) -> (String, String) {
        let st = self.status();
        let c = st["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap().clone();
        (c["status"].as_str().unwrap().into(), c["reason"].as_str().unwrap().into())
    }

    fn edit_spec(&self, f: impl FnOnce(&mut Value)) {
        self.fake.edit(TS, |o| {
            f(&mut o["spec"]);
            let g = o["metadata"]["generation"].as_i64().unwrap();
            o["metadata"]["generation"] = json!(g + 1);
        });
    }

    /// Marks the pod running and ready, with the sidecar's restart count.
    fn pod_ready(&self, restarts: i32) {
        self.fake.edit(POD, |p| {
            p["status"] = json!({
                "phase": "Running",
                "podIP": "10.0.0.7",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "sidecar", "restartCount": restarts, "ready": true,
                    "image": "x", "imageID": "", "containerID": "c"}],
            });
        });
    }

    /// Marks the pod running with the sidecar restarted `restarts` times, the last time killed
    /// out of memory.
    fn pod_oom_killed(&self, restarts: i32) {
        self.pod_ready(restarts);
        self.fake.edit(POD, |p| {
            p["status"]["containerStatuses"][0]["lastState"] = json!({"terminated": {
                "reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-11-01T12:00:30Z",
                "message": "writer: allocation failed\n"}});
        });
    }

    /// Finalizer, then the first full reconcile.
    async fn create(&self) {
        assert_eq!(self.reconcile().await, Action::await_change());
        assert_eq!(self.fake.get(TS).unwrap()["metadata"]["finalizers"], json!([reconcile::FINALIZER]));
        self.reconcile().await;
    }
}

fn minimal_spec() -> Value {
    json!({"image": "ghcr.io/example/tradestore-sidecar:0.1.0", "storage": {"size": "1Gi"}})
}

fn hash_of(fake: &FakeApi) -> String {
    fake.get(POD).unwrap()["metadata"]["annotations"]["tradestore.io/pod-spec-hash"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn create_builds_every_object() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    for path in [POD, PVC, CM, SVC, SECRET] {
        let o = h.fake.get(path).unwrap_or_else(|| panic!("{path} created"));
        assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], "ts-uid-1", "{path} owned");
    }
    // Server-side apply with the operator's field manager.
    let applies: Vec<_> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.content_type.starts_with("application/apply-patch"))
        .map(|c| c.path)
        .collect();
    assert!(applies.iter().any(|p| p == POD));
    assert!(h.fake.calls().iter().filter(|c| c.content_type.starts_with("application/apply-patch")).count() >= 4);
    let secret = h.fake.get(SECRET).unwrap();
    assert!(secret["data"]["token"].as_str().unwrap().len() >= 32);
    let config = h.fake.get(CM).unwrap()["data"]["sidecar.yaml"].as_str().unwrap().to_string();
    assert!(config.contains("data_dir: /var/lib/tradestore"), "{config}");
    assert_eq!(h.status()["phase"], "Pending");
    assert_eq!(h.status()["observedGeneration"], 1);
    assert_eq!(h.condition("Ready").0, "False");
    assert_eq!(h.condition("Progressing"), ("True".into(), "PodCreated".into()));
    let reasons: Vec<_> = h.fake.events().into_iter().map(|e| e.1).collect();
    for r in ["TokenCreated", "VolumeCreated", "PodCreated"] {
        assert!(reasons.iter().any(|x| x == r), "event {r} in {reasons:?}");
    }
}

#[tokio::test]
async fn unchanged_store_is_a_no_op() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    h.pod_ready(0);
    let action = h.reconcile().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert_eq!(h.status()["phase"], "Running");
    assert_eq!(h.condition("Ready"), ("True".into(), "SidecarReady".into()));
    assert_eq!(h.status()["sidecar"]["lastSeq"], 42);
    assert!(h.fake.events().contains(&("Normal".into(), "PhaseChanged".into())));
    let secret_before = h.fake.get(SECRET).unwrap()["data"].clone();

    h.fake.clear_calls();
    h.reconcile().await;
    // Only the idempotent applies of ConfigMap and Service; no pod, volume, secret or status write.
    let writes = h.fake.writes();
    assert!(writes.iter().all(|w| w.contains("/configmaps/") || w.contains("/services/")), "{writes:?}");
    assert!(h.fake.events().is_empty(), "{:?}", h.fake.events());
    assert_eq!(h.fake.get(SECRET).unwrap()["data"], secret_before, "token never rotates");
}

#[tokio::test]
async fn spec_change_rolls_the_pod_out_one_at_a_time() {
    let h = Harness::new(minimal_spec());
    h.fake.graceful_pods(true);
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    let old_hash = hash_of(&h.fake);
    let old_uid = h.fake.get(POD).unwrap()["metadata"]["uid"].clone();

    h.edit_spec(|s| s["image"] = json!("ghcr.io/example/tradestore-sidecar:0.2.0"));
    h.reconcile().await;
    assert!(!h.fake.get(POD).unwrap()["metadata"]["deletionTimestamp"].is_null(), "old pod deleted");
    assert_eq!(h.status()["phase"], "Updating");
    assert_eq!(h.condition("Progressing"), ("True".into(), "RollingOut".into()));
    assert!(h.fake.events().iter().any(|e| e.1 == "RollingOut"));

    // While the old pod terminates, no second pod is created.
    h.fake.clear_calls();
    h.reconcile().await;
    assert!(!h.fake.writes().iter().any(|w| w.contains("/pods/")), "{:?}", h.fake.writes());

    // Once it is gone, the new pod comes with the new hash.
    h.fake.remove(POD);
    h.reconcile().await;
    let pod = h.fake.get(POD).unwrap();
    assert_ne!(pod["metadata"]["uid"], old_uid);
    assert_ne!(hash_of(&h.fake), old_hash);
    assert_eq!(pod["spec"]["containers"][0]["image"], "ghcr.io/example/tradestore-sidecar:0.2.0");
}

#[tokio::test]
async fn restart_annotation_replaces_the_pod() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    let old_hash = hash_of(&h.fake);
    h.fake.edit(TS, |o| o["metadata"]["annotations"] = json!({"tradestore.io/restart": "1"}));
    h.reconcile().await; // deletes (the fake removes it at once)
    assert!(h.fake.get(POD).is_none());
    h.reconcile().await;
    assert_ne!(hash_of(&h.fake), old_hash);
}

#[tokio::test]
async fn too_many_restarts_fence_the_store_until_cleared() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;

    h.pod_ready(1);
    h.advance(30);
    h.reconcile().await;
    assert_eq!(h.status()["restarts"]["inWindow"], 1);
    assert!(h.fake.get(POD).is_some());

    h.pod_ready(3);
    h.advance(30);
    h.reconcile().await;
    assert_eq!(h.status()["restarts"]["inWindow"], 3);
    assert!(h.fake.get(POD).is_none(), "fenced: pod deleted");
    assert_eq!(h.status()["phase"], "Fenced");
    assert_eq!(h.condition("Degraded"), ("True".into(), "TooManyRestarts".into()));
    assert_eq!(h.condition("Ready"), ("False".into(), "TooManyRestarts".into()));
    assert!(h.fake.events().contains(&("Warning".into(), "TooManyRestarts".into())));

    // Stays fenced: no new pod, even after the window passed.
    h.advance(3600);
    h.reconcile().await;
    assert!(h.fake.get(POD).is_none());
    assert_eq!(h.condition("Degraded").0, "True");

    // A human clears it.
    h.fake.edit(TS, |o| o["metadata"]["annotations"] = json!({"tradestore.io/clear-fence": "incident-17"}));
    h.reconcile().await;
    assert!(h.fake.get(POD).is_some(), "pod back after clearing");
    assert_eq!(h.condition("Degraded"), ("False".into(), "AsExpected".into()));
    assert_eq!(h.status()["clearedFenceToken"], "incident-17");
    assert_eq!(h.status()["restarts"]["inWindow"], 0);
    assert!(h.fake.events().iter().any(|e| e.1 == "FenceCleared"));
    assert!(h.status().get("fence").is_none(), "fence removed from the status");

    // And it stays cleared.
    h.reconcile().await;
    assert!(h.fake.get(POD).is_some());
    assert_eq!(h.condition("Degraded").0, "False");
}

#[tokio::test]
async fn the_fence_keeps_why_the_sidecar_died() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    h.pod_oom_killed(1);
    h.reconcile().await;
    let restarted = h.fake.event_notes("SidecarRestarted");
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert!(
        restarted[0].contains("restart count 1") && restarted[0].contains("OOMKilled, exit code 137"),
        "{restarted:?}"
    );
    let last = h.status()["restarts"]["lastTermination"].clone();
    assert_eq!(last["reason"], "OOMKilled");
    assert_eq!(last["exitCode"], 137);
    assert_eq!(last["message"], "writer: allocation failed");

    h.pod_oom_killed(3);
    h.reconcile().await;
    assert!(h.fake.get(POD).is_none(), "fenced: pod deleted");
    let fence = h.status()["fence"].clone();
    assert_eq!(fence["lastTermination"]["reason"], "OOMKilled", "{fence}");
    assert!(fence["message"].as_str().unwrap().contains("last exit: OOMKilled, exit code 137"), "{fence}");
    let notes = h.fake.event_notes("TooManyRestarts");
    assert!(notes[0].contains("OOMKilled, exit code 137"), "{notes:?}");
    // It outlives the pod.
    h.reconcile().await;
    assert_eq!(h.status()["restarts"]["lastTermination"]["exitCode"], 137);
}

#[tokio::test]
async fn a_stale_cached_object_cannot_undo_a_fence() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    let stale = h.store(); // as the watch cache may still hold it
    h.pod_ready(3);
    h.reconcile().await;
    assert!(h.fake.get(POD).is_none(), "fenced");
    reconcile::reconcile(Arc::new(DeserializeGuard(Ok(stale))), h.ctx.clone()).await.unwrap();
    assert!(h.fake.get(POD).is_none(), "the stale object must not bring the pod back");
    assert_eq!(h.status()["phase"], "Fenced");
    assert_eq!(h.status()["restarts"]["inWindow"], 3);
}

#[tokio::test]
async fn every_error_series_exists_from_the_start() {
    let h = Harness::new(minimal_spec());
    let text = h.ctx.metrics.render();
    for reason in ["Conflict", "NotFound", "Dependency", "Sidecar", "ClientError", "InvalidObject"] {
        let series = format!("tradestore_operator_reconcile_errors_total{{reason=\"{reason}\"}} 0");
        assert!(text.contains(&series), "{series} in\n{text}");
    }
}

#[tokio::test]
async fn errors_are_reported_as_events() {
    let mut spec = minimal_spec();
    spec["auth"] = json!({"tokenSecretName": "missing"});
    let h = Harness::new(spec);
    h.reconcile().await;
    let res = reconcile::reconcile(Arc::new(DeserializeGuard(Ok(h.store()))), h.ctx.clone()).await;
    assert!(res.is_err());
    let events = h.fake.events();
    assert!(events.contains(&("Warning".into(), "TokenSecretMissing".into())), "{events:?}");
    assert!(events.contains(&("Warning".into(), "ReconcileFailed".into())), "{events:?}");
    assert!(h.ctx.metrics.render().contains("reason=\"Dependency\""));
    assert!(h.fake.get(POD).is_none());
}

#[test]
fn merge_patch_removes_what_went_away() {
    let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1], "f": "x"});
    let new = json!({"a": 1, "b": {"c": 5}, "e": [2]});
    let patch = reconcile::merge_patch(&old, &new);
    assert_eq!(patch, json!({"b": {"c": 5, "d": null}, "e": [2], "f": null}));
    let mut applied = old.clone();
    fake_api::merge(&mut applied, &patch);
    assert_eq!(applied, new);
}

#[tokio::test]
async fn restarts_outside_the_window_do_not_count() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    for n in 1..=5 {
        h.pod_ready(n);
        h.advance(301); // window 600 s: at most two restarts inside it
        h.reconcile().await;
    }
    assert!(h.fake.get(POD).is_some());
    assert_eq!(h.status()["restarts"]["total"], 5);
    assert!(h.status()["restarts"]["inWindow"].as_i64().unwrap() < 3);
}

#[tokio::test]
async fn stopped_and_fenced_remove_the_pod_and_keep_the_volume() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    h.edit_spec(|s| s["stopped"] = json!(true));
    h.reconcile().await;
    assert!(h.fake.get(POD).is_none());
    assert!(h.fake.get(PVC).is_some());
    h.reconcile().await;
    assert_eq!(h.status()["phase"], "Stopped");
    assert_eq!(h.condition("Ready"), ("False".into(), "Stopped".into()));

    h.edit_spec(|s| {
        s["stopped"] = json!(false);
        s["fenced"] = json!(true);
    });
    h.reconcile().await;
    assert!(h.fake.get(POD).is_none());
    assert_eq!(h.status()["phase"], "Fenced");
    assert_eq!(h.condition("Ready").1, "Fenced");

    h.edit_spec(|s| s["fenced"] = json!(false));
    h.reconcile().await;
    assert!(h.fake.get(POD).is_some());
}

#[tokio::test]
async fn invalid_spec_creates_nothing() {
    let h = Harness::new(json!({
        "image": "x", "storage": {"size": "1Gi"},
        "duckdb": {"threads": 4, "checkpointThresholdBytes": 1048576, "checkpointEveryCommits": 0, "maxWalBytes": 65536}
    }));
    h.reconcile().await; // finalizer
    assert_eq!(h.reconcile().await, Action::await_change());
    assert_eq!(h.status()["phase"], "Invalid");
    assert!(h.status()["message"].as_str().unwrap().contains("maxWalBytes"));
    assert_eq!(h.condition("Degraded"), ("True".into(), "InvalidSpec".into()));
    assert!(h.fake.get(POD).is_none() && h.fake.get(PVC).is_none());
    assert!(h.fake.events().contains(&("Warning".into(), "InvalidSpec".into())));
    let phases = h.fake.event_notes("PhaseChanged");
    assert_eq!(phases.len(), 1, "one PhaseChanged per change, also into Invalid: {phases:?}");
    assert!(phases[0].starts_with("the store is now Invalid: ") && phases[0].contains("maxWalBytes"), "{phases:?}");

    // Fixed: Invalid → Pending is a change too.
    h.edit_spec(|s| s["duckdb"]["maxWalBytes"] = json!(1048576));
    h.reconcile().await;
    let phases = h.fake.event_notes("PhaseChanged");
    assert!(phases[1].starts_with("the store went from Invalid to Pending"), "{phases:?}");
}

#[tokio::test]
async fn volume_grows_only_when_the_class_allows_it() {
    let h = Harness::new(json!({"image": "x", "storage": {"size": "1Gi", "storageClassName": "fixed"}}));
    h.fake.put(
        "/apis/storage.k8s.io/v1/storageclasses/fixed",
        json!({"metadata": {"name": "fixed"}, "provisioner": "p"}),
    );
    h.fake.put(
        "/apis/storage.k8s.io/v1/storageclasses/elastic",
        json!({"metadata": {"name": "elastic"}, "provisioner": "p", "allowVolumeExpansion": true}),
    );
    h.create().await;
    h.edit_spec(|s| s["storage"]["size"] = json!("2Gi"));
    h.reconcile().await;
    assert_eq!(h.fake.get(PVC).unwrap()["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert!(h.fake.events().contains(&("Warning".into(), "VolumeResizeUnsupported".into())));

    // The same claim on an expandable class is patched.
    h.fake.edit(PVC, |p| p["spec"]["storageClassName"] = json!("elastic"));
    h.edit_spec(|s| s["storage"]["size"] = json!("3Gi"));
    h.reconcile().await;
    assert_eq!(h.fake.get(PVC).unwrap()["spec"]["resources"]["requests"]["storage"], "3Gi");
    assert!(h.fake.events().iter().any(|e| e.1 == "VolumeExpanding"));
    // A merge patch of the size only: an apply without the immutable fields would make the real
    // API server try to drop them (the fake does not model that, so check the request itself).
    let resize = h.fake.calls().into_iter().rev().find(|c| c.path == PVC && c.method == "PATCH").unwrap();
    assert_eq!(resize.content_type, "application/merge-patch+json");
    assert!(resize.body["spec"].get("accessModes").is_none());

    // Shrinking is refused.
    h.edit_spec(|s| s["storage"]["size"] = json!("1Gi"));
    h.reconcile().await;
    assert_eq!(h.fake.get(PVC).unwrap()["spec"]["resources"]["requests"]["storage"], "3Gi");
    assert!(h.fake.events().contains(&("Warning".into(), "VolumeShrinkRefused".into())));
}

fn log_volume_spec() -> Value {
    let mut spec = minimal_spec();
    spec["commitLogStorage"] = json!({"size": "2Gi", "storageClassName": "fast"});
    spec
}

fn config_file(h: &Harness) -> String {
    h.fake.get(CM).unwrap()["data"]["sidecar.yaml"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn commit_log_volume_is_a_second_claim_of_the_store() {
    let h = Harness::new(log_volume_spec());
    h.create().await;
    let data = h.fake.get(PVC).expect("data claim");
    let log = h.fake.get(LOG_PVC).expect("commit-log claim");
    assert_eq!(log["metadata"]["ownerReferences"][0]["uid"], "ts-uid-1");
    assert_eq!(log["metadata"]["labels"], data["metadata"]["labels"]);
    assert_eq!(log["spec"]["storageClassName"], "fast");
    assert_eq!(log["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(data["metadata"]["annotations"]["tradestore.io/commit-log-claim"], "minimal-commit-log");
    let pod = h.fake.get(POD).unwrap();
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["persistentVolumeClaim"]["claimName"] == "minimal-commit-log"), "{volumes:?}");
    assert!(config_file(&h).contains("dir: /var/lib/tradestore-commit-log"), "{}", config_file(&h));
    assert_eq!(h.status()["commitLogStorage"]["claimName"], "minimal-commit-log");
    assert_eq!(h.status()["storage"]["claimName"], "minimal-data");
    let created = h.fake.event_notes("VolumeCreated");
    assert!(created.iter().any(|n| n == "created volume claim minimal-commit-log (2Gi)"), "{created:?}");

    // Unchanged: no writes to either claim.
    h.pod_ready(0);
    h.reconcile().await;
    h.fake.clear_calls();
    h.reconcile().await;
    let writes = h.fake.writes();
    assert!(writes.iter().all(|w| w.contains("/configmaps/") || w.contains("/services/")), "{writes:?}");
}

#[tokio::test]
async fn commit_log_volume_grows_like_the_data_volume() {
    let h = Harness::new(log_volume_spec());
    h.fake.put(
        "/apis/storage.k8s.io/v1/storageclasses/fast",
        json!({"metadata": {"name": "fast"}, "provisioner": "p", "allowVolumeExpansion": true}),
    );
    h.create().await;
    h.edit_spec(|s| s["commitLogStorage"]["size"] = json!("4Gi"));
    h.reconcile().await;
    assert_eq!(h.fake.get(LOG_PVC).unwrap()["spec"]["resources"]["requests"]["storage"], "4Gi");
    assert_eq!(h.fake.get(PVC).unwrap()["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert!(
        h.fake.event_notes("VolumeExpanding").iter().any(|n| n == "expanding volume claim minimal-commit-log to 4Gi")
    );
    let resize = h.fake.calls().into_iter().rev().find(|c| c.path == LOG_PVC && c.method == "PATCH").unwrap();
    assert_eq!(resize.content_type, "application/merge-patch+json");

    h.edit_spec(|s| {
        s["commitLogStorage"]["size"] = json!("3Gi");
        s["commitLogStorage"]["storageClassName"] = json!("slow");
    });
    h.reconcile().await;
    let log = h.fake.get(LOG_PVC).unwrap();
    assert_eq!(log["spec"]["resources"]["requests"]["storage"], "4Gi");
    assert_eq!(log["spec"]["storageClassName"], "fast");
    assert!(h.fake.event_notes("VolumeShrinkRefused").iter().any(|n| n.contains("minimal-commit-log is 4Gi")));
    assert!(h.fake.event_notes("VolumeSpecImmutable").iter().any(|n| n.contains("minimal-commit-log")));
}

#[tokio::test]
async fn commit_log_volume_cannot_be_added_to_an_existing_store() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    let (hash, config) = (hash_of(&h.fake), config_file(&h));
    h.edit_spec(|s| s["commitLogStorage"] = json!({"size": "2Gi"}));
    assert_eq!(h.reconcile().await, Action::requeue(Duration::from_secs(60)), "looked at again after a resync");
    assert_eq!(h.status()["phase"], "Invalid");
    let msg = h.status()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("spec.commitLogStorage cannot be added to an existing store"), "{msg}");
    assert_eq!(h.condition("Degraded"), ("True".into(), "InvalidSpec".into()));
    assert!(h.fake.event_notes("InvalidSpec").iter().any(|n| n.contains("cannot be added")));
    // Nothing moved: no log claim, the pod and its config file as they were.
    assert!(h.fake.get(LOG_PVC).is_none());
    assert_eq!((hash_of(&h.fake), config_file(&h)), (hash, config));

    h.edit_spec(|s| {
        s.as_object_mut().unwrap().remove("commitLogStorage");
    });
    h.reconcile().await;
    assert_eq!(h.status()["phase"], "Running");
}

#[tokio::test]
async fn commit_log_volume_cannot_be_removed() {
    let h = Harness::new(log_volume_spec());
    h.create().await;
    let (hash, config) = (hash_of(&h.fake), config_file(&h));
    h.edit_spec(|s| {
        s.as_object_mut().unwrap().remove("commitLogStorage");
    });
    h.reconcile().await;
    assert_eq!(h.status()["phase"], "Invalid");
    let msg = h.status()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("spec.commitLogStorage cannot be removed") && msg.contains("minimal-commit-log"), "{msg}");
    assert!(h.fake.get(LOG_PVC).is_some());
    assert_eq!((hash_of(&h.fake), config_file(&h)), (hash, config));
}

/// A volume claim left from before (retained), at `path`, not owned by any store.
fn put_claim(h: &Harness, path: &str, size: &str) {
    let name = path.rsplit('/').next().unwrap();
    h.fake.put(
        path,
        json!({"metadata": {"name": name, "namespace": NS},
               "spec": {"accessModes": ["ReadWriteOncePod"], "resources": {"requests": {"storage": size}}}}),
    );
}

#[tokio::test]
async fn a_commit_log_claim_without_its_data_claim_is_not_taken_over() {
    let h = Harness::new(log_volume_spec());
    put_claim(&h, LOG_PVC, "2Gi");
    h.create().await;
    assert_eq!(h.status()["phase"], "Invalid");
    let msg = h.status()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("volume claim minimal-commit-log exists but the data claim minimal-data does not"), "{msg}");
    assert!(h.fake.get(PVC).is_none() && h.fake.get(POD).is_none());

    // Deleted as the message says: the next look (a resync, claims are not watched) creates the store.
    h.fake.remove(LOG_PVC);
    h.reconcile().await;
    assert!(h.fake.get(PVC).is_some() && h.fake.get(LOG_PVC).is_some() && h.fake.get(POD).is_some());
    assert_eq!(h.status()["phase"], "Pending");
}

#[tokio::test]
async fn retained_volumes_are_adopted_together() {
    let h = Harness::new(log_volume_spec());
    h.fake.graceful_pods(true);
    h.create().await;
    delete_store(&h).await;
    assert!(h.fake.get(TS).is_none());
    for claim in [PVC, LOG_PVC] {
        assert_eq!(h.fake.get(claim).unwrap()["metadata"]["ownerReferences"], json!([]), "{claim} kept ownerless");
    }
    assert!(h.fake.event_notes("VolumeRetained").iter().any(|n| n == "kept volume claim minimal-commit-log"));

    // The same store again: both claims come back; without the log volume it is refused.
    let again = Harness::new(log_volume_spec());
    for claim in [PVC, LOG_PVC] {
        again.fake.put(claim, h.fake.get(claim).unwrap());
    }
    again.create().await;
    for claim in [PVC, LOG_PVC] {
        assert_eq!(again.fake.get(claim).unwrap()["metadata"]["ownerReferences"][0]["uid"], "ts-uid-1", "{claim}");
    }
    let without = Harness::new(minimal_spec());
    for claim in [PVC, LOG_PVC] {
        without.fake.put(claim, h.fake.get(claim).unwrap());
    }
    without.create().await;
    assert_eq!(without.status()["phase"], "Invalid");
    assert!(without.status()["message"].as_str().unwrap().contains("cannot be removed"));
}

async fn delete_store(h: &Harness) {
    h.fake.edit(TS, |o| o["metadata"]["deletionTimestamp"] = json!("2026-11-01T12:00:00Z"));
    h.reconcile().await; // deletes the pod
    assert!(h.fake.get(POD).map(|p| !p["metadata"]["deletionTimestamp"].is_null()).unwrap_or(true));
    assert!(h.fake.get(TS).is_some(), "finalizer holds the store while the pod stops");
    h.fake.remove(POD);
    h.reconcile().await;
}

#[tokio::test]
async fn deletion_waits_for_the_pod_and_retains_the_volume() {
    let h = Harness::new(minimal_spec());
    h.fake.graceful_pods(true);
    h.create().await;
    delete_store(&h).await;
    assert!(h.fake.get(TS).is_none(), "finalizer removed");
    let pvc = h.fake.get(PVC).expect("volume kept");
    assert_eq!(pvc["metadata"]["ownerReferences"], json!([]), "no owner left for garbage collection");
    assert!(h.fake.events().iter().any(|e| e.1 == "VolumeRetained"));
}

#[tokio::test]
async fn deletion_with_delete_policy_removes_the_volumes() {
    for (mut spec, with_log) in [(minimal_spec(), false), (log_volume_spec(), true)] {
        spec["storage"]["retentionPolicy"] = json!("Delete");
        let h = Harness::new(spec);
        h.fake.graceful_pods(true);
        h.create().await;
        delete_store(&h).await;
        assert!(h.fake.get(TS).is_none());
        assert!(h.fake.get(PVC).is_none() && h.fake.get(LOG_PVC).is_none());
        let log_deleted =
            h.fake.event_notes("VolumeDeleted").iter().any(|n| n == "deleted volume claim minimal-commit-log");
        assert_eq!(log_deleted, with_log);
    }
}

#[tokio::test]
async fn retained_volume_is_adopted_by_a_new_store_of_the_same_name() {
    let h = Harness::new(minimal_spec());
    put_claim(&h, PVC, "1Gi");
    h.create().await;
    let pvc = h.fake.get(PVC).unwrap();
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["uid"], "ts-uid-1");
    assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOncePod"]), "immutable fields untouched");
}

#[tokio::test]
async fn object_that_does_not_deserialize_does_not_break_anything() {
    let h = Harness::new(minimal_spec());
    let raw = json!({"apiVersion": "tradestore.io/v1alpha1", "kind": "TradeStore",
        "metadata": {"name": "broken", "namespace": NS, "uid": "u2"}, "spec": {"image": 5}});
    let guard: DeserializeGuard<TradeStore> = serde_json::from_value(raw).unwrap();
    assert!(guard.0.is_err());
    let action = reconcile::reconcile(Arc::new(guard), h.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(h.fake.events().contains(&("Warning".into(), "InvalidObject".into())));
    assert!(h.ctx.metrics.render().contains("reason=\"InvalidObject\""));
}

#[tokio::test]
async fn foreign_pod_with_the_same_name_is_left_alone() {
    let h = Harness::new(minimal_spec());
    h.fake.put(POD, json!({"metadata": {"name": "minimal", "namespace": NS}, "spec": {"containers": []}}));
    h.reconcile().await;
    let res = reconcile::reconcile(Arc::new(DeserializeGuard(Ok(h.store()))), h.ctx.clone()).await;
    assert!(res.is_err());
    assert!(h.fake.get(POD).unwrap()["metadata"]["ownerReferences"].is_null(), "not adopted or changed");
    assert_eq!(h.condition("Degraded").1, "PodNameConflict");
}

#[test]
fn backoff_grows_and_caps() {
    assert_eq!(reconcile::backoff_delay(1), Duration::from_secs(1));
    assert_eq!(reconcile::backoff_delay(2), Duration::from_secs(2));
    assert_eq!(reconcile::backoff_delay(5), Duration::from_secs(16));
    assert_eq!(reconcile::backoff_delay(30), Duration::from_secs(300));
}

#[tokio::test]
async fn protected_reads_make_the_status_probe_send_the_token() {
    let mut spec = minimal_spec();
    spec["auth"] = json!({"protectReads": true});
    let h = Harness::new(spec);
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    let secret = h.fake.get(SECRET).unwrap();
    let stored: k8s_openapi::ByteString = serde_json::from_value(secret["data"]["token"].clone()).unwrap();
    let sent = h.probe.last_token.lock().unwrap().clone().expect("token sent");
    assert_eq!(sent.as_bytes(), &stored.0[..]);
}

#[tokio::test]
async fn readiness_follows_the_sidecar_container_not_the_app() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    h.pod_ready(0);
    h.fake.edit(POD, |p| {
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    });
    h.reconcile().await;
    assert_eq!(h.condition("Ready").0, "True", "sidecar ready, app not yet: the store is ready");
    h.fake.edit(POD, |p| p["status"]["containerStatuses"][0]["ready"] = json!(false));
    h.reconcile().await;
    assert_eq!(h.condition("Ready"), ("False".into(), "PodNotReady".into()));
    assert!(h.status().get("sidecar").is_none(), "no stale sidecar facts once not ready");
}

#[tokio::test]
async fn a_pod_on_a_node_that_stopped_reporting_is_not_ready_and_kept() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    assert_eq!(h.condition("Ready").0, "True");
    let uid = h.fake.get(POD).unwrap()["metadata"]["uid"].clone();
    // What the node controller writes (MarkPodsNotReady): only the pod's Ready condition; the
    // container statuses stay as the kubelet last reported them.
    h.fake.edit(POD, |p| {
        p["status"]["conditions"] =
            json!([{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "True"}]);
    });
    h.reconcile().await;
    assert_eq!(h.condition("Ready"), ("False".into(), "NodeNotReady".into()));
    assert_eq!(h.status()["phase"], "Pending");
    let pod = h.fake.get(POD).expect("the pod is kept");
    assert_eq!(pod["metadata"]["uid"], uid, "the same pod");
    assert!(pod["metadata"].get("deletionTimestamp").is_none(), "the pod is not deleted");
    // The kubelet reports again: ready.
    h.pod_ready(0);
    h.reconcile().await;
    assert_eq!(h.condition("Ready").0, "True");
}

#[tokio::test]
async fn a_pod_that_ended_is_replaced_and_counted() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    h.fake.edit(POD, |p| {
        p["status"]["phase"] = json!("Failed");
        p["status"]["reason"] = json!("Evicted");
    });
    h.reconcile().await;
    assert!(h.fake.get(POD).is_none(), "ended pod deleted");
    assert_eq!(h.status()["restarts"]["inWindow"], 1);
    assert!(h.fake.events().contains(&("Warning".into(), "PodFailed".into())));
    h.reconcile().await;
    assert!(h.fake.get(POD).is_some(), "replacement created");
}

#[tokio::test]
async fn http_client_reads_the_status_document_and_takes_snapshots() {
    use warp::Filter;
    let manifest = json!({"id": "20261101T120000Z-0000000042", "created_at": "2026-11-01T12:00:00Z", "seq": 42,
        "schema_version": 2, "trade_rows": 99, "size_bytes": 12288, "sha256": "ab", "duration_ms": 7});
    let doc = json!({"schema_version": 2, "last_seq": 1234, "trade_rows": 99, "wal_bytes": 4096,
        "last_checkpoint_unix": 1700000000, "queue_depth": 1, "ready": false, "not_ready_reason": "migrating",
        "journal": {"enabled": true, "healthy": false, "watermark": 1200, "lag": 34, "last_error": "refused"},
        "sync": {"enabled": true, "degraded": true, "watermark": 1000, "lag": 234, "consecutive_failures": 5,
                 "last_error": "timeout"},
        "last_snapshot": manifest, "recovery": null,
        "integrity": {"last_run": "2026-11-01T12:00:01Z", "ok": true, "error": null, "duration_ms": 3, "rows_scanned": 99}});
    let authorized = |auth: &Option<String>| auth.as_deref() == Some("Bearer secret-token-0123456789");
    let status = warp::path!("v1" / "status")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .map(move |auth: Option<String>| {
            if authorized(&auth) {
                warp::reply::with_status(warp::reply::json(&doc), warp::http::StatusCode::OK)
            } else {
                warp::reply::with_status(warp::reply::json(&json!({})), warp::http::StatusCode::UNAUTHORIZED)
            }
        });
    let snapshots = warp::path!("v1" / "snapshots")
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .map(move |auth: Option<String>| {
            if authorized(&auth) {
                warp::reply::with_status(warp::reply::json(&manifest), warp::http::StatusCode::CREATED)
            } else {
                let body = json!({"error": "unauthorized", "message": "bad token"});
                warp::reply::with_status(warp::reply::json(&body), warp::http::StatusCode::UNAUTHORIZED)
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(warp::serve(status.or(snapshots)).incoming(listener).run());
    let client = HttpSidecarClient::new();
    assert!(client.status(&base, None).await.unwrap_err().to_string().contains("401"));
    let s = client.status(&base, Some("secret-token-0123456789")).await.unwrap();
    let r = &s.report;
    assert_eq!(r.schema_version, Some(2));
    assert_eq!(r.last_seq, Some(1234));
    assert_eq!(r.trade_rows, Some(99));
    assert_eq!(r.wal_bytes, Some(4096));
    assert_eq!(r.last_checkpoint_unix, Some(1700000000));
    assert_eq!(r.queue_depth, Some(1));
    assert_eq!(r.ready, Some(false));
    assert_eq!(r.not_ready_reason.as_deref(), Some("migrating"));
    let snap = s.last_snapshot.as_ref().unwrap();
    assert_eq!((snap.id.as_str(), snap.seq, snap.size_bytes), ("20261101T120000Z-0000000042", 42, 12288));
    assert_eq!((s.sync.enabled, s.sync.degraded, s.sync.watermark, s.sync.lag), (true, true, 1000, 234));
    assert_eq!(s.sync.last_error.as_deref(), Some("timeout"));
    assert_eq!((s.journal.healthy, s.journal.lag), (false, 34));
    assert_eq!(s.integrity.last_run.as_deref(), Some("2026-11-01T12:00:01Z"));
    assert_eq!(s.integrity.ok, Some(true));

    let err = client.snapshot(&base, "wrong-token").await.unwrap_err().to_string();
    assert!(err.contains("401") && err.contains("bad token"), "{err}");
    let taken = client.snapshot(&base, "secret-token-0123456789").await.unwrap();
    assert_eq!(&taken, snap);
    assert!(client.status("http://127.0.0.1:1", None).await.is_err());
    assert!(client.snapshot("http://127.0.0.1:1", "t").await.is_err());
}

/// A store with a volume backup target (and, when `clickhouse`, a ClickHouse sync).
fn backup_spec(clickhouse: bool) -> Value {
    let mut spec = minimal_spec();
    spec["backup"] = json!({"schedule": "0 * * * *", "target": {"volume": {"claimName": "backups"}}});
    if clickhouse {
        spec["clickhouse"] = json!({"urlSecretRef": {"name": "ch", "key": "url"}});
    }
    spec
}

fn request_backup(h: &Harness, token: &str) {
    h.fake.edit(TS, |o| o["metadata"]["annotations"] = json!({"tradestore.io/backup-request": token}));
}

fn snapshot_token(h: &Harness) -> String {
    let secret = h.fake.get(SECRET).unwrap();
    let stored: k8s_openapi::ByteString = serde_json::from_value(secret["data"]["token"].clone()).unwrap();
    String::from_utf8(stored.0).unwrap()
}

#[tokio::test]
async fn backup_request_takes_one_snapshot_per_token() {
    let h = Harness::new(backup_spec(false));
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    assert_eq!(h.condition("BackupReady"), ("False".into(), "NoSnapshotYet".into()));

    request_backup(&h, "b1");
    h.reconcile().await;
    assert_eq!(h.probe.snapshots_taken(), 1);
    let (base, token) = h.probe.snapshot_calls.lock().unwrap()[0].clone();
    assert_eq!(base, "http://10.0.0.7:8080");
    assert_eq!(token, snapshot_token(&h), "snapshots are always authenticated");
    let backup = h.status()["backup"].clone();
    assert_eq!(backup["lastRequest"], "b1");
    assert_eq!(backup["lastSnapshot"], "snap-1");
    assert_eq!(backup["lastSeq"], 41);
    assert_eq!(backup["lastSuccessfulTime"], "2026-11-01T12:00:00Z");
    assert!(h.fake.events().contains(&("Normal".into(), "BackupTaken".into())));
    assert_eq!(h.condition("BackupReady"), ("True".into(), "SnapshotAvailable".into()));

    // The same token again: nothing.
    h.reconcile().await;
    h.reconcile().await;
    assert_eq!(h.probe.snapshots_taken(), 1);

    // A new token while the sidecar fails: handled once, reported, BackupReady False.
    h.probe.fail(true);
    request_backup(&h, "b2");
    h.reconcile().await;
    h.reconcile().await;
    assert_eq!(h.probe.snapshots_taken(), 2);
    assert_eq!(h.status()["backup"]["lastRequest"], "b2");
    assert!(h.status()["backup"]["lastFailure"].as_str().unwrap().contains("disk full"));
    assert!(h.fake.events().contains(&("Warning".into(), "BackupFailed".into())));
    assert_eq!(h.condition("BackupReady"), ("False".into(), "BackupFailed".into()));
    assert_eq!(h.status()["backup"]["lastSnapshot"], "snap-1", "the older snapshot stays known");

    // The next request succeeds: the failure is settled.
    h.probe.fail(false);
    request_backup(&h, "b3");
    h.reconcile().await;
    assert_eq!(h.probe.snapshots_taken(), 3);
    assert_eq!(h.condition("BackupReady"), ("True".into(), "SnapshotAvailable".into()));
    assert!(h.status()["backup"].get("lastFailure").is_none());
}

#[tokio::test]
async fn each_event_says_what_happened_that_time() {
    let h = Harness::new(backup_spec(false));
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    request_backup(&h, "b1");
    h.reconcile().await;
    request_backup(&h, "b2");
    h.reconcile().await;
    // kube's Recorder alone would fold the second into the first, keeping "snap-1".
    let notes = h.fake.event_notes("BackupTaken");
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("snap-1") && notes[0].contains("\"b1\""), "{notes:?}");
    assert!(notes[1].contains("snap-2") && notes[1].contains("\"b2\""), "{notes:?}");
    let phases = h.fake.event_notes("PhaseChanged");
    assert_eq!(phases.len(), 2, "{phases:?}");
    assert_eq!(phases[0], "the store is now Pending: waiting for the pod to become ready");
    assert_eq!(phases[1], "the store went from Pending to Running: the sidecar is ready");

    // The same note again is folded into a count, not a new event.
    let before = h.fake.event_notes("ReconcileFailed").len();
    h.fake.edit(TS, |o| o["spec"]["auth"] = json!({"tokenSecretName": "missing"}));
    for _ in 0..2 {
        let _ = reconcile::reconcile(Arc::new(DeserializeGuard(Ok(h.store()))), h.ctx.clone()).await;
    }
    assert_eq!(h.fake.event_notes("ReconcileFailed").len(), before + 1);
    assert!(h.fake.folded_events() >= 1);
}

#[tokio::test]
async fn a_missing_backup_claim_is_reported() {
    let h = Harness::new(backup_spec(false));
    const BACKUPS: &str = "/api/v1/namespaces/trading/persistentvolumeclaims/backups";
    h.fake.remove(BACKUPS);
    h.create().await;
    assert!(h.fake.get(POD).is_some(), "the pod is created (it starts once the claim exists)");
    assert_eq!(h.condition("Degraded"), ("True".into(), "BackupClaimMissing".into()));
    assert_eq!(h.condition("BackupReady"), ("False".into(), "BackupClaimMissing".into()));
    assert!(h.status()["message"].as_str().unwrap().contains("backup volume claim backups"), "{}", h.status());
    h.reconcile().await;
    assert_eq!(h.fake.event_notes("BackupClaimMissing").len(), 1, "one Warning when it starts");

    h.fake.put(BACKUPS, json!({"metadata": {"name": "backups", "namespace": NS}}));
    h.pod_ready(0);
    h.reconcile().await;
    assert_eq!(h.condition("Degraded"), ("False".into(), "AsExpected".into()));
    assert_eq!(h.condition("BackupReady"), ("False".into(), "NoSnapshotYet".into()));
}

#[tokio::test]
async fn backup_request_waits_for_a_ready_sidecar() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    request_backup(&h, "early");
    let action = h.reconcile().await;
    assert_eq!(h.probe.snapshots_taken(), 0, "no ready sidecar yet");
    assert!(h.status().get("backup").is_none(), "the request stays pending");
    assert_eq!(action, Action::requeue(Duration::from_secs(2)), "a pending request polls");
    h.pod_ready(0);
    h.reconcile().await;
    assert_eq!(h.probe.snapshots_taken(), 1);
    assert_eq!(h.status()["backup"]["lastRequest"], "early");
    assert!(h.status()["conditions"].as_array().unwrap().iter().all(|c| c["type"] != "BackupReady"), "no spec.backup");
}

#[tokio::test]
async fn missed_scheduled_snapshots_make_backups_not_ready() {
    let h = Harness::new(backup_spec(false));
    *h.probe.last_snapshot.lock().unwrap() = Some(manifest("hourly-11", "2026-11-01T11:00:00Z", 7));
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await; // 12:00: the 12:00 snapshot is still within the grace time
    assert_eq!(h.status()["backup"]["lastSnapshot"], "hourly-11");
    assert_eq!(h.condition("BackupReady"), ("True".into(), "SnapshotAvailable".into()));
    h.advance(2 * 3600); // 14:00: 12:00 and 13:00 were missed
    h.reconcile().await;
    assert_eq!(h.condition("BackupReady"), ("False".into(), "ScheduleMissed".into()));
    *h.probe.last_snapshot.lock().unwrap() = Some(manifest("hourly-14", "2026-11-01T14:00:00Z", 9));
    h.reconcile().await;
    assert_eq!(h.condition("BackupReady"), ("True".into(), "SnapshotAvailable".into()));
    assert_eq!(h.status()["backup"]["lastSeq"], 9);

    // The sidecar's own (scheduled) snapshot fails: reported at once, cleared by its next success.
    *h.probe.backup_error.lock().unwrap() = Some("object store: connection refused".into());
    h.reconcile().await;
    assert_eq!(h.condition("BackupReady"), ("False".into(), "SnapshotFailing".into()));
    assert!(h.status()["backup"]["sidecarError"].as_str().unwrap().contains("connection refused"));
    *h.probe.backup_error.lock().unwrap() = None;
    h.reconcile().await;
    assert_eq!(h.condition("BackupReady"), ("True".into(), "SnapshotAvailable".into()));
    assert!(h.status()["backup"].get("sidecarError").is_none());
}

#[tokio::test]
async fn sync_status_and_condition_follow_the_sidecar() {
    let h = Harness::new(backup_spec(true));
    *h.probe.sync.lock().unwrap() = SyncStatus { enabled: true, watermark: 40, lag: 2, ..Default::default() };
    h.create().await;
    assert_eq!(h.condition("SyncHealthy").0, "Unknown", "no ready sidecar yet");
    h.pod_ready(0);
    h.reconcile().await;
    assert_eq!(h.status()["sync"], json!({"watermark": 40, "lag": 2, "degraded": false}));
    assert_eq!(h.condition("SyncHealthy"), ("True".into(), "SyncRunning".into()));

    *h.probe.sync.lock().unwrap() = SyncStatus {
        enabled: true,
        degraded: true,
        watermark: 40,
        lag: 500,
        consecutive_failures: 5,
        last_error: Some("connection refused".into()),
    };
    h.reconcile().await;
    assert_eq!(h.condition("SyncHealthy"), ("False".into(), "SyncDegraded".into()));
    assert_eq!(h.status()["sync"]["lag"], 500);
    assert_eq!(h.status()["sync"]["lastError"], "connection refused");

    // Without ClickHouse in the spec there is no sync condition or status.
    h.edit_spec(|s| {
        s.as_object_mut().unwrap().remove("clickhouse").expect("clickhouse was set");
    });
    h.reconcile().await; // rolls out (the pod's env changed)
    h.reconcile().await;
    assert!(h.status().get("sync").is_none());
    assert!(h.status()["conditions"].as_array().unwrap().iter().all(|c| c["type"] != "SyncHealthy"));
}

#[tokio::test]
async fn integrity_not_run_yet_or_inconclusive_is_no_failure() {
    // What the sidecar sends just after start: no verdict yet, `ok: null`.
    let parse = |v: Value| serde_json::from_value::<CheckStatus>(v).expect("integrity report parses");
    let not_run = parse(json!({"state": "not_run", "last_run": null, "ok": null, "error": null,
        "duration_ms": 0, "rows_scanned": 0}));
    assert!(!integrity_has_run(&not_run));
    let older_sidecar = parse(json!({"last_run": null, "ok": false, "error": null}));
    assert!(!integrity_has_run(&older_sidecar), "a sidecar without `state` says the same with last_run: null");

    let h = Harness::new(minimal_spec());
    *h.probe.integrity.lock().unwrap() = not_run;
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    assert!(h.status().get("integrity").is_none(), "nothing to report yet: {}", h.status());

    *h.probe.integrity.lock().unwrap() = parse(json!({"state": "inconclusive", "last_run": "2026-11-01T12:00:01Z",
        "ok": null, "error": "database error: Out of Memory Error: failed to pin block"}));
    h.reconcile().await;
    let st = h.status();
    assert_eq!(st["integrity"]["state"], "inconclusive", "{st}");
    assert!(st["integrity"].get("ok").is_none(), "no verdict, so no `ok: false`: {st}");

    *h.probe.integrity.lock().unwrap() = parse(json!({"state": "failed", "last_run": "2026-11-01T12:00:02Z",
        "ok": false, "error": "snapshot error: corrupt"}));
    h.reconcile().await;
    assert_eq!(h.status()["integrity"]["ok"], false);
}

async fn start_deletion(h: &Harness) -> Action {
    h.fake.edit(TS, |o| o["metadata"]["deletionTimestamp"] = json!("2026-11-01T12:00:00Z"));
    h.reconcile().await
}

fn pod_deleting(h: &Harness) -> bool {
    h.fake.get(POD).is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null())
}

/// A store with `finalSnapshotOnDelete` whose sidecar is running and ready.
async fn running_store_with_final_snapshot() -> Harness {
    let mut spec = backup_spec(false);
    spec["backup"]["finalSnapshotOnDelete"] = json!(true);
    let h = Harness::new(spec);
    h.fake.graceful_pods(true);
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    h
}

#[tokio::test]
async fn final_snapshot_is_taken_before_the_pod_stops() {
    let h = running_store_with_final_snapshot().await;
    start_deletion(&h).await;
    assert_eq!(h.probe.snapshots_taken(), 1);
    assert!(pod_deleting(&h), "pod stopped after the snapshot");
    let fin = h.status()["backup"]["finalSnapshot"].clone();
    assert_eq!((fin["done"].clone(), fin["snapshotId"].clone()), (json!(true), json!("snap-1")));
    assert!(h.fake.events().contains(&("Normal".into(), "FinalSnapshotTaken".into())));
    assert!(h.status()["message"].as_str().unwrap().contains("final snapshot snap-1 taken"));
    h.fake.remove(POD);
    h.reconcile().await;
    assert!(h.fake.get(TS).is_none(), "finalizer removed");
    assert_eq!(h.probe.snapshots_taken(), 1, "taken once");
}

#[tokio::test]
async fn final_snapshot_retries_with_backoff_then_deletion_goes_on() {
    let h = running_store_with_final_snapshot().await;
    h.probe.fail(true);

    let action = start_deletion(&h).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    assert_eq!(h.probe.snapshots_taken(), 1);
    assert!(!pod_deleting(&h), "the pod keeps running while the snapshot is retried");
    assert!(h.fake.events().contains(&("Warning".into(), "FinalSnapshotFailed".into())));

    // The status write triggers a reconcile at once: it must not retry before the backoff.
    h.reconcile().await;
    assert_eq!(h.probe.snapshots_taken(), 1);
    h.advance(1);
    assert_eq!(h.reconcile().await, Action::requeue(Duration::from_secs(2)));
    assert_eq!(h.probe.snapshots_taken(), 2);
    assert_eq!(h.status()["backup"]["finalSnapshot"]["attempts"], 2);
    assert!(h.status()["message"].as_str().unwrap().contains("final snapshot failed 2 time(s)"));

    // Past the time limit (600 s): a Warning, and the pod goes without a snapshot.
    h.advance(601);
    h.reconcile().await;
    assert_eq!(h.probe.snapshots_taken(), 3);
    assert!(pod_deleting(&h));
    assert!(h.fake.events().contains(&("Warning".into(), "FinalSnapshotAbandoned".into())));
    assert_eq!(h.status()["backup"]["finalSnapshot"]["done"], true);
    h.fake.remove(POD);
    h.reconcile().await;
    assert!(h.fake.get(TS).is_none(), "deletion was not blocked");
    assert_eq!(h.probe.snapshots_taken(), 3);
}

#[tokio::test]
async fn final_snapshot_is_skipped_when_no_sidecar_runs() {
    let mut spec = backup_spec(false);
    spec["backup"]["finalSnapshotOnDelete"] = json!(true);
    spec["stopped"] = json!(true);
    let h = Harness::new(spec);
    h.create().await;
    assert!(h.fake.get(POD).is_none());
    start_deletion(&h).await;
    assert_eq!(h.probe.snapshots_taken(), 0);
    assert!(h.fake.events().contains(&("Warning".into(), "FinalSnapshotSkipped".into())));
    assert!(h.fake.get(TS).is_none(), "deleted");
}

#[tokio::test]
async fn backup_settings_reach_the_pod_and_roll_it_out() {
    let h = Harness::new(minimal_spec());
    h.create().await;
    h.pod_ready(0);
    h.reconcile().await;
    let old_hash = hash_of(&h.fake);
    h.edit_spec(|s| {
        s["backup"] =
            json!({"schedule": "*/30 * * * *", "target": {"s3": {"bucket": "bkt", "credentialsSecretName": "s3"}}});
        s["bootstrap"] = json!({"snapshotId": "snap-9"});
    });
    h.reconcile().await; // deletes
    h.reconcile().await; // creates
    assert_ne!(hash_of(&h.fake), old_hash);
    let pod: Pod = serde_json::from_value(h.fake.get(POD).unwrap()).unwrap();
    let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
    let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
    let config = h.fake.get(CM).unwrap()["data"]["sidecar.yaml"].as_str().unwrap().to_string();
    assert!(config.contains("schedule: \"*/30 * * * *\"") || config.contains("schedule: '*/30 * * * *'"), "{config}");
    assert!(config.contains("bootstrap_from: snap-9"), "{config}");
    assert!(!config.contains("credentials") && !config.contains("AWS_"), "no secrets in the ConfigMap: {config}");
}
