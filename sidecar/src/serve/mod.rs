//! Serving: signal handling and the orderly stop.

pub mod shutdown;
