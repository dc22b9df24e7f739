//! Object builders, sidecar config and validation, from fixture specs (tests/fixtures) against
//! golden files (tests/golden). Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test`.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use tradestore_api::config::{Config, LogFormat};
use tradestore_operator::build;
use tradestore_operator::crd::TradeStore;
use tradestore_operator::names::{RESTART_ANNOTATION, SPEC_HASH_ANNOTATION};
use tradestore_operator::sidecar::config;
use tradestore_operator::validate::{check_commit_log_layout, parse_quantity, validate};

/// What validation finds wrong, one text per problem (none: valid).
fn problems(ts: &TradeStore) -> Vec<String> {
    match validate(ts) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.0.iter().map(ToString::to_string).collect(),
    }
}

/// The specs under tests/fixtures, each with a golden file under tests/golden.
const FIXTURES: [&str; 6] =
    ["minimal", "with-app", "classic-sidecar", "backup-volume", "s3-endpoint", "commit-log-volume"];

fn dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join(sub)
}

fn fixture(name: &str) -> TradeStore {
    let text = std::fs::read_to_string(dir("fixtures").join(format!("{name}.yaml"))).expect("fixture");
    serde_saphyr::from_str(&text).expect("fixture parses as a TradeStore")
}

fn yaml<T: serde::Serialize>(v: &T) -> String {
    serde_saphyr::to_string(v).expect("yaml")
}

fn check_golden(name: &str, actual: &str) {
    let path = dir("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run UPDATE_GOLDEN=1 cargo test", path.display()));
    assert_eq!(expected, actual, "{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)");
}

/// A change applied to a fixture in table-driven tests.
type Edit<T> = Box<dyn Fn(&mut T)>;

fn sidecar(pod: &Pod) -> k8s_openapi::api::core::v1::Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == "sidecar")
        .cloned()
        .expect("sidecar container")
}

#[test]
fn golden_objects_for_every_fixture() {
    for name in FIXTURES {
        let ts = fixture(name);
        let mut out = String::new();
        out += &format!("# pod\n{}", yaml(&build::pod(&ts)));
        out += &format!("---\n# pvc\n{}", yaml(&build::pvc(&ts)));
        if let Some(log) = build::commit_log_pvc(&ts) {
            out += &format!("---\n# commit-log pvc\n{}", yaml(&log));
        }
        out += &format!("---\n# service\n{}", yaml(&build::service(&ts)));
        out += &format!("---\n# configmap\n{}", yaml(&build::config_map(&ts)));
        out += &format!("---\n# secret\n{}", yaml(&build::token_secret(&ts, "fixed-test-token-0123456789")));
        check_golden(&format!("{name}.yaml"), &out);
    }
}

