//! The operator's integration tests, one binary: each test crate links the operator and
//! kube afresh, so three binaries cost three times the build of one.

mod builders;
mod controller;
mod crd;
mod fake_api;
