//! Settings from environment variables. Every variable is documented once, in the README's
//! configuration table (name, default, meaning); the code's defaults are in [`VARIABLES`], and
//! the test `the_readme_table_documents_every_variable_with_its_default` fails when the two
//! disagree. The defaults work on a development machine with PostgreSQL and Redis on their
//! standard local ports.

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

/// A variable the services read and its default for each service (`None`: no fixed default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    pub name: &'static str,
    pub writer_default: Option<&'static str>,
    pub reader_default: Option<&'static str>,
    /// False for the variables a library reads itself (`RUST_LOG`, `TOKIO_WORKER_THREADS`).
    pub read_by_settings: bool,
}

const fn both(name: &'static str, default: &'static str) -> Variable {
    per_service(name, default, default)
}

const fn per_service(name: &'static str, writer: &'static str, reader: &'static str) -> Variable {
    Variable {
        name,
        writer_default: Some(writer),
        reader_default: Some(reader),
        read_by_settings: true,
    }
}

/// A variable with no default: unset means the feature is off.
const fn optional(name: &'static str) -> Variable {
    Variable {
        name,
        writer_default: None,
        reader_default: None,
        read_by_settings: true,
    }
}

const fn read_by_library(name: &'static str, default: Option<&'static str>) -> Variable {
    Variable {
        name,
        writer_default: default,
        reader_default: default,
        read_by_settings: false,
    }
}

/// The log filter when `RUST_LOG` is unset (telemetry applies it).
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Every variable, in the order of the README's table, which says what each means.
pub const VARIABLES: &[Variable] = &[
    both(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/transactions",
    ),
    both("REDIS_URL", "redis://127.0.0.1:6379/0"),
    both("REDIS_KEY_PREFIX", "tm:"),
    optional("REDIS_SENTINELS"),
    both("REDIS_SENTINEL_MASTER", "ledger"),
    per_service("LISTEN_ADDR", "127.0.0.1:8081", "127.0.0.1:8082"),
    optional("LISTEN_SOCKET"),
    per_service("METRICS_ADDR", "127.0.0.1:9181", "127.0.0.1:9182"),
    per_service("DB_POOL_SIZE", "16", "8"),
    both("WRITE_BATCH_WORKERS", "1"),
    // tokio reads it in `#[tokio::main]`; unset, one worker per core.
    read_by_library("TOKIO_WORKER_THREADS", None),
    both("DB_ACQUIRE_TIMEOUT_MS", "2000"),
    both("DB_STATEMENT_TIMEOUT_MS", "5000"),
    both("REDIS_TIMEOUT_MS", "500"),
    both("REQUEST_TIMEOUT_MS", "10000"),
    both("SHUTDOWN_TIMEOUT_MS", "10000"),
    both("BODY_LIMIT_BYTES", "16384"),
    // tracing-subscriber's `EnvFilter` reads it (see `telemetry::init_logging`).
    read_by_library("RUST_LOG", Some(DEFAULT_LOG_FILTER)),
    both("LOG_FORMAT", "json"),
    both("CORS_ALLOWED_ORIGINS", "*"),
];

