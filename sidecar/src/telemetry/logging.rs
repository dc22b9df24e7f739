//! Log set-up: `tracing` to stderr, as text or one JSON object per line.

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; a filter that does not parse falls back to `info`
/// rather than leaving the process silent.
pub(crate) fn init(cfg: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cfg.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