#[test]
fn fixtures_are_valid() {
    for name in FIXTURES {
        assert_eq!(problems(&fixture(name)), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn minimal_store_runs_the_sidecar_as_the_only_container() {
    let ts = fixture("minimal");
    let pod = build::pod(&ts);
    let spec = pod.spec.as_ref().unwrap();
    assert!(spec.init_containers.is_none());
    assert_eq!(spec.containers.len(), 1);
    let c = &spec.containers[0];
    assert_eq!(c.name, "sidecar");
    assert_eq!(c.restart_policy, None);
    assert_eq!(c.command.as_deref(), Some(&["/usr/local/bin/sidecar".to_string()][..]));
    assert_eq!(
        c.args.as_deref(),
        Some(&["--config".to_string(), "/etc/tradestore/sidecar.yaml".to_string(), "serve".to_string()][..])
    );
    assert_eq!(pod.metadata.name.as_deref(), Some("minimal"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    // shutdown grace 25 s + 10 s margin
    assert_eq!(spec.termination_grace_period_seconds, Some(35));
}

#[test]
fn the_sidecar_requests_resources_unless_the_spec_sets_them() {
    // Unset: default requests, no limits (Burstable, not BestEffort).
    let c = sidecar(&build::pod(&fixture("minimal")));
    let r = c.resources.expect("resources");
    let requests = r.requests.expect("requests");
    assert_eq!(requests["cpu"].0, build::DEFAULT_CPU_REQUEST);
    assert_eq!(requests["memory"].0, build::DEFAULT_MEMORY_REQUEST);
    assert!(r.limits.is_none());
    // Set: exactly the spec's.
    let ts = fixture("with-app");
    assert_eq!(sidecar(&build::pod(&ts)).resources, ts.spec.resources);
}

#[test]
fn user_containers_make_the_sidecar_a_native_sidecar() {
    let ts = fixture("with-app");
    let pod = build::pod(&ts);
    let spec = pod.spec.as_ref().unwrap();
    let init = spec.init_containers.as_ref().expect("init containers");
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].name, "sidecar");
    assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.containers.len(), 1);
    let app = &spec.containers[0];
    assert_eq!(app.name, "app");
    let env = app.env.as_ref().unwrap();
    assert!(env.iter().any(|e| e.name == "MODE"));
    assert!(env.iter().any(|e| e.name == "TRADESTORE_URL" && e.value.as_deref() == Some("http://127.0.0.1:8080")));
    let token = env.iter().find(|e| e.name == "TRADESTORE_API_TOKEN").unwrap();
    let sel = token.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!((sel.name.as_str(), sel.key.as_str()), ("desk-a-token", "token"));
    assert_eq!(spec.termination_grace_period_seconds, Some(50));
    assert_eq!(spec.service_account_name.as_deref(), Some("trading-app"));
    assert_eq!(pod.labels().get("team").map(String::as_str), Some("desk-a"));
    assert_eq!(pod.labels().get("tradestore.io/store").map(String::as_str), Some("desk-a"));
}

#[test]
fn classic_mode_keeps_user_env_and_uses_the_given_token_secret() {
    let ts = fixture("classic-sidecar");
    let pod = build::pod(&ts);
    let spec = pod.spec.as_ref().unwrap();
    assert!(spec.init_containers.is_none());
    assert_eq!(spec.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["sidecar", "app"]);
    let env = spec.containers[1].env.as_ref().unwrap();
    let urls: Vec<_> = env.iter().filter(|e| e.name == "TRADESTORE_URL").collect();
    assert_eq!(urls.len(), 1);
    assert_eq!(urls[0].value.as_deref(), Some("http://localhost:8080"));
    let token_vol = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "token").unwrap();
    assert_eq!(token_vol.secret.as_ref().unwrap().secret_name.as_deref(), Some("my-token"));
    assert_eq!(build::pvc(&ts).spec.unwrap().access_modes.unwrap(), ["ReadWriteOnce"]);
}

#[test]
fn sidecar_is_locked_down() {
    let pod = build::pod(&fixture("minimal"));
    let psc = pod.spec.as_ref().unwrap().security_context.clone().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.fs_group, Some(65532));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let sc = sidecar(&pod).security_context.unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let mounts: Vec<_> =
        sidecar(&pod).volume_mounts.unwrap().into_iter().map(|m| (m.name, m.mount_path, m.read_only)).collect();
    assert!(mounts.contains(&("data".into(), "/var/lib/tradestore".into(), None)));
    assert!(mounts.contains(&("tmp".into(), "/tmp".into(), None)));
    assert!(mounts.contains(&("config".into(), "/etc/tradestore".into(), Some(true))));
    assert!(mounts.contains(&("token".into(), "/var/run/secrets/tradestore".into(), Some(true))));
    assert_eq!(pod.spec.unwrap().automount_service_account_token, Some(false));
}

#[test]
fn default_probes_restart_after_ten_unresponsive_seconds() {
    let c = sidecar(&build::pod(&fixture("minimal")));
    let live = c.liveness_probe.unwrap();
    assert_eq!(live.http_get.unwrap().path.as_deref(), Some("/healthz"));
    assert_eq!(live.period_seconds, Some(5));
    assert_eq!(live.failure_threshold, Some(2)); // 2 × 5 s = 10 s unresponsive → restart
    let ready = c.readiness_probe.unwrap();
    assert_eq!(ready.http_get.unwrap().path.as_deref(), Some("/readyz"));
    assert_eq!(ready.period_seconds, Some(5));
    let startup = c.startup_probe.unwrap();
    assert_eq!(startup.failure_threshold, Some(60)); // 300 s of start-up budget
    // custom: period 3, unresponsive 10 → ceil(10/3) = 4
    let c = sidecar(&build::pod(&fixture("with-app")));
    assert_eq!(c.liveness_probe.unwrap().failure_threshold, Some(4));
}

