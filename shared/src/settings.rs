//! Settings from environment variables. Every variable is documented once, in the README's
//! configuration table; the defaults work on a development machine with PostgreSQL and Redis
//! on their standard local ports.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, Context};
use axum::http::HeaderValue;

use crate::db::PoolConfig;

/// Which binary is reading its settings: the defaults for ports and pool sizes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Writer,
    Reader,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Self::Writer => "writer",
            Self::Reader => "reader",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub service: Service,
    /// `DATABASE_URL`
    pub database_url: String,
    /// `REDIS_URL`
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX`: every key this deployment writes starts with it.
    pub redis_key_prefix: String,
    /// `LISTEN_ADDR`: the API port (behind nginx).
    pub listen_addr: SocketAddr,
    /// `METRICS_ADDR`: `/metrics` and `/health`, never exposed through nginx.
    pub metrics_addr: SocketAddr,
    /// `DB_POOL_SIZE`
    pub db_pool_size: u32,
    /// `WRITE_BATCH_WORKERS` (writer): batches of POSTs committed at the same time (group
    /// commit). One keeps batches largest, so the CPU per transaction lowest; more can help
    /// where PostgreSQL has cores to spare and commits wait on disk.
    pub write_batch_workers: usize,
    /// `DB_ACQUIRE_TIMEOUT_MS`: how long a request waits for a database connection before 503.
    pub db_acquire_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS`: server-side limit on any one statement.
    pub db_statement_timeout: Duration,
    /// `REDIS_TIMEOUT_MS`: connect and response timeout of every Redis call.
    pub redis_timeout: Duration,
    /// `REQUEST_TIMEOUT_MS`: a request still running after this gets a 503.
    pub request_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT_MS`: how long in-flight requests may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// `BODY_LIMIT_BYTES`: larger request bodies get a 413.
    pub body_limit_bytes: usize,
    /// `LOG_FORMAT`: `json` (default) or `text`. The level comes from `RUST_LOG`.
    pub log_format: LogFormat,
    /// `CORS_ALLOWED_ORIGINS`: comma-separated origins browsers may call from; `*` (default)
    /// allows any, for local use.
    pub cors_allowed_origins: Vec<HeaderValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl FromStr for LogFormat {
    type Err = anyhow::Error;
    fn from_str(raw: &str) -> anyhow::Result<Self> {
        match raw {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            other => Err(anyhow!("expected `json` or `text`, got `{other}`")),
        }
    }
}

impl Settings {
    /// Reads the process environment; fails with a message that names the bad variable.
    pub fn from_env(service: Service) -> anyhow::Result<Self> {
        Self::from_lookup(service, |name| std::env::var(name).ok())
    }

    /// Reads settings from any source of variables (tests pass a map).
    pub fn from_lookup(
        service: Service,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let env = Env(lookup);
        let (listen, metrics, pool) = match service {
            Service::Writer => ("127.0.0.1:8081", "127.0.0.1:9181", "16"),
            Service::Reader => ("127.0.0.1:8082", "127.0.0.1:9182", "8"),
        };
        Ok(Self {
            service,
            database_url: env.get(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/transactions",
            ),
            redis_url: env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_key_prefix: env.get("REDIS_KEY_PREFIX", "tm:"),
            listen_addr: env.parse("LISTEN_ADDR", listen)?,
            metrics_addr: env.parse("METRICS_ADDR", metrics)?,
            db_pool_size: env.parse("DB_POOL_SIZE", pool)?,
            write_batch_workers: env.parse("WRITE_BATCH_WORKERS", "1")?,
            db_acquire_timeout: env.millis("DB_ACQUIRE_TIMEOUT_MS", 2_000)?,
            db_statement_timeout: env.millis("DB_STATEMENT_TIMEOUT_MS", 5_000)?,
            redis_timeout: env.millis("REDIS_TIMEOUT_MS", 500)?,
            request_timeout: env.millis("REQUEST_TIMEOUT_MS", 10_000)?,
            shutdown_timeout: env.millis("SHUTDOWN_TIMEOUT_MS", 10_000)?,
            body_limit_bytes: env.parse("BODY_LIMIT_BYTES", "16384")?,
            log_format: env.parse("LOG_FORMAT", "json")?,
            cors_allowed_origins: parse_origins(&env.get("CORS_ALLOWED_ORIGINS", "*"))?,
        })
    }
}

impl Settings {
    /// This service's PostgreSQL pool. Whether to ping a connection before each use depends on
    /// how the service uses the database, so the service says.
    pub fn pool_config(&self, test_before_acquire: bool) -> PoolConfig {
        PoolConfig {
            database_url: self.database_url.clone(),
            application_name: self.service.name(),
            max_connections: self.db_pool_size,
            acquire_timeout: self.db_acquire_timeout,
            statement_timeout: self.db_statement_timeout,
            test_before_acquire,
        }
    }
}

/// `*` (any origin) becomes an empty list; anything else must be a list of `scheme://host[:port]`.
fn parse_origins(raw: &str) -> anyhow::Result<Vec<HeaderValue>> {
    if raw.trim() == "*" {
        return Ok(Vec::new());
    }
    raw.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/');
            anyhow::ensure!(
                valid,
                "CORS_ALLOWED_ORIGINS: `{origin}` is not an origin like https://app.example.com"
            );
            HeaderValue::from_str(origin).with_context(|| {
                format!("CORS_ALLOWED_ORIGINS: `{origin}` is not a valid header value")
            })
        })
        .collect()
}

