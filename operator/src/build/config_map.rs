//! The ConfigMap holding the sidecar's configuration file.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::meta;
use crate::crd::TradeStore;
use crate::names::config_map_name;
use crate::sidecar::config::{CONFIG_KEY, SidecarConfig};

/// The ConfigMap with the sidecar's configuration file.
pub fn config_map(ts: &TradeStore) -> ConfigMap {
    ConfigMap {
        metadata: meta(ts, config_map_name(ts)),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), SidecarConfig::from_spec(&ts.spec).to_yaml())])),
        ..ConfigMap::default()
    }
}
