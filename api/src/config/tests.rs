use std::time::Duration;

use super::size::parse_size;
use super::*;

#[test]
fn defaults_follow_the_seeds() {
    let c = Config::default();
    // Not the seed's 4: unset, DuckDB gets one CPU fewer than the process may use.
    assert_eq!(c.duckdb.threads, None);
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(c.duckdb.threads(), cpus.saturating_sub(1).max(1));
    let set = DuckdbConfig { threads: Some(3), ..DuckdbConfig::default() };
    assert_eq!(set.threads(), 3);
    assert_eq!(c.writer.queue_batches, 10);
    assert_eq!(c.reader.pool_size, 10);
    assert_eq!(c.duckdb.checkpoint_every_commits, 5_000);
    assert_eq!(c.duckdb.max_wal_bytes, 256 * 1024 * 1024);
    assert_eq!(c.lifecycle.liveness_deadline, Duration::from_secs(10));
    assert_eq!(c.database_file, wire::DATABASE_FILE);
    c.validate().expect("the defaults are valid");
}

/// A change to the default config in table-driven tests.
type Edit = Box<dyn FnOnce(&mut Config)>;

/// The first error `edit` causes on the default config.
fn error_after(edit: impl FnOnce(&mut Config)) -> String {
    let mut c = Config::default();
    edit(&mut c);
    c.validate().expect_err("invalid").to_string()
}

#[test]
fn each_rule_names_its_key() {
    let cases: Vec<(&str, Edit)> = vec![
        ("duckdb.threads must be 1..=256, got 0", Box::new(|c| c.duckdb.threads = Some(0))),
        ("duckdb.threads", Box::new(|c| c.duckdb.threads = Some(257))),
        ("writer.apply_delay must be at most 1s", Box::new(|c| c.writer.apply_delay = Duration::from_millis(1001))),
        (
            "writer.apply_delay_saturated must be at most 1s",
            Box::new(|c| c.writer.apply_delay_saturated = Duration::from_millis(1001)),
        ),
        (
            "duckdb.idle_checkpoint_after must be at most 3600s",
            Box::new(|c| c.duckdb.idle_checkpoint_after = Duration::from_secs(3601)),
        ),
        (
            "duckdb.checkpoint_threshold_bytes must be at least 65536",
            Box::new(|c| c.duckdb.checkpoint_threshold_bytes = 1),
        ),
        ("duckdb.max_wal_bytes", Box::new(|c| c.duckdb.max_wal_bytes = 70_000)),
        ("reader.pool_size must be 1..=256", Box::new(|c| c.reader.pool_size = 0)),
        ("http.max_body_bytes must be at least 1024", Box::new(|c| c.http.max_body_bytes = 1023)),
        ("http.idle_timeout must be at least 100ms", Box::new(|c| c.http.idle_timeout = Duration::from_millis(99))),
        (
            "lifecycle.liveness_deadline must be at least 1s",
            Box::new(|c| c.lifecycle.liveness_deadline = Duration::ZERO),
        ),
        ("database_file", Box::new(|c| c.database_file = "a/b".into())),
        ("redis.url", Box::new(|c| c.redis.url = Some("http://redis".into()))),
        ("clickhouse.table", Box::new(|c| c.clickhouse.table = "a;b".into())),
        ("snapshots.keep_last", Box::new(|c| c.snapshots.keep_last = 0)),
        (
            "integrity.on_failure: recover needs snapshots.schedule",
            Box::new(|c| {
                c.integrity.on_failure = OnIntegrityFailure::Recover;
            }),
        ),
    ];
    for (needle, edit) in cases {
        let e = error_after(edit);
        assert!(e.contains(needle), "{needle:?} not in {e:?}");
    }
}

#[test]
fn sizes_parse_like_duckdb_reads_them() {
    let ok = [
        ("512MiB", 512 << 20),
        ("2GB", 2_000_000_000),
        ("1.5 GiB", 3 << 29),
        ("64mib", 64 << 20),
        ("100M", 100_000_000),
        ("4096 B", 4096),
        ("1TiB", 1 << 40),
        ("8k", 8_000),
    ];
    for (text, bytes) in ok {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    for bad in ["", "MB", "100", "50%", "1.2.3GB", "12 parsecs", "-1GB"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_memory_limit_too_small_to_run_is_refused() {
    let limit = |v: &str| {
        let mut c = Config::default();
        c.duckdb.memory_limit = Some(v.into());
        c.validate().map_err(|e| e.to_string())
    };
    for small in ["3MB", "8MiB", "16MB", "15.9MiB"] {
        let e = limit(small).unwrap_err();
        assert!(e.contains("duckdb.memory_limit") && e.contains("minimum of 16 MiB"), "{small}: {e}");
    }
    assert!(limit("ten").unwrap_err().contains("not a size"));
    assert!(limit("16MiB").is_ok());
    assert!(limit("2GB").is_ok());
}

#[test]
fn schedules_are_five_field_cron_or_six_with_seconds() {
    use chrono::Utc;
    let from = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:20:00Z").unwrap().with_timezone(&Utc);
    let next = |expr: &str| schedule::parse(expr).unwrap().find_next_occurrence(&from, false).unwrap().to_rfc3339();
    assert_eq!(next("0 * * * *"), "2026-01-01T11:00:00+00:00");
    assert_eq!(next("*/15 8-18 * * MON-FRI"), "2026-01-01T10:30:00+00:00");
    assert_eq!(next("*/2 * * * * *"), "2026-01-01T10:20:02+00:00");
    for bad in ["* * * *", "0 0 * * * * 2026", "@hourly", ""] {
        let e = schedule::parse(bad).unwrap_err();
        assert!(matches!(e, ScheduleError::FieldCount(_)), "{bad}: {e}");
        assert!(e.to_string().contains("expected 5 cron fields"), "{bad}: {e}");
    }
    for bad in ["61 * * * *", "0 25 * * *", "* * 32 * *", "nonsense * * * *"] {
        assert!(matches!(schedule::parse(bad), Err(ScheduleError::Cron(_))), "{bad}");
    }
    let mut c = Config::default();
    c.snapshots.schedule = Some("61 * * * *".into());
    assert!(c.validate().unwrap_err().to_string().starts_with("snapshots.schedule \"61 * * * *\": "));
    c.snapshots.schedule = Some("*/5 * * * *".into());
    assert!(c.snapshots.cron().unwrap().is_some());
}
