//! Helpers of the TradeStore end-to-end suite (`e2e/tests/suite.rs`).
//!
//! The suite runs against whatever `KUBECONFIG` points at, with the chart already installed
//! (`e2e/kind.sh` does both). Settings come from the environment:
//!
//! | variable | default | |
//! |---|---|---|
//! | `TRADESTORE_E2E_SIDECAR_IMAGE` | — (required) | sidecar image reference the stores use |
//! | `TRADESTORE_E2E_BROKEN_IMAGE` | `TRADESTORE_E2E_OPERATOR_IMAGE` | an image without `/usr/local/bin/sidecar` (crash-loop test) |
//! | `TRADESTORE_E2E_APP_IMAGE` | `tradestore.local/busybox:e2e` | an image with `sh` and `nc` for the app container test |
//! | `TRADESTORE_E2E_REDIS_IMAGE` | `tradestore.local/redis:e2e` | an image with `redis-server` on `PATH` (the journal test) |
//! | `TRADESTORE_E2E_IMAGE_PULL_POLICY` | `Never` | pull policy of the stores' pods |
//! | `TRADESTORE_E2E_ACCESS_MODE` | the CRD default (`ReadWriteOncePod`) | `storage.accessMode` of the stores |
//! | `TRADESTORE_E2E_OPERATOR_NAMESPACE` | `tradestore-system` | where the chart is installed |
//! | `TRADESTORE_E2E_OPERATOR_SA` | `tradestore-operator` | the chart's ServiceAccount |
//! | `TRADESTORE_E2E_LEASE` | `tradestore-operator` | the leader-election Lease |
//! | `TRADESTORE_E2E_CTR` | `ctr --address $TRADESTORE_E2E_CONTAINERD_SOCK` | command prefix reaching the node's containerd (SIGKILL of a container); `{node}` is replaced by the pod's node name (kind: `docker exec {node} ctr`) |
//! | `TRADESTORE_E2E_KEEP` | unset | `1`: keep the test namespaces |
//! | `TRADESTORE_E2E_NAMESPACE` | unset | run every test in this (existing or new) namespace instead of a fresh one each, and delete only the test's TradeStores afterwards (for an operator that watches fixed namespaces) |
//! | `TRADESTORE_E2E_RBAC_SCOPE` | `cluster` | `namespace`: the chart was installed with `rbac.scope=namespace` (t07 checks that the operator has no rights outside its namespaces) |
//! | `TRADESTORE_E2E_FAULT_NODE` | unset | a node kept for t14 and t15, tainted `tradestore.io/e2e-node-faults:NoSchedule` so that nothing else runs there: they stop and drain it while the other tests run (unset: they stop or drain whatever node their store is on, and must run alone) |

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

