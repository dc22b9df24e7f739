//! Exact money downstream: after random inserts, patches and cancels with amounts of
//! every scale, the hot state, Redis's state keys and ClickHouse's `FINAL` rows agree
//! to the last digit (real `redis-server` and `clickhouse-server`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::clickhouse::ClickHouse;
use crate::common::servers::{Server, redis_conn};
use crate::common::{Sidecar, client, free_port, wait_status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tradestore_sidecar::store::money::{Amount, Sum8, Sum16};

/// A random amount of up to `max_whole` with 0 to 8 decimals, as a decimal string.
fn amount(rng: &mut StdRng, max_whole: i64, signed: bool) -> String {
    let step = 10i64.pow(rng.random_range(0..=8));
    let low = if signed { -max_whole * 100_000_000 } else { step };
    let units = rng.random_range(low..max_whole * 100_000_000) / step * step;
    Amount::from_units(units.max(if signed { units } else { step })).unwrap().to_string()
}

/// Random traffic; returns the ids written.
async fn random_traffic(s: &Sidecar, seed: u64, n: usize) -> Vec<String> {
    let c = client();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ids: Vec<String> = Vec::new();
    for i in 0..n {
        let roll = rng.random_range(0..10);
        if roll < 6 || ids.is_empty() {
            let id = format!("x{seed}-{i}");
            let body = json!({
                "id": id, "symbol": format!("S{}", rng.random_range(0..3)),
                "side": if rng.random_bool(0.5) { "buy" } else { "sell" },
                "quantity": amount(&mut rng, 100_000, false), "price": amount(&mut rng, 100_000, true),
            });
            let r = c.post(s.url("/v1/trades")).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 201, "{body}");
            ids.push(id);
            continue;
        }
        let id = ids[rng.random_range(0..ids.len())].clone();
        let t: Value = c.get(s.url(&format!("/v1/trades/{id}"))).send().await.unwrap().json().await.unwrap();
        if roll < 9 {
            let patch = json!({"expected_version": t["version"], "quantity": amount(&mut rng, 1_000, false),
                "price": amount(&mut rng, 1_000, true)});
            let r = c.patch(s.url(&format!("/v1/trades/{id}"))).json(&patch).send().await.unwrap();
            assert!([200, 409].contains(&r.status().as_u16()), "{patch}: {}", r.status());
        } else {
            assert_eq!(c.delete(s.url(&format!("/v1/trades/{id}"))).send().await.unwrap().status(), 200);
        }
    }
    ids
}

/// ClickHouse's exact sums per symbol over the `FINAL` rows.
async fn clickhouse_state(ch: &ClickHouse) -> BTreeMap<String, (Sum8, Sum8, Sum16, Sum16)> {
    // Products in Decimal128: a Decimal64 × Decimal64 product can overflow.
    let text = ch
        .query(
            "SELECT symbol, toString(sum(if(side = 'buy', quantity, toDecimal64(0, 8)))), \
             toString(sum(if(side = 'sell', quantity, toDecimal64(0, 8)))), \
             toString(sum(if(side = 'buy', toDecimal128(quantity, 8) * price, toDecimal128(0, 16)))), \
             toString(sum(if(side = 'sell', toDecimal128(quantity, 8) * price, toDecimal128(0, 16)))) \
             FROM trades FINAL WHERE status = 'filled' GROUP BY symbol ORDER BY symbol FORMAT TabSeparated",
        )
        .await;
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let s8 = |i: usize| Sum8::parse(f[i]).unwrap_or_else(|| panic!("clickhouse row {l:?}"));
            let s16 = |i: usize| Sum16::parse(f[i]).unwrap_or_else(|| panic!("clickhouse row {l:?}"));
            (f[0].to_string(), (s8(1), s8(2), s16(3), s16(4)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_state_redis_and_clickhouse_agree_to_the_digit() {
    let dir = tempfile::tempdir().unwrap();
    let rdir = tempfile::tempdir().unwrap();
    let chdir = tempfile::tempdir().unwrap();
    let redis = Server::redis(rdir.path(), free_port());
    let ch = ClickHouse::start(chdir.path(), free_port(), free_port());
    let cfg = dir.path().join("sidecar.yaml");
    let yaml = format!("clickhouse:\n  url: http://127.0.0.1:{}\n  interval: 100ms\n  backoff_ms: [200]\n", ch.http);
    std::fs::write(&cfg, yaml).unwrap();
    let rurl = redis.redis_url();
    let env = [("TRADESTORE_CONFIG", cfg.to_str().unwrap()), ("TRADESTORE_REDIS__URL", rurl.as_str())];
    let s = Sidecar::start(dir.path(), &env).await;
    for seed in 1..=3 {
        random_traffic(&s, seed, 150).await;
    }
    let caught_up =
        |st: &Value| st["journal"]["lag"] == 0 && st["sync"]["lag"] == 0 && st["sync"]["watermark"] == st["last_seq"];
    wait_status(&s, "journal and sync caught up", caught_up).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let hot: Value = client().get(s.url("/v1/state")).send().await.unwrap().json().await.unwrap();
    let hot = hot["symbols"].as_array().unwrap();
    assert!(hot.len() >= 2, "{hot:?}");
    let mut conn = redis_conn(redis.port).await;
    let house = clickhouse_state(&ch).await;
    assert_eq!(house.len(), hot.len(), "{house:?} vs {hot:?}");
    for h in hot {
        let symbol = h["symbol"].as_str().unwrap();
        let key = format!("tradestore:state:{symbol}");
        let cached: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
        assert_eq!(&serde_json::from_str::<Value>(&cached).unwrap(), h, "Redis {key}");
        let (bq, sq, bn, sn) = house[symbol];
        let ch_state = json!({"buy_quantity": bq, "sell_quantity": sq, "buy_notional": bn, "sell_notional": sn});
        for field in ["buy_quantity", "sell_quantity", "buy_notional", "sell_notional"] {
            assert_eq!(ch_state[field], h[field], "ClickHouse {symbol}.{field}");
        }
    }
}
