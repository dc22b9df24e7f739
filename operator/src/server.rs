//! The operator's own HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use warp::Filter;
use warp::http::StatusCode;

use crate::metrics::Metrics;

/// Readiness of the process: set once the Kubernetes client works and the replica is either
/// running the controller or standing by for the Lease.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Marks the replica ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    /// Whether the replica is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The routes.
pub fn routes(
    metrics: Metrics,
    health: Health,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let m = warp::path!("metrics")
        .and(warp::get())
        .map(move || warp::reply::with_header(metrics.render(), "content-type", "text/plain; version=0.0.4"));
    let healthz = warp::path!("healthz").and(warp::get()).map(|| "ok");
    let readyz = warp::path!("readyz").and(warp::get()).map(move || {
        if health.is_ready() {
            warp::reply::with_status("ready", StatusCode::OK)
        } else {
            warp::reply::with_status("not ready", StatusCode::SERVICE_UNAVAILABLE)
        }
    });
    m.or(healthz).or(readyz)
}

/// Serves the routes until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    warp::serve(routes(metrics, health)).incoming(listener).graceful(shutdown).run().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(base: &str, path: &str) -> (u16, String) {
        let res = reqwest::get(format!("{base}{path}")).await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    #[tokio::test]
    async fn endpoints() {
        let metrics = Metrics::new();
        metrics.reconciliations.inc();
        metrics.failures.with_label_values(&["Conflict"]).inc();
        metrics.duration.observe(0.02);
        let health = Health::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(warp::serve(routes(metrics, health.clone())).incoming(listener).run());

        assert_eq!(get(&base, "/healthz").await.0, 200);
        assert_eq!(get(&base, "/readyz").await.0, 503);
        health.set_ready(true);
        assert_eq!(get(&base, "/readyz").await.0, 200);
        let (code, body) = get(&base, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("tradestore_operator_reconciliations_total 1"), "{body}");
        assert!(body.contains("tradestore_operator_reconcile_errors_total{reason=\"Conflict\"} 1"), "{body}");
        assert!(body.contains("tradestore_operator_reconcile_duration_seconds_bucket"), "{body}");
    }
}