/// Suite settings from the environment.
#[derive(Clone, Debug)]
pub struct Settings {
    pub sidecar_image: String,
    pub broken_image: String,
    pub app_image: String,
    pub redis_image: String,
    pub pull_policy: String,
    pub access_mode: Option<String>,
    pub operator_namespace: String,
    pub operator_sa: String,
    pub lease: String,
    pub ctr: Vec<String>,
    pub keep: bool,
    pub fixed_namespace: Option<String>,
    pub rbac_scope: String,
    pub fault_node: Option<String>,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let sidecar_image = std::env::var("TRADESTORE_E2E_SIDECAR_IMAGE")
            .context("TRADESTORE_E2E_SIDECAR_IMAGE is not set (e2e/kind.sh sets it from e2e/images.sh)")?;
        let broken_image = env_or("TRADESTORE_E2E_BROKEN_IMAGE", &env_or("TRADESTORE_E2E_OPERATOR_IMAGE", ""));
        let ctr = match std::env::var("TRADESTORE_E2E_CTR").ok().filter(|v| !v.is_empty()) {
            Some(c) => c.split_whitespace().map(String::from).collect(),
            None => match std::env::var("TRADESTORE_E2E_CONTAINERD_SOCK").ok().filter(|v| !v.is_empty()) {
                Some(sock) => vec!["ctr".into(), "--address".into(), sock],
                None => vec![],
            },
        };
        Ok(Self {
            sidecar_image,
            broken_image,
            app_image: env_or("TRADESTORE_E2E_APP_IMAGE", "tradestore.local/busybox:e2e"),
            redis_image: env_or("TRADESTORE_E2E_REDIS_IMAGE", "tradestore.local/redis:e2e"),
            pull_policy: env_or("TRADESTORE_E2E_IMAGE_PULL_POLICY", "Never"),
            access_mode: std::env::var("TRADESTORE_E2E_ACCESS_MODE").ok().filter(|v| !v.is_empty()),
            operator_namespace: env_or("TRADESTORE_E2E_OPERATOR_NAMESPACE", "tradestore-system"),
            operator_sa: env_or("TRADESTORE_E2E_OPERATOR_SA", "tradestore-operator"),
            lease: env_or("TRADESTORE_E2E_LEASE", "tradestore-operator"),
            ctr,
            keep: std::env::var("TRADESTORE_E2E_KEEP").is_ok_and(|v| v == "1"),
            fixed_namespace: std::env::var("TRADESTORE_E2E_NAMESPACE").ok().filter(|v| !v.is_empty()),
            rbac_scope: env_or("TRADESTORE_E2E_RBAC_SCOPE", "cluster"),
            fault_node: std::env::var("TRADESTORE_E2E_FAULT_NODE").ok().filter(|v| !v.is_empty()),
        })
    }
}

/// `spec.storage.size` of the test stores.
pub const STORE_SIZE: &str = "1Gi";

/// Prints a timestamped progress line (visible with `--nocapture`, which kind.sh passes), tagged
/// with the test it comes from: the harness names each test's thread after it, and kind.sh runs
/// several tests at once.
pub fn say(msg: impl AsRef<str>) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let s = now.as_secs() % 86400;
    let thread = std::thread::current();
    let test = thread.name().and_then(|n| n.split('_').next()).unwrap_or("-");
    println!("[e2e {:02}:{:02}:{:02} {test}] {}", s / 3600, (s / 60) % 60, s % 60, msg.as_ref());
}

/// Polls `f` every `every` until it returns `Ok(Some(v))` or `timeout` passes; the last error or
/// `Ok(None)` is reported on timeout.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = String::from("condition not met");
    loop {
        match f().await {
            Ok(Some(v)) => {
                say(format!("{what}: after {:.1}s", start.elapsed().as_secs_f64()));
                return Ok(v);
            }
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what} (last: {last})");
        }
        tokio::time::sleep(every).await;
    }
}

pub fn tradestore_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("tradestore.io", "v1alpha1", "TradeStore"), "tradestores")
}

/// One test's world: a client and a fresh namespace, deleted on `finish` unless kept.
pub struct Env {
    pub client: Client,
    pub settings: Settings,
    pub ns: String,
}

