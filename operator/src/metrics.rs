//! Prometheus metrics of the operator (prefix `tradestore_operator_`).

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// The operator's metrics in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciliations run.
    pub reconciliations: IntCounter,
    /// Failed reconciliations, by reason.
    pub failures: IntCounterVec,
    /// Reconciliation duration.
    pub duration: Histogram,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciliations =
            IntCounter::new("tradestore_operator_reconciliations_total", "Reconciliations run").expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new("tradestore_operator_reconcile_errors_total", "Failed reconciliations by reason"),
            &["reason"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new("tradestore_operator_reconcile_duration_seconds", "Duration of one reconciliation")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        let leader = IntGauge::new("tradestore_operator_leader", "1 while this replica is the leader").expect("valid");
        registry.register(Box::new(reconciliations.clone())).expect("register");
        registry.register(Box::new(failures.clone())).expect("register");
        registry.register(Box::new(duration.clone())).expect("register");
        registry.register(Box::new(leader.clone())).expect("register");
        Metrics { registry, reconciliations, failures, duration, leader }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}
