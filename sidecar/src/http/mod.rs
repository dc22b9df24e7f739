//! The HTTP API (warp routes, served by [`server`]): routes, request parsing, auth,
//! limits and per-route metrics.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/trades` | insert one trade |
//! | `POST /v1/trades/batch` | insert `{"trades": [...]}` atomically |
//! | `GET /v1/trades/{id}` | one trade |
//! | `GET /v1/trades/{id}/history` | every version of one trade, oldest first |
//! | `GET /v1/trades?symbol=S&from=&to=&limit=&cursor=&include_cancelled=` | list by symbol and time |
//! | `PATCH /v1/trades/{id}` | change a trade; body has `expected_version` |
//! | `DELETE /v1/trades/{id}?expected_version=N` | cancel a trade |
//! | `GET /v1/state`, `GET /v1/state/{symbol}` | position and average prices |
//! | `POST /v1/snapshots`, `GET /v1/snapshots` | take / list backup snapshots |
//! | `GET /v1/status` | store facts for operators |
//! | `GET`/`HEAD /healthz`, `/readyz`, `/metrics` | probes and Prometheus |

mod auth;
mod ops;
mod reply;
pub mod server;
mod snapshots;
mod trades;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tradestore_api::wire;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::app::App;
use crate::error::Error;
use crate::store::model::FieldError;
use crate::telemetry::metrics::Metrics;

/// All routes, with rejections turned into JSON errors.
pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let limit = app.cfg.http.max_body_bytes;
    let with_app = warp::any().map(move || app.clone());
    let auth = warp::header::optional::<String>("authorization");
    let body = json_body(limit);
    let query = warp::query::<std::collections::HashMap<String, String>>();

    let insert = warp::path!("v1" / "trades")
        .and(warp::post())
        .and(with_app.clone())
        .and(auth)
        .and(body)
        .then(trades::insert)
        .boxed();
    let batch = warp::path!("v1" / "trades" / "batch")
        .and(warp::post())
        .and(with_app.clone())
        .and(auth)
        .and(body)
        .then(trades::insert_batch)
        .boxed();
    let get = warp::path!("v1" / "trades" / String)
        .and(warp::get())
        .and(with_app.clone())
        .and(auth)
        .then(trades::get)
        .boxed();
    let history = warp::path!("v1" / "trades" / String / "history")
        .and(warp::get())
        .and(with_app.clone())
        .and(auth)
        .then(trades::history)
        .boxed();
    let list = warp::path!("v1" / "trades")
        .and(warp::get())
        .and(with_app.clone())
        .and(auth)
        .and(query)
        .then(trades::list)
        .boxed();
    let patch = warp::path!("v1" / "trades" / String)
        .and(warp::patch())
        .and(with_app.clone())
        .and(auth)
        .and(body)
        .then(trades::patch)
        .boxed();
    let cancel = warp::path!("v1" / "trades" / String)
        .and(warp::delete())
        .and(with_app.clone())
        .and(auth)
        .and(query)
        .then(trades::cancel)
        .boxed();
    let state_all =
        warp::path!("v1" / "state").and(warp::get()).and(with_app.clone()).and(auth).then(trades::state_all).boxed();
    let state_one = warp::path!("v1" / "state" / String)
        .and(warp::get())
        .and(with_app.clone())
        .and(auth)
        .then(trades::state_one)
        .boxed();
    let snap_take =
        at(wire::SNAPSHOTS_PATH).and(warp::post()).and(with_app.clone()).and(auth).then(snapshots::take).boxed();
    let snap_list =
        at(wire::SNAPSHOTS_PATH).and(warp::get()).and(with_app.clone()).and(auth).then(snapshots::list).boxed();
    let status = at(wire::STATUS_PATH).and(warp::get()).and(with_app.clone()).then(ops::status).boxed();
    let healthz = at(wire::HEALTHZ_PATH).and(get_or_head()).and(with_app.clone()).then(ops::healthz).boxed();
    let readyz = at(wire::READYZ_PATH).and(get_or_head()).and(with_app.clone()).then(ops::readyz).boxed();
    let metrics = at(wire::METRICS_PATH).and(get_or_head()).and(with_app).then(ops::metrics).boxed();

    batch
        .or(insert)
        .unify()
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(history)
        .unify()
        .or(patch)
        .unify()
        .or(cancel)
        .unify()
        .or(state_all)
        .unify()
        .or(state_one)
        .unify()
        .or(snap_take)
        .unify()
        .or(snap_list)
        .unify()
        .or(status)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .recover(recover)
        .unify()
}