#[test]
fn every_object_is_owned_by_the_store() {
    let ts = fixture("minimal");
    let metas = [
        build::pod(&ts).metadata,
        build::pvc(&ts).metadata,
        build::service(&ts).metadata,
        build::config_map(&ts).metadata,
        build::token_secret(&ts, "x").metadata,
    ];
    for m in metas {
        let owners = m.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "TradeStore");
        assert_eq!(owners[0].api_version, "tradestore.io/v1alpha1");
        assert_eq!(owners[0].uid, "11111111-1111-1111-1111-111111111111");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(m.namespace.as_deref(), Some("trading"));
    }
}

#[test]
fn pod_hash_follows_what_shapes_the_pod() {
    let mut ts = fixture("minimal");
    // As the API server stored it before `duckdb.threads` lost its CRD default of 4: the
    // default was written into every object, so stored specs keep `threads: 4`.
    ts.spec.duckdb.threads = Some(4);
    let h = build::pod_spec_hash(&ts);
    // Pinned: an operator upgrade must not change the hash of an unchanged spec (that would
    // restart every store). Change this only together with a documented migration.
    assert_eq!(h, "c5aff79368e4eb59");
    let pod = build::pod(&ts);
    assert_eq!(pod.annotations().get(SPEC_HASH_ANNOTATION), Some(&h));

    let mut changed = ts.clone();
    changed.spec.image = "ghcr.io/example/tradestore-sidecar:0.1.1".into();
    assert_ne!(build::pod_spec_hash(&changed), h);

    let mut changed = ts.clone();
    changed.spec.duckdb.threads = Some(2);
    assert_ne!(build::pod_spec_hash(&changed), h);

    let mut restarted = ts.clone();
    restarted.annotations_mut().insert(RESTART_ANNOTATION.into(), "now".into());
    assert_ne!(build::pod_spec_hash(&restarted), h);

    // Not shaping the pod: stop/fence switches, volume size, restart policy, other annotations.
    let mut same = ts.clone();
    same.spec.stopped = true;
    same.spec.fenced = true;
    same.spec.storage.volume.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("5Gi".into());
    same.spec.restart_policy.max_restarts = 9;
    same.annotations_mut().insert("unrelated".into(), "x".into());
    same.annotations_mut().insert("tradestore.io/backup-request".into(), "x".into());
    assert_eq!(build::pod_spec_hash(&same), h);
}

#[test]
fn pod_hash_follows_backup_sync_integrity_and_restore_settings() {
    let ts = fixture("backup-volume");
    let h = build::pod_spec_hash(&ts);
    let changes: Vec<(&str, Edit<TradeStore>)> = vec![
        ("schedule", Box::new(|t| t.spec.backup.as_mut().unwrap().schedule = "0 0 * * *".into())),
        ("retention", Box::new(|t| t.spec.backup.as_mut().unwrap().retention.keep_last = 6)),
        (
            "target",
            Box::new(|t| t.spec.backup.as_mut().unwrap().target.volume.as_mut().unwrap().claim_name = "other".into()),
        ),
        ("redis secret", Box::new(|t| t.spec.redis.as_mut().unwrap().url_secret_ref.key = "url2".into())),
        ("redis prefix", Box::new(|t| t.spec.redis.as_mut().unwrap().key_prefix = None)),
        ("clickhouse password", Box::new(|t| t.spec.clickhouse.as_mut().unwrap().password_secret_ref = None)),
        ("integrity", Box::new(|t| t.spec.integrity_check.as_mut().unwrap().interval_seconds = 60)),
        ("bootstrap", Box::new(|t| t.spec.bootstrap = None)),
        ("no backup", Box::new(|t| t.spec.backup = None)),
    ];
    for (what, change) in changes {
        let mut changed = ts.clone();
        change(&mut changed);
        assert_ne!(build::pod_spec_hash(&changed), h, "{what} must roll the pod out");
    }
    // Only the operator acts on finalSnapshotOnDelete: no restart.
    let mut same = ts.clone();
    same.spec.backup.as_mut().unwrap().final_snapshot_on_delete = false;
    assert_eq!(build::pod_spec_hash(&same), h);
}

