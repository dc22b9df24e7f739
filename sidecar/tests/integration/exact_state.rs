//! Property: over any sequence of inserts, patches and cancels, the hot state the
//! writer keeps incrementally equals DuckDB's `trade_state` view over the final rows,
//! to the last digit (no epsilon anywhere).

use std::collections::BTreeMap;

use proptest::prelude::*;
use tradestore_sidecar::store::db;
use tradestore_sidecar::store::model::{Side, Status, Trade};
use tradestore_sidecar::store::money::Amount;
use tradestore_sidecar::store::reader::load_symbol_states;
use tradestore_sidecar::store::state::HotState;

#[derive(Debug, Clone)]
enum Op {
    Insert { symbol: u8, buy: bool, quantity: i64, price: i64, filled: bool },
    Patch { pick: usize, quantity: Option<i64>, price: Option<i64>, buy: Option<bool> },
    Cancel { pick: usize },
}

/// Amounts up to `max_whole` (may be negative when `signed`) with a random number of
/// decimals, 0 to 8, as units of 10^-8.
fn amount(max_whole: i64, signed: bool) -> impl Strategy<Value = i64> {
    let max = max_whole * 100_000_000;
    let low = if signed { -max } else { 1 };
    (low..max, 0..=8u32).prop_map(move |(n, decimals)| {
        let step = 10i64.pow(8 - decimals);
        let v = n / step * step;
        if v == 0 && !signed { step } else { v }
    })
}

fn op() -> impl Strategy<Value = Op> {
    // Notionals stay far inside DECIMAL(38,16) however the sequence adds up.
    let quantity = || amount(1_000_000, false);
    let price = || amount(1_000_000, true);
    prop_oneof![
        6 => (0..4u8, any::<bool>(), quantity(), price(), prop::bool::weighted(0.8))
            .prop_map(|(symbol, buy, quantity, price, filled)| Op::Insert { symbol, buy, quantity, price, filled }),
        2 => (any::<usize>(), prop::option::of(quantity()), prop::option::of(price()), prop::option::of(any::<bool>()))
            .prop_map(|(pick, quantity, price, buy)| Op::Patch { pick, quantity, price, buy }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
    ]
}

fn trade(id: String, symbol: u8, buy: bool, quantity: i64, price: i64, status: Status, seq: i64) -> Trade {
    Trade {
        id,
        symbol: format!("S{symbol}"),
        side: if buy { Side::Buy } else { Side::Sell },
        quantity: Amount::from_units(quantity).unwrap(),
        price: Amount::from_units(price).unwrap(),
        status,
        ts: 0,
        version: 1,
        seq,
        created_at: 0,
        updated_at: 0,
    }
}

/// Applies `ops` to the hot state as the writer does; returns the final rows.
fn run(ops: &[Op], hot: &mut HotState) -> BTreeMap<String, Trade> {
    let mut rows: BTreeMap<String, Trade> = BTreeMap::new();
    let mut seq = 0;
    for op in ops {
        seq += 1;
        let (before, after) = match op {
            Op::Insert { symbol, buy, quantity, price, filled } => {
                let status = if *filled { Status::Filled } else { Status::Pending };
                (None, trade(format!("t{seq}"), *symbol, *buy, *quantity, *price, status, seq))
            }
            Op::Patch { pick, quantity, price, buy } if !rows.is_empty() => {
                let cur = rows.values().nth(pick % rows.len()).unwrap().clone();
                if cur.status == Status::Cancelled {
                    continue;
                }
                let mut next = cur.clone();
                if let Some(q) = quantity {
                    next.quantity = Amount::from_units(*q).unwrap();
                }
                if let Some(p) = price {
                    next.price = Amount::from_units(*p).unwrap();
                }
                if let Some(b) = buy {
                    next.side = if *b { Side::Buy } else { Side::Sell };
                }
                next.status = Status::Filled;
                next.seq = seq;
                (Some(cur), next)
            }
            Op::Cancel { pick } if !rows.is_empty() => {
                let cur = rows.values().nth(pick % rows.len()).unwrap().clone();
                let mut next = cur.clone();
                next.status = Status::Cancelled;
                next.seq = seq;
                (Some(cur), next)
            }
            _ => continue,
        };
        hot.apply(before.as_ref(), &std::sync::Arc::new(after.clone()));
        rows.insert(after.id.clone(), after);
    }
    rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn hot_state_equals_the_view_exactly(ops in prop::collection::vec(op(), 1..120)) {
        let mut hot = HotState::new(vec![], 0, 0);
        let rows = run(&ops, &mut hot);
        let conn = duckdb::Connection::open_in_memory().unwrap();
        tradestore_sidecar::store::migrations::up(&conn, tradestore_sidecar::store::migrations::embedded(), None).unwrap();
        let mut app = conn.appender("trades").unwrap();
        for t in rows.values() {
            app.append_row(db::row_values(t)).unwrap();
        }
        app.flush().unwrap();
        drop(app);
        let view = load_symbol_states(&conn).unwrap();
        prop_assert_eq!(view, hot.all_symbols());
    }
}
