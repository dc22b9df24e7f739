//! What keeps the data when the database file does not survive.
//!
//! [`snapshot`] takes consistent copies of the live file; [`remote`] ships them to an
//! S3 bucket; [`backup`] decides where they go and when (the cron schedule). The
//! [`integrity`] check looks for damage while the store runs; a failure it cannot
//! live with ends in [`quarantine`], and the next start's [`recovery`] rebuilds the
//! file from the newest verified snapshot plus the Redis journal.

pub(crate) mod backup;
pub mod integrity;
pub(crate) mod quarantine;
pub(crate) mod recovery;
pub(crate) mod remote;
pub mod snapshot;