#[test]
fn secrets_reach_the_sidecar_as_secret_key_refs_only() {
    let ts = fixture("backup-volume");
    let env = sidecar(&build::pod(&ts)).env.expect("sidecar env");
    let refs: Vec<(String, String, String)> = env
        .iter()
        .map(|e| {
            assert!(e.value.is_none(), "{} must not be a literal", e.name);
            let r = e.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
            (e.name.clone(), r.name.clone(), r.key.clone())
        })
        .collect();
    let want = [
        ("TRADESTORE_REDIS__URL", "redis", "url"),
        ("TRADESTORE_CLICKHOUSE__URL", "clickhouse", "url"),
        ("TRADESTORE_CLICKHOUSE__USER", "clickhouse", "user"),
        ("TRADESTORE_CLICKHOUSE_PASSWORD", "clickhouse", "password"),
    ];
    let want: Vec<_> = want.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    assert_eq!(refs, want);
    let s3 = sidecar(&build::pod(&fixture("with-app"))).env.expect("sidecar env");
    let s3: Vec<_> = s3
        .iter()
        .map(|e| {
            let r = e.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
            (e.name.as_str(), r.name.as_str(), r.key.as_str())
        })
        .collect();
    assert_eq!(
        s3,
        [
            ("TRADESTORE_REDIS__URL", "redis", "url"),
            ("TRADESTORE_CLICKHOUSE__URL", "clickhouse", "url"),
            ("AWS_ACCESS_KEY_ID", "s3-creds", "AWS_ACCESS_KEY_ID"),
            ("AWS_SECRET_ACCESS_KEY", "s3-creds", "AWS_SECRET_ACCESS_KEY"),
        ]
    );
    assert!(sidecar(&build::pod(&fixture("minimal"))).env.is_none());
    // Nothing secret in the ConfigMap.
    let cm = build::config_map(&ts).data.unwrap()["sidecar.yaml"].clone();
    for secret_name in ["url", "password", "user:", "AWS"] {
        assert!(!cm.contains(secret_name), "{secret_name} in {cm}");
    }
}

#[test]
fn backup_volume_is_mounted_as_the_snapshot_directory() {
    let ts = fixture("backup-volume");
    let pod = build::pod(&ts);
    let vol = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap().iter().find(|v| v.name == "backup").cloned();
    let claim = vol.expect("backup volume").persistent_volume_claim.expect("a PVC volume");
    assert_eq!(claim.claim_name, "tradestore-backups");
    let mounts = sidecar(&pod).volume_mounts.unwrap();
    let m = mounts.iter().find(|m| m.name == "backup").expect("backup mount");
    assert_eq!(m.mount_path, "/var/lib/tradestore-backups");
    assert_eq!(m.read_only, None);
    // Only the sidecar mounts it.
    let app = &pod.spec.as_ref().unwrap().containers[0];
    assert!(app.volume_mounts.is_none());
    // No backup volume without a volume target.
    let pod = build::pod(&fixture("with-app"));
    assert!(pod.spec.unwrap().volumes.unwrap().iter().all(|v| v.name != "backup"));
}

#[test]
fn commit_log_volume_is_a_second_claim_mounted_as_the_log_directory() {
    let ts = fixture("commit-log-volume");
    let log = build::commit_log_pvc(&ts).expect("a commit-log claim");
    let data = build::pvc(&ts);
    assert_eq!(log.metadata.name.as_deref(), Some("fast-log-commit-log"));
    // Labels and owner as the data claim's; size and class its own.
    assert_eq!(log.metadata.labels, data.metadata.labels);
    assert_eq!(log.metadata.owner_references, data.metadata.owner_references);
    let spec = log.spec.unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOncePod"]);
    assert_eq!(spec.resources.unwrap().requests.unwrap()["storage"].0, "2Gi");
    // The data claim records where its commit log is.
    assert_eq!(
        data.annotations().get("tradestore.io/commit-log-claim").map(String::as_str),
        Some("fast-log-commit-log")
    );

    let pod = build::pod(&ts);
    let vol = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap().iter().find(|v| v.name == "commit-log").cloned();
    assert_eq!(vol.expect("commit-log volume").persistent_volume_claim.unwrap().claim_name, "fast-log-commit-log");
    let mounts = sidecar(&pod).volume_mounts.unwrap();
    let m = mounts.iter().find(|m| m.name == "commit-log").expect("commit-log mount");
    assert_eq!(m.mount_path, tradestore_api::wire::mount::COMMIT_LOG_DIR);
    assert_eq!(config::render(&ts.spec).commit_log_dir(), PathBuf::from(tradestore_api::wire::mount::COMMIT_LOG_DIR));

    // The volume shapes the pod; its size does not (as the data volume's does not).
    let h = build::pod_spec_hash(&ts);
    let mut grown = ts.clone();
    set_log_size(&mut grown, "4Gi");
    assert_eq!(build::pod_spec_hash(&grown), h);
    let mut without = ts.clone();
    without.spec.commit_log_storage = None;
    assert_ne!(build::pod_spec_hash(&without), h);

    // Without it: one claim, no annotation, the log on the data volume.
    let ts = fixture("minimal");
    assert!(build::commit_log_pvc(&ts).is_none());
    assert!(build::pvc(&ts).metadata.annotations.is_none());
    assert!(build::pod(&ts).spec.unwrap().volumes.unwrap().iter().all(|v| v.name != "commit-log"));
    assert_eq!(config::render(&ts.spec).commit_log_dir(), PathBuf::from("/var/lib/tradestore/log"));
}