/// The settings of one service. Each field names its variable; what it means is in the README.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: Service,
    /// `DATABASE_URL`
    pub database_url: String,
    /// `REDIS_URL`
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX`
    pub redis_key_prefix: String,
    /// `REDIS_SENTINELS` (`host:port` each); empty: the one Redis at `REDIS_URL`.
    pub redis_sentinels: Vec<String>,
    /// `REDIS_SENTINEL_MASTER`
    pub redis_sentinel_master: String,
    /// `LISTEN_ADDR`
    pub listen_addr: SocketAddr,
    /// `LISTEN_SOCKET`: a Unix socket the API is also served on (for a proxy on this host).
    pub listen_socket: Option<std::path::PathBuf>,
    /// `METRICS_ADDR` (never exposed through nginx)
    pub metrics_addr: SocketAddr,
    /// `DB_POOL_SIZE`
    pub db_pool_size: u32,
    /// `WRITE_BATCH_WORKERS` (writer)
    pub write_batch_workers: usize,
    /// `DB_ACQUIRE_TIMEOUT_MS`
    pub db_acquire_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS`
    pub db_statement_timeout: Duration,
    /// `REDIS_TIMEOUT_MS`
    pub redis_timeout: Duration,
    /// `REQUEST_TIMEOUT_MS`
    pub request_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT_MS`
    pub shutdown_timeout: Duration,
    /// `BODY_LIMIT_BYTES`
    pub body_limit_bytes: usize,
    /// `LOG_FORMAT` (the level comes from `RUST_LOG`)
    pub log_format: LogFormat,
    /// `CORS_ALLOWED_ORIGINS`; empty means any origin (`*`).
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
        let env = Env { lookup, service };
        Ok(Self {
            service,
            database_url: env.get("DATABASE_URL")?,
            redis_url: env.get("REDIS_URL")?,
            redis_key_prefix: env.get("REDIS_KEY_PREFIX")?,
            redis_sentinels: parse_sentinels(env.optional("REDIS_SENTINELS")?.as_deref())?,
            redis_sentinel_master: env.get("REDIS_SENTINEL_MASTER")?,
            listen_addr: env.parse("LISTEN_ADDR")?,
            listen_socket: env.optional("LISTEN_SOCKET")?.map(Into::into),
            metrics_addr: env.parse("METRICS_ADDR")?,
            db_pool_size: env.parse("DB_POOL_SIZE")?,
            write_batch_workers: env.parse("WRITE_BATCH_WORKERS")?,
            db_acquire_timeout: env.millis("DB_ACQUIRE_TIMEOUT_MS")?,
            db_statement_timeout: env.millis("DB_STATEMENT_TIMEOUT_MS")?,
            redis_timeout: env.millis("REDIS_TIMEOUT_MS")?,
            request_timeout: env.millis("REQUEST_TIMEOUT_MS")?,
            shutdown_timeout: env.millis("SHUTDOWN_TIMEOUT_MS")?,
            body_limit_bytes: env.parse("BODY_LIMIT_BYTES")?,
            log_format: env.parse("LOG_FORMAT")?,
            cors_allowed_origins: parse_origins(&env.get("CORS_ALLOWED_ORIGINS")?)?,
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

/// `host:port,host:port,…`; each must name a port.
fn parse_sentinels(raw: Option<&str>) -> anyhow::Result<Vec<String>> {
    raw.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(|address| {
            let port = address
                .rsplit_once(':')
                .map(|(_, port)| port.parse::<u16>());
            anyhow::ensure!(
                matches!(port, Some(Ok(_))),
                "REDIS_SENTINELS: `{address}` is not host:port"
            );
            Ok(address.to_owned())
        })
        .collect()
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

/// A source of variables, where an unset and an empty variable both mean "use the default"
/// (this service's, from [`VARIABLES`]).
struct Env<F> {
    lookup: F,
    service: Service,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, name: &str) -> anyhow::Result<String> {
        let variable = VARIABLES
            .iter()
            .find(|variable| variable.name == name)
            .ok_or_else(|| anyhow!("{name} is not declared in settings::VARIABLES"))?;
        let default = match self.service {
            Service::Writer => variable.writer_default,
            Service::Reader => variable.reader_default,
        };
        (self.lookup)(name)
            .filter(|value| !value.is_empty())
            .or_else(|| default.map(str::to_owned))
            .ok_or_else(|| anyhow!("{name} has no default in settings::VARIABLES"))
    }

    /// A variable without a default: `None` when unset or empty.
    fn optional(&self, name: &str) -> anyhow::Result<Option<String>> {
        anyhow::ensure!(
            VARIABLES.iter().any(|variable| variable.name == name),
            "{name} is not declared in settings::VARIABLES"
        );
        Ok((self.lookup)(name).filter(|value| !value.is_empty()))
    }

    fn parse<T>(&self, name: &str) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let raw = self.get(name)?;
        raw.parse()
            .map_err(|error| anyhow!("{name} has an invalid value `{raw}`: {error}"))
    }

    fn millis(&self, name: &str) -> anyhow::Result<Duration> {
        let raw = self.get(name)?;
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

    /// The README's configuration table: (variable, writer default, reader default). A default
    /// cell is `` `value` `` for both services, `` writer `a`, reader `b` `` for each, or text
    /// without a leading value where the variable has no fixed default.
    fn readme_table() -> Vec<(String, Option<String>, Option<String>)> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## Configuration\n")
            .nth(1)
            .expect("README.md has a Configuration section");
        section
            .lines()
            .take_while(|line| !line.starts_with("## "))
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let name = cells[1].trim_matches('`').to_owned();
                let leading_value =
                    |text: &str| Some(text.strip_prefix('`')?.split('`').next()?.to_owned());
                let value_after =
                    |label: &str| leading_value(cells[2].split(label).nth(1).unwrap_or_default());
                let (writer, reader) = if cells[2].starts_with("writer `") {
                    (value_after("writer "), value_after("reader "))
                } else {
                    (leading_value(cells[2]), leading_value(cells[2]))
                };
                (name, writer, reader)
            })
            .collect()
    }

    #[test]
    fn the_readme_table_documents_every_variable_with_its_default() {
        let documented = readme_table();
        let declared: Vec<_> = VARIABLES
            .iter()
            .map(|variable| {
                (
                    variable.name.to_owned(),
                    variable.writer_default.map(str::to_owned),
                    variable.reader_default.map(str::to_owned),
                )
            })
            .collect();
        for row in &documented {
            assert!(
                declared.contains(row),
                "README.md documents {row:?}, settings::VARIABLES has {:?}",
                declared.iter().find(|declared| declared.0 == row.0)
            );
        }
        for row in &declared {
            assert!(
                documented.contains(row),
                "settings::VARIABLES has {row:?}, README.md documents {:?}",
                documented.iter().find(|documented| documented.0 == row.0)
            );
        }
    }

    #[test]
    fn settings_read_exactly_the_declared_variables() {
        for service in [Service::Writer, Service::Reader] {
            let read = std::cell::RefCell::new(Vec::new());
            Settings::from_lookup(service, |name| {
                read.borrow_mut().push(name.to_owned());
                None
            })
            .expect("defaults parse");
            let mut read = read.into_inner();
            read.sort();
            let mut declared: Vec<String> = VARIABLES
                .iter()
                .filter(|variable| variable.read_by_settings)
                .map(|variable| variable.name.to_owned())
                .collect();
            declared.sort();
            assert_eq!(read, declared, "{service:?}");
        }
    }

    #[test]
    fn sentinels_are_a_list_of_host_and_port() {
        let single = settings(Service::Reader, &[]).expect("defaults");
        assert!(single.redis_sentinels.is_empty());
        assert_eq!(single.redis_sentinel_master, "ledger");
        let listed = settings(
            Service::Reader,
            &[("REDIS_SENTINELS", "127.0.0.1:26379, sentinel-2:26379")],
        )
        .expect("valid");
        assert_eq!(
            listed.redis_sentinels,
            ["127.0.0.1:26379", "sentinel-2:26379"]
        );
        let error =
            settings(Service::Reader, &[("REDIS_SENTINELS", "127.0.0.1")]).expect_err("no port");
        assert!(error.to_string().contains("REDIS_SENTINELS"), "{error}");
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
