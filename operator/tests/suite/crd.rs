//! The generated CRD: `crds/tradestore.yaml` must match the Rust types, and the schema must carry
//! the validation, printer columns and status subresource the design relies on.

use kube::CustomResourceExt;
use tradestore_operator::crd::{TradeStore, crd_yaml};

const CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/tradestore.yaml");

#[test]
fn crds_directory_is_up_to_date() {
    let fresh = crd_yaml();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(CRD_FILE, &fresh).expect("write crds/tradestore.yaml");
        return;
    }
    let committed = std::fs::read_to_string(CRD_FILE).expect("crds/tradestore.yaml exists");
    assert!(
        committed == fresh,
        "crds/tradestore.yaml is stale: run `cargo run --release -p tradestore-operator -- crd > crds/tradestore.yaml`"
    );
}

#[test]
fn crd_yaml_round_trips() {
    let parsed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_saphyr::from_str(&crd_yaml()).expect("CRD YAML parses");
    assert_eq!(parsed, TradeStore::crd());
}

#[test]
fn crd_shape() {
    let crd = TradeStore::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("tradestores.tradestore.io"));
    assert_eq!(crd.spec.scope, "Namespaced");
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.served && v.storage);
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let cols: Vec<_> = v.additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
    for c in ["Phase", "Ready", "Reason", "Message", "Last Backup", "Sync Lag", "Age"] {
        assert!(cols.contains(&c), "printer column {c}");
    }
    let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<_> = spec["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(required.contains(&"image") && required.contains(&"storage"));
    let p = &spec["properties"];
    assert_eq!(p["probes"]["properties"]["periodSeconds"]["default"], 5);
    assert_eq!(p["probes"]["properties"]["unresponsiveSeconds"]["default"], 10);
    assert_eq!(p["restartPolicy"]["properties"]["maxRestarts"]["default"], 3);
    assert_eq!(p["duckdb"]["properties"]["threads"]["maximum"], 256.0);
    assert!(p["image"]["description"].as_str().unwrap().contains("sidecar"));
    // The API server itself refuses sizes like `-1Gi` or `abc` (an integer still passes).
    let size = &p["storage"]["properties"]["size"];
    assert_eq!(size["x-kubernetes-int-or-string"], true, "{size}");
    assert_eq!(size["pattern"], tradestore_operator::crd::STORAGE_SIZE_PATTERN, "{size}");
    let enum_values = p["storage"]["properties"]["accessMode"]["enum"].as_array().unwrap();
    assert_eq!(enum_values.len(), 2);
    // CEL rules spanning fields.
    let text = serde_json::to_string(&schema).unwrap();
    for rule in [
        "self.maxWalBytes >= self.checkpointThresholdBytes",
        "self.unresponsiveSeconds >= self.periodSeconds",
        "has(self.volume) != has(self.s3)",
    ] {
        assert!(text.contains(rule), "CEL rule {rule}");
    }
    assert!(text.contains("x-kubernetes-validations"));
}
