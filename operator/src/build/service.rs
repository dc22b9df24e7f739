//! The Service in front of the sidecar's API.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta;
use crate::crd::TradeStore;
use crate::names::{selector, service_name};
use crate::sidecar::PORT;

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
