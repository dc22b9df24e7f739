-- TradeStore schema v4: the commit log's bookkeeping, and the history of every change.
--
-- `log_state.applied_seq` is the last commit-log record DuckDB holds. The applier
-- moves it in the same transaction as the rows it applies, so after any crash the log
-- is replayed from exactly the record after it: nothing twice, nothing skipped.
CREATE TABLE log_state (
    id          INTEGER   PRIMARY KEY CHECK (id = 1),
    applied_seq BIGINT    NOT NULL CHECK (applied_seq >= 0),
    updated_at  TIMESTAMP NOT NULL
);
INSERT INTO log_state SELECT 1, coalesce(max(seq), 0), now()::TIMESTAMP FROM trades;

-- Every version of every trade, append-only, in the column order of `trades`. No key:
-- an index would cost on every append, and reads are by id over a bounded retention.
CREATE TABLE trade_history (
    id          VARCHAR       NOT NULL,
    symbol      VARCHAR       NOT NULL,
    side        VARCHAR       NOT NULL,
    quantity    DECIMAL(18,8) NOT NULL,
    price       DECIMAL(18,8) NOT NULL,
    status      VARCHAR       NOT NULL,
    ts          TIMESTAMP     NOT NULL,
    version     BIGINT        NOT NULL,
    seq         BIGINT        NOT NULL,
    created_at  TIMESTAMP     NOT NULL,
    updated_at  TIMESTAMP     NOT NULL
);
-- The versions known so far: earlier ones were overwritten before history existed.
INSERT INTO trade_history SELECT * FROM trades;
