//! How the sidecar reads its configuration: the file ([`tradestore_api::config`], whose
//! types, defaults and validation this module re-exports) plus `TRADESTORE_*`
//! environment overrides, and the secrets it points at. Secrets never live in the file:
//! the API token comes from `auth.token_file` (a mounted Secret) or the
//! `TRADESTORE_API_TOKEN` variable.
//!
//! Environment overrides use `__` between levels, e.g.
//! `TRADESTORE_DUCKDB__THREADS=8` or `TRADESTORE_LISTEN=0.0.0.0:8080`.

use std::collections::HashMap;
use std::path::Path;

pub use tradestore_api::config::*;
use tradestore_api::wire::{CLICKHOUSE_PASSWORD_ENV, CONFIG_ENV, ENV_PREFIX, REDIS_PASSWORD_ENV, TOKEN_ENV};

use crate::error::{Error, Result};

/// Loads the file (if any), applies environment overrides from `env`, validates.
pub fn load(file: Option<&Path>, env: HashMap<String, String>) -> Result<Config> {
    let mut builder = config::Config::builder()
        .add_source(config::Config::try_from(&Config::default()).map_err(|e| Error::Config(e.to_string()))?);
    if let Some(path) = file {
        if !path.is_file() {
            return Err(Error::Config(format!("config file {} does not exist", path.display())));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Yaml));
    }
    let overrides: HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with(&format!("{ENV_PREFIX}_"))
                && ![TOKEN_ENV, CONFIG_ENV, REDIS_PASSWORD_ENV, CLICKHOUSE_PASSWORD_ENV].contains(&k.as_str())
        })
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(overrides)),
    );
    let cfg: Config = builder.build().and_then(|c| c.try_deserialize()).map_err(|e| Error::Config(e.to_string()))?;
    cfg.validate()?;
    Ok(cfg)
}

/// The secrets a configuration points at, read from the environment first and then from
/// the mounted file the configuration names: I/O, so not part of the api document.
pub(crate) trait Secrets {
    /// The API token: `TRADESTORE_API_TOKEN`, then `auth.token_file`.
    fn api_token(&self, env: &HashMap<String, String>) -> Result<Option<String>>;
    /// The Redis password: `TRADESTORE_REDIS_PASSWORD`, then `redis.password_file`.
    fn redis_password(&self, env: &HashMap<String, String>) -> Result<Option<String>>;
    /// The ClickHouse password: `TRADESTORE_CLICKHOUSE_PASSWORD`, then `clickhouse.password_file`.
    fn clickhouse_password(&self, env: &HashMap<String, String>) -> Result<Option<String>>;
}

impl Secrets for Config {
    fn api_token(&self, env: &HashMap<String, String>) -> Result<Option<String>> {
        if let Some(t) = env.get(TOKEN_ENV) {
            return non_empty(t.trim(), TOKEN_ENV).map(Some);
        }
        match &self.auth.token_file {
            None => Ok(None),
            Some(path) => {
                let raw = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("auth.token_file {}: {e}", path.display())))?;
                non_empty(raw.trim(), &path.display().to_string()).map(Some)
            }
        }
    }

    fn redis_password(&self, env: &HashMap<String, String>) -> Result<Option<String>> {
        secret(env, REDIS_PASSWORD_ENV, self.redis.password_file.as_deref(), "redis.password_file")
    }

    fn clickhouse_password(&self, env: &HashMap<String, String>) -> Result<Option<String>> {
        secret(env, CLICKHOUSE_PASSWORD_ENV, self.clickhouse.password_file.as_deref(), "clickhouse.password_file")
    }
}

fn secret(env: &HashMap<String, String>, var: &str, file: Option<&Path>, key: &str) -> Result<Option<String>> {
    if let Some(p) = env.get(var) {
        return Ok(Some(p.trim().to_string()));
    }
    match file {
        None => Ok(None),
        Some(path) => std::fs::read_to_string(path)
            .map(|p| Some(p.trim().to_string()))
            .map_err(|e| Error::Config(format!("{key} {}: {e}", path.display()))),
    }
}

fn non_empty(token: &str, source: &str) -> Result<String> {
    if token.len() < 16 {
        return Err(Error::Config(format!("API token from {source} must be at least 16 characters")));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn write(yaml: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), yaml).unwrap();
        f
    }

    #[test]
    fn without_a_file_the_defaults_apply() {
        assert_eq!(load(None, HashMap::new()).unwrap(), Config::default());
    }

    #[test]
    fn file_then_environment_override() {
        let f = write("duckdb:\n  threads: 2\nlifecycle:\n  shutdown_grace: 5s\nlisten: 0.0.0.0:9000\n");
        let c = load(Some(f.path()), env(&[("TRADESTORE_DUCKDB__THREADS", "8"), ("OTHER", "x")])).unwrap();
        assert_eq!(c.duckdb.threads, Some(8));
        assert_eq!(c.lifecycle.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let typo = write("duckdb:\n  thread: 2\n");
        let e = load(Some(typo.path()), HashMap::new()).unwrap_err().to_string();
        assert!(e.contains("thread"), "{e}");
        let range = write("duckdb:\n  threads: 0\n");
        let e = load(Some(range.path()), HashMap::new()).unwrap_err().to_string();
        assert!(e.contains("duckdb.threads"), "{e}");
        let e = load(None, env(&[("TRADESTORE_LISTEN", "nope")])).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = load(Some(Path::new("/nonexistent.yaml")), HashMap::new()).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = load(None, env(&[("TRADESTORE_SNAPSHOTS__SCHEDULE", "61 * * * *")])).unwrap_err().to_string();
        assert!(e.contains("snapshots.schedule"), "{e}");
    }

    #[test]
    fn token_comes_from_env_or_file_and_must_be_long_enough() {
        let c = load(None, HashMap::new()).unwrap();
        assert_eq!(c.api_token(&HashMap::new()).unwrap(), None);
        let e = env(&[(TOKEN_ENV, "0123456789abcdef")]);
        assert_eq!(c.api_token(&e).unwrap().as_deref(), Some("0123456789abcdef"));
        assert!(c.api_token(&env(&[(TOKEN_ENV, "short")])).is_err());
        let f = write("fedcba9876543210\n");
        let mut c2 = c.clone();
        c2.auth.token_file = Some(f.path().to_path_buf());
        assert_eq!(c2.api_token(&HashMap::new()).unwrap().as_deref(), Some("fedcba9876543210"));
    }
}
