//! Pure builders of the objects a `TradeStore` owns: pod, data PVC, Service, ConfigMap, token
//! Secret. No I/O here; everything is unit-tested from fixture specs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, LocalObjectReference, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe, SeccompProfile, Secret,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::{
    BackupRetention, BootstrapSpec, ClickHouseSpec, IntegrityCheckSpec, RedisSpec, SecretKeyRef, TradeStore,
    TradeStoreSpec,
};
use crate::sidecar_config::{
    BACKUP_DIR, CONFIG_DIR, CONFIG_KEY, CONFIG_PATH, DATA_DIR, PORT, SidecarConfig, TOKEN_DIR, TOKEN_KEY,
};

/// Label naming the store a pod (or any owned object) belongs to; also the Service selector.
pub const STORE_LABEL: &str = "tradestore.io/store";
/// Annotation on the pod: hash of everything that shapes it.
pub const SPEC_HASH_ANNOTATION: &str = "tradestore.io/pod-spec-hash";
/// Annotation on the TradeStore: change its value to restart the pod.
pub const RESTART_ANNOTATION: &str = "tradestore.io/restart";
/// Annotation on the TradeStore: change its value to clear a fence set after too many restarts.
pub const CLEAR_FENCE_ANNOTATION: &str = "tradestore.io/clear-fence";
/// Annotation on the TradeStore: each new value makes the operator ask the sidecar for a snapshot.
pub const BACKUP_REQUEST_ANNOTATION: &str = "tradestore.io/backup-request";
/// Name of the sidecar container.
pub const SIDECAR_CONTAINER: &str = "sidecar";
/// Path of the sidecar binary in its image.
pub const SIDECAR_BINARY: &str = "/usr/local/bin/sidecar";
/// Extra seconds of termination grace on top of the sidecar's own shutdown grace.
pub const GRACE_MARGIN_SECONDS: i64 = 10;

/// Name of the pod (one fixed name per store: the API server itself guarantees there is never a
/// second pod of the same store).
pub fn pod_name(ts: &TradeStore) -> String {
    ts.name_any()
}
/// Name of the data PVC.
pub fn pvc_name(ts: &TradeStore) -> String {
    format!("{}-data", ts.name_any())
}
/// Name of the Service.
pub fn service_name(ts: &TradeStore) -> String {
    ts.name_any()
}
/// Name of the ConfigMap holding `sidecar.yaml`.
pub fn config_map_name(ts: &TradeStore) -> String {
    format!("{}-config", ts.name_any())
}
/// Name of the Secret holding the API token (generated unless `spec.auth.tokenSecretName`).
pub fn token_secret_name(ts: &TradeStore) -> String {
    ts.spec.auth.token_secret_name.clone().unwrap_or_else(|| generated_token_secret_name(ts))
}
/// Name of the Secret the operator generates.
pub fn generated_token_secret_name(ts: &TradeStore) -> String {
    format!("{}-token", ts.name_any())
}

/// Labels every owned object carries.
pub fn labels(ts: &TradeStore) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "tradestore".to_string()),
        ("app.kubernetes.io/instance".to_string(), ts.name_any()),
        ("app.kubernetes.io/managed-by".to_string(), "tradestore-operator".to_string()),
        (STORE_LABEL.to_string(), ts.name_any()),
    ])
}

/// Selector of the store's pod.
pub fn selector(ts: &TradeStore) -> BTreeMap<String, String> {
    BTreeMap::from([(STORE_LABEL.to_string(), ts.name_any())])
}

fn owner_ref(ts: &TradeStore) -> OwnerReference {
    ts.controller_owner_ref(&()).expect("a TradeStore read from the API has a uid")
}

fn meta(ts: &TradeStore, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: ts.namespace(),
        labels: Some(labels(ts)),
        owner_references: Some(vec![owner_ref(ts)]),
        ..ObjectMeta::default()
    }
}