#[test]
fn commit_log_volume_validation() {
    let cases: Vec<(&str, Edit<TradeStore>)> = vec![
        ("spec.commitLogStorage.size \"-1Gi\" is not a positive quantity", Box::new(|t| set_log_size(t, "-1Gi"))),
        ("spec.commitLogStorage.size \"0\" is not a positive quantity", Box::new(|t| set_log_size(t, "0"))),
        ("spec.commitLogStorage.size \"lots\" is not a positive quantity", Box::new(|t| set_log_size(t, "lots"))),
        (
            "spec.commitLogStorage.size \"100Mi\" is too small: the commit log needs at least 128 MiB",
            Box::new(|t| set_log_size(t, "100Mi")),
        ),
        (
            "spec.backup.target.volume.claimName \"fast-log-commit-log\" is the commit log volume",
            Box::new(|t| {
                let mut backup = fixture("backup-volume").spec.backup.unwrap();
                backup.target.volume.as_mut().unwrap().claim_name = "fast-log-commit-log".into();
                t.spec.backup = Some(backup);
            }),
        ),
    ];
    for (needle, change) in cases {
        let mut ts = fixture("commit-log-volume");
        change(&mut ts);
        let errs = problems(&ts).join("\n");
        assert!(errs.contains(needle), "missing {needle:?} in {errs:?}");
    }
    let mut ts = fixture("commit-log-volume");
    set_log_size(&mut ts, "128Mi");
    assert!(problems(&ts).is_empty(), "{:?}", problems(&ts));
}

fn set_log_size(ts: &mut TradeStore, size: &str) {
    ts.spec.commit_log_storage.as_mut().unwrap().size = Quantity(size.into());
}

/// A claim as the API server holds it, with the data claim's annotations.
fn claim_with(annotations: &[(&str, &str)]) -> PersistentVolumeClaim {
    let mut pvc = PersistentVolumeClaim::default();
    pvc.metadata.name = Some("fast-log-data".into());
    let annotations = annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    pvc.metadata.annotations = Some(annotations);
    pvc
}

#[test]
fn where_the_commit_log_is_cannot_change_once_the_data_claim_exists() {
    let layout = |ts: &TradeStore, data: Option<&PersistentVolumeClaim>, log_exists: bool| {
        let store = validate(ts).expect("valid");
        check_commit_log_layout(&store, data, log_exists).map_err(|e| e.to_string())
    };
    let with_log = fixture("commit-log-volume");
    let mut without_log = with_log.clone();
    without_log.spec.commit_log_storage = None;
    let recorded = claim_with(&[("tradestore.io/commit-log-claim", "fast-log-commit-log")]);
    let unrecorded = claim_with(&[]);

    // A new store, and stores held to what their data claim records.
    assert_eq!(layout(&with_log, None, false), Ok(()));
    assert_eq!(layout(&without_log, None, true), Ok(()), "a stray claim the store does not use");
    assert_eq!(layout(&with_log, Some(&recorded), false), Ok(()), "the log claim is created next");
    assert_eq!(layout(&with_log, Some(&recorded), true), Ok(()));
    assert_eq!(layout(&without_log, Some(&unrecorded), false), Ok(()));

    let added = layout(&with_log, Some(&unrecorded), false).unwrap_err();
    assert!(added.contains("spec.commitLogStorage cannot be added to an existing store"), "{added}");
    assert!(added.contains("fast-log-data"), "{added}");
    let removed = layout(&without_log, Some(&recorded), false).unwrap_err();
    assert!(removed.contains("spec.commitLogStorage cannot be removed"), "{removed}");
    assert!(removed.contains("fast-log-commit-log"), "{removed}");
    let stale = layout(&with_log, None, true).unwrap_err();
    assert!(
        stale.contains("volume claim fast-log-commit-log exists but the data claim fast-log-data does not"),
        "{stale}"
    );
}

