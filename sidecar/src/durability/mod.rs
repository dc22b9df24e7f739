//! What keeps the data when the database file does not survive.

pub mod backup;
pub mod integrity;
pub mod recovery;
pub mod remote;
pub mod snapshot;
