//! The store: the DuckDB file and the only code that touches it.

pub mod db;
pub mod migrations;
pub mod model;
pub mod money;
pub mod reader;
pub mod state;
pub mod writer;
