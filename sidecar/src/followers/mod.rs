//! Followers of the commit sequence: the Redis journal and the ClickHouse sync.

pub mod clickhouse;
pub mod journal;
