//! Snapshot handlers.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{auth, observed, reply};
use crate::app::App;

/// `POST /v1/snapshots` — takes a snapshot now.
pub async fn take(app: Arc<App>, authz: Option<String>) -> Response {
    observed(&app, "snapshots_take", "POST", async {
        let result = async {
            auth::check(app.token.as_deref(), authz.as_deref())?;
            app.backups.take(&app.reader, app.schema_version).await
        }
        .await;
        reply::result(StatusCode::CREATED, result)
    })
    .await
}

/// `GET /v1/snapshots` — complete snapshots, oldest first.
pub async fn list(app: Arc<App>, authz: Option<String>) -> Response {
    observed(&app, "snapshots_list", "GET", async {
        let result = async {
            if app.cfg.auth.protect_reads {
                auth::check(app.token.as_deref(), authz.as_deref())?;
            }
            app.backups.list().await.map(|s| json!({ "snapshots": s }))
        }
        .await;
        reply::result(StatusCode::OK, result)
    })
    .await
}
