//! Prometheus metrics of the sidecar, registered in one place.

use prometheus::core::Collector;
use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric the sidecar exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, method and status code.
    pub http_requests: IntCounterVec,
    /// Request latency by route.
    pub http_duration: HistogramVec,
    /// Answers in the 4xx range (the client's mistakes), by status code.
    pub http_client_errors: IntCounterVec,
    /// Connections open now.
    pub http_open_connections: IntGauge,
    /// Connections refused because every open one was busy at the cap.
    pub http_connections_rejected: IntCounter,
    /// Connections the server closed, by reason (timeouts, evicted at the cap, shutdown).
    pub http_connections_closed: IntCounterVec,
    /// Time to write and flush one group to the commit log.
    pub commit_duration: Histogram,
    /// Time of one DuckDB transaction of the applier.
    pub apply_duration: Histogram,
    /// From a group's acknowledgement to DuckDB holding it.
    pub apply_lag: Histogram,
    /// Changes the commit log replayed at start (into DuckDB or as the applier's
    /// backlog), and how long that took.
    pub log_replayed: IntGauge,
    pub log_replay_seconds: Gauge,
    /// The last commit-log `seq` DuckDB holds.
    pub applied_seq: IntGauge,
    /// Acknowledged changes not yet in DuckDB.
    pub apply_backlog: IntGauge,
    /// How long the applier's last transaction could gather: `writer.apply_delay`, or
    /// `writer.apply_delay_saturated` when it went on because the log was saturated.
    pub apply_delay: Gauge,
    /// Commit-log segments on disk.
    pub log_segments: IntGauge,
    /// Requests folded into one commit.
    pub batch_requests: Histogram,
    /// Time the writer spent on groups rather than waiting for requests: its rate is
    /// how busy the one serial stage is (1: requests queue behind the log).
    pub writer_busy: Counter,
    /// Committed transactions.
    pub commits: IntCounter,
    /// Bytes the writer's id index holds (docs/benchmarks.md: memory per trade).
    pub index_bytes: IntGauge,
    /// Bytes the hot state holds: its symbols and its window of recent trades.
    pub hot_state_bytes: IntGauge,
    /// Writes refused before reaching the writer, by reason.
    pub writes_rejected: IntCounterVec,
    /// Requests waiting in the writer queue.
    pub queue_depth: IntGauge,
    /// Rows in the trades table.
    pub trade_rows: IntGauge,
    /// Sequence number of the last committed change.
    pub last_seq: IntGauge,
    /// WAL file size in bytes.
    pub wal_bytes: IntGauge,
    /// Unix time of the last checkpoint, the sidecar's or DuckDB's own.
    pub last_checkpoint: IntGauge,
    /// Checkpoints DuckDB ran by itself (`checkpoint_threshold`), as seen by the writer.
    pub auto_checkpoints: IntCounter,
    /// Explicit checkpoints run.
    pub checkpoints: IntCounter,
    /// 1 while the Redis journal's last attempt succeeded.
    pub journal_healthy: IntGauge,
    /// Highest sequence journaled to Redis.
    pub journal_watermark: IntGauge,
    /// Failed journal attempts.
    pub journal_errors: IntCounter,
    /// Highest sequence synced to ClickHouse.
    pub sync_watermark: IntGauge,
    /// Committed changes not synced yet.
    pub sync_lag: IntGauge,
    /// 1 while the ClickHouse sync is degraded.
    pub sync_degraded: IntGauge,
    /// Failed sync attempts.
    pub sync_errors: IntCounter,
    /// 1 when the last integrity check passed.
    pub integrity_ok: IntGauge,
    /// Integrity checks that could not finish for a transient reason (out of memory,
    /// no free read connection) even when retried.
    pub integrity_inconclusive: IntCounter,
    /// Duration of integrity checks.
    pub integrity_duration: Histogram,
    /// Snapshots taken (and shipped to the target).
    pub snapshots: IntCounter,
    /// Failed snapshot attempts.
    pub snapshot_failures: IntCounter,
}

/// Builds metrics and registers each in the registry as it is made, so that none can be
/// declared and then forgotten in the registry.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn add<M: Collector + Clone + 'static>(&self, metric: prometheus::Result<M>) -> M {
        let metric = metric.expect("valid metric options");
        self.0.register(Box::new(metric.clone())).expect("metric names are unique");
        metric
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help))
    }

    fn float_counter(&self, name: &str, help: &str) -> Counter {
        self.add(Counter::new(name, help))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help))
    }

    fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.add(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())))
    }

    fn histogram_vec(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        self.add(HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels))
    }
}

