-- Durable watermarks of the followers of the commit sequence (e.g. the ClickHouse
-- sync): every change with seq <= watermark has been delivered to that sink.
CREATE TABLE sync_state (
    sink        VARCHAR   PRIMARY KEY,
    watermark   BIGINT    NOT NULL CHECK (watermark >= 0),
    updated_at  TIMESTAMP NOT NULL
);