/// The rendered file of `ts`, as YAML values.
fn rendered(ts: &TradeStore) -> serde_json::Value {
    serde_saphyr::from_str(&config::to_yaml(&config::render(&ts.spec))).expect("config is YAML")
}

fn config_of(name: &str) -> serde_json::Value {
    rendered(&fixture(name))
}

#[test]
fn backup_sync_integrity_and_restore_are_rendered() {
    let v = config_of("backup-volume");
    assert_eq!(
        v["snapshots"],
        serde_json::json!({"dir": "/var/lib/tradestore-backups", "keep_last": 5, "max_age": "1day",
            "schedule": "15 */6 * * *", "bootstrap_from": "20261101T120000Z-0000000042"})
    );
    assert_eq!(v["redis"], serde_json::json!({"key_prefix": "desk-b"}));
    assert_eq!(v["clickhouse"], serde_json::json!({"database": "analytics"}));
    assert_eq!(v["integrity"], serde_json::json!({"interval": "5m", "on_failure": "recover"}));

    let v = config_of("with-app");
    assert_eq!(
        v["snapshots"],
        serde_json::json!({"dir": "/var/lib/tradestore/snapshots", "keep_last": 48, "max_age": "0s",
            "schedule": "0 * * * *", "s3": {"bucket": "tradestore-backups", "region": "us-east-1"}})
    );
    // spec.redis without a keyPrefix: the sidecar's prefix, so nothing to render.
    assert!(v.get("redis").is_none(), "{v}");
    assert_eq!(v["clickhouse"], serde_json::json!({"database": "trades"}));

    // No backup spec: on-demand snapshots only, staged on the data volume, the sidecar's
    // keep_last and nothing older; no Redis/ClickHouse; the sidecar's integrity defaults.
    let v = config_of("minimal");
    assert_eq!(v["snapshots"], serde_json::json!({"dir": "/var/lib/tradestore/snapshots", "max_age": "0s"}));
    assert!(v.get("redis").is_none() && v.get("clickhouse").is_none() && v.get("integrity").is_none(), "{v}");
    let c = config::render(&fixture("minimal").spec);
    assert_eq!((c.snapshots.keep_last, c.integrity.interval.as_secs()), (3, 60));
}

#[test]
fn s3_endpoint_prefix_and_region_are_rendered() {
    let mut ts = fixture("with-app");
    let s3 = ts.spec.backup.as_mut().unwrap().target.s3.as_mut().unwrap();
    s3.prefix = Some("stores/trading/desk-a".into());
    s3.endpoint = Some("http://minio.storage:9000".into());
    s3.region = "eu-central-1".into();
    let v = rendered(&ts);
    assert_eq!(
        v["snapshots"]["s3"],
        serde_json::json!({"bucket": "tradestore-backups", "prefix": "stores/trading/desk-a",
            "endpoint": "http://minio.storage:9000", "region": "eu-central-1"})
    );
    assert!(problems(&ts).is_empty(), "{:?}", problems(&ts));
}

