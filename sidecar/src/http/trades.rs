//! Trade and trade-state handlers.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{JsonBody, auth, observed, parse_json, path_id, path_symbol, reply};
use crate::app::App;
use crate::error::Error;
use crate::store::model::{FieldError, NewTrade, Trade, TradePatch, parse_micros};
use crate::store::reader::{ListQuery, decode_cursor};
use crate::store::writer::WriteOp;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    trades: Vec<NewTrade>,
}

/// The answer to a batch, serialized as it is: through `json!` every stored trade first
/// became a map of its own (`perf` on 1,000-trade batches: those maps and their
/// allocations were a large part of the HTTP workers' time).
#[derive(Serialize)]
struct Stored {
    trades: Vec<Arc<Trade>>,
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid(FieldError { field: field.into(), message: message.into() })
}

/// Checks the token for a mutating route.
fn authorize_write(app: &App, header: &Option<String>) -> Result<(), Error> {
    auth::check(app.token.as_deref(), header.as_deref())
}

/// Checks the token for a read route (only when reads are protected).
fn authorize_read(app: &App, header: &Option<String>) -> Result<(), Error> {
    if app.cfg.auth.protect_reads { authorize_write(app, header) } else { Ok(()) }
}

async fn write(app: &App, op: WriteOp) -> Result<Vec<Arc<Trade>>, Error> {
    app.writer.submit(op, app.cfg.http.write_timeout).await
}

/// `POST /v1/trades`
pub async fn insert(app: Arc<App>, authz: Option<String>, body: JsonBody) -> Response {
    observed(&app, "trades_insert", "POST", async {
        let result = async {
            authorize_write(&app, &authz)?;
            let t: NewTrade = parse_json(&body)?;
            t.validate().map_err(Error::Invalid)?;
            Ok(write(&app, WriteOp::Insert(vec![t])).await?.remove(0))
        }
        .await;
        reply::result(StatusCode::CREATED, result)
    })
    .await
}

/// `POST /v1/trades/batch`
pub async fn insert_batch(app: Arc<App>, authz: Option<String>, body: JsonBody) -> Response {
    observed(&app, "trades_batch", "POST", async {
        let result = async {
            authorize_write(&app, &authz)?;
            let b: Batch = parse_json(&body)?;
            let max = app.cfg.http.max_batch_trades;
            if b.trades.is_empty() || b.trades.len() > max {
                return Err(invalid("trades", format!("must hold 1 to {max} trades")));
            }
            for (i, t) in b.trades.iter().enumerate() {
                t.validate().map_err(|e| Error::Invalid(e.within(&format!("trades[{i}]"))))?;
            }
            let trades = write(&app, WriteOp::Insert(b.trades)).await?;
            Ok(Stored { trades })
        }
        .await;
        reply::result(StatusCode::CREATED, result)
    })
    .await
}

/// `GET /v1/trades/{id}`
pub async fn get(id: String, app: Arc<App>, authz: Option<String>) -> Response {
    observed(&app, "trades_get", "GET", async {
        let result = async {
            authorize_read(&app, &authz)?;
            let id = path_id(&id)?;
            app.reader.trade(&id).await
        }
        .await;
        reply::result(StatusCode::OK, result)
    })
    .await
}

/// `GET /v1/trades/{id}/history`
pub async fn history(id: String, app: Arc<App>, authz: Option<String>) -> Response {
    observed(&app, "trades_history", "GET", async {
        let result = async {
            authorize_read(&app, &authz)?;
            let id = path_id(&id)?;
            let versions = app.reader.history(&id).await?;
            Ok(serde_json::json!({ "id": id, "versions": versions }))
        }
        .await;
        reply::result(StatusCode::OK, result)
    })
    .await
}

/// `GET /v1/trades?symbol=...`
pub async fn list(app: Arc<App>, authz: Option<String>, q: HashMap<String, String>) -> Response {
    observed(&app, "trades_list", "GET", async {
        let result = async {
            authorize_read(&app, &authz)?;
            let query = list_query(&q, app.cfg.reader.max_list_limit)?;
            app.reader.list(query).await
        }
        .await;
        reply::result(StatusCode::OK, result)
    })
    .await
}

