//! The TradeStore end-to-end suite. Every test needs a cluster with the chart installed, so every
//! test is `#[ignore]`d: `cargo test --workspace` never touches a cluster. Run them with
//! `e2e/kind.sh`, or by hand against any cluster:
//!
//! ```sh
//! TRADESTORE_E2E_SIDECAR_IMAGE=... cargo test --release -p tradestore-e2e -- --ignored --test-threads=1 --nocapture
//! ```
//!
//! Each test works in a namespace of its own, so kind.sh runs them several at a time: t14 and t15
//! stop and drain a node kept for them (`TRADESTORE_E2E_FAULT_NODE`), and t08, which freezes the operator's leader and
//! so would stall the others, runs alone afterwards. Names are numbered so that `--test-threads=1`
//! runs them in this order.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tradestore_e2e::{Env, STORE_SIZE, condition, last_exit_code, phase, pod_ready, restart_count, say, wait_for};

const READY: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(60);

/// Runs `body` and deletes the namespace afterwards, also on failure (unless TRADESTORE_E2E_KEEP=1).
async fn with_env<F, Fut>(prefix: &str, body: F) -> Result<()>
where
    F: FnOnce(std::sync::Arc<Env>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let env = std::sync::Arc::new(Env::new(prefix).await?);
    let result = body(env.clone()).await;
    if let Err(e) = &result {
        say(format!("FAILED in namespace {}: {e:#}", env.ns));
    }
    if let Ok(env) = std::sync::Arc::try_unwrap(env) {
        env.finish().await?;
    }
    result
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t01_create_ready_write_read() -> Result<()> {
    with_env("ready", |env| async move {
        env.create_store("desk", json!({})).await?;
        let ts = env.wait_ready("desk", READY).await?;
        ensure!(phase(&ts) == "Running", "phase {}", phase(&ts));
        // Owned objects exist, with the controller owner reference.
        let uid = ts.uid().context("no uid")?;
        let svc: Service = Api::namespaced(env.client.clone(), &env.ns).get("desk").await?;
        let cm: ConfigMap = Api::namespaced(env.client.clone(), &env.ns).get("desk-config").await?;
        let secret: Secret = Api::namespaced(env.client.clone(), &env.ns).get("desk-token").await?;
        for (what, refs) in [
            ("Service", svc.owner_references()),
            ("ConfigMap", cm.owner_references()),
            ("Secret", secret.owner_references()),
        ] {
            ensure!(
                refs.iter().any(|r| r.uid == uid && r.controller == Some(true)),
                "{what} is not owned by the store"
            );
        }
        let sc = env.sidecar("desk").await?;
        sc.wait_serving(SHORT).await?;
        // Writes need the token.
        let anon = sc
            .http
            .post(format!("{}/v1/trades", sc.base))
            .json(&json!({"symbol": "X", "side": "buy", "quantity": 1, "price": 1}))
            .send()
            .await?;
        ensure!(anon.status().as_u16() == 401, "unauthenticated write got HTTP {}", anon.status());
        let ids = sc.write_many("t01", "AAPL", 25).await?;
        sc.check_all(&ids, "AAPL").await?;
        let state = sc.state("AAPL").await?;
        ensure!(state["trade_count"] == 25, "state: {state}");
        let expected: i64 = (1..=25).sum();
        ensure!(state["position"] == expected.to_string().as_str(), "position {} != {expected}", state["position"]);
        // The operator reports the sidecar's status.
        wait_for("status.sidecar.tradeRows = 25", Duration::from_secs(90), Duration::from_secs(1), || async {
            let ts = env.store("desk").await?;
            let rows = ts.data.pointer("/status/sidecar/tradeRows").and_then(Value::as_i64);
            if rows == Some(25) { Ok(Some(())) } else { Err(anyhow!("tradeRows {rows:?}")) }
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t02_sigkill_and_pod_delete_keep_acknowledged_trades() -> Result<()> {
    with_env("kill", |env| async move {
        env.create_store("desk", json!({"restartPolicy": {"maxRestarts": 10}})).await?;
        env.wait_ready("desk", READY).await?;
        let sc = env.sidecar("desk").await?;
        sc.wait_serving(SHORT).await?;
        let mut ids = sc.write_many("before-kill", "MSFT", 40).await?;

        // SIGKILL the sidecar container while a client keeps writing: the kubelet restarts it in
        // the same pod. Every write acknowledged with 201 (before, during, after) must survive.
        let pod = env.pod("desk").await?.context("no pod")?;
        let uid = pod.uid().unwrap_or_default();
        let restarts = restart_count(&pod, "sidecar");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let sc = env.sidecar("desk").await?;
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut acked, mut failed) = (Vec::new(), 0usize);
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("live-{i}");
                    i += 1;
                    match sc.write(&id, "MSFT", 1.0, 50.0).await {
                        Ok(_) => acked.push(id),
                        Err(_) => {
                            failed += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                (acked, failed)
            })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        env.sigkill_container(&pod, "sidecar").await?;
        wait_for("sidecar restarted and ready", READY, Duration::from_millis(500), || async {
            let p = env.pod("desk").await?.context("pod gone")?;
            ensure!(p.uid().as_deref() == Some(uid.as_str()), "the pod was replaced, expected a container restart");
            if restart_count(&p, "sidecar") > restarts && pod_ready(&p) { Ok(Some(())) } else { Ok(None) }
        })
        .await?;
        sc.wait_serving(SHORT).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (acked, failed) = writer.await?;
        ensure!(!acked.is_empty(), "the concurrent writer got no acknowledgement");
        say(format!(
            "concurrent writer: {} acknowledged, {failed} failed/unknown while the sidecar was down",
            acked.len()
        ));
        sc.check_all(&ids, "MSFT").await?;
        sc.check_all(&acked, "MSFT").await?;
        say(format!("all {} acknowledged trades survived SIGKILL", ids.len() + acked.len()));
        let live = acked.len();

        // Delete the pod: the operator creates a new one on the same volume.
        ids.extend(sc.write_many("before-delete", "MSFT", 40).await?);
        env.pods().delete("desk", &DeleteParams::default()).await?;
        env.wait_new_pod("desk", &uid, READY).await?;
        sc.wait_serving(SHORT).await?;
        sc.check_all(&ids, "MSFT").await?;
        sc.check_all(&acked, "MSFT").await?;
        let state = sc.state("MSFT").await?;
        let count = state["trade_count"].as_u64().unwrap_or(0) as usize;
        // Writes whose outcome was unknown (in flight at the kill) may or may not be there.
        ensure!(count >= 80 + live && count <= 80 + live + failed, "trade_count {count}, acked {}", 80 + live);
        say(format!("all {} acknowledged trades survived pod deletion", ids.len()));

        // The restart was counted.
        let ts = env.store("desk").await?;
        let total = ts.data.pointer("/status/restarts/total").and_then(Value::as_i64).unwrap_or(0);
        ensure!(total >= 1, "status.restarts.total = {total}");
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t03_crash_loop_is_fenced() -> Result<()> {
    with_env("fence", |env| async move {
        let broken = env.settings.broken_image.clone();
        if broken.is_empty() {
            bail!("set TRADESTORE_E2E_BROKEN_IMAGE (or TRADESTORE_E2E_OPERATOR_IMAGE): an image without /usr/local/bin/sidecar");
        }
        // An image without the sidecar binary: the container fails at every start.
        env.create_store("desk", json!({"image": broken, "restartPolicy": {"maxRestarts": 2, "windowSeconds": 600}}))
            .await?;
        let ts = env.wait_phase("desk", "Fenced", Duration::from_secs(180)).await?;
        let degraded = condition(&ts, "Degraded").context("no Degraded condition")?;
        ensure!(degraded["status"] == "True" && degraded["reason"] == "TooManyRestarts", "Degraded: {degraded}");
        let ready = condition(&ts, "Ready").context("no Ready condition")?;
        ensure!(ready["status"] == "False", "Ready: {ready}");
        ensure!(ts.data.pointer("/status/fence/reason").is_some(), "no status.fence: {}", ts.data["status"]);
        // Why it died outlives the pod (the operator deletes it): a start error, exit code 128.
        let code = ts.data.pointer("/status/fence/lastTermination/exitCode").and_then(Value::as_i64);
        ensure!(code.is_some_and(|c| c != 0), "no status.fence.lastTermination: {}", ts.data["status"]);
        wait_for("pod removed", SHORT, Duration::from_millis(500), || async {
            Ok(env.pod("desk").await?.is_none().then_some(()))
        })
        .await?;
        wait_for("TooManyRestarts event", SHORT, Duration::from_secs(1), || async {
            let evs = env.events("desk").await?;
            Ok(evs.iter().any(|(t, r, n)| t == "Warning" && r == "TooManyRestarts" && n.contains("last exit:")).then_some(()))
        })
        .await?;
        let evs = env.events("desk").await?;
        ensure!(
            evs.iter().any(|(t, r, n)| t == "Warning" && r == "SidecarRestarted" && n.contains("exit code")),
            "no SidecarRestarted event: {evs:?}"
        );
        // It stays fenced: no new pod appears.
        tokio::time::sleep(Duration::from_secs(5)).await;
        ensure!(env.pod("desk").await?.is_none(), "a pod came back while fenced");

        // Fix the image and clear the fence: the store comes back.
        let image = env.settings.sidecar_image.clone();
        env.patch_store(
            "desk",
            json!({"metadata": {"annotations": {"tradestore.io/clear-fence": "e2e-1"}}, "spec": {"image": image}}),
        )
        .await?;
        env.wait_ready("desk", READY).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t04_spec_change_rolls_out() -> Result<()> {
    with_env("rollout", |env| async move {
        env.create_store("desk", json!({})).await?;
        env.wait_ready("desk", READY).await?;
        let sc = env.sidecar("desk").await?;
        sc.wait_serving(SHORT).await?;
        let ids = sc.write_many("t04", "IBM", 20).await?;
        let pod = env.pod("desk").await?.context("no pod")?;
        let old_uid = pod.uid().unwrap_or_default();
        let old_hash = pod.annotations().get("tradestore.io/pod-spec-hash").cloned();

        env.patch_store("desk", json!({"spec": {"duckdb": {"threads": 2}, "log": {"level": "debug"}}})).await?;
        let pod = env.wait_new_pod("desk", &old_uid, READY).await?;
        let new_hash = pod.annotations().get("tradestore.io/pod-spec-hash").cloned();
        ensure!(new_hash.is_some() && new_hash != old_hash, "pod-spec hash {old_hash:?} -> {new_hash:?}");
        let cm: ConfigMap = Api::namespaced(env.client.clone(), &env.ns).get("desk-config").await?;
        let cfg = cm.data.unwrap_or_default().get("sidecar.yaml").cloned().unwrap_or_default();
        ensure!(cfg.contains("threads: 2"), "config not updated:\n{cfg}");
        let evs = env.events("desk").await?;
        ensure!(evs.iter().any(|(_, r, _)| r == "RollingOut"), "no RollingOut event: {evs:?}");
        sc.wait_serving(SHORT).await?;
        sc.check_all(&ids, "IBM").await?;

        // A field that does not shape the pod does not restart it.
        let uid = pod.uid().unwrap_or_default();
        env.patch_store("desk", json!({"spec": {"restartPolicy": {"maxRestarts": 5}}})).await?;
        env.wait_ready("desk", READY).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let p = env.pod("desk").await?.context("pod gone")?;
        ensure!(p.uid().as_deref() == Some(uid.as_str()), "restartPolicy change replaced the pod");
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t05_invalid_spec_rejected_by_api_server() -> Result<()> {
    with_env("invalid", |env| async move {
        let api = env.stores();
        let cases: Vec<(&str, Value)> = vec![
            ("missing storage", json!({"storage": null})),
            ("threads out of range", json!({"duckdb": {"threads": 0}})),
            ("unknown enum", json!({"storage": {"retentionPolicy": "Sometimes"}})),
            (
                "CEL maxWalBytes < checkpointThresholdBytes",
                json!({"duckdb": {"checkpointThresholdBytes": 1048576, "maxWalBytes": 65536}}),
            ),
            (
                "CEL timeoutSeconds > periodSeconds",
                json!({"probes": {"periodSeconds": 2, "timeoutSeconds": 5, "unresponsiveSeconds": 10}}),
            ),
            ("maxRestarts 0", json!({"restartPolicy": {"maxRestarts": 0}})),
            (
                "cron schedule with 4 fields",
                json!({"backup": {"schedule": "*/5 * * *", "target": {"volume": {"claimName": "backups"}}}}),
            ),
            (
                "CEL two backup targets",
                json!({"backup": {"schedule": "0 * * * *", "target": {"volume": {"claimName": "backups"},
                    "s3": {"bucket": "bkt", "credentialsSecretName": "s3"}}}}),
            ),
            ("snapshot id with a slash", json!({"bootstrap": {"snapshotId": "../other-store/x"}})),
            ("negative storage size", json!({"storage": {"size": "-1Gi"}})),
            ("storage size that is no quantity", json!({"storage": {"size": "abc"}})),
        ];
        for (what, extra) in cases {
            let mut m = env.store_manifest("bad", extra);
            // JSON merge cannot express "remove": drop nulls.
            if m["spec"]["storage"].is_null() {
                m["spec"].as_object_mut().unwrap().remove("storage");
            }
            let obj = serde_json::from_value(m)?;
            match api.create(&PostParams::default(), &obj).await {
                Err(kube::Error::Api(s)) if s.code == 422 => say(format!("rejected ({what}): {}", s.message)),
                Err(e) => bail!("{what}: unexpected error {e}"),
                Ok(_) => bail!("{what}: the API server accepted an invalid TradeStore"),
            }
        }
        // A name that is no DNS-1035 label (CEL on metadata.name).
        let obj = serde_json::from_value(env.store_manifest("1-starts-with-digit", json!({})))?;
        match api.create(&PostParams::default(), &obj).await {
            Err(kube::Error::Api(s)) if s.code == 422 => say(format!("rejected (name): {}", s.message)),
            other => bail!("name not a DNS-1035 label: {other:?}"),
        }
        ensure!(api.list(&ListParams::default()).await?.items.is_empty(), "an invalid store was stored");
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t06_delete_removes_owned_objects_and_applies_retention() -> Result<()> {
    with_env("delete", |env| async move {
        env.create_store("keep", json!({"storage": {"retentionPolicy": "Retain"}})).await?;
        env.create_store("drop", json!({"storage": {"retentionPolicy": "Delete"}})).await?;
        env.wait_ready("keep", READY).await?;
        env.wait_ready("drop", READY).await?;
        let sc = env.sidecar("keep").await?;
        sc.wait_serving(SHORT).await?;
        let ids = sc.write_many("t06", "TSLA", 10).await?;

        for name in ["keep", "drop"] {
            env.stores().delete(name, &DeleteParams::default()).await?;
        }
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &env.ns);
        let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
        let svcs: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
        for name in ["keep", "drop"] {
            wait_for(&format!("{name} and its objects gone"), READY, Duration::from_millis(500), || async {
                let left = [
                    ("TradeStore", env.stores().get_opt(name).await?.is_some()),
                    ("Pod", env.pod(name).await?.is_some()),
                    ("Service", svcs.get_opt(name).await?.is_some()),
                    ("ConfigMap", cms.get_opt(&format!("{name}-config")).await?.is_some()),
                    ("Secret", secrets.get_opt(&format!("{name}-token")).await?.is_some()),
                ];
                let left: Vec<_> = left.iter().filter(|(_, present)| *present).map(|(k, _)| *k).collect();
                if left.is_empty() { Ok(Some(())) } else { Err(anyhow!("still there: {left:?}")) }
            })
            .await?;
        }
        // Delete: the PVC goes. Retain: it stays, without owner.
        wait_for("drop-data deleted", SHORT, Duration::from_millis(500), || async {
            Ok(pvcs.get_opt("drop-data").await?.is_none().then_some(()))
        })
        .await?;
        let kept = pvcs.get_opt("keep-data").await?.context("Retain: keep-data was deleted")?;
        ensure!(kept.owner_references().is_empty(), "Retain: keep-data still has owners");
        ensure!(kept.metadata.deletion_timestamp.is_none(), "Retain: keep-data is being deleted");

        // Recreating the store adopts the retained volume: the data is back (with a new token).
        env.create_store("keep", json!({"storage": {"retentionPolicy": "Delete"}})).await?;
        env.wait_ready("keep", READY).await?;
        let sc = env.sidecar("keep").await?;
        sc.wait_serving(SHORT).await?;
        sc.check_all(&ids, "TSLA").await?;
        say("the retained volume was adopted with all trades");
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t07_operator_runs_under_its_own_least_privilege_service_account() -> Result<()> {
    with_env("rbac", |env| async move {
        let s = &env.settings;
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &s.operator_namespace);
        let ops = pods.list(&ListParams::default().labels("app.kubernetes.io/name=tradestore-operator")).await?.items;
        ensure!(ops.len() >= 2, "expected 2 operator replicas, found {}", ops.len());
        for p in &ops {
            let spec = p.spec.as_ref().context("pod without spec")?;
            ensure!(spec.service_account_name.as_deref() == Some(s.operator_sa.as_str()), "operator pod {} runs as {:?}", p.name_any(), spec.service_account_name);
            let c = &spec.containers[0];
            let sec = c.security_context.as_ref().context("no securityContext")?;
            ensure!(sec.read_only_root_filesystem == Some(true) && sec.allow_privilege_escalation == Some(false), "container securityContext {sec:?}");
        }
        // What the ServiceAccount may and may not do (a SubjectAccessReview as the admin).
        let user = format!("system:serviceaccount:{}:{}", s.operator_namespace, s.operator_sa);
        let reviews: Api<SubjectAccessReview> = Api::all(env.client.clone());
        let check = |group: &str, resource: &str, verb: &str, ns: Option<&str>| {
            let review: SubjectAccessReview = serde_json::from_value(json!({
                "spec": {"user": user, "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", s.operator_namespace)],
                         "resourceAttributes": {"group": group, "resource": resource, "verb": verb, "namespace": ns}}
            }))
            .expect("review");
            let reviews = reviews.clone();
            async move {
                let r = reviews.create(&PostParams::default(), &review).await?;
                Ok::<bool, anyhow::Error>(r.status.map(|s| s.allowed).unwrap_or(false))
            }
        };
        let ns = Some(env.ns.as_str());
        for (g, r, v) in [("tradestore.io", "tradestores", "watch"), ("", "pods", "delete"), ("", "persistentvolumeclaims", "create"), ("", "secrets", "create"), ("events.k8s.io", "events", "create")] {
            ensure!(check(g, r, v, ns).await?, "the operator may not {v} {r}");
        }
        if s.rbac_scope == "namespace" {
            // Namespace scope: nothing on TradeStore resources outside the watched namespaces.
            for (g, r, v) in [("tradestore.io", "tradestores", "watch"), ("", "pods", "create"), ("", "secrets", "get")] {
                ensure!(!check(g, r, v, Some("default")).await?, "namespace scope, yet the operator may {v} {r} in default");
                ensure!(!check(g, r, v, None).await?, "namespace scope, yet the operator may {v} {r} cluster-wide");
            }
        }
        for (g, r, v) in [("", "secrets", "list"), ("", "secrets", "delete"), ("apps", "deployments", "create"), ("", "nodes", "delete"), ("rbac.authorization.k8s.io", "clusterroles", "create"), ("", "pods", "update")] {
            ensure!(!check(g, r, v, ns).await?, "the operator may {v} {r}, more than it needs");
        }
        // And it really acts under that identity: the events it publishes name its pod.
        env.create_store("desk", json!({})).await?;
        env.wait_ready("desk", READY).await?;
        let leader = lease_holder(&env).await?;
        let evs: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), &env.ns);
        let mine = evs.list(&ListParams::default()).await?.items.into_iter().filter(|e| e.reporting_instance.as_deref() == Some(leader.as_str())).count();
        ensure!(mine > 0, "no event reported by the leader {leader}");
        Ok(())
    })
    .await
}

async fn lease_holder(env: &Env) -> Result<String> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.settings.operator_namespace);
    let lease = leases.get(&env.settings.lease).await?;
    lease.spec.and_then(|s| s.holder_identity).filter(|h| !h.is_empty()).context("the Lease has no holder")
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t08_leader_killed_other_replica_takes_over() -> Result<()> {
    with_env("leader", |env| async move {
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.settings.operator_namespace);
        let selector = ListParams::default().labels("app.kubernetes.io/name=tradestore-operator");

        // 1. Freeze the leader (cgroup freezer): it can neither renew nor release the Lease, so the
        //    standby must take over once the Lease expires. Unfrozen, the old leader must notice
        //    that it lost the Lease and exit (the kubelet restarts it as a candidate).
        let old = lease_holder(&env).await?;
        let old_pod = pods.get(&old).await?;
        let old_restarts = restart_count(&old_pod, "operator");
        say(format!("leader: {old}; freezing it"));
        env.ctr_task(&old_pod, "operator", &["pause"]).await?;
        let taken =
            wait_for("the standby holds the Lease", Duration::from_secs(90), Duration::from_millis(500), || async {
                let h = lease_holder(&env).await?;
                Ok((h != old).then_some(h))
            })
            .await;
        env.ctr_task(&old_pod, "operator", &["resume"]).await?;
        let new = taken?;
        ensure!(pods.get(&new).await?.metadata.deletion_timestamp.is_none(), "the new leader {new} is terminating");
        env.create_store("desk", json!({})).await?;
        env.wait_ready("desk", READY).await?;
        let sc = env.sidecar("desk").await?;
        sc.wait_serving(SHORT).await?;
        sc.write_many("t08", "NVDA", 5).await?;
        say(format!("the new leader {new} reconciles"));
        let p = wait_for(
            "the old leader restarted as a candidate",
            Duration::from_secs(90),
            Duration::from_millis(500),
            || async {
                let p = pods.get(&old).await?;
                Ok((restart_count(&p, "operator") > old_restarts && pod_ready(&p)).then_some(p))
            },
        )
        .await?;
        say(format!("old leader's previous exit code: {:?}", last_exit_code(&p, "operator")));
        ensure!(lease_holder(&env).await? == new, "leadership moved back while the new leader was healthy");

        // 2. Delete the leader pod without grace: another pod takes over and reconciles.
        pods.delete(&new, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await?;
        let newer = wait_for(
            "another replica holds the Lease",
            Duration::from_secs(90),
            Duration::from_millis(500),
            || async {
                let h = lease_holder(&env).await?;
                Ok((h != new).then_some(h))
            },
        )
        .await?;
        say(format!("leader after deleting {new}: {newer}"));
        env.create_store("desk2", json!({})).await?;
        env.wait_ready("desk2", READY).await?;
        wait_for("2 ready operator replicas", READY, Duration::from_secs(1), || async {
            let ps = pods.list(&selector).await?.items;
            let ready = ps.iter().filter(|p| pod_ready(p) && p.metadata.deletion_timestamp.is_none()).count();
            Ok((ready >= 2).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t09_app_container_talks_to_native_sidecar() -> Result<()> {
    with_env("app", |env| async move {
        // The trading app: writes one trade to $TRADESTORE_URL with $TRADESTORE_API_TOKEN (both
        // injected by the operator), retrying until the sidecar answers, then idles.
        let script = r#"[ "$TRADESTORE_URL" = "http://127.0.0.1:8080" ] || { echo "TRADESTORE_URL=$TRADESTORE_URL"; exit 3; }
body='{"id":"from-app","symbol":"APP","side":"buy","quantity":3,"price":7.5}'
until printf 'POST /v1/trades HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' \
    "$TRADESTORE_API_TOKEN" "${#body}" "$body" | nc -w 5 127.0.0.1 8080 | grep -qE '^HTTP/1.[01] (201|409)'; do sleep 1; done
echo wrote from-app
exec sleep 1000000"#;
        let app = json!({
            "name": "app",
            "image": env.settings.app_image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script],
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
        });
        env.create_store("desk", json!({"containers": [app]})).await?;
        env.wait_ready("desk", READY).await?;
        let pod = env.pod("desk").await?.context("no pod")?;
        let spec = pod.spec.as_ref().context("no pod spec")?;
        let init = spec.init_containers.as_ref().and_then(|c| c.first()).context("no init container")?;
        ensure!(init.name == "sidecar" && init.restart_policy.as_deref() == Some("Always"), "the sidecar is not a native sidecar");
        ensure!(spec.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>() == ["app"], "containers: {:?}", spec.containers.iter().map(|c| &c.name).collect::<Vec<_>>());
        let sc = env.sidecar("desk").await?;
        sc.wait_serving(SHORT).await?;
        let t = wait_for("the app's trade", SHORT, Duration::from_secs(1), || async { sc.get("from-app").await }).await?;
        ensure!(t["symbol"] == "APP" && t["quantity"] == "3", "trade from the app: {t}");
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t10_stop_resume_and_volume_changes() -> Result<()> {
    with_env("stop", |env| async move {
        env.create_store("desk", json!({})).await?;
        env.wait_ready("desk", READY).await?;
        let sc = env.sidecar("desk").await?;
        sc.wait_serving(SHORT).await?;
        let ids = sc.write_many("t10", "AMZN", 10).await?;

        // Hibernate: no pod, the volume stays; resume: the data is back.
        env.patch_store("desk", json!({"spec": {"stopped": true}})).await?;
        env.wait_phase("desk", "Stopped", READY).await?;
        wait_for("pod gone while stopped", SHORT, Duration::from_millis(500), || async {
            Ok(env.pod("desk").await?.is_none().then_some(()))
        })
        .await?;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &env.ns);
        ensure!(pvcs.get_opt("desk-data").await?.is_some(), "the PVC went away while stopped");
        env.patch_store("desk", json!({"spec": {"stopped": false}})).await?;
        env.wait_ready("desk", READY).await?;
        sc.wait_serving(SHORT).await?;
        sc.check_all(&ids, "AMZN").await?;

        // Volume changes the operator must refuse with a Warning event, without touching the pod.
        let uid = env.pod("desk").await?.context("no pod")?.uid().unwrap_or_default();
        let class: k8s_openapi::api::storage::v1::StorageClass = {
            let pvc = pvcs.get("desk-data").await?;
            let name = pvc.spec.and_then(|s| s.storage_class_name).context("PVC without class")?;
            Api::all(env.client.clone()).get(&name).await?
        };
        let (size, reason) = if class.allow_volume_expansion == Some(true) {
            ("512Mi", "VolumeShrinkRefused")
        } else {
            ("2Gi", "VolumeResizeUnsupported")
        };
        env.patch_store("desk", json!({"spec": {"storage": {"size": size}}})).await?;
        wait_for(&format!("{reason} event"), SHORT, Duration::from_secs(1), || async {
            let evs = env.events("desk").await?;
            Ok(evs.iter().any(|(t, r, _)| t == "Warning" && r == reason).then_some(()))
        })
        .await?;
        let requested = pvcs.get("desk-data").await?.spec.and_then(|s| s.resources).and_then(|r| r.requests);
        ensure!(
            requested.and_then(|r| r.get("storage").cloned()).map(|q| q.0) == Some("1Gi".into()),
            "the PVC request changed"
        );
        let p = env.pod("desk").await?.context("pod gone")?;
        ensure!(p.uid().as_deref() == Some(uid.as_str()), "a storage change replaced the pod");
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t11_backup_then_restore_into_a_new_store() -> Result<()> {
    with_env("backup", |env| async move {
        // A backup volume the two stores use one after the other (ReadWriteOnce: the first store
        // is stopped before the second starts, so this also works when they land on different nodes).
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &env.ns);
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "backups", "namespace": env.ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": STORE_SIZE}}},
        }))?;
        pvcs.create(&PostParams::default(), &claim).await?;
        // A schedule that does not fire during the test: only the requested snapshot exists.
        let backup = json!({"schedule": "0 0 1 1 *", "target": {"volume": {"claimName": "backups"}}});
        let extra = |more: Value| {
            let mut spec = json!({"backup": backup.clone(), "storage": {"retentionPolicy": "Delete"}});
            tradestore_e2e::merge(&mut spec, more);
            spec
        };

        env.create_store("source", extra(json!({}))).await?;
        env.wait_ready("source", READY).await?;
        let sc = env.sidecar("source").await?;
        sc.wait_serving(SHORT).await?;
        let ids = sc.write_many("t11", "MSFT", 40).await?;
        let written_seq = sc.status().await?["last_seq"].as_i64().context("no last_seq")?;
        ensure!(written_seq >= 40, "last_seq {written_seq} after 40 writes");
        if sc.status().await?["last_snapshot"].is_null() {
            let ts = env.store("source").await?;
            ensure!(
                condition(&ts, "BackupReady").is_some_and(|c| c["status"] == "False" && c["reason"] == "NoSnapshotYet"),
                "BackupReady before any snapshot: {:?}",
                condition(&ts, "BackupReady")
            );
        }

        // On-demand snapshot through the annotation.
        env.patch_store("source", json!({"metadata": {"annotations": {"tradestore.io/backup-request": "e2e-1"}}}))
            .await?;
        let backup_status = wait_for("status.backup for request e2e-1", READY, Duration::from_millis(500), || async {
            let ts = env.store("source").await?;
            let b = ts.data.pointer("/status/backup").cloned().unwrap_or(Value::Null);
            if b["lastRequest"] == "e2e-1" { Ok(Some(b)) } else { Err(anyhow!("status.backup {b}")) }
        })
        .await?;
        ensure!(backup_status.get("lastFailure").is_none(), "the snapshot failed: {backup_status}");
        let id = backup_status["lastSnapshot"].as_str().context("no lastSnapshot")?.to_string();
        let seq = backup_status["lastSeq"].as_i64().context("no lastSeq")?;
        ensure!(seq >= written_seq, "snapshot seq {seq} < last written seq {written_seq}");
        ensure!(backup_status["lastSuccessfulTime"].is_string(), "no lastSuccessfulTime: {backup_status}");
        let evs = env.events("source").await?;
        ensure!(evs.iter().any(|(t, r, _)| t == "Normal" && r == "BackupTaken"), "no BackupTaken event: {evs:?}");
        let ts = env.store("source").await?;
        ensure!(
            condition(&ts, "BackupReady").is_some_and(|c| c["status"] == "True"),
            "BackupReady after the snapshot: {:?}",
            condition(&ts, "BackupReady")
        );
        let listed = sc.snapshots().await?;
        ensure!(listed.iter().any(|m| m["id"] == id.as_str()), "snapshot {id} not in GET /v1/snapshots: {listed:?}");
        let status = sc.status().await?;
        ensure!(status["last_snapshot"]["id"] == id.as_str(), "sidecar last_snapshot: {}", status["last_snapshot"]);

        // Free the backup volume: stop the source.
        env.patch_store("source", json!({"spec": {"stopped": true}})).await?;
        env.wait_phase("source", "Stopped", READY).await?;
        wait_for("source pod gone", READY, Duration::from_millis(500), || async {
            Ok(env.pod("source").await?.is_none().then_some(()))
        })
        .await?;

        // Restore into a new store: its volume is empty, so the sidecar starts from the snapshot.
        env.create_store("restored", extra(json!({"bootstrap": {"snapshotId": id}}))).await?;
        env.wait_ready("restored", READY).await?;
        let rc = env.sidecar("restored").await?;
        rc.wait_serving(SHORT).await?;
        rc.check_all(&ids, "MSFT").await?;
        let state = rc.state("MSFT").await?;
        ensure!(state["trade_count"] == 40, "restored state: {state}");
        let restored_seq = rc.status().await?["last_seq"].as_i64().context("no last_seq")?;
        ensure!(restored_seq == seq, "restored last_seq {restored_seq} != snapshot seq {seq}");
        // The restored store takes writes of its own.
        rc.write("t11-after-restore", "MSFT", 1.0, 1.0).await?;

        if env.settings.fixed_namespace.is_some() {
            // Shared namespace: leave no claim behind (stores go in Env::finish).
            pvcs.delete("backups", &DeleteParams::default()).await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t12_redis_journal_wired_from_a_secret() -> Result<()> {
    with_env("redis", |env| async move {
        // A Redis server in the namespace, reached through its Service name.
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
        let redis: Pod = serde_json::from_value(json!({
            "metadata": {"name": "redis", "labels": {"app": "redis"}},
            "spec": {
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "redis",
                    "image": env.settings.redis_image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", "/tmp"],
                    "ports": [{"containerPort": 6379}],
                    "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        }))?;
        pods.create(&PostParams::default(), &redis).await?;
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "redis"},
            "spec": {"selector": {"app": "redis"}, "ports": [{"port": 6379, "targetPort": 6379}]},
        }))?;
        Api::<Service>::namespaced(env.client.clone(), &env.ns).create(&PostParams::default(), &svc).await?;
        let url = format!("redis://redis.{}.svc.cluster.local:6379/0", env.ns);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "redis-conn"},
            "stringData": {"url": url},
        }))?;
        Api::<Secret>::namespaced(env.client.clone(), &env.ns).create(&PostParams::default(), &secret).await?;

        // The store gets the URL only through the Secret reference (never in its ConfigMap).
        let redis_spec = json!({"redis": {"urlSecretRef": {"name": "redis-conn", "key": "url"}, "keyPrefix": "desk"}});
        env.create_store("desk", redis_spec).await?;
        env.wait_ready("desk", READY).await?;
        let cm: ConfigMap = Api::namespaced(env.client.clone(), &env.ns).get("desk-config").await?;
        let rendered = cm.data.and_then(|d| d.get("sidecar.yaml").cloned()).unwrap_or_default();
        ensure!(rendered.contains("key_prefix: desk") && !rendered.contains("redis://"), "ConfigMap: {rendered}");
        let sc = env.sidecar("desk").await?;
        sc.wait_serving(SHORT).await?;
        sc.write_many("t12", "NFLX", 10).await?;
        let last = sc.status().await?["last_seq"].as_i64().unwrap_or(-1);
        ensure!(last >= 10, "last_seq {last}");
        let j = wait_for("the journal to reach the last commit", SHORT, Duration::from_millis(500), || async {
            let st = sc.status().await?;
            let j = st["journal"].clone();
            if j["enabled"] == true && j["healthy"] == true && j["watermark"].as_i64() == Some(last) {
                Ok(Some(j))
            } else {
                Err(anyhow!("journal {j}"))
            }
        })
        .await?;
        say(format!("journal through the Service: {j}"));
        // The operator copies it into the TradeStore status.
        wait_for("status.journal in the TradeStore", SHORT, Duration::from_millis(500), || async {
            let ts = env.store("desk").await?;
            let j = ts.data.pointer("/status/journal").cloned().unwrap_or(Value::Null);
            if j["healthy"] == true && j["watermark"].as_i64() == Some(last) { Ok(Some(())) } else { Err(anyhow!("{j}")) }
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the chart installed: run e2e/kind.sh"]
async fn t13_commit_log_on_its_own_volume() -> Result<()> {
    with_env("wal", |env| async move {
        env.create_store("desk", json!({"commitLogStorage": {"size": "1Gi"}})).await?;
        env.wait_ready("desk", READY).await?;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &env.ns);
        ensure!(pvcs.get_opt("desk-commit-log").await?.is_some(), "no commit-log claim");
        let sc = env.sidecar("desk").await?;
        sc.wait_serving(SHORT).await?;
        let mut ids = sc.write_many("t13-before-kill", "NVDA", 20).await?;

        // SIGKILL: the restarted sidecar replays the log from its own volume.
        let pod = env.pod("desk").await?.context("no pod")?;
        let uid = pod.uid().unwrap_or_default();
        let restarts = restart_count(&pod, "sidecar");
        env.sigkill_container(&pod, "sidecar").await?;
        wait_for("sidecar restarted and ready", READY, Duration::from_millis(500), || async {
            let p = env.pod("desk").await?.context("pod gone")?;
            if restart_count(&p, "sidecar") > restarts && pod_ready(&p) { Ok(Some(())) } else { Ok(None) }
        })
        .await?;
        sc.wait_serving(SHORT).await?;
        sc.check_all(&ids, "NVDA").await?;

        // A new pod on the same two volumes serves the old trades and takes new writes.
        ids.extend(sc.write_many("t13-before-delete", "NVDA", 20).await?);
        env.pods().delete("desk", &DeleteParams::default()).await?;
        env.wait_new_pod("desk", &uid, READY).await?;
        sc.wait_serving(SHORT).await?;
        ids.extend(sc.write_many("t13-after-delete", "NVDA", 5).await?);
        sc.check_all(&ids, "NVDA").await?;

        // Removing the log volume is refused by the API server (CEL transition rule).
        match env.patch_store("desk", json!({"spec": {"commitLogStorage": null}})).await {
            Err(e) if e.to_string().contains("commitLogStorage") => say(format!("rejected (remove): {e}")),
            other => bail!("removing commitLogStorage: {other:?}"),
        }
        Ok(())
    })
    .await
}

/// Runs the node fault tool (`TRADESTORE_E2E_NODE_TOOL OP NODE`, e.g. `e2e/kind/node.sh stop NODE`).
async fn node_tool(op: &str, node: &str) -> Result<()> {
    let tool = std::env::var("TRADESTORE_E2E_NODE_TOOL").context("TRADESTORE_E2E_NODE_TOOL is not set")?;
    let out = tokio::process::Command::new(&tool).args([op, node]).output().await.context("running the node tool")?;
    ensure!(out.status.success(), "{tool} {op} {node}: {}", String::from_utf8_lossy(&out.stderr));
    say(format!("node {node}: {op}"));
    Ok(())
}

async fn node_ready(env: &Env, node: &str) -> Result<bool> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.client.clone());
    let n = nodes.get(node).await?;
    Ok(n.status.and_then(|s| s.conditions).unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn set_out_of_service(env: &Env, node: &str, on: bool) -> Result<()> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.client.clone());
    let n = nodes.get(node).await?;
    let mut taints: Vec<Value> = n
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != "node.kubernetes.io/out-of-service")
        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
        .collect();
    if on {
        taints
            .push(json!({"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}));
    }
    let patch = json!({"spec": {"taints": taints}});
    nodes.patch(node, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
    say(format!("node {node}: out-of-service taint {}", if on { "set" } else { "removed" }));
    Ok(())
}

/// The taint e2e/kind.sh puts on the node kept for t14 (`TRADESTORE_E2E_FAULT_NODE`).
const FAULT_NODE_TAINT: &str = "tradestore.io/e2e-node-faults";

/// With a node kept for faults, puts store `name` there, so that stopping it disturbs no other
/// test: its data claim is made first with that node selected (`volume.kubernetes.io/selected-node`,
/// which the local-path provisioner honours; the operator adopts the claim), and the store
/// tolerates the node's taint. Returns the store's spec additions.
async fn keep_to_fault_node(env: &Env, name: &str) -> Result<Value> {
    let Some(node) = &env.settings.fault_node else { return Ok(json!({})) };
    let mode = env.settings.access_mode.clone().unwrap_or_else(|| "ReadWriteOnce".into());
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-data"), "annotations": {"volume.kubernetes.io/selected-node": node}},
        "spec": {"accessModes": [mode], "resources": {"requests": {"storage": STORE_SIZE}}},
    }))?;
    Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &claim)
        .await?;
    say(format!("{name}-data made on {node}, the node kept for faults"));
    Ok(json!({"tolerations": [{"key": FAULT_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}))
}

/// A store `desk` for a node fault test, Ready with 30 acknowledged trades of `symbol`.
struct FaultStore {
    sc: tradestore_e2e::Sidecar,
    ids: Vec<String>,
    /// Its pod's uid and node.
    uid: String,
    node: String,
}

/// Creates the store of a node fault test (on the node kept for faults, when there is one).
async fn fault_store(env: &Env, symbol: &str) -> Result<FaultStore> {
    let placement = keep_to_fault_node(env, "desk").await?;
    env.create_store("desk", placement).await?;
    env.wait_ready("desk", READY).await?;
    let sc = env.sidecar("desk").await?;
    sc.wait_serving(SHORT).await?;
    let ids = sc.write_many("before-fault", symbol, 30).await?;
    let pod = env.pod("desk").await?.context("no pod")?;
    let uid = pod.uid().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).context("pod not scheduled")?;
    say(format!("the store's pod runs on {node}"));
    Ok(FaultStore { sc, ids, uid, node })
}

/// The store is Ready again on `node`, which holds its volume, with every acknowledged trade.
async fn back_on_its_node(
    env: &Env,
    sc: &tradestore_e2e::Sidecar,
    node: &str,
    ids: &[String],
    symbol: &str,
    timeout: Duration,
) -> Result<()> {
    env.wait_ready("desk", timeout).await?;
    let p = env.pod("desk").await?.context("no pod")?;
    ensure!(
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node),
        "the pod should run on the node that holds its volume"
    );
    sc.wait_serving(SHORT).await?;
    sc.check_all(ids, symbol).await?;
    say(format!("store Ready again on {node} with all {} trades", ids.len()));
    Ok(())
}

/// docs/operator.md "Node problems", on a multi-node cluster with node fault tools (e2e/kind.sh):
/// the node of a store's pod is stopped (`docker stop`); the store goes not Ready (phase Pending,
/// Ready=False/NodeNotReady) and the operator leaves the pod alone; the administrator's
/// out-of-service taint makes Kubernetes delete the pod, the operator creates it again, and with a
/// node-local volume it stays Pending until the node is back; the node started again and the taint
/// removed, the store is Ready on that node with every acknowledged trade.
#[tokio::test]
#[ignore = "needs a multi-node cluster with node fault tools (TRADESTORE_E2E_NODE_TOOL): run e2e/kind.sh"]
async fn t14_store_on_a_lost_node() -> Result<()> {
    with_env("lost", |env| async move {
        let FaultStore { sc, ids, uid, node } = fault_store(&env, "NVDA").await?;

        let t0 = std::time::Instant::now();
        node_tool("stop", &node).await?;
        let result = async {
            wait_for("node NotReady", Duration::from_secs(180), Duration::from_secs(1), || async {
                if node_ready(&env, &node).await? { Err(anyhow!("still Ready")) } else { Ok(Some(())) }
            })
            .await?;
            say(format!("{node} NotReady after {:.0?}", t0.elapsed()));
            let ts = wait_for("store not Ready (NodeNotReady)", READY, Duration::from_secs(1), || async {
                let ts = env.store("desk").await?;
                let ready = condition(&ts, "Ready").unwrap_or(Value::Null);
                if ready["status"] == "False" && ready["reason"] == "NodeNotReady" {
                    Ok(Some(ts))
                } else {
                    Err(anyhow!("phase {:?}, Ready {ready}", phase(&ts)))
                }
            })
            .await?;
            ensure!(phase(&ts) == "Pending", "phase {:?}, want Pending", phase(&ts));
            say(format!("store not Ready (NodeNotReady, phase Pending) after {:.0?}", t0.elapsed()));
            // The operator never deletes that pod.
            tokio::time::sleep(Duration::from_secs(15)).await;
            let p = env.pod("desk").await?.context("the pod was deleted")?;
            ensure!(p.uid().as_deref() == Some(uid.as_str()), "the pod was replaced while its node was lost");

            // The administrator's decision: the node is down for good.
            set_out_of_service(&env, &node, true).await?;
            let msg = wait_recreated_unschedulable(&env, "desk", &uid).await?;
            say(format!("new pod Pending: {msg}"));
            Ok::<_, anyhow::Error>(())
        }
        .await;
        // Always bring the node back and clear the taint.
        let back = node_tool("start", &node).await;
        let _ = set_out_of_service(&env, &node, false).await;
        result?;
        back?;
        wait_for("node Ready again", Duration::from_secs(180), Duration::from_secs(1), || async {
            if node_ready(&env, &node).await? { Ok(Some(())) } else { Err(anyhow!("NotReady")) }
        })
        .await?;
        back_on_its_node(&env, &sc, &node, &ids, "NVDA", Duration::from_secs(240)).await?;
        say(format!("{:.0?} after the stop", t0.elapsed()));
        Ok(())
    })
    .await
}

/// Waits until the operator has created pod `name` again (a uid other than `old_uid`) and the
/// scheduler has marked it unschedulable; returns the scheduler's message.
async fn wait_recreated_unschedulable(env: &Env, name: &str, old_uid: &str) -> Result<String> {
    let p = wait_for("pod recreated and Pending", READY, Duration::from_secs(1), || async {
        match env.pod(name).await? {
            Some(p) if p.uid().as_deref() != Some(old_uid) => {
                let unschedulable = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False"));
                if unschedulable { Ok(Some(p)) } else { Err(anyhow!("new pod not yet marked unschedulable")) }
            }
            Some(_) => Err(anyhow!("old pod still there")),
            None => Err(anyhow!("no pod yet")),
        }
    })
    .await?;
    Ok(p.status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .and_then(|c| c.message)
        .unwrap_or_default())
}

/// docs/operator.md "Node problems", a drain (`kubectl drain`: cordon + evictions): the store's pod
/// is evicted like any other, the operator creates it again, and on a node-local volume it waits
/// unschedulable until the node is uncordoned; then it is Ready on that node with every trade.
#[tokio::test]
#[ignore = "needs a multi-node cluster with node fault tools (TRADESTORE_E2E_NODE_TOOL): run e2e/kind.sh"]
async fn t15_store_on_a_drained_node() -> Result<()> {
    with_env("drain", |env| async move {
        let FaultStore { sc, ids, uid, node } = fault_store(&env, "AMZN").await?;
        let drained = node_tool("drain", &node).await;
        let result = async {
            drained?;
            let msg = wait_recreated_unschedulable(&env, "desk", &uid).await?;
            say(format!("new pod Pending while {node} is cordoned: {msg}"));
            Ok::<_, anyhow::Error>(())
        }
        .await;
        // Always make the node schedulable again.
        let back = node_tool("uncordon", &node).await;
        result?;
        back?;
        back_on_its_node(&env, &sc, &node, &ids, "AMZN", READY).await
    })
    .await
}