/// The route at `path`, a path the operator calls too (so it is defined once, in
/// [`tradestore_api::wire`]), matched segment by segment as `warp::path!` matches.
fn at(path: &'static str) -> BoxedFilter<()> {
    let segments = path.trim_start_matches('/').split('/');
    let route = segments.fold(warp::any().boxed(), |route, segment| route.and(warp::path(segment)).boxed());
    route.and(warp::path::end()).boxed()
}

/// `GET`, or `HEAD` for probes that only look at the status (hyper sends no body).
fn get_or_head() -> impl Filter<Extract = (), Error = Rejection> + Copy {
    warp::get().or(warp::head()).unify()
}

/// A request body, with the `Content-Type` it claims to be.
pub struct JsonBody {
    content_type: Option<String>,
    bytes: Bytes,
}

/// Reads a body of at most `limit` bytes (413 from its Content-Length, before reading).
fn json_body(limit: u64) -> impl Filter<Extract = (JsonBody,), Error = Rejection> + Copy {
    warp::header::optional::<String>("content-type")
        .and(warp::body::content_length_limit(limit))
        .and(warp::body::bytes())
        .map(|content_type, bytes| JsonBody { content_type, bytes })
}

/// Counts and logs a 4xx answer (called by the server for every response). These are
/// the client's mistakes, not the sidecar's: never logged at error level, so alerts on
/// error logs stay meaningful.
fn note_client_error(metrics: &Metrics, method: &warp::http::Method, path: &str, status: StatusCode) {
    if !status.is_client_error() {
        return;
    }
    metrics.http_client_errors.with_label_values(&[status.as_str()]).inc();
    if status == StatusCode::UNAUTHORIZED {
        // Worth seeing at the default level: usually a client with a stale or wrong token.
        tracing::warn!(%method, path, status = status.as_u16(), "client error");
    } else {
        tracing::debug!(%method, path, status = status.as_u16(), "client error");
    }
}

/// Runs `handler`, recording its status and latency under `route`.
async fn observed(
    app: &App,
    route: &'static str,
    method: &'static str,
    handler: impl Future<Output = Response>,
) -> Response {
    let start = Instant::now();
    let response = handler.await;
    app.metrics.http_duration.with_label_values(&[route]).observe(start.elapsed().as_secs_f64());
    app.metrics.http_requests.with_label_values(&[route, method, response.status().as_str()]).inc();
    response
}

/// Parses a JSON body, naming the field at fault in the error. The body must be
/// declared `application/json` and hold exactly one JSON value (whitespace may follow):
/// anything after it would otherwise be dropped without the client knowing.
///
/// A body is parsed plainly first (`from_slice` refuses trailing data too); only one
/// that fails is parsed again to find the field at fault, since tracking the path costs
/// on every field of every valid body (a batch has thousands).
fn parse_json<T: serde::de::DeserializeOwned>(body: &JsonBody) -> Result<T, Error> {
    require_json(body.content_type.as_deref())?;
    serde_json::from_slice(&body.bytes).map_err(|plain| json_error::<T>(&body.bytes, plain))
}

/// Why `bytes` is not a `T`, with the path of the field at fault.
fn json_error<T: serde::de::DeserializeOwned>(bytes: &[u8], plain: serde_json::Error) -> Error {
    let invalid = |field: String, message: String| Error::Invalid(FieldError { field, message });
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut *de) {
        Err(e) => {
            let path = e.path().to_string();
            invalid(if path == "." { "body".to_string() } else { path }, e.into_inner().to_string())
        }
        Ok(_) => match de.end() {
            Err(e) => invalid("body".into(), format!("data after the JSON value ({e})")),
            // Not expected: both parses read the same bytes the same way.
            Ok(()) => invalid("body".into(), plain.to_string()),
        },
    }
}

