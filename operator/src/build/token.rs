//! The generated API-token Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::meta;
use crate::crd::TradeStore;
use crate::names::generated_token_secret_name;
use tradestore_api::wire::mount::TOKEN_FILE;

/// The generated API-token Secret. Created once (never applied again), so the token is never
/// rotated by accident.
pub fn token_secret(ts: &TradeStore, token: &str) -> Secret {
    Secret {
        metadata: meta(ts, generated_token_secret_name(ts)),
        string_data: Some(BTreeMap::from([(TOKEN_FILE.to_string(), token.to_string())])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// A random API token: 48 alphanumeric characters.
pub fn generate_token() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(48).map(char::from).collect()
}
