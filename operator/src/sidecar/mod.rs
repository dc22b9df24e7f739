//! The operator's side of the sidecar: the configuration file it renders for it ([`config`], with
//! the ports, paths and mount points both sides agree on) and the client of its HTTP API
//! ([`client`]). Kept behind these two modules so they can be swapped for the shared `api` crate
//! in one place.

pub mod client;
pub mod config;
