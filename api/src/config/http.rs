//! The HTTP sections: request limits, authentication, liveness and shutdown timing.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, bad};

/// Smallest accepted `http.max_body_bytes`.
pub const MIN_BODY_BYTES: u64 = 1024;
/// Shortest accepted `lifecycle.liveness_deadline`.
pub const MIN_LIVENESS_DEADLINE: Duration = Duration::from_secs(1);
/// Shortest of the HTTP read and idle timeouts.
const MIN_HTTP_TIMEOUT: Duration = Duration::from_millis(100);

/// HTTP request limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Most trades in one batch insert.
    pub max_batch_trades: usize,
    /// How long a write waits for its commit before answering 503 (the write
    /// may still commit; the client should re-read before retrying).
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A request head must be complete this long after its first byte.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request body must be complete this long after its head (else 408).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections open at once (lowered to fit the file descriptor limit).
    pub max_connections: usize,
    /// On shutdown: how long the listener keeps accepting (writes get 503), and then
    /// how long connections stalled mid-request get before they are closed; each at
    /// most a quarter of `lifecycle.shutdown_grace`, so the final commit and checkpoint fit.
    #[serde(with = "humantime_serde")]
    pub shutdown_drain: Duration,
}

/// Bearer-token authentication.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// File holding the token (e.g. a mounted Kubernetes Secret). Mutating routes
    /// require `Authorization: Bearer <token>` when a token is configured.
    pub token_file: Option<PathBuf>,
    /// Also require the token for reads.
    pub protect_reads: bool,
}

/// Liveness deadline and shutdown grace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// `/healthz` fails when the writer has not made progress for this long
    /// (seed: unresponsive 10 s → restart).
    #[serde(with = "humantime_serde")]
    pub liveness_deadline: Duration,
    /// On SIGTERM: finish queued writes, checkpoint and exit within this time.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 4 * 1024 * 1024,
            max_batch_trades: 10_000,
            write_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            shutdown_drain: Duration::from_secs(2),
        }
    }
}

impl HttpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let timeouts = [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, d)| *d < MIN_HTTP_TIMEOUT) {
            return bad(format!("http.{name} must be at least {}ms", MIN_HTTP_TIMEOUT.as_millis()));
        }
        if self.max_connections == 0 {
            return bad("http.max_connections must be >= 1");
        }
        Ok(())
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig { liveness_deadline: Duration::from_secs(10), shutdown_grace: Duration::from_secs(25) }
    }
}

impl LifecycleConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.liveness_deadline < MIN_LIVENESS_DEADLINE {
            return bad(format!("lifecycle.liveness_deadline must be at least {}s", MIN_LIVENESS_DEADLINE.as_secs()));
        }
        Ok(())
    }
}
