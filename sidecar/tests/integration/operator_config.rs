//! The contract between the operator and the sidecar: every sidecar config file the
//! operator renders (its golden files) is accepted by the sidecar's own loader, with
//! the secret-backed environment variables the operator puts on the container.

use std::collections::HashMap;

use serde_json::Value;
use tradestore_api::wire::mount;
use tradestore_sidecar::config;

/// Plausible values for the variables the operator fills from Secrets.
fn secret_env(pod: &Value) -> HashMap<String, String> {
    let containers = pod["spec"]["initContainers"].as_array().into_iter().chain(pod["spec"]["containers"].as_array());
    let sidecar = containers.flatten().find(|c| c["name"] == "sidecar").expect("a sidecar container");
    sidecar["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .map(|name| {
            let value = match name {
                "TRADESTORE_REDIS__URL" => "redis://redis:6379/0",
                "TRADESTORE_CLICKHOUSE__URL" => "http://clickhouse:8123",
                _ => "from-a-secret",
            };
            (name.to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn every_rendered_config_loads_in_the_sidecar() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../operator/tests/golden");
    let mut checked = 0;
    for entry in std::fs::read_dir(&golden).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = text
            .split("\n---\n")
            .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .collect();
        let pod = docs.iter().find(|d| d["kind"] == "Pod").expect("a Pod");
        let map = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("a ConfigMap");
        let yaml = map["data"]["sidecar.yaml"].as_str().expect("sidecar.yaml");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), yaml).unwrap();
        let cfg = config::load(Some(file.path()), secret_env(pod))
            .unwrap_or_else(|e| panic!("{}: the sidecar rejects the rendered config: {e}\n{yaml}", path.display()));
        assert_eq!(cfg.data_dir.to_str(), Some(mount::DATA_DIR), "{}", path.display());
        assert_eq!(cfg.auth.token_file.as_deref().and_then(|p| p.to_str()), Some(mount::TOKEN_PATH));
        checked += 1;
    }
    assert!(checked >= 5, "golden files found: {checked}");
}
