//! The store: the DuckDB file and the only code that touches it.
//!
//! [`money`] and [`model`] are the values (exact decimals, trades and their rules);
//! [`db`] opens the file and maps rows; [`migrations`] brings its schema up to date;
//! [`writer`] is the single writer with group commit, and the only writer: it keeps
//! the in-memory [`state`] that [`reader`] answers hot reads from, next to its pool of
//! read connections.

pub mod db;
pub mod migrations;
pub mod model;
pub mod money;
pub mod reader;
pub mod state;
pub(crate) mod writer;
