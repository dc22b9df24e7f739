//! The operator's side of the sidecar: the configuration file it renders for it ([`config`],
//! into the api crate's type) and the client of its HTTP API ([`client`]).

pub mod client;
pub mod config;

/// The sidecar's port ([`tradestore_api::wire::PORT`]) as Kubernetes types take it.
pub const PORT: i32 = tradestore_api::wire::PORT as i32;
