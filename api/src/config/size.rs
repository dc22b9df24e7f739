//! Sizes as DuckDB reads them (`duckdb.memory_limit`).

/// Smallest accepted `duckdb.memory_limit`. Measured with DuckDB 1.5.6, 4 threads and
/// batches of 1,000 trades (docs/sidecar.md, "Memory"): with 3 MB the first batch fails,
/// with 8 MiB writes fail after 16,000 trades and 12 MiB after 50,000, each time with
/// `Out of Memory Error`. 16 MiB is the least that runs a small store; the primary-key
/// index grows with the store, so real stores need more (200,000 trades: 32 MiB).
pub const MIN_MEMORY_LIMIT: u64 = 16 << 20;

/// Parses a size the way DuckDB's `memory_limit` reads it: a number (decimals allowed)
/// and a unit: `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000, also `K`, `M`, `G`, `T`) or
/// `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), case-insensitive, spaces allowed between.
/// Percentages are refused: DuckDB 1.5's configuration API rejects them.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a size like 512MiB or 2GB"))?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "%" => return Err(format!("{text:?}: percentages are not accepted; give a size like 512MiB")),
        "" => return Err(format!("{text:?} has no unit; give a size like 512MiB or 2GB")),
        other => return Err(format!("{text:?}: unknown unit {other:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")),
    };
    Ok((value * multiplier as f64) as u64)
}