/// The inputs that shape the pod. Their hash decides when the pod is replaced: it covers the spec
/// fields the pod is built from and the restart annotation, not the operator's own code, so
/// upgrading the operator alone never restarts a store. New spec fields must be added here as
/// `Option`s skipped when unset, so existing hashes stay stable (a golden test pins one).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodInputs<'a> {
    spec: PodSpecInputs<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart: Option<&'a str>,
    token_secret: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecInputs<'a> {
    image: &'a str,
    image_pull_policy: &'a Option<crate::crd::PullPolicy>,
    image_pull_secrets: &'a Vec<String>,
    resources: &'a Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    duckdb: &'a crate::crd::DuckdbSpec,
    limits: &'a crate::crd::LimitsSpec,
    probes: &'a crate::crd::ProbesSpec,
    shutdown_grace_seconds: i64,
    log: &'a crate::crd::LogSpec,
    protect_reads: bool,
    containers: &'a Vec<Container>,
    native_sidecar: bool,
    pod_metadata: &'a Option<crate::crd::PodMetadata>,
    node_selector: &'a BTreeMap<String, String>,
    tolerations: &'a Vec<k8s_openapi::api::core::v1::Toleration>,
    service_account_name: &'a Option<String>,
    priority_class_name: &'a Option<String>,
    run_as_user: i64,
    // Added with the backup/sync issue: skipped when unset, so older hashes stay valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<&'a RedisSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clickhouse: Option<&'a ClickHouseSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<BackupInputs<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    integrity_check: Option<&'a IntegrityCheckSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap: Option<&'a BootstrapSpec>,
}

/// The backup settings the pod is built from (`finalSnapshotOnDelete` only matters to the
/// operator, so changing it restarts nothing).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BackupInputs<'a> {
    schedule: &'a str,
    retention: &'a BackupRetention,
    target: &'a crate::crd::BackupTarget,
}

/// Hash (hex sha256, 16 chars) of everything that shapes the pod.
pub fn pod_spec_hash(ts: &TradeStore) -> String {
    let s: &TradeStoreSpec = &ts.spec;
    let inputs = PodInputs {
        spec: PodSpecInputs {
            image: &s.image,
            image_pull_policy: &s.image_pull_policy,
            image_pull_secrets: &s.image_pull_secrets,
            resources: &s.resources,
            duckdb: &s.duckdb,
            limits: &s.limits,
            probes: &s.probes,
            shutdown_grace_seconds: s.shutdown_grace_seconds,
            log: &s.log,
            protect_reads: s.auth.protect_reads,
            containers: &s.containers,
            native_sidecar: s.native_sidecar,
            pod_metadata: &s.pod_metadata,
            node_selector: &s.node_selector,
            tolerations: &s.tolerations,
            service_account_name: &s.service_account_name,
            priority_class_name: &s.priority_class_name,
            run_as_user: s.run_as_user,
            redis: s.redis.as_ref(),
            clickhouse: s.clickhouse.as_ref(),
            backup: s.backup.as_ref().map(|b| BackupInputs {
                schedule: &b.schedule,
                retention: &b.retention,
                target: &b.target,
            }),
            integrity_check: s.integrity_check.as_ref(),
            bootstrap: s.bootstrap.as_ref(),
        },
        restart: ts.annotations().get(RESTART_ANNOTATION).map(String::as_str),
        token_secret: token_secret_name(ts),
    };
    let bytes = serde_json::to_vec(&inputs).expect("pod inputs serialize");
    let digest = Sha256::digest(&bytes);
    hex::encode(&digest[..8])
}

/// The ConfigMap with the sidecar's configuration file.
pub fn config_map(ts: &TradeStore) -> ConfigMap {
    ConfigMap {
        metadata: meta(ts, config_map_name(ts)),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), SidecarConfig::from_spec(&ts.spec).to_yaml())])),
        ..ConfigMap::default()
    }
}

