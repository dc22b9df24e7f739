//! Prometheus metrics of the sidecar, registered in one place.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
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
    /// Time from BEGIN to durable COMMIT of one group commit.
    pub commit_duration: Histogram,
    /// Requests folded into one commit.
    pub batch_requests: Histogram,
    /// Committed transactions.
    pub commits: IntCounter,
    /// Group commits that failed and were retried request by request.
    pub batch_fallbacks: IntCounter,
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

const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    /// Creates and registers all metrics.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("tradestore".into()), None).expect("valid prefix");
        let m = Metrics {
            http_requests: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests by route, method and status"),
                &["route", "method", "status"],
            )
            .unwrap(),
            http_duration: HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .unwrap(),
            http_client_errors: IntCounterVec::new(
                Opts::new("http_client_errors_total", "Answers in the 4xx range (client mistakes) by status code"),
                &["code"],
            )
            .unwrap(),
            http_open_connections: IntGauge::new("http_open_connections", "HTTP connections open now").unwrap(),
            http_connections_rejected: IntCounter::new(
                "http_connections_rejected_total",
                "Connections refused at http.max_connections because every open one was busy",
            )
            .unwrap(),
            http_connections_closed: IntCounterVec::new(
                Opts::new("http_connections_closed_total", "Connections closed by the server, by reason"),
                &["reason"],
            )
            .unwrap(),
            commit_duration: Histogram::with_opts(
                HistogramOpts::new("writer_commit_duration_seconds", "BEGIN to durable COMMIT of one group commit")
                    .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .unwrap(),
            batch_requests: Histogram::with_opts(
                HistogramOpts::new("writer_batch_requests", "Requests folded into one commit")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
            )
            .unwrap(),
            commits: IntCounter::new("writer_commits_total", "Committed transactions").unwrap(),
            batch_fallbacks: IntCounter::new(
                "writer_batch_fallbacks_total",
                "Group commits retried request by request after an error",
            )
            .unwrap(),
            writes_rejected: IntCounterVec::new(
                Opts::new("writer_rejected_total", "Writes refused before reaching the writer"),
                &["reason"],
            )
            .unwrap(),
            queue_depth: IntGauge::new("writer_queue_depth", "Requests waiting for the writer").unwrap(),
            trade_rows: IntGauge::new("trades_rows", "Rows in the trades table").unwrap(),
            last_seq: IntGauge::new("last_commit_seq", "Sequence of the last committed change").unwrap(),
            wal_bytes: IntGauge::new("duckdb_wal_bytes", "Size of the DuckDB WAL file").unwrap(),
            last_checkpoint: IntGauge::new(
                "duckdb_last_checkpoint_timestamp_seconds",
                "Unix time of the last checkpoint (explicit or DuckDB's own)",
            )
            .unwrap(),
            auto_checkpoints: IntCounter::new(
                "duckdb_auto_checkpoints_total",
                "Checkpoints DuckDB ran by itself at checkpoint_threshold",
            )
            .unwrap(),
            checkpoints: IntCounter::new("duckdb_checkpoints_total", "Explicit checkpoints run").unwrap(),
            journal_healthy: IntGauge::new("journal_healthy", "1 while the Redis journal is healthy").unwrap(),
            journal_watermark: IntGauge::new("journal_watermark", "Highest sequence journaled to Redis").unwrap(),
            journal_errors: IntCounter::new("journal_errors_total", "Failed Redis journal attempts").unwrap(),
            sync_watermark: IntGauge::new("sync_watermark", "Highest sequence synced to ClickHouse").unwrap(),
            sync_lag: IntGauge::new("sync_lag", "Committed changes not synced to ClickHouse yet").unwrap(),
            sync_degraded: IntGauge::new("sync_degraded", "1 while the ClickHouse sync is degraded").unwrap(),
            sync_errors: IntCounter::new("sync_errors_total", "Failed ClickHouse sync attempts").unwrap(),
            integrity_ok: IntGauge::new("integrity_ok", "1 when the last integrity check passed").unwrap(),
            integrity_inconclusive: IntCounter::new(
                "integrity_inconclusive_total",
                "Integrity checks that could not finish for a transient reason, even when retried",
            )
            .unwrap(),
            integrity_duration: Histogram::with_opts(
                HistogramOpts::new("integrity_check_duration_seconds", "Duration of integrity checks")
                    .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .unwrap(),
            snapshots: IntCounter::new("snapshots_total", "Snapshots taken and shipped").unwrap(),
            snapshot_failures: IntCounter::new("snapshot_failures_total", "Failed snapshot attempts").unwrap(),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.http_requests.clone())).unwrap();
        r.register(Box::new(m.http_duration.clone())).unwrap();
        r.register(Box::new(m.http_client_errors.clone())).unwrap();
        r.register(Box::new(m.http_open_connections.clone())).unwrap();
        r.register(Box::new(m.http_connections_rejected.clone())).unwrap();
        r.register(Box::new(m.http_connections_closed.clone())).unwrap();
        r.register(Box::new(m.commit_duration.clone())).unwrap();
        r.register(Box::new(m.batch_requests.clone())).unwrap();
        r.register(Box::new(m.commits.clone())).unwrap();
        r.register(Box::new(m.batch_fallbacks.clone())).unwrap();
        r.register(Box::new(m.writes_rejected.clone())).unwrap();
        r.register(Box::new(m.queue_depth.clone())).unwrap();
        r.register(Box::new(m.trade_rows.clone())).unwrap();
        r.register(Box::new(m.last_seq.clone())).unwrap();
        r.register(Box::new(m.wal_bytes.clone())).unwrap();
        r.register(Box::new(m.last_checkpoint.clone())).unwrap();
        r.register(Box::new(m.checkpoints.clone())).unwrap();
        r.register(Box::new(m.auto_checkpoints.clone())).unwrap();
        r.register(Box::new(m.journal_healthy.clone())).unwrap();
        r.register(Box::new(m.journal_watermark.clone())).unwrap();
        r.register(Box::new(m.journal_errors.clone())).unwrap();
        r.register(Box::new(m.sync_watermark.clone())).unwrap();
        r.register(Box::new(m.sync_lag.clone())).unwrap();
        r.register(Box::new(m.sync_degraded.clone())).unwrap();
        r.register(Box::new(m.sync_errors.clone())).unwrap();
        r.register(Box::new(m.integrity_ok.clone())).unwrap();
        r.register(Box::new(m.integrity_inconclusive.clone())).unwrap();
        r.register(Box::new(m.integrity_duration.clone())).unwrap();
        r.register(Box::new(m.snapshots.clone())).unwrap();
        r.register(Box::new(m.snapshot_failures.clone())).unwrap();
        m
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