impl Env {
    /// Connects with the default kubeconfig and creates the namespace `e2e-<prefix>-<random>`.
    pub async fn new(prefix: &str) -> Result<Self> {
        let settings = Settings::from_env()?;
        // Several rustls providers are compiled into the workspace; pick kube's (ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::try_default().await.context("connecting with KUBECONFIG")?;
        let nss: Api<Namespace> = Api::all(client.clone());
        let ns = match &settings.fixed_namespace {
            Some(ns) => ns.clone(),
            None => format!("e2e-{prefix}-{:05}", rand::random::<u32>() % 100_000),
        };
        let obj: Namespace = serde_json::from_value(json!({
            "metadata": {"name": ns, "labels": {"tradestore.io/e2e": "true"}}
        }))?;
        match nss.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 && settings.fixed_namespace.is_some() => {}
            Err(e) => return Err(e).with_context(|| format!("creating namespace {ns}")),
        }
        say(format!("namespace {ns}"));
        Ok(Self { client, settings, ns })
    }

    /// Deletes the namespace (without waiting) unless TRADESTORE_E2E_KEEP=1.
    pub async fn finish(self) -> Result<()> {
        if self.settings.keep {
            say(format!("keeping namespace {}", self.ns));
            return Ok(());
        }
        if self.settings.fixed_namespace.is_some() {
            // Shared namespace: remove this test's stores and wait until they are gone.
            let stores = self.stores();
            stores.delete_collection(&DeleteParams::default(), &ListParams::default()).await?;
            wait_for(
                "the test's TradeStores deleted",
                Duration::from_secs(120),
                Duration::from_millis(500),
                || async { Ok(stores.list(&ListParams::default()).await?.items.is_empty().then_some(())) },
            )
            .await?;
            return Ok(());
        }
        let nss: Api<Namespace> = Api::all(self.client.clone());
        nss.delete(&self.ns, &DeleteParams::default()).await?;
        Ok(())
    }

    pub fn stores(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &tradestore_resource())
    }
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A TradeStore manifest with the suite's image, a small RWOP volume and `extra` merged into the spec.
    pub fn store_manifest(&self, name: &str, extra: Value) -> Value {
        let mut spec = json!({
            "image": self.settings.sidecar_image,
            "imagePullPolicy": self.settings.pull_policy,
            "storage": {"size": STORE_SIZE},
            "duckdb": {"threads": 1},
            "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
        });
        if let Some(mode) = &self.settings.access_mode {
            spec["storage"]["accessMode"] = json!(mode);
        }
        merge(&mut spec, extra);
        json!({
            "apiVersion": "tradestore.io/v1alpha1",
            "kind": "TradeStore",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": spec,
        })
    }

    pub async fn create_store(&self, name: &str, extra: Value) -> Result<DynamicObject> {
        let obj: DynamicObject = serde_json::from_value(self.store_manifest(name, extra))?;
        Ok(self.stores().create(&PostParams::default(), &obj).await?)
    }

    pub async fn patch_store(&self, name: &str, patch: Value) -> Result<DynamicObject> {
        Ok(self.stores().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?)
    }

    pub async fn store(&self, name: &str) -> Result<DynamicObject> {
        Ok(self.stores().get(name).await?)
    }

    /// Waits for `Ready=True` at the store's current generation; returns the store.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> Result<DynamicObject> {
        wait_for(&format!("{name} Ready"), timeout, Duration::from_millis(500), || async {
            let ts = self.store(name).await?;
            let generation = ts.metadata.generation.unwrap_or(0);
            let observed = ts.data.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(-1);
            let ready = condition(&ts, "Ready").is_some_and(|c| c["status"] == "True");
            if ready && observed == generation {
                Ok(Some(ts))
            } else {
                Err(anyhow!("phase {:?}, Ready {:?}", phase(&ts), condition(&ts, "Ready")))
            }
        })
        .await
    }

    /// Waits for `status.phase == want`.
    pub async fn wait_phase(&self, name: &str, want: &str, timeout: Duration) -> Result<DynamicObject> {
        wait_for(&format!("{name} phase {want}"), timeout, Duration::from_millis(500), || async {
            let ts = self.store(name).await?;
            if phase(&ts) == want { Ok(Some(ts)) } else { Err(anyhow!("phase {:?}", phase(&ts))) }
        })
        .await
    }

    /// The sidecar client of a store: Service ClusterIP and the generated token.
    pub async fn sidecar(&self, name: &str) -> Result<Sidecar> {
        let svc: Service = Api::namespaced(self.client.clone(), &self.ns).get(name).await?;
        let ip = svc.spec.and_then(|s| s.cluster_ip).context("Service has no ClusterIP")?;
        let secret: Secret = Api::namespaced(self.client.clone(), &self.ns).get(&format!("{name}-token")).await?;
        let token = secret.data.and_then(|d| d.get("token").cloned()).context("Secret has no token")?;
        Ok(Sidecar {
            base: format!("http://{ip}:8080"),
            token: String::from_utf8(token.0)?,
            http: reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?,
        })
    }

    pub async fn pod(&self, name: &str) -> Result<Option<Pod>> {
        Ok(self.pods().get_opt(name).await?)
    }

    /// Waits until the pod exists with a uid different from `old_uid`, is Ready, and the store is Ready.
    pub async fn wait_new_pod(&self, name: &str, old_uid: &str, timeout: Duration) -> Result<Pod> {
        let pod = wait_for(&format!("new pod {name}"), timeout, Duration::from_millis(500), || async {
            match self.pod(name).await? {
                Some(p) if p.uid().as_deref() != Some(old_uid) && pod_ready(&p) => Ok(Some(p)),
                Some(p) => Err(anyhow!("pod uid {:?} ready {}", p.uid(), pod_ready(&p))),
                None => Err(anyhow!("no pod")),
            }
        })
        .await?;
        self.wait_ready(name, timeout).await?;
        Ok(pod)
    }

    /// Events (events.k8s.io/v1 and core/v1) about `name` in the namespace: (type, reason, note).
    pub async fn events(&self, name: &str) -> Result<Vec<(String, String, String)>> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut out = vec![];
        for e in api.list(&ListParams::default()).await? {
            if e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name) {
                out.push((e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default()));
            }
        }
        Ok(out)
    }

    /// SIGKILLs the `container` of pod `pod` through the node's containerd (TRADESTORE_E2E_CTR).
    pub async fn sigkill_container(&self, pod: &Pod, container: &str) -> Result<()> {
        self.ctr_task(pod, container, &["kill", "-s", "SIGKILL"]).await
    }

    /// Runs `ctr -n k8s.io tasks <args> <container id>` against the node's containerd
    /// (`TRADESTORE_E2E_CTR`), e.g. `kill -s SIGKILL`, `pause`, `resume`.
    pub async fn ctr_task(&self, pod: &Pod, container: &str, args: &[&str]) -> Result<()> {
        let id = container_id(pod, container).context("container has no id yet")?;
        if self.settings.ctr.is_empty() {
            bail!(
                "cannot reach the node's containerd: set TRADESTORE_E2E_CTR (e.g. `ctr --address SOCK` or \
                 `docker exec NODE ctr`) or TRADESTORE_E2E_CONTAINERD_SOCK"
            );
        }
        // `{node}` in the prefix: the pod's node (several nodes, e.g. `docker exec {node} ctr` on kind).
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let ctr: Vec<String> = self.settings.ctr.iter().map(|a| a.replace("{node}", &node)).collect();
        let mut cmd = tokio::process::Command::new(&ctr[0]);
        cmd.args(&ctr[1..]).args(["-n", "k8s.io", "tasks"]).args(args).arg(&id);
        let out = cmd.output().await.context("running ctr")?;
        if !out.status.success() {
            bail!("ctr tasks {} {id}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        say(format!("ctr tasks {} on container {container} ({id:.12}) of pod {}", args.join(" "), pod.name_any()));
        Ok(())
    }
}

fn container_statuses(pod: &Pod) -> Vec<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()
        .map(|s| {
            s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten()).cloned().collect()
        })
        .unwrap_or_default()
}

