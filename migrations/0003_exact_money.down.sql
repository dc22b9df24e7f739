-- Back to schema v2: DOUBLE money (each decimal becomes its nearest DOUBLE; sums are
-- then binary floating point again).
DROP VIEW trade_state;

CREATE TABLE trades_v2 (
    id          VARCHAR   PRIMARY KEY,
    symbol      VARCHAR   NOT NULL CHECK (length(symbol) BETWEEN 1 AND 32),
    side        VARCHAR   NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity    DOUBLE    NOT NULL CHECK (quantity > 0 AND isfinite(quantity)),
    price       DOUBLE    NOT NULL CHECK (isfinite(price)),
    status      VARCHAR   NOT NULL CHECK (status IN ('pending', 'filled', 'cancelled')),
    ts          TIMESTAMP NOT NULL,
    version     BIGINT    NOT NULL CHECK (version >= 1),
    seq         BIGINT    NOT NULL CHECK (seq >= 1),
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);

INSERT INTO trades_v2
SELECT id, symbol, side, CAST(quantity AS DOUBLE), CAST(price AS DOUBLE), status, ts, version, seq, created_at, updated_at
FROM trades;

DROP TABLE trades;
ALTER TABLE trades_v2 RENAME TO trades;

CREATE VIEW trade_state AS
SELECT
    symbol,
    sum(CASE WHEN side = 'buy' THEN quantity ELSE -quantity END)          AS position,
    sum(CASE WHEN side = 'buy' THEN quantity ELSE 0 END)                  AS buy_quantity,
    sum(CASE WHEN side = 'sell' THEN quantity ELSE 0 END)                 AS sell_quantity,
    sum(CASE WHEN side = 'buy' THEN quantity * price ELSE 0 END)          AS buy_notional,
    sum(CASE WHEN side = 'sell' THEN quantity * price ELSE 0 END)         AS sell_notional,
    count(*)                                                              AS trade_count,
    max(ts)                                                               AS last_trade_at,
    max(seq)                                                              AS last_seq
FROM trades
WHERE status = 'filled'
GROUP BY symbol;
