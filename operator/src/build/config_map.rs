//! The ConfigMap holding the sidecar's configuration file.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use tradestore_api::wire::mount::CONFIG_FILE;

use super::meta;
use crate::crd::TradeStore;
use crate::names::config_map_name;
use crate::sidecar::config;

/// The ConfigMap with the sidecar's configuration file.
pub fn config_map(ts: &TradeStore) -> ConfigMap {
    ConfigMap {
        metadata: meta(ts, config_map_name(ts)),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), config::to_yaml(&config::render(&ts.spec)))])),
        ..ConfigMap::default()
    }
}