#[test]
fn backup_and_restore_validation() {
    let cases: Vec<(&str, Edit<TradeStore>)> = vec![
        ("schedule", Box::new(|t| t.spec.backup.as_mut().unwrap().schedule = "61 * * * *".into())),
        ("expected 5 cron fields", Box::new(|t| t.spec.backup.as_mut().unwrap().schedule = "0 0 * * * * 2026".into())),
        ("expected 5 cron fields", Box::new(|t| t.spec.backup.as_mut().unwrap().schedule = "@hourly".into())),
        ("expected 5 cron fields", Box::new(|t| t.spec.backup.as_mut().unwrap().schedule = "0 * * *".into())),
        (
            "spec.backup.schedule \"61 * * * * *\"",
            Box::new(|t| t.spec.backup.as_mut().unwrap().schedule = "61 * * * * *".into()),
        ),
        (
            "spec.backup.schedule \"0 0 30 2 MON-\"",
            Box::new(|t| t.spec.backup.as_mut().unwrap().schedule = "0 0 30 2 MON-".into()),
        ),
        (
            "is the data volume",
            Box::new(|t| {
                t.spec.backup.as_mut().unwrap().target.volume.as_mut().unwrap().claim_name = "restored-data".into()
            }),
        ),
        ("snapshotId", Box::new(|t| t.spec.bootstrap.as_mut().unwrap().snapshot_id = "../etc".into())),
        ("snapshotId", Box::new(|t| t.spec.bootstrap.as_mut().unwrap().snapshot_id = "a/b".into())),
        ("keyPrefix", Box::new(|t| t.spec.redis.as_mut().unwrap().key_prefix = Some(" ".into()))),
        ("database", Box::new(|t| t.spec.clickhouse.as_mut().unwrap().database = Some(String::new()))),
        (
            "onFailure Recover needs spec.backup",
            Box::new(|t| {
                (t.spec.redis, t.spec.backup) = (None, None);
            }),
        ),
    ];
    assert!(problems(&fixture("backup-volume")).is_empty());
    for (needle, change) in cases {
        let mut ts = fixture("backup-volume");
        change(&mut ts);
        let errs = problems(&ts).join("\n");
        assert!(errs.contains(needle), "missing {needle:?} in {errs:?}");
    }
    let s3_cases: Vec<(&str, Edit<tradestore_operator::crd::S3Target>)> = vec![
        ("endpoint", Box::new(|s| s.endpoint = Some("minio:9000".into()))),
        ("endpoint", Box::new(|s| s.endpoint = Some("ftp://minio".into()))),
        ("prefix", Box::new(|s| s.prefix = Some("/abs".into()))),
        ("prefix", Box::new(|s| s.prefix = Some("a//b".into()))),
        ("prefix", Box::new(|s| s.prefix = Some("a/../b".into()))),
        ("prefix", Box::new(|s| s.prefix = Some("a b".into()))),
        ("bucket", Box::new(|s| s.bucket = "Upper_Case".into())),
        ("region", Box::new(|s| s.region = String::new())),
    ];
    for (needle, change) in s3_cases {
        let mut ts = fixture("with-app");
        change(ts.spec.backup.as_mut().unwrap().target.s3.as_mut().unwrap());
        let errs = problems(&ts).join("\n");
        assert!(errs.contains(&format!("s3.{needle}")), "missing {needle:?} in {errs:?}");
    }
    // Accepted: trailing slash on the prefix, https endpoints, ranges and steps in the schedule,
    // and a leading seconds field (the sidecar's and the operator's one cron rule).
    for schedule in ["*/15 8-18 * * MON-FRI", "30 */15 8-18 * * MON-FRI"] {
        let mut ts = fixture("with-app");
        let b = ts.spec.backup.as_mut().unwrap();
        b.schedule = schedule.into();
        let s3 = b.target.s3.as_mut().unwrap();
        s3.prefix = Some("stores/".into());
        s3.endpoint = Some("https://s3.example.com".into());
        assert!(problems(&ts).is_empty(), "{schedule}: {:?}", problems(&ts));
    }
}

#[test]
fn a_spec_whose_config_the_sidecar_refuses_is_invalid() {
    let cases: Vec<(&str, Edit<TradeStore>)> = vec![
        (
            "duckdb.memory_limit \"8MiB\" is below the minimum",
            Box::new(|t| t.spec.duckdb.memory_limit = Some("8MiB".into())),
        ),
        ("duckdb.memory_limit: \"12parsecs\"", Box::new(|t| t.spec.duckdb.memory_limit = Some("12parsecs".into()))),
        (
            "clickhouse.database must be plain identifiers",
            Box::new(|t| {
                t.spec.clickhouse.as_mut().unwrap().database = Some("analytics-eu".into());
            }),
        ),
        ("snapshots.keep_last must be >= 1", Box::new(|t| t.spec.backup.as_mut().unwrap().retention.keep_last = 0)),
    ];
    for (needle, change) in cases {
        let mut ts = fixture("backup-volume");
        change(&mut ts);
        let errs = problems(&ts);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("the sidecar would refuse the config rendered from this spec: "), "{errs:?}");
        assert!(errs[0].contains(needle), "missing {needle:?} in {errs:?}");
    }
    // With spec.redis, Recover is accepted: the journal URL comes from the Secret.
    assert!(problems(&fixture("backup-volume")).is_empty());
}

