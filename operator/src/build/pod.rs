//! The store's pod: the sidecar container (probes, mounts, secrets as env, lock-down), the user
//! containers beside it, and the volumes.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, LocalObjectReference, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext,
    PodSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use tradestore_api::wire;
use tradestore_api::wire::mount::{
    BACKUP_DIR, COMMIT_LOG_DIR, CONFIG_DIR, CONFIG_FILE, CONFIG_PATH, DATA_DIR, TMP_DIR, TOKEN_DIR, TOKEN_FILE,
};

use super::owner_ref;
use super::pod_hash::pod_spec_hash;
use crate::crd::{SecretKeyRef, TradeStore, TradeStoreSpec};
use crate::names::{
    SIDECAR_CONTAINER, SPEC_HASH_ANNOTATION, backup_claim, commit_log_pvc_name, config_map_name, labels, pod_name,
    pvc_name, token_secret_name,
};
use crate::sidecar::PORT;

/// Path of the sidecar binary in its image.
const SIDECAR_BINARY: &str = "/usr/local/bin/sidecar";
/// Extra seconds of termination grace on top of the sidecar's own shutdown grace.
const GRACE_MARGIN_SECONDS: i64 = 10;
/// CPU request of the sidecar when `spec.resources` is unset: enough for the writer and a few
/// readers at rest.
pub const DEFAULT_CPU_REQUEST: &str = "100m";
/// Memory request when `spec.resources` is unset: DuckDB's buffer pool and the hot-read cache of
/// a small store.
pub const DEFAULT_MEMORY_REQUEST: &str = "256Mi";

/// Requests without limits: the pod is Burstable, not BestEffort (the first to be evicted under
/// node pressure), and the sidecar may still use what the node has spare.
fn default_resources() -> ResourceRequirements {
    let requests = [("cpu", DEFAULT_CPU_REQUEST), ("memory", DEFAULT_MEMORY_REQUEST)];
    ResourceRequirements {
        requests: Some(requests.into_iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()),
        ..ResourceRequirements::default()
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
fn sidecar_env(spec: &TradeStoreSpec) -> Vec<EnvVar> {
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
            env.push(secret_ref_env(wire::CLICKHOUSE_PASSWORD_ENV, p));
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
fn sidecar_container(ts: &TradeStore) -> Container {
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
        VolumeMount { name: "tmp".into(), mount_path: TMP_DIR.into(), ..VolumeMount::default() },
    ];
    if s.commit_log_storage.is_some() {
        mounts.push(VolumeMount {
            name: "commit-log".into(),
            mount_path: COMMIT_LOG_DIR.into(),
            ..VolumeMount::default()
        });
    }
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
        resources: Some(s.resources.clone().unwrap_or_else(default_resources)),
        // Unresponsive for `unresponsiveSeconds` → restart.
        liveness_probe: Some(http_probe(
            wire::HEALTHZ_PATH,
            p.period_seconds,
            p.timeout_seconds,
            div_ceil(p.unresponsive_seconds, p.period_seconds).max(1),
        )),
        readiness_probe: Some(http_probe(
            wire::READYZ_PATH,
            p.period_seconds,
            p.timeout_seconds,
            p.readiness_failure_threshold,
        )),
        // Start-up (WAL replay, migrations) may take longer than the liveness budget.
        startup_probe: Some(http_probe(
            wire::HEALTHZ_PATH,
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
    if !env.iter().any(|e| e.name == wire::TOKEN_ENV) {
        env.push(secret_env(wire::TOKEN_ENV, &token_secret_name(ts), TOKEN_FILE));
    }
    c.env = Some(env);
    c
}

/// The store's pod. With user containers and `nativeSidecar`, the sidecar is a native sidecar
/// (an init container with `restartPolicy: Always`): it starts before the app and stops after it.
/// Without user containers it is the pod's only (regular) container.
pub fn pod(ts: &TradeStore) -> Pod {
    let s = &ts.spec;
    let (init_containers, containers) = containers(ts);
    Pod {
        metadata: pod_metadata(ts),
        spec: Some(PodSpec {
            init_containers,
            containers,
            volumes: Some(volumes(ts)),
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(s.shutdown_grace_seconds + GRACE_MARGIN_SECONDS),
            security_context: Some(pod_security_context(s.run_as_user)),
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

/// The user's pod labels and annotations under the operator's own (which win): the store labels,
/// the spec hash, and the sidecar as `kubectl`'s default container.
fn pod_metadata(ts: &TradeStore) -> ObjectMeta {
    let extra = ts.spec.pod_metadata.as_ref();
    let mut pod_labels = extra.map(|m| m.labels.clone()).unwrap_or_default();
    pod_labels.extend(labels(ts));
    let mut annotations = extra.map(|m| m.annotations.clone()).unwrap_or_default();
    annotations.insert(SPEC_HASH_ANNOTATION.into(), pod_spec_hash(ts));
    annotations.insert("kubectl.kubernetes.io/default-container".into(), SIDECAR_CONTAINER.into());
    ObjectMeta {
        name: Some(pod_name(ts)),
        namespace: ts.namespace(),
        labels: Some(pod_labels),
        annotations: Some(annotations),
        owner_references: Some(vec![owner_ref(ts)]),
        ..ObjectMeta::default()
    }
}

/// (init containers, containers): where the sidecar goes depends on the user containers.
fn containers(ts: &TradeStore) -> (Option<Vec<Container>>, Vec<Container>) {
    let mut sidecar = sidecar_container(ts);
    let user: Vec<Container> = ts.spec.containers.iter().map(|c| user_container(ts, c)).collect();
    if user.is_empty() {
        (None, vec![sidecar])
    } else if ts.spec.native_sidecar {
        sidecar.restart_policy = Some("Always".into());
        (Some(vec![sidecar]), user)
    } else {
        let mut all = vec![sidecar];
        all.extend(user);
        (None, all)
    }
}

fn pod_security_context(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..PodSecurityContext::default()
    }
}

fn claim_volume(name: &str, claim: String) -> Volume {
    Volume {
        name: name.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim, read_only: Some(false) }),
        ..Volume::default()
    }
}

/// Data, commit-log and backup claims, the config file, the token, and `/tmp`.
fn volumes(ts: &TradeStore) -> Vec<Volume> {
    let mut volumes = vec![
        claim_volume("data", pvc_name(ts)),
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(ts),
                items: Some(vec![KeyToPath { key: CONFIG_FILE.into(), path: CONFIG_FILE.into(), mode: None }]),
                default_mode: Some(0o444),
                optional: Some(false),
            }),
            ..Volume::default()
        },
        Volume {
            name: "token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(token_secret_name(ts)),
                items: Some(vec![KeyToPath { key: TOKEN_FILE.into(), path: TOKEN_FILE.into(), mode: None }]),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
        },
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
    ];
    if ts.spec.commit_log_storage.is_some() {
        volumes.push(claim_volume("commit-log", commit_log_pvc_name(ts)));
    }
    if let Some(claim) = backup_claim(&ts.spec) {
        volumes.push(claim_volume("backup", claim.into()));
    }
    volumes
}