/// The runtime id (without the `containerd://` prefix) of `container` in the pod.
pub fn container_id(pod: &Pod, container: &str) -> Option<String> {
    let id = container_statuses(pod).into_iter().find(|c| c.name == container)?.container_id?;
    Some(id.split("://").nth(1)?.to_string())
}

/// Exit code of the previous run of `container`, if it terminated.
pub fn last_exit_code(pod: &Pod, container: &str) -> Option<i32> {
    let c = container_statuses(pod).into_iter().find(|c| c.name == container)?;
    Some(c.last_state?.terminated?.exit_code)
}

/// Restart count of `container` in the pod (regular or native-sidecar init container).
pub fn restart_count(pod: &Pod, container: &str) -> i32 {
    container_statuses(pod).into_iter().find(|c| c.name == container).map(|c| c.restart_count).unwrap_or(0)
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn phase(ts: &DynamicObject) -> String {
    ts.data.pointer("/status/phase").and_then(Value::as_str).unwrap_or("").to_string()
}

pub fn condition(ts: &DynamicObject, type_: &str) -> Option<Value> {
    ts.data.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == type_).cloned()
}

/// JSON merge of `patch` into `base` (objects merged recursively, everything else replaced).
pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// HTTP client of one store's sidecar, through its Service.
pub struct Sidecar {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Sidecar {
    /// `POST /v1/trades`; returns the stored trade (acknowledged: durable).
    pub async fn write(&self, id: &str, symbol: &str, qty: f64, price: f64) -> Result<Value> {
        let body = json!({"id": id, "symbol": symbol, "side": "buy", "quantity": qty, "price": price});
        let resp = self
            .http
            .post(format!("{}/v1/trades", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {}/v1/trades", self.base))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.as_u16() != 201 {
            bail!("POST /v1/trades {id}: HTTP {status}: {v}");
        }
        Ok(v)
    }

    /// Writes `n` trades `<prefix>-<i>` and returns their ids (each acknowledged with 201).
    pub async fn write_many(&self, prefix: &str, symbol: &str, n: usize) -> Result<Vec<String>> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("{prefix}-{i}");
            self.write(&id, symbol, 1.0 + i as f64, 100.0 + i as f64 / 4.0).await?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// `GET /v1/trades/{id}`: `None` on 404.
    pub async fn get(&self, id: &str) -> Result<Option<Value>> {
        let resp = self.http.get(format!("{}/v1/trades/{id}", self.base)).bearer_auth(&self.token).send().await?;
        match resp.status().as_u16() {
            200 => Ok(Some(resp.json().await?)),
            404 => Ok(None),
            s => bail!("GET /v1/trades/{id}: HTTP {s}"),
        }
    }

    /// Every id must be readable with its symbol; returns how many were checked.
    pub async fn check_all(&self, ids: &[String], symbol: &str) -> Result<usize> {
        for id in ids {
            let t = self.get(id).await?.with_context(|| format!("acknowledged trade {id} is missing"))?;
            if t["symbol"] != symbol {
                bail!("trade {id}: symbol {} != {symbol}", t["symbol"]);
            }
        }
        Ok(ids.len())
    }

    /// `GET /v1/state/{symbol}`.
    pub async fn state(&self, symbol: &str) -> Result<Value> {
        let resp = self.http.get(format!("{}/v1/state/{symbol}", self.base)).bearer_auth(&self.token).send().await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET /v1/state/{symbol}: HTTP {status}");
        }
        Ok(resp.json().await?)
    }

    /// `GET /v1/status` (the sidecar's own report: `last_seq`, `last_snapshot`, `sync`, …).
    pub async fn status(&self) -> Result<Value> {
        self.get_json("/v1/status").await
    }

    /// `GET /v1/snapshots`: the manifests, oldest first (a bare list, or `{"snapshots": [...]}`).
    pub async fn snapshots(&self) -> Result<Vec<Value>> {
        let v = self.get_json("/v1/snapshots").await?;
        let list = if v.is_array() { v } else { v["snapshots"].clone() };
        list.as_array().cloned().with_context(|| format!("GET /v1/snapshots: not a list: {list}"))
    }

    async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {path}: HTTP {status}");
        }
        Ok(resp.json().await?)
    }

    /// Waits until the Service answers `/readyz` with 200.
    pub async fn wait_serving(&self, timeout: Duration) -> Result<()> {
        wait_for(&format!("{} serving", self.base), timeout, Duration::from_millis(300), || async {
            let r = self.http.get(format!("{}/readyz", self.base)).send().await?;
            if r.status().is_success() { Ok(Some(())) } else { Err(anyhow!("/readyz HTTP {}", r.status())) }
        })
        .await
    }
}
