-- TradeStore schema v1: the trades table, its sync sequence and the trade_state view.
--
-- `seq` is the commit sequence: every mutation of a trade (insert, update, cancel)
-- stamps the row with the next value, assigned by the single writer in commit order,
-- so "all changes after watermark W" is `WHERE seq > W` with no gaps between commits.
-- (Unique by construction; deliberately not a UNIQUE index, which would turn every
-- update into a delete+insert in DuckDB. The integrity check verifies it.)
-- Cancelled trades are kept (status = 'cancelled') as tombstones for incremental sync.
CREATE TABLE trades (
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

-- Position and average prices per symbol over filled trades. The sidecar keeps the
-- same aggregate in memory for hot reads; integrity checks compare the two.
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