const LATENCY_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    /// Creates and registers all metrics.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("tradestore".into()), None).expect("valid prefix");
        let r = Registrar(&registry);
        Metrics {
            http_requests: r.counter_vec(
                "http_requests_total",
                "HTTP requests by route, method and status",
                &["route", "method", "status"],
            ),
            http_duration: r.histogram_vec(
                "http_request_duration_seconds",
                "HTTP request latency by route",
                LATENCY_BUCKETS,
                &["route"],
            ),
            http_client_errors: r.counter_vec(
                "http_client_errors_total",
                "Answers in the 4xx range (client mistakes) by status code",
                &["code"],
            ),
            http_open_connections: r.gauge("http_open_connections", "HTTP connections open now"),
            http_connections_rejected: r.counter(
                "http_connections_rejected_total",
                "Connections refused at http.max_connections because every open one was busy",
            ),
            http_connections_closed: r.counter_vec(
                "http_connections_closed_total",
                "Connections closed by the server, by reason",
                &["reason"],
            ),
            commit_duration: r.histogram(
                "writer_commit_duration_seconds",
                "Write and fdatasync of one commit-log group",
                LATENCY_BUCKETS,
            ),
            apply_duration: r.histogram(
                "applier_duration_seconds",
                "One DuckDB transaction applying the commit log",
                LATENCY_BUCKETS,
            ),
            apply_lag: r.histogram(
                "applier_lag_seconds",
                "From a commit-log group's acknowledgement until DuckDB holds it (one observation per group)",
                &[0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0],
            ),
            log_replayed: r.gauge(
                "log_replayed_changes",
                "Changes the commit log replayed at start (into DuckDB, or as the applier's backlog)",
            ),
            log_replay_seconds: r.float_gauge("log_replay_seconds", "Time the start-up replay of the commit log took"),
            applied_seq: r.gauge("applier_applied_seq", "Last commit-log seq DuckDB holds"),
            apply_backlog: r.gauge("applier_backlog", "Acknowledged changes not yet in DuckDB"),
            apply_delay: r.float_gauge(
                "applier_delay_seconds",
                "How long the last applier transaction could gather changes (longer when the commit log was saturated)",
            ),
            log_segments: r.gauge("log_segments", "Commit-log segments on disk"),
            batch_requests: r.histogram(
                "writer_batch_requests",
                "Requests folded into one commit",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
            ),
            writer_busy: r.float_counter(
                "writer_busy_seconds_total",
                "Time the writer spent planning, logging and answering groups, not waiting for requests",
            ),
            commits: r.counter("writer_commits_total", "Committed transactions"),
            index_bytes: r.gauge("writer_index_bytes", "Memory the id index holds (every trade's version)"),
            hot_state_bytes: r
                .gauge("hot_state_bytes", "Memory the hot state holds (symbol aggregates, recent trades)"),
            writes_rejected: r.counter_vec(
                "writer_rejected_total",
                "Writes refused before reaching the writer",
                &["reason"],
            ),
            queue_depth: r.gauge("writer_queue_depth", "Requests waiting for the writer"),
            trade_rows: r.gauge("trades_rows", "Rows in the trades table"),
            last_seq: r.gauge("last_commit_seq", "Sequence of the last committed change"),
            wal_bytes: r.gauge("duckdb_wal_bytes", "Size of the DuckDB WAL file"),
            last_checkpoint: r.gauge(
                "duckdb_last_checkpoint_timestamp_seconds",
                "Unix time of the last checkpoint (explicit or DuckDB's own)",
            ),
            auto_checkpoints: r
                .counter("duckdb_auto_checkpoints_total", "Checkpoints DuckDB ran by itself at checkpoint_threshold"),
            checkpoints: r.counter("duckdb_checkpoints_total", "Explicit checkpoints run"),
            journal_healthy: r.gauge("journal_healthy", "1 while the Redis journal is healthy"),
            journal_watermark: r.gauge("journal_watermark", "Highest sequence journaled to Redis"),
            journal_errors: r.counter("journal_errors_total", "Failed Redis journal attempts"),
            sync_watermark: r.gauge("sync_watermark", "Highest sequence synced to ClickHouse"),
            sync_lag: r.gauge("sync_lag", "Committed changes not synced to ClickHouse yet"),
            sync_degraded: r.gauge("sync_degraded", "1 while the ClickHouse sync is degraded"),
            sync_errors: r.counter("sync_errors_total", "Failed ClickHouse sync attempts"),
            integrity_ok: r.gauge("integrity_ok", "1 when the last integrity check passed"),
            integrity_inconclusive: r.counter(
                "integrity_inconclusive_total",
                "Integrity checks that could not finish for a transient reason, even when retried",
            ),
            integrity_duration: r.histogram(
                "integrity_check_duration_seconds",
                "Duration of integrity checks",
                LATENCY_BUCKETS,
            ),
            snapshots: r.counter("snapshots_total", "Snapshots taken and shipped"),
            snapshot_failures: r.counter("snapshot_failures_total", "Failed snapshot attempts"),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