/// The generated API-token Secret. Created once (never applied again), so the token is never
/// rotated by accident.
pub fn token_secret(ts: &TradeStore, token: &str) -> Secret {
    Secret {
        metadata: meta(ts, generated_token_secret_name(ts)),
        string_data: Some(BTreeMap::from([(TOKEN_KEY.to_string(), token.to_string())])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// A random API token: 48 alphanumeric characters.
pub fn generate_token() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(48).map(char::from).collect()
}

/// The data PVC as first created.
pub fn pvc(ts: &TradeStore) -> PersistentVolumeClaim {
    let st = &ts.spec.storage;
    PersistentVolumeClaim {
        metadata: meta(ts, pvc_name(ts)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![st.access_mode.as_str().to_string()]),
            storage_class_name: st.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), st.size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The Service in front of the sidecar's API (ready pods only).
pub fn service(ts: &TradeStore) -> Service {
    Service {
        metadata: meta(ts, service_name(ts)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(ts)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn http_probe(path: &str, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

fn div_ceil(a: i32, b: i32) -> i32 {
    (a + b - 1) / b
}

fn container_security_context(uid: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..SecurityContext::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: key.into(), optional: Some(false) }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn secret_ref_env(name: &str, r: &SecretKeyRef) -> EnvVar {
    secret_env(name, &r.name, &r.key)
}

/// The sidecar's secrets, as environment variables from Secrets (never in the ConfigMap):
/// `TRADESTORE_REDIS__URL` (overrides `redis.url`), `TRADESTORE_CLICKHOUSE__URL`,
/// `TRADESTORE_CLICKHOUSE__USER`, `TRADESTORE_CLICKHOUSE_PASSWORD`, and `AWS_ACCESS_KEY_ID` /
/// `AWS_SECRET_ACCESS_KEY` from the S3 credentials Secret (keys of the same names).
pub fn sidecar_env(spec: &TradeStoreSpec) -> Vec<EnvVar> {
    let mut env = Vec::new();
    if let Some(r) = &spec.redis {
        env.push(secret_ref_env("TRADESTORE_REDIS__URL", &r.url_secret_ref));
    }
    if let Some(c) = &spec.clickhouse {
        env.push(secret_ref_env("TRADESTORE_CLICKHOUSE__URL", &c.url_secret_ref));
        if let Some(u) = &c.user_secret_ref {
            env.push(secret_ref_env("TRADESTORE_CLICKHOUSE__USER", u));
        }
        if let Some(p) = &c.password_secret_ref {
            env.push(secret_ref_env("TRADESTORE_CLICKHOUSE_PASSWORD", p));
        }
    }
    if let Some(s3) = spec.backup.as_ref().and_then(|b| b.target.s3.as_ref()) {
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            env.push(secret_env(key, &s3.credentials_secret_name, key));
        }
    }
    env
}

/// The sidecar container.
pub fn sidecar_container(ts: &TradeStore) -> Container {
    let s = &ts.spec;
    let p = &s.probes;
    let env = sidecar_env(s);
    let mut mounts = vec![
        VolumeMount { name: "data".into(), mount_path: DATA_DIR.into(), ..VolumeMount::default() },
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "token".into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
    ];
    if backup_claim(s).is_some() {
        mounts.push(VolumeMount { name: "backup".into(), mount_path: BACKUP_DIR.into(), ..VolumeMount::default() });
    }
    Container {
        name: SIDECAR_CONTAINER.into(),
        image: Some(s.image.clone()),
        image_pull_policy: s.image_pull_policy.map(|p| p.as_str().to_string()),
        command: Some(vec![SIDECAR_BINARY.into()]),
        args: Some(vec!["--config".into(), CONFIG_PATH.into(), "serve".into()]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: s.resources.clone(),
        // Unresponsive for `unresponsiveSeconds` → restart.
        liveness_probe: Some(http_probe(
            "/healthz",
            p.period_seconds,
            p.timeout_seconds,
            div_ceil(p.unresponsive_seconds, p.period_seconds).max(1),
        )),
        readiness_probe: Some(http_probe(
            "/readyz",
            p.period_seconds,
            p.timeout_seconds,
            p.readiness_failure_threshold,
        )),
        // Start-up (WAL replay, migrations) may take longer than the liveness budget.
        startup_probe: Some(http_probe(
            "/healthz",
            p.period_seconds,
            p.timeout_seconds,
            div_ceil(p.startup_seconds, p.period_seconds).max(1),
        )),
        env: (!env.is_empty()).then_some(env),
        volume_mounts: Some(mounts),
        security_context: Some(container_security_context(s.run_as_user)),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// A user container with the sidecar's address and token injected (unless it sets them itself).
fn user_container(ts: &TradeStore, c: &Container) -> Container {
    let mut c = c.clone();
    let mut env = c.env.take().unwrap_or_default();
    if !env.iter().any(|e| e.name == "TRADESTORE_URL") {
        env.push(EnvVar {
            name: "TRADESTORE_URL".into(),
            value: Some(format!("http://127.0.0.1:{PORT}")),
            ..EnvVar::default()
        });
    }
    if !env.iter().any(|e| e.name == "TRADESTORE_API_TOKEN") {
        env.push(secret_env("TRADESTORE_API_TOKEN", &token_secret_name(ts), TOKEN_KEY));
    }
    c.env = Some(env);
    c
}

/// The backup volume's claim (`spec.backup.target.volume.claimName`), if any.
pub fn backup_claim(spec: &TradeStoreSpec) -> Option<&str> {
    spec.backup.as_ref().and_then(|b| b.target.volume.as_ref()).map(|v| v.claim_name.as_str())
}

/// The store's pod. With user containers and `nativeSidecar`, the sidecar is a native sidecar
/// (an init container with `restartPolicy: Always`): it starts before the app and stops after it.
/// Without user containers it is the pod's only (regular) container.
pub fn pod(ts: &TradeStore) -> Pod {
    let s = &ts.spec;
    let hash = pod_spec_hash(ts);

    let mut pod_labels = s.pod_metadata.as_ref().map(|m| m.labels.clone()).unwrap_or_default();
    pod_labels.extend(labels(ts));
    let mut annotations = s.pod_metadata.as_ref().map(|m| m.annotations.clone()).unwrap_or_default();
    annotations.insert(SPEC_HASH_ANNOTATION.into(), hash);
    annotations.insert("kubectl.kubernetes.io/default-container".into(), SIDECAR_CONTAINER.into());

    let mut sidecar = sidecar_container(ts);
    let user: Vec<Container> = s.containers.iter().map(|c| user_container(ts, c)).collect();
    let (init_containers, containers) = if user.is_empty() {
        (None, vec![sidecar])
    } else if s.native_sidecar {
        sidecar.restart_policy = Some("Always".into());
        (Some(vec![sidecar]), user)
    } else {
        let mut all = vec![sidecar];
        all.extend(user);
        (None, all)
    };

    let mut volumes = vec![
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc_name(ts),
                read_only: Some(false),
            }),
            ..Volume::default()
        },
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(ts),
                items: Some(vec![KeyToPath { key: CONFIG_KEY.into(), path: CONFIG_KEY.into(), mode: None }]),
                default_mode: Some(0o444),
                optional: Some(false),
            }),
            ..Volume::default()
        },
        Volume {
            name: "token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(token_secret_name(ts)),
                items: Some(vec![KeyToPath { key: TOKEN_KEY.into(), path: TOKEN_KEY.into(), mode: None }]),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
        },
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
    ];
    if let Some(claim) = backup_claim(s) {
        volumes.push(Volume {
            name: "backup".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: Some(false),
            }),
            ..Volume::default()
        });
    }

    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(ts)),
            namespace: ts.namespace(),
            labels: Some(pod_labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_ref(ts)]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            init_containers,
            containers,
            volumes: Some(volumes),
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(s.shutdown_grace_seconds + GRACE_MARGIN_SECONDS),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(s.run_as_user),
                run_as_group: Some(s.run_as_user),
                fs_group: Some(s.run_as_user),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
                ..PodSecurityContext::default()
            }),
            service_account_name: s.service_account_name.clone(),
            automount_service_account_token: Some(s.service_account_name.is_some()),
            enable_service_links: Some(false),
            image_pull_secrets: (!s.image_pull_secrets.is_empty())
                .then(|| s.image_pull_secrets.iter().map(|n| LocalObjectReference { name: n.clone() }).collect()),
            node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
            tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
            priority_class_name: s.priority_class_name.clone(),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}
