//! Raw DuckDB, the peer every write figure is held against: the sidecar's own schema
//! and migrations, driven directly through the duckdb crate on one thread.

use std::time::Instant;

use duckdb::Connection;
use tradestore_sidecar::store::model::{Side, Status, Trade};
use tradestore_sidecar::store::money::Amount;

use super::{Row, summarize};
use crate::common::trade_for;

/// Money columns as the sidecar stores them (`DECIMAL(18,8)`), or as schema v2 did.
#[derive(Clone, Copy, PartialEq)]
pub enum Money {
    Decimal,
    Double,
}

impl Money {
    fn value(self, text: &str) -> duckdb::types::Value {
        match self {
            Money::Decimal => Amount::parse(text).unwrap().to_sql(),
            Money::Double => duckdb::types::Value::Double(text.parse().unwrap()),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Money::Decimal => "",
            Money::Double => " (DOUBLE money, schema v2)",
        }
    }
}

pub fn raw_db(dir: &std::path::Path, name: &str, version: Option<i64>) -> Connection {
    let conn = Connection::open(dir.join(format!("{name}.duckdb"))).unwrap();
    tradestore_sidecar::store::migrations::up(&conn, tradestore_sidecar::store::migrations::embedded(), version)
        .unwrap();
    conn
}

fn raw_row(id: &str, seq: i64, money: Money) -> [duckdb::types::Value; 11] {
    let t = trade_for(id);
    let text = |k: &str| t[k].as_str().unwrap().to_string();
    let ts = tradestore_sidecar::store::db::timestamp(0);
    [
        id.to_string().into(),
        text("symbol").into(),
        text("side").into(),
        money.value(&text("quantity")),
        money.value(&text("price")),
        "filled".to_string().into(),
        ts.clone(),
        1i64.into(),
        seq.into(),
        ts.clone(),
        ts,
    ]
}

pub fn insert_phase(conn: &Connection, secs: f64, money: Money) -> Row {
    let mut stmt = conn.prepare("INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)").unwrap();
    let (mut lat, start, mut n) = (Vec::new(), Instant::now(), 0);
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        stmt.execute(duckdb::params_from_iter(raw_row(&format!("raw-{n}"), n as i64 + 1, money))).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        n += 1;
    }
    summarize(format!("raw DuckDB: INSERT+COMMIT per trade, 1 thread{}", money.label()), n, start.elapsed(), lat)
}

pub fn appender_phase(conn: &Connection, secs: f64, money: Money, seq0: usize) -> Row {
    let (start, mut appended) = (Instant::now(), 0);
    while start.elapsed().as_secs_f64() < secs {
        conn.execute_batch("BEGIN").unwrap();
        let mut app = conn.appender("trades").unwrap();
        for _ in 0..10_000 {
            app.append_row(raw_row(&format!("app-{appended}"), (seq0 + appended + 1) as i64, money)).unwrap();
            appended += 1;
        }
        drop(app);
        conn.execute_batch("COMMIT").unwrap();
    }
    summarize(format!("raw DuckDB: Appender, 10k rows per commit{}", money.label()), appended, start.elapsed(), vec![])
}

/// A new trade (a filled buy, version 1) with `id` at `seq`, as the applier appends it.
pub fn new_trade(id: String, seq: i64) -> Trade {
    Trade {
        id,
        symbol: format!("SYM{}", seq % 5),
        side: Side::Buy,
        quantity: Amount::parse("1.25").unwrap(),
        price: Amount::parse("101.5").unwrap(),
        status: Status::Filled,
        ts: 0,
        version: 1,
        seq,
        created_at: 0,
        updated_at: 0,
    }
}

/// The Appender fed column batches of 10k trades per commit, as the sidecar's applier
/// feeds it (`store::db::append`): the ceiling of any batching on this schema. The
/// trades are made before the clock starts ([`super::MADE_ROWS_PER_SEC`]).
pub fn column_batch_phase(conn: &Connection, secs: f64, seq0: usize) -> Row {
    const ROWS: usize = 10_000;
    let trade = |n: usize| new_trade(format!("col-{n}"), (seq0 + n + 1) as i64);
    let made = (super::MADE_ROWS_PER_SEC * secs) as usize / ROWS;
    let batches: Vec<Vec<Trade>> = (0..made).map(|b| (b * ROWS..(b + 1) * ROWS).map(trade).collect()).collect();
    let (start, mut appended) = (Instant::now(), 0);
    for trades in batches.iter().take_while(|_| start.elapsed().as_secs_f64() < secs) {
        conn.execute_batch("BEGIN").unwrap();
        tradestore_sidecar::store::db::append(conn, "trades", &trades.iter().collect::<Vec<_>>()).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        appended += trades.len();
    }
    summarize("raw DuckDB: Appender, 10k-row column batches per commit".into(), appended, start.elapsed(), vec![])
}
