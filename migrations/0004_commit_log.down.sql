-- Back to schema v3: the history and the log's bookkeeping go (the log itself must be
-- fully applied first; the sidecar of v3 does not read it).
DROP TABLE trade_history;
DROP TABLE log_state;
