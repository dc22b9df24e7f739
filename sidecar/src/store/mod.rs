//! The store: the DuckDB file and the only code that touches it.
//!
//! [`money`] and [`model`] are the values (exact decimals, trades and their rules;
//! [`by_id`] keeps shared trades in a set by id);
//! [`db`] opens the file and maps rows; [`migrations`] brings its schema up to date;
//! [`writer`] is the single writer with group commit, and the only writer: it decides
//! each change exactly against the id [`index`], makes it durable in the commit
//! [`log`] as a [`change`] record and acknowledges it there; the [`applier`] then
//! brings DuckDB up to date in large transactions. Until it has, the [`overlay`]
//! holds what was acknowledged, so [`reader`] (a pool of read connections plus the
//! in-memory [`state`] the writer keeps) reads its writes.

pub mod applier;
pub(crate) mod by_id;
pub mod change;
pub mod db;
pub(crate) mod index;
pub mod log;
pub mod migrations;
pub mod model;
pub mod money;
pub(crate) mod overlay;
pub mod reader;
pub mod state;
pub(crate) mod writer;
