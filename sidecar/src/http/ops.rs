//! Probes, metrics and the status document.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::reply;
use crate::app::App;

/// Liveness: process answers and the writer is making progress.
pub async fn healthz(app: Arc<App>) -> Response {
    match app.health.liveness() {
        Ok(()) => reply::json(StatusCode::OK, &json!({ "status": "ok" })),
        Err(why) => reply::error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", why),
    }
}

/// Readiness: live, migrated, recovered, not shutting down.
pub async fn readyz(app: Arc<App>) -> Response {
    match app.health.readiness() {
        Ok(()) => reply::json(StatusCode::OK, &json!({ "status": "ready" })),
        Err(why) => reply::error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why),
    }
}

/// Prometheus text exposition.
pub async fn metrics(app: Arc<App>) -> Response {
    app.metrics.wal_bytes.set(crate::store::db::wal_size(&app.cfg.database_path()) as i64);
    warp::reply::with_header(app.metrics.render(), "content-type", "text/plain; version=0.0.4").into_response()
}

/// Facts about the store for operators and the Kubernetes operator.
pub async fn status(app: Arc<App>) -> Response {
    reply::json(StatusCode::OK, &app.status())
}
