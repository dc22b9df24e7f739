//! The one cron rule, for `snapshots.schedule` in the sidecar and `spec.backup.schedule`
//! in the operator: UTC, 5 fields as in crontab (minute hour day-of-month month
//! day-of-week), or 6 with a leading seconds field. No year field and no `@hourly`
//! nicknames, so that the field count alone tells which form a schedule is in.
//!
//! Seconds are allowed because the sidecar always took them (its tests schedule a
//! snapshot every two seconds); the operator, which took 5 fields only, now takes the
//! same, so no schedule is valid on one side and refused on the other.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Fewest fields of a schedule (no seconds).
pub const MIN_FIELDS: usize = 5;
/// Most fields of a schedule (leading seconds).
pub const MAX_FIELDS: usize = 6;

/// Why a schedule does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Not 5 or 6 fields.
    #[error("expected 5 cron fields (minute hour day month weekday) or 6 with leading seconds, got {0}")]
    FieldCount(usize),
    /// A field croner refuses (out of range, unknown name, bad step).
    #[error("{0}")]
    Cron(#[source] croner::errors::CronError),
}

/// Parses a schedule by the rule above.
pub fn parse(expr: &str) -> Result<Cron, ScheduleError> {
    let fields = expr.split_whitespace().count();
    if !(MIN_FIELDS..=MAX_FIELDS).contains(&fields) {
        return Err(ScheduleError::FieldCount(fields));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(ScheduleError::Cron)
}