/// A source of variables, where an unset and an empty variable both mean "use the default".
struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, name: &str, default: &str) -> String {
        (self.0)(name)
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| default.to_owned())
    }

    fn parse<T>(&self, name: &str, default: &str) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let raw = self.get(name, default);
        raw.parse()
            .map_err(|error| anyhow!("{name} has an invalid value `{raw}`: {error}"))
    }

    fn millis(&self, name: &str, default: u64) -> anyhow::Result<Duration> {
        let raw = self.get(name, &default.to_string());
        let value: u64 = raw.parse().with_context(|| {
            format!("{name} must be a whole number of milliseconds, got `{raw}`")
        })?;
        Ok(Duration::from_millis(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(service: Service, vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(service, |name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_give_each_service_its_own_ports() {
        let writer = settings(Service::Writer, &[]).expect("defaults parse");
        let reader = settings(Service::Reader, &[]).expect("defaults parse");
        assert_ne!(writer.listen_addr, reader.listen_addr);
        assert_ne!(writer.metrics_addr, reader.metrics_addr);
        assert_eq!(writer.request_timeout, Duration::from_secs(10));
    }

    #[test]
    fn variables_override_defaults() {
        let parsed = settings(
            Service::Reader,
            &[
                ("LISTEN_ADDR", "0.0.0.0:80"),
                ("DB_POOL_SIZE", "3"),
                ("LOG_FORMAT", "text"),
            ],
        )
        .expect("valid");
        assert_eq!(parsed.listen_addr.port(), 80);
        assert_eq!(parsed.db_pool_size, 3);
        assert_eq!(parsed.log_format, LogFormat::Text);
    }

    #[test]
    fn cors_origins_are_any_by_default_or_an_explicit_list() {
        let any = settings(Service::Writer, &[]).expect("defaults");
        assert!(any.cors_allowed_origins.is_empty());
        let listed = settings(
            Service::Writer,
            &[(
                "CORS_ALLOWED_ORIGINS",
                "https://a.example, http://localhost:3000",
            )],
        )
        .expect("valid");
        assert_eq!(listed.cors_allowed_origins.len(), 2);
        assert!(settings(Service::Writer, &[("CORS_ALLOWED_ORIGINS", "a.example")]).is_err());
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let error = settings(Service::Writer, &[("DB_POOL_SIZE", "many")]).expect_err("invalid");
        assert!(error.to_string().contains("DB_POOL_SIZE"), "{error}");
        let error =
            settings(Service::Writer, &[("REDIS_TIMEOUT_MS", "soon")]).expect_err("invalid");
        assert!(error.to_string().contains("REDIS_TIMEOUT_MS"), "{error}");
    }
}
