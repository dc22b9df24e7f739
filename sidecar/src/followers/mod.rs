//! Followers of the commit sequence: background tasks that read the changes after
//! their watermark from the store and deliver them elsewhere, never on the write
//! path (a commit never waits for them).
//!
//! [`journal`] appends every change to Redis (which start-up recovery can replay);
//! [`clickhouse`] syncs the trades into a ClickHouse table for analytics.

pub(crate) mod clickhouse;
pub(crate) mod journal;
