//! The HTTP API against the real binary and a real DuckDB file.

use crate::common::{self, Sidecar, client, get_json, open_db, trade_for};
use serde_json::{Value, json};

#[tokio::test]
async fn insert_get_list_patch_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let c = client();

    let r = c
        .post(s.url("/v1/trades"))
        .json(&json!({"id":"T-1","symbol":"AAPL","side":"buy","quantity":10,"price":100.0,"ts":"2026-11-22T10:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let t: Value = r.json().await.unwrap();
    assert_eq!((t["version"].as_i64(), t["status"].as_str()), (Some(1), Some("filled")));
    assert_eq!(t["ts"], "2026-11-22T10:00:00.000000Z");

    // Generated ids, batch insert.
    let r = c
        .post(s.url("/v1/trades/batch"))
        .json(&json!({"trades":[
            {"symbol":"AAPL","side":"buy","quantity":30,"price":200.0,"ts":"2026-11-22T10:00:01Z"},
            {"symbol":"AAPL","side":"sell","quantity":5,"price":300.0,"ts":"2026-11-22T10:00:02Z"},
            {"symbol":"MSFT","side":"buy","quantity":1,"price":400.0,"status":"pending"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let b: Value = r.json().await.unwrap();
    let ids: Vec<String> =
        b["trades"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 3);
    let seqs: Vec<i64> = b["trades"].as_array().unwrap().iter().map(|t| t["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequence increases: {seqs:?}");

    let r = c.get(s.url("/v1/trades/T-1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["price"], "100", "amounts are decimal strings");
    assert_eq!(c.get(s.url("/v1/trades/nope")).send().await.unwrap().status(), 404);

    let st: Value = c.get(s.url("/v1/state/AAPL")).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["position"], "35");
    assert_eq!(st["avg_buy_price"], "175");
    assert_eq!(st["trade_count"], 3);
    assert_eq!(c.get(s.url("/v1/state/MSFT")).send().await.unwrap().status(), 404, "pending trades do not count");

    // List by symbol and time, paginated.
    let page: Value = c.get(s.url("/v1/trades?symbol=AAPL&limit=2")).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["trades"].as_array().unwrap().len(), 2);
    assert_eq!(page["trades"][0]["id"], "T-1");
    let cursor = page["next"].as_str().unwrap().to_string();
    let page2 = get_json(&c, s.url("/v1/trades"), &[("symbol", "AAPL"), ("cursor", &cursor)]).await;
    assert_eq!(page2["trades"].as_array().unwrap().len(), 1);
    assert!(page2["next"].is_null());
    let range = [("symbol", "AAPL"), ("from", "2026-11-22T10:00:01Z"), ("to", "2026-11-22T10:00:02Z")];
    let ranged = get_json(&c, s.url("/v1/trades"), &range).await;
    assert_eq!(ranged["trades"].as_array().unwrap().len(), 1);

    // Optimistic concurrency.
    let r = c.patch(s.url("/v1/trades/T-1")).json(&json!({"expected_version":1,"quantity":20})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
    let r = c.patch(s.url("/v1/trades/T-1")).json(&json!({"expected_version":1,"quantity":99})).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["current"]["version"], 2, "conflict returns the current trade");
    let st: Value = c.get(s.url("/v1/state/AAPL")).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["position"], "45");

    // Cancel (a tombstone: still readable, out of the state).
    let r = c.delete(s.url("/v1/trades/T-1?expected_version=1")).send().await.unwrap();
    assert_eq!(r.status(), 409, "stale version");
    let r = c.delete(s.url("/v1/trades/T-1?expected_version=2")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    assert_eq!(c.delete(s.url("/v1/trades/T-1")).send().await.unwrap().status(), 200, "idempotent");
    let r = c.patch(s.url("/v1/trades/T-1")).json(&json!({"expected_version":3,"price":1})).send().await.unwrap();
    assert_eq!(r.status(), 409, "cancelled is terminal");
    let st: Value = c.get(s.url("/v1/state/AAPL")).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["position"], "25");
    assert_eq!(c.delete(s.url("/v1/trades/ghost")).send().await.unwrap().status(), 404);

    // History: every version, oldest first, read right after the last change.
    let h: Value = c.get(s.url("/v1/trades/T-1/history")).send().await.unwrap().json().await.unwrap();
    let versions: Vec<(i64, &str, &str)> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["version"].as_i64().unwrap(), t["quantity"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(versions, [(1, "10", "filled"), (2, "20", "filled"), (3, "20", "cancelled")], "{h}");
    assert_eq!(c.get(s.url("/v1/trades/ghost/history")).send().await.unwrap().status(), 404);

    // Duplicate id: 409 with the stored trade.
    let r = c
        .post(s.url("/v1/trades"))
        .json(&json!({"id":"T-1","symbol":"X","side":"buy","quantity":1,"price":1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // A burst, then a request the writer sees while DuckDB lacks the burst (it waits
    // `writer.apply_delay` to gather): the backlog gauge goes up, and must come down to
    // 0 once DuckDB holds everything, not stay at the last burst's figure.
    let ids: Vec<String> = (0..20).map(|i| format!("B-{i}")).collect();
    common::write_trades(&s, ids).await;
    let dup = c.post(s.url("/v1/trades")).json(&trade_for("B-0")).send().await.unwrap();
    assert_eq!(dup.status(), 409);
    common::wait_status(&s, "DuckDB to hold the burst", |st| st["applied_seq"] == st["last_seq"]).await;
    let m = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.lines().any(|l| l == "tradestore_applier_backlog 0"), "an idle store has no backlog: {m}");

    // The hot state equals DuckDB's trade_state view, and survives a restart.
    let before: Value = c.get(s.url("/v1/state")).send().await.unwrap().json().await.unwrap();
    // DuckDB takes acknowledged changes in behind the acknowledgements (the commit log
    // holds them meanwhile): compare once it holds them all.
    common::wait_status(&s, "DuckDB to hold everything", |st| st["applied_seq"] == st["last_seq"]).await;
    drop(s);
    {
        let conn = open_db(dir.path());
        let db = tradestore_sidecar::store::reader::load_symbol_states(&conn).unwrap();
        let mem = before["symbols"].as_array().unwrap();
        assert_eq!(db.len(), mem.len());
        for (d, m) in db.iter().zip(mem) {
            assert_eq!(&serde_json::to_value(d).unwrap(), m, "exactly equal, every digit");
        }
    }
    let s = Sidecar::start(dir.path(), &[]).await;
    let after: Value = client().get(s.url("/v1/state")).send().await.unwrap().json().await.unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn money_is_exact_decimal_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let c = client();
    let post = |body: Value| c.post(s.url("/v1/trades")).json(&body).send();
    for (id, side, q, p) in [("f1", "buy", json!(0.1), json!("100.10")), ("f2", "buy", json!("0.2"), json!(100.2))] {
        let r = post(json!({"id": id, "symbol": "FLAT", "side": side, "quantity": q, "price": p})).await.unwrap();
        assert_eq!(r.status(), 201);
    }
    let r =
        post(json!({"id":"f3","symbol":"FLAT","side":"sell","quantity":"0.3","price":"99.99999999"})).await.unwrap();
    let t: Value = r.json().await.unwrap();
    assert_eq!((t["quantity"].as_str(), t["price"].as_str()), (Some("0.3"), Some("99.99999999")), "{t}");
    let st: Value = c.get(s.url("/v1/state/FLAT")).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["position"], "0", "a flat book reads exactly zero: {st}");
    assert_eq!(st["buy_quantity"], "0.3", "{st}");
    assert_eq!(st["buy_notional"], "30.05", "0.1 × 100.10 + 0.2 × 100.2: {st}");
    assert_eq!(st["avg_buy_price"], "100.16666667", "30.05 / 0.3, half to even at 8 decimals: {st}");
    assert_eq!(st["sell_notional"], "29.999999997", "{st}");

    for (field, body) in [
        ("quantity", json!({"symbol":"X","side":"buy","quantity":"0.000000001","price":1})),
        ("price", json!({"symbol":"X","side":"buy","quantity":1,"price":"NaN"})),
        ("price", json!({"symbol":"X","side":"buy","quantity":1,"price":"Infinity"})),
        ("price", json!({"symbol":"X","side":"buy","quantity":1,"price":"1e400"})),
        ("price", json!({"symbol":"X","side":"buy","quantity":1,"price":true})),
        ("quantity", json!({"symbol":"X","side":"buy","quantity":12345678901u64,"price":1})),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    // A JSON number with more digits than a float holds is read from its text.
    let raw = r#"{"id":"exact","symbol":"X","side":"buy","quantity":1234567890.12345678,"price":0.00000001}"#;
    let r = c.post(s.url("/v1/trades")).header("content-type", "application/json").body(raw).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["quantity"], "1234567890.12345678");
}

#[tokio::test]
async fn concurrent_updates_of_one_trade_never_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let c = client();
    assert_eq!(c.post(s.url("/v1/trades")).json(&trade_for("race")).send().await.unwrap().status(), 201);
    for round in 1..=20i64 {
        let reqs = (0..8).map(|i| {
            let c = c.clone();
            let url = s.url("/v1/trades/race");
            async move {
                // A price no earlier round set: a patch that changes nothing succeeds
                // without a new version, which would let a second request win.
                let price = round * 100 + i;
                c.patch(url).json(&json!({"expected_version": round, "price": price})).send().await.unwrap().status()
            }
        });
        let statuses = futures_join_all(reqs).await;
        let ok = statuses.iter().filter(|s| **s == 200).count();
        let conflict = statuses.iter().filter(|s| **s == 409).count();
        assert_eq!((ok, conflict), (1, 7), "round {round}: {statuses:?}");
    }
    let t: Value = c.get(s.url("/v1/trades/race")).send().await.unwrap().json().await.unwrap();
    assert_eq!(t["version"], 21);
}

/// Sends raw bytes and returns what the server answers first.
async fn raw_request(port: u16, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn futures_join_all<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn malformed_input_gets_a_clear_400_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let c = client();
    let cases = [
        (json!({"symbol":"A","side":"buy","quantity":-1,"price":1}), "quantity"),
        (json!({"symbol":"A","side":"hold","quantity":1,"price":1}), "side"),
        (json!({"symbol":"A","side":"buy","quantity":"ten","price":1}), "quantity"),
        (json!({"symbol":"A","side":"buy","quantity":1,"price":1,"extra":true}), "extra"),
        (json!({"side":"buy","quantity":1,"price":1}), "body"),
        (json!({"symbol":"A","side":"buy","quantity":1,"price":1,"ts":"noon"}), "ts"),
    ];
    for (body, field) in cases {
        let r = c.post(s.url("/v1/trades")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    let r =
        c.post(s.url("/v1/trades")).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(s.url("/v1/trades/batch"))
        .json(&json!({"trades":[trade_for("ok-1"), {"symbol":"A","side":"buy","quantity":0,"price":1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], "trades[1].quantity");
    assert_eq!(c.get(s.url("/v1/trades/ok-1")).send().await.unwrap().status(), 404, "a rejected batch stores nothing");
    let r = c
        .post(s.url("/v1/trades/batch"))
        .json(&json!({"trades":[trade_for("dup"), trade_for("dup")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // An oversize body is refused from its Content-Length, before it is read.
    let head = raw_request(
        s.port,
        "POST /v1/trades HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5242880\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(c.get(s.url("/v1/trades")).send().await.unwrap().status(), 400, "symbol is required");
    assert_eq!(c.get(s.url("/v1/nothing")).send().await.unwrap().status(), 404);
    // The store still works after all that.
    assert_eq!(c.post(s.url("/v1/trades")).json(&trade_for("after")).send().await.unwrap().status(), 201);
}

#[tokio::test]
async fn mutating_routes_need_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let anon = reqwest::Client::new();
    let r = anon.post(s.url("/v1/trades")).json(&trade_for("a")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r =
        anon.post(s.url("/v1/trades")).bearer_auth("wrong-token-000000000").json(&trade_for("a")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        anon.patch(s.url("/v1/trades/a")).json(&json!({"expected_version":1})).send().await.unwrap().status(),
        401
    );
    assert_eq!(anon.delete(s.url("/v1/trades/a")).send().await.unwrap().status(), 401);
    assert_eq!(anon.get(s.url("/v1/trades/a")).send().await.unwrap().status(), 404, "reads are open by default");
    assert_eq!(client().post(s.url("/v1/trades")).json(&trade_for("a")).send().await.unwrap().status(), 201);
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(
        dir.path(),
        &[("TRADESTORE_WRITER__QUEUE_BATCHES", "1"), ("TRADESTORE_WRITER__MAX_BATCH_REQUESTS", "1")],
    )
    .await;
    let c = client();
    let handles: Vec<_> = (0..300)
        .map(|i| {
            let c = c.clone();
            let url = s.url("/v1/trades");
            tokio::spawn(async move {
                let id = format!("bp-{i}");
                let r = c.post(url).json(&trade_for(&id)).send().await.unwrap();
                let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                (id, r.status().as_u16(), retry)
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for h in handles {
        let (id, status, retry) = h.await.unwrap();
        match status {
            201 => accepted.push(id),
            503 => {
                assert_eq!(retry.as_deref(), Some("1"));
                refused.push(id);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(!refused.is_empty(), "300 concurrent writes against a 1-slot queue must overflow it");
    assert!(!accepted.is_empty());
    for id in &accepted {
        assert_eq!(c.get(s.url(&format!("/v1/trades/{id}"))).send().await.unwrap().status(), 200, "{id}");
    }
    for id in &refused {
        assert_eq!(c.get(s.url(&format!("/v1/trades/{id}"))).send().await.unwrap().status(), 404, "{id}");
    }
    let metrics = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tradestore_writer_rejected_total{reason=\"queue_full\"}"), "{metrics}");
}

#[tokio::test]
async fn probes_status_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let c = client();
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 200);
    for i in 0..5 {
        c.post(s.url("/v1/trades")).json(&trade_for(&format!("m{i}"))).send().await.unwrap();
    }
    let st: Value = c.get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    let latest = tradestore_sidecar::store::migrations::embedded().last().unwrap().version;
    assert_eq!(st["schema_version"], latest);
    assert_eq!(st["trade_rows"], 5);
    assert_eq!(st["last_seq"], 5);
    assert_eq!(st["ready"], true);
    let m = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        "tradestore_http_requests_total{method=\"POST\",route=\"trades_insert\",status=\"201\"} 5",
        "tradestore_http_request_duration_seconds_bucket",
        "tradestore_writer_commit_duration_seconds_count",
        "tradestore_writer_batch_requests_count",
        "tradestore_writer_queue_depth 0",
        "tradestore_trades_rows 5",
        "tradestore_duckdb_wal_bytes",
        "tradestore_duckdb_last_checkpoint_timestamp_seconds",
    ] {
        assert!(m.contains(needle), "missing {needle} in:\n{m}");
    }
}

/// POSTs `body` as JSON text exactly as given (reqwest's `.json()` could not send garbage).
async fn post_raw_json(s: &Sidecar, path: &str, body: &str) -> reqwest::Response {
    client().post(s.url(path)).header("content-type", "application/json").body(body.to_string()).send().await.unwrap()
}

async fn error_field(r: reqwest::Response) -> Value {
    r.json::<Value>().await.unwrap()["error"]["field"].clone()
}

#[tokio::test]
async fn anything_after_the_json_value_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let one = trade_for("tail-1").to_string();
    let two = trade_for("tail-2").to_string();
    for body in [format!("{one} garbage"), format!("{one}{two}"), format!("{one}\n{two}")] {
        let r = post_raw_json(&s, "/v1/trades", &body).await;
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(error_field(r).await, "body", "{body}");
    }
    let batch = json!({"trades": [trade_for("tail-3")]}).to_string();
    assert_eq!(post_raw_json(&s, "/v1/trades/batch", &format!("{batch}[]")).await.status(), 400);
    let c = client();
    for id in ["tail-1", "tail-2", "tail-3"] {
        assert_eq!(c.get(s.url(&format!("/v1/trades/{id}"))).send().await.unwrap().status(), 404, "{id} stored");
    }
    let patch = json!({"expected_version": 1, "price": 1}).to_string();
    assert_eq!(post_raw_json(&s, "/v1/trades", &format!("{one} \r\n\t ")).await.status(), 201, "whitespace is fine");
    let r = c
        .patch(s.url("/v1/trades/tail-1"))
        .header("content-type", "application/json")
        .body(format!("{patch} {patch}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn ids_and_symbols_stay_addressable_and_path_parameters_are_percent_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let c = client();
    let trade = |id: &str, symbol: &str| json!({"id": id, "symbol": symbol, "side": "buy", "quantity": 1, "price": 2});
    for (id, symbol, field) in [
        ("ok-a", "BTC/USD", "symbol"),
        ("ok-b", "BTC%2FUSD", "symbol"),
        ("ok-c", "BTC\u{7}", "symbol"),
        ("ok-d", "..", "symbol"),
        ("a/b", "BTC", "id"),
        ("..", "BTC", "id"),
        ("a\nb", "BTC", "id"),
        ("a%3Ab", "BTC", "id"),
    ] {
        let r = c.post(s.url("/v1/trades")).json(&trade(id, symbol)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{id} {symbol:?}");
        assert_eq!(error_field(r).await, field, "{id} {symbol:?}");
    }
    let r = c.post(s.url("/v1/trades")).json(&trade("desk:1.a_b-c", "BTC-USD.x")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // Every route decodes its path parameter the same way.
    let r = c.get(s.url("/v1/trades/desk%3A1%2Ea_b-c")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], "desk:1.a_b-c");
    let r = c.get(s.url("/v1/state/BTC%2DUSD.x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.patch(s.url("/v1/trades/desk%3A1.a_b-c")).json(&json!({"expected_version": 1, "price": 3})).send();
    assert_eq!(r.await.unwrap().status(), 200);
    let r = c.delete(s.url("/v1/trades/desk%3a1.a_b-c?expected_version=2")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // What decodes to a refused character is refused, naming the parameter.
    for (path, field) in [
        ("/v1/trades/a%2Fb", "id"),
        ("/v1/trades/%FF", "id"),
        ("/v1/trades/a%00", "id"),
        ("/v1/state/BTC%2FUSD", "symbol"),
    ] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(error_field(r).await, field, "{path}");
    }
}

#[tokio::test]
async fn bodies_must_be_declared_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let c = client();
    let body = trade_for("ct-1").to_string();
    let post = |ct: Option<&'static str>| {
        let mut r = c.post(s.url("/v1/trades")).body(body.clone());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    for ct in [None, Some("text/plain"), Some("application/json; charset=latin1"), Some("application/jsonx")] {
        let r = post(ct).await.unwrap();
        assert_eq!(r.status(), 415, "{ct:?}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "unsupported_media_type", "{ct:?}: {e}");
    }
    assert_eq!(c.get(s.url("/v1/trades/ct-1")).send().await.unwrap().status(), 404);
    assert_eq!(post(Some("Application/JSON; Charset=\"UTF-8\"")).await.unwrap().status(), 201);
    let r = c.patch(s.url("/v1/trades/ct-1")).header("content-type", "text/json").body(r#"{"expected_version":1}"#);
    assert_eq!(r.send().await.unwrap().status(), 415);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_probes_answer_head() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let anon = reqwest::Client::new();
    for (n, scheme) in ["bearer", "BEARER", "bEaReR"].into_iter().enumerate() {
        let r = anon
            .post(s.url("/v1/trades"))
            .header("authorization", format!("{scheme} {}", common::TOKEN))
            .json(&trade_for(&format!("auth-{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{scheme}");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = anon.head(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "HEAD {path}");
        assert!(r.bytes().await.unwrap().is_empty(), "HEAD {path} has no body");
    }
}

#[tokio::test]
async fn a_patch_that_changes_nothing_keeps_version_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let c = client();
    let stored: Value =
        c.post(s.url("/v1/trades")).json(&trade_for("same")).send().await.unwrap().json().await.unwrap();
    let last_seq = |st: Value| st["last_seq"].clone();
    let seq_before = last_seq(common::status(&s).await);
    let same = json!({
        "expected_version": 1,
        "symbol": stored["symbol"], "side": stored["side"], "quantity": stored["quantity"],
        "price": stored["price"], "status": stored["status"], "ts": stored["ts"],
    });
    for patch in [same, json!({"expected_version": 1}), json!({"expected_version": 1, "price": stored["price"]})] {
        let r = c.patch(s.url("/v1/trades/same")).json(&patch).send().await.unwrap();
        assert_eq!(r.status(), 200, "{patch}");
        assert_eq!(r.json::<Value>().await.unwrap(), stored, "unchanged, same version and seq: {patch}");
    }
    assert_eq!(last_seq(common::status(&s).await), seq_before, "no commit sequence was used");
    let stale = c.patch(s.url("/v1/trades/same")).json(&json!({"expected_version": 2})).send().await.unwrap();
    assert_eq!(stale.status(), 409, "the version check still applies");
    let r = c.patch(s.url("/v1/trades/same")).json(&json!({"expected_version": 1, "price": 1})).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2, "a real change still makes a version");
}
#[tokio::test]
async fn client_mistakes_are_counted_and_never_logged_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[]).await;
    let (c, anon) = (client(), reqwest::Client::new());
    assert_eq!(post_raw_json(&s, "/v1/trades", "{").await.status(), 400);
    assert_eq!(anon.post(s.url("/v1/trades")).json(&trade_for("x")).send().await.unwrap().status(), 401);
    assert_eq!(c.get(s.url("/v1/trades/none")).send().await.unwrap().status(), 404);
    assert_eq!(c.get(s.url("/no/such/route")).send().await.unwrap().status(), 404);
    assert_eq!(c.post(s.url("/v1/trades")).json(&trade_for("x")).send().await.unwrap().status(), 201);
    assert_eq!(c.post(s.url("/v1/trades")).json(&trade_for("x")).send().await.unwrap().status(), 409);
    assert_eq!(c.post(s.url("/v1/trades")).body("{}").send().await.unwrap().status(), 415);
    let big =
        "POST /v1/trades HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 99999999\r\n\r\n";
    assert!(raw_request(s.port, big).await.starts_with("HTTP/1.1 413"));
    // Not even HTTP: hyper answers 400 itself.
    assert!(raw_request(s.port, "NOT HTTP AT ALL\r\n\r\n").await.starts_with("HTTP/1.1 400"));
    let m = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for (code, n) in [("400", 1), ("401", 1), ("404", 2), ("409", 1), ("413", 1), ("415", 1)] {
        let line = format!("tradestore_http_client_errors_total{{code=\"{code}\"}} {n}");
        assert!(m.contains(&line), "missing {line} in:\n{m}");
    }
    let log = s.log();
    assert!(!log.contains("ERROR"), "client mistakes logged as errors:\n{log}");
    assert!(log.contains("WARN") && log.contains("status=401"), "a wrong token is worth a warning:\n{log}");
}

/// A list must show every acknowledged trade, so it waits for DuckDB; it must not also
/// wait out the applier's gathering (`writer.apply_delay`, here the longest allowed).
#[tokio::test]
async fn a_list_right_after_a_write_does_not_wait_out_the_apply_delay() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[("TRADESTORE_WRITER__APPLY_DELAY", "1s")]).await;
    let c = client();
    for round in 0..5 {
        let id = format!("L-{round}");
        let r = c.post(s.url("/v1/trades")).json(&trade_for(&id)).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let symbol = r.json::<Value>().await.unwrap()["symbol"].as_str().unwrap().to_string();
        let start = std::time::Instant::now();
        let page = get_json(&c, s.url("/v1/trades"), &[("symbol", &symbol), ("limit", "10000")]).await;
        let took = start.elapsed();
        let ids: Vec<&str> = page["trades"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert!(ids.contains(&id.as_str()), "the list shows the acknowledged trade: {page}");
        // Well under the 1 s delay it would otherwise wait (~1 s each round).
        assert!(took < std::time::Duration::from_millis(600), "round {round}: the list took {took:?}");
    }
}

/// (id, version, status) of every trade a list of `symbol` shows.
async fn listed(s: &Sidecar, symbol: &str, include_cancelled: bool) -> Vec<(String, i64, String)> {
    let cancelled = include_cancelled.to_string();
    let page = get_json(&client(), s.url("/v1/trades"), &[("symbol", symbol), ("include_cancelled", &cancelled)]).await;
    let trades = page["trades"].as_array().unwrap_or_else(|| panic!("{page}"));
    trades
        .iter()
        .map(|t| (t["id"].as_str().unwrap().into(), t["version"].as_i64().unwrap(), t["status"].to_string()))
        .collect()
}

/// Lists read their writes while the applier commits and DuckDB checkpoints: eight
/// clients take trades of their own through insert, a move to another symbol once
/// DuckDB holds the insert (so DuckDB lists the trade at its old place while the
/// overlay holds the move), and a cancel, listing both symbols after each
/// acknowledgement. A list merges the overlay taken before it reads DuckDB; a row
/// listed at a place its trade left, a change applied between the two reads, would
/// show here as a stale, missing or doubled trade.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_show_every_acknowledged_change_while_the_applier_and_checkpoints_run() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TRADESTORE_WRITER__APPLY_DELAY", "20ms"),
        ("TRADESTORE_DUCKDB__CHECKPOINT_EVERY_COMMITS", "10"),
        ("TRADESTORE_DUCKDB__CHECKPOINT_THRESHOLD_BYTES", "262144"),
    ];
    let s = std::sync::Arc::new(Sidecar::start(dir.path(), &env).await);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let s = s.clone();
            tokio::spawn(async move {
                let (filled, cancelled) = ("\"filled\"".to_string(), "\"cancelled\"".to_string());
                for n in 0..20 {
                    let (id, from, to) = (format!("L{c}-{n}"), format!("L{c}-{n}.a"), format!("L{c}-{n}.b"));
                    let trade = json!({"id": id, "symbol": from, "side": "buy", "quantity": 1, "price": 2});
                    let r = client().post(s.url("/v1/trades")).json(&trade).send().await.unwrap();
                    assert_eq!(r.status(), 201);
                    let seq = r.json::<Value>().await.unwrap()["seq"].as_i64().unwrap();
                    assert_eq!(listed(&s, &from, false).await, [(id.clone(), 1, filled.clone())], "inserted");
                    common::wait_status(&s, "DuckDB holds the insert", |st| st["applied_seq"].as_i64() >= Some(seq))
                        .await;
                    let moved = json!({"expected_version": 1, "symbol": to});
                    let r = client().patch(s.url(&format!("/v1/trades/{id}"))).json(&moved).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    assert_eq!(listed(&s, &from, true).await, [], "moved away from {from}");
                    assert_eq!(listed(&s, &to, false).await, [(id.clone(), 2, filled.clone())], "moved to {to}");
                    let r = client().delete(s.url(&format!("/v1/trades/{id}"))).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    assert_eq!(listed(&s, &to, false).await, [], "cancelled");
                    assert_eq!(listed(&s, &to, true).await, [(id.clone(), 3, cancelled.clone())], "listed cancelled");
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let st = common::status(&s).await;
    assert!(st["last_checkpoint_unix"].as_i64() > Some(0), "checkpoints ran meanwhile: {st}");
}