#[test]
fn the_rendered_file_reads_back_as_the_rendered_config() {
    // Leaving out what equals the sidecar's defaults loses nothing: read with those
    // defaults, the file is the configuration rendered from the spec.
    for name in FIXTURES {
        let c = config::render(&fixture(name).spec);
        let text = config::to_yaml(&c);
        let back: Config = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert_eq!(back, c, "{name}:\n{text}");
    }
}

#[test]
fn the_spec_reaches_the_sidecar_settings() {
    let c = config::render(&fixture("with-app").spec);
    assert_eq!(c.data_dir.to_str(), Some("/var/lib/tradestore"));
    assert_eq!(c.database_file, "trades.duckdb");
    assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.auth.token_file.as_deref().and_then(|p| p.to_str()), Some("/var/run/secrets/tradestore/token"));
    assert!(c.auth.protect_reads);
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "debug");
    assert_eq!(
        (c.duckdb.threads, c.duckdb.memory_limit.as_deref(), c.duckdb.checkpoint_threshold_bytes),
        (Some(8), Some("1536MiB"), 32 << 20)
    );
    assert_eq!((c.duckdb.checkpoint_every_commits, c.duckdb.max_wal_bytes), (10_000, 512 << 20));
    assert_eq!(c.duckdb.idle_checkpoint_after.as_millis(), 250);
    let unset = config::render(&fixture("minimal").spec);
    assert_eq!(unset.duckdb.idle_checkpoint_after, Config::default().duckdb.idle_checkpoint_after);
    assert_eq!((c.writer.queue_batches, c.writer.max_batch_requests, c.writer.recent_trades), (20, 512, 5000));
    assert_eq!((c.reader.pool_size, c.reader.acquire_timeout.as_millis(), c.reader.max_list_limit), (16, 500, 1000));
    assert_eq!((c.http.max_body_bytes, c.http.max_batch_trades, c.http.write_timeout.as_secs()), (1 << 20, 2000, 5));
    assert_eq!((c.lifecycle.liveness_deadline.as_secs(), c.lifecycle.shutdown_grace.as_secs()), (10, 40));
    assert_eq!(config::render(&fixture("minimal").spec).log.format, LogFormat::Json);
    // What the spec does not decide stays the sidecar's.
    let d = Config::default();
    assert_eq!(
        (c.recovery, c.http.idle_timeout, c.redis.retention),
        (d.recovery, d.http.idle_timeout, d.redis.retention)
    );
}

#[test]
fn generated_tokens_are_long_and_random() {
    let a = build::generate_token();
    let b = build::generate_token();
    assert!(a.len() >= 32 && a.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(a, b);
}

#[test]
fn validation_reports_each_problem() {
    let mut ts = fixture("minimal");
    ts.spec.duckdb.max_wal_bytes = 1024;
    ts.spec.probes.unresponsive_seconds = 2;
    ts.spec.containers = vec![
        k8s_openapi::api::core::v1::Container { name: "sidecar".into(), image: Some("x".into()), ..Default::default() },
        k8s_openapi::api::core::v1::Container {
            name: "app".into(),
            image: None,
            ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort { container_port: 8080, ..Default::default() }]),
            ..Default::default()
        },
    ];
    ts.spec.storage.volume.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("lots".into());
    let errs = problems(&ts).join("\n");
    for needle in ["maxWalBytes", "unresponsiveSeconds", "reserved", "image must be set", "port 8080", "storage.size"] {
        assert!(errs.contains(needle), "missing {needle:?} in:\n{errs}");
    }
    let mut bad_name = fixture("minimal");
    bad_name.metadata.name = Some("Bad_Name".into());
    assert!(problems(&bad_name)[0].contains("DNS-1035"));
}

#[test]
fn quantities_parse() {
    assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
    assert_eq!(parse_quantity("500Mi"), Some(524288000.0));
    assert_eq!(parse_quantity("2G"), Some(2e9));
    assert_eq!(parse_quantity("1e3"), Some(1000.0));
    assert_eq!(parse_quantity("10"), Some(10.0));
    assert_eq!(parse_quantity("x"), None);
    assert_eq!(parse_quantity("1Zi"), None);
}
