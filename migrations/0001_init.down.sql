DROP VIEW trade_state;
DROP TABLE trades;