/// Accepts `application/json` in any case, optionally with `charset=utf-8`
/// (JSON is UTF-8 by definition, RFC 8259); anything else is 415.
fn require_json(content_type: Option<&str>) -> Result<(), Error> {
    let unsupported = || {
        Error::UnsupportedMediaType(format!(
            "the body must be sent as Content-Type: application/json (got {})",
            content_type.map_or("none".to_string(), |c| format!("{c:?}"))
        ))
    };
    let mut parts = content_type.ok_or_else(unsupported)?.split(';').map(str::trim);
    if !parts.next().is_some_and(|mime| mime.eq_ignore_ascii_case("application/json")) {
        return Err(unsupported());
    }
    let utf8_charset = |param: &str| {
        param.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("charset") && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
    };
    if parts.all(utf8_charset) { Ok(()) } else { Err(unsupported()) }
}

/// The `{id}` of a route, checked like an id at write time (see [`decode_path`]).
fn path_id(raw: &str) -> Result<String, Error> {
    let id = decode_path("id", raw)?;
    crate::store::model::validate_id(&id).map_err(Error::Invalid)?;
    Ok(id)
}

/// The `{symbol}` of a route, checked like a symbol at write time (see [`decode_path`]).
fn path_symbol(raw: &str) -> Result<String, Error> {
    let symbol = decode_path("symbol", raw)?;
    crate::store::model::validate_symbol(&symbol).map_err(Error::Invalid)?;
    Ok(symbol)
}

/// Percent-decodes a path parameter (warp hands it over raw), so `%3A` and `:` name
/// the same trade on every route. `%2F` decodes to `/`, which the write-time rules
/// refuse: it is never taken as a path separator.
fn decode_path(field: &str, raw: &str) -> Result<String, Error> {
    percent_encoding::percent_decode_str(raw).decode_utf8().map(|d| d.into_owned()).map_err(|_| {
        Error::Invalid(FieldError { field: field.into(), message: "not valid UTF-8 once percent-decoded".into() })
    })
}

async fn recover(r: Rejection) -> Result<Response, Infallible> {
    let (status, code, msg) = if r.is_not_found() {
        (StatusCode::NOT_FOUND, "not_found", "no such route".to_string())
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large", "request body too large".to_string())
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        (StatusCode::LENGTH_REQUIRED, "length_required", "Content-Length is required".to_string())
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route".to_string())
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, "invalid", format!("bad query string: {e}"))
    } else if let Some(e) = r.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, "invalid", e.to_string())
    } else {
        (StatusCode::BAD_REQUEST, "invalid", format!("{r:?}"))
    };
    Ok(reply::error(status, code, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_type_in_any_case_with_at_most_a_utf8_charset() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(require_json(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            None,
            Some("text/plain"),
            Some("application/json; charset=latin1"),
            Some("application/json; v=2"),
            Some(""),
        ] {
            assert!(matches!(require_json(bad), Err(Error::UnsupportedMediaType(_))), "{bad:?}");
        }
    }

    #[test]
    fn trailing_data_is_refused_but_trailing_whitespace_is_not() {
        let body = |text: &str| JsonBody {
            content_type: Some("application/json".into()),
            bytes: Bytes::from(text.to_string()),
        };
        assert!(parse_json::<serde_json::Value>(&body("{\"a\":1} \n\t")).is_ok());
        for bad in ["{\"a\":1} x", "{\"a\":1}{\"a\":2}", "1 2"] {
            match parse_json::<serde_json::Value>(&body(bad)) {
                Err(Error::Invalid(f)) => assert_eq!(f.field, "body", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn path_parameters_are_decoded_then_checked() {
        assert_eq!(path_id("desk%3A1").unwrap(), "desk:1");
        for bad in ["a%2Fb", "%FF", "a%00", "%2E%2E"] {
            assert!(matches!(path_id(bad), Err(Error::Invalid(f)) if f.field == "id"), "{bad}");
        }
        assert!(matches!(path_symbol("BTC%2FUSD"), Err(Error::Invalid(f)) if f.field == "symbol"));
    }
}
