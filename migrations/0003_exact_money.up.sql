-- TradeStore schema v3: exact money. `quantity` and `price` become DECIMAL(18,8)
-- (64-bit backed in DuckDB: 10 integer digits, 8 decimals), so sums and positions are
-- exact and a flat book reads exactly zero. Positions and notionals in the
-- `trade_state` view are exact decimal sums (DECIMAL(38,8) / DECIMAL(38,16)); the
-- product is taken in 128 bits (a DECIMAL(18) × DECIMAL(18) product would overflow
-- DuckDB's 64-bit multiplication).
--
-- A stored DOUBLE converts when DECIMAL(18,8) holds the value the client sent: the
-- decimal reads back as the very same DOUBLE. A row that does not (more than 8
-- decimals, 10 or more integer digits) stops the migration with its id: nothing is
-- rounded away and nothing is changed; the sidecar refuses to start until the row is
-- corrected with the previous version.
SELECT error('migration 0003_exact_money: trades whose quantity or price DECIMAL(18,8) cannot hold exactly '
             || '(more than 8 decimals, or 10 or more integer digits): ' || string_agg(id, ', ' ORDER BY id)
             || ' (at most 20 listed). Nothing was changed; correct them with the previous version, then upgrade.')
FROM (
    SELECT id FROM trades
    WHERE TRY_CAST(quantity AS DECIMAL(18,8)) IS NULL
       OR TRY_CAST(price AS DECIMAL(18,8)) IS NULL
       OR CAST(TRY_CAST(quantity AS DECIMAL(18,8)) AS DOUBLE) <> quantity
       OR CAST(TRY_CAST(price AS DECIMAL(18,8)) AS DOUBLE) <> price
    ORDER BY id
    LIMIT 20
)
HAVING count(*) > 0;

DROP VIEW trade_state;

CREATE TABLE trades_v3 (
    id          VARCHAR       PRIMARY KEY,
    symbol      VARCHAR       NOT NULL CHECK (length(symbol) BETWEEN 1 AND 32),
    side        VARCHAR       NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity    DECIMAL(18,8) NOT NULL CHECK (quantity > 0),
    price       DECIMAL(18,8) NOT NULL,
    status      VARCHAR       NOT NULL CHECK (status IN ('pending', 'filled', 'cancelled')),
    ts          TIMESTAMP     NOT NULL,
    version     BIGINT        NOT NULL CHECK (version >= 1),
    seq         BIGINT        NOT NULL CHECK (seq >= 1),
    created_at  TIMESTAMP     NOT NULL,
    updated_at  TIMESTAMP     NOT NULL
);

INSERT INTO trades_v3
SELECT id, symbol, side, CAST(quantity AS DECIMAL(18,8)), CAST(price AS DECIMAL(18,8)), status, ts, version, seq,
       created_at, updated_at
FROM trades;

DROP TABLE trades;
ALTER TABLE trades_v3 RENAME TO trades;

CREATE VIEW trade_state AS
SELECT
    symbol,
    sum(CASE WHEN side = 'buy' THEN quantity ELSE -quantity END)          AS position,
    sum(CASE WHEN side = 'buy' THEN quantity ELSE 0 END)                  AS buy_quantity,
    sum(CASE WHEN side = 'sell' THEN quantity ELSE 0 END)                 AS sell_quantity,
    sum(CASE WHEN side = 'buy' THEN quantity::DECIMAL(38,8) * price ELSE 0 END)  AS buy_notional,
    sum(CASE WHEN side = 'sell' THEN quantity::DECIMAL(38,8) * price ELSE 0 END) AS sell_notional,
    count(*)                                                              AS trade_count,
    max(ts)                                                               AS last_trade_at,
    max(seq)                                                              AS last_seq
FROM trades
WHERE status = 'filled'
GROUP BY symbol;
