//! JSON responses and the mapping of errors to HTTP status codes.

use serde::Serialize;
use serde_json::json;
use warp::http::{StatusCode, header};
use warp::reply::{Reply, Response};

use crate::error::Error;

/// A JSON body with a status code.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// An error body: `{"error": {"code", "message", "field"?, "current"?}}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    json(status, &json!({ "error": { "code": code, "message": message.into() } }))
}

/// Maps a sidecar error to its HTTP answer.
pub fn from_error(e: &Error) -> Response {
    match e {
        Error::Invalid(f) => json(
            StatusCode::BAD_REQUEST,
            &json!({ "error": { "code": "invalid", "message": f.to_string(), "field": f.field } }),
        ),
        Error::Unauthorized => {
            let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string());
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            r
        }
        Error::UnsupportedMediaType(_) => {
            error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", e.to_string())
        }
        Error::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        Error::Conflict { reason, current } => json(
            StatusCode::CONFLICT,
            &json!({ "error": { "code": "conflict", "message": reason, "current": current } }),
        ),
        Error::Snapshot(_) => error(StatusCode::CONFLICT, "snapshot", e.to_string()),
        Error::Unavailable(msg) => unavailable(msg.clone()),
        Error::Dependency { what, source } => unavailable(format!("{what}: {source}")),
        other => {
            tracing::error!(error = %other, "request failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string())
        }
    }
}

/// 503 with `Retry-After`: the client may try again in a second.
fn unavailable(message: String) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

/// Turns a handler result into a response.
pub fn result<T: Serialize>(ok: StatusCode, r: Result<T, Error>) -> Response {
    match r {
        Ok(body) => json(ok, &body),
        Err(e) => from_error(&e),
    }
}