fn list_query(q: &HashMap<String, String>, max_limit: usize) -> Result<ListQuery, Error> {
    const KNOWN: [&str; 6] = ["symbol", "from", "to", "limit", "cursor", "include_cancelled"];
    if let Some(k) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(invalid(k, format!("unknown query parameter (known: {})", KNOWN.join(", "))));
    }
    let symbol = q.get("symbol").ok_or_else(|| invalid("symbol", "required"))?.clone();
    let time = |k: &str| q.get(k).map(|v| parse_micros(v).map_err(|m| invalid(k, m))).transpose();
    let limit = match q.get("limit") {
        None => 100.min(max_limit),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max_limit).contains(&n) => n,
            _ => return Err(invalid("limit", format!("must be 1 to {max_limit}"))),
        },
    };
    let after = q
        .get("cursor")
        .map(|c| decode_cursor(c).ok_or_else(|| invalid("cursor", "not a cursor returned by this API")))
        .transpose()?;
    let include_cancelled = match q.get("include_cancelled").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(invalid("include_cancelled", "must be true or false")),
    };
    Ok(ListQuery { symbol, from: time("from")?, to: time("to")?, after, limit, include_cancelled })
}

/// `PATCH /v1/trades/{id}`
pub async fn patch(id: String, app: Arc<App>, authz: Option<String>, body: JsonBody) -> Response {
    observed(&app, "trades_patch", "PATCH", async {
        let result = async {
            authorize_write(&app, &authz)?;
            let id = path_id(&id)?;
            let patch: TradePatch = parse_json(&body)?;
            patch.validate().map_err(Error::Invalid)?;
            Ok(write(&app, WriteOp::Update { id, patch }).await?.remove(0))
        }
        .await;
        reply::result(StatusCode::OK, result)
    })
    .await
}

/// `DELETE /v1/trades/{id}` — cancels the trade.
pub async fn cancel(id: String, app: Arc<App>, authz: Option<String>, q: HashMap<String, String>) -> Response {
    observed(&app, "trades_cancel", "DELETE", async {
        let result = async {
            authorize_write(&app, &authz)?;
            let id = path_id(&id)?;
            if let Some(k) = q.keys().find(|k| *k != "expected_version") {
                return Err(invalid(k, "unknown query parameter (known: expected_version)"));
            }
            let expected_version = q
                .get("expected_version")
                .map(|v| {
                    v.parse::<i64>()
                        .ok()
                        .filter(|v| *v >= 1)
                        .ok_or_else(|| invalid("expected_version", "must be an integer >= 1"))
                })
                .transpose()?;
            Ok(write(&app, WriteOp::Cancel { id, expected_version }).await?.remove(0))
        }
        .await;
        reply::result(StatusCode::OK, result)
    })
    .await
}

/// `GET /v1/state`
pub async fn state_all(app: Arc<App>, authz: Option<String>) -> Response {
    observed(&app, "state_all", "GET", async {
        let result = authorize_read(&app, &authz).map(|()| {
            let (symbols, last_seq) = app.reader.all_state();
            json!({ "symbols": symbols, "last_seq": last_seq })
        });
        reply::result(StatusCode::OK, result)
    })
    .await
}

/// `GET /v1/state/{symbol}`
pub async fn state_one(symbol: String, app: Arc<App>, authz: Option<String>) -> Response {
    observed(&app, "state_one", "GET", async {
        let result = authorize_read(&app, &authz).and_then(|()| {
            let symbol = path_symbol(&symbol)?;
            app.reader.symbol_state(&symbol).ok_or_else(|| Error::NotFound(format!("state of symbol {symbol}")))
        });
        reply::result(StatusCode::OK, result)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn list_query_parses_and_names_bad_parameters() {
        let ok = list_query(&q(&[("symbol", "X"), ("limit", "5"), ("from", "2026-01-01T00:00:00Z")]), 100).unwrap();
        assert_eq!((ok.symbol.as_str(), ok.limit), ("X", 5));
        assert!(ok.from.is_some() && ok.to.is_none());
        let field = |pairs: &[(&str, &str)]| match list_query(&q(pairs), 100) {
            Err(Error::Invalid(f)) => f.field,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert_eq!(field(&[]), "symbol");
        assert_eq!(field(&[("symbol", "X"), ("limit", "0")]), "limit");
        assert_eq!(field(&[("symbol", "X"), ("limit", "101")]), "limit");
        assert_eq!(field(&[("symbol", "X"), ("from", "noon")]), "from");
        assert_eq!(field(&[("symbol", "X"), ("cursor", "zzz")]), "cursor");
        assert_eq!(field(&[("symbol", "X"), ("sort", "desc")]), "sort");
    }
}
