//! Settings from environment variables: the top layer. It reads the environment once and
//! hands each layer below a small config of its own ([`PoolConfig`], [`CacheConfig`],
//! [`HttpConfig`], [`ServeConfig`], [`LogFormat`]); no other layer reads settings.
//!
//! Every variable is documented once, in the README's configuration table (name, default,
//! meaning); the code's defaults are in [`VARIABLES`] (`settings/variables.rs`). Tests fail when
//! the README's table or the shell scripts' defaults (`scripts/lib/defaults.sh`) disagree with
//! them. The defaults work on a development machine with PostgreSQL and Redis on their standard
//! local ports.

mod sentinels;
mod variables;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::http::HeaderValue;

use crate::cache::{CacheConfig, Retention, SentinelAuth};
use crate::db::PoolConfig;
use crate::http::{ApiKeys, HttpConfig, ServeConfig};
pub use crate::telemetry::LogFormat;
use sentinels::{parse_sentinels, sentinel_auth};
use variables::Env;
pub use variables::{Variable, VARIABLES};

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

/// The settings of one service. Each field names its variable; what it means is in the README.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: Service,
    /// `DATABASE_URL`
    pub database_url: String,
    /// `MIGRATION_DATABASE_URL` (writer): the schema owner's URL, used only to migrate; unset,
    /// the writer migrates over `DATABASE_URL`.
    pub migration_database_url: Option<String>,
    /// `REDIS_URL`
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX`
    pub redis_key_prefix: String,
    /// `REDIS_CA_FILE`: the CA (PEM) a `rediss://` Redis's certificate must chain to; unset:
    /// the system's roots.
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// `REDIS_SENTINELS` (`host:port` each); empty: the one Redis at `REDIS_URL`.
    pub redis_sentinels: Vec<String>,
    /// `REDIS_SENTINEL_MASTER`
    pub redis_sentinel_master: String,
    /// `REDIS_SENTINEL_USERNAME`, `REDIS_SENTINEL_PASSWORD`
    pub redis_sentinel_auth: SentinelAuth,
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
    /// `DB_LOCK_TIMEOUT_MS`
    pub db_lock_timeout: Duration,
    /// `REDIS_TIMEOUT_MS`
    pub redis_timeout: Duration,
    pub redis_retention: Retention,
    /// Unpaged `GET /transactions` streaming at once per reader instance.
    pub list_max_streams: usize,
    /// How long one unpaged listing may take.
    pub list_deadline: Duration,
    /// `FEED_MAX_STREAMS`: change feeds open at once per reader instance (503 beyond).
    pub feed_max_streams: usize,
    /// `FEED_MAX_PER_CLIENT`: change feeds open at once per client on one instance (429 beyond).
    pub feed_max_per_client: usize,
    /// `PAUSE_FENCE_MS`: balance reads from PostgreSQL refused this long after a pause (reader).
    pub pause_fence: Duration,
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
    /// `API_KEYS_FILE`; unset: no API keys.
    pub api_keys_file: Option<std::path::PathBuf>,
    /// `IDEMPOTENCY_KEY_RETENTION_SECONDS` (writer): how long an `Idempotency-Key` is honoured.
    pub idempotency_key_retention: Duration,
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
            migration_database_url: env.optional("MIGRATION_DATABASE_URL")?,
            redis_url: env.get("REDIS_URL")?,
            redis_key_prefix: env.get("REDIS_KEY_PREFIX")?,
            redis_ca_file: env.optional("REDIS_CA_FILE")?.map(Into::into),
            redis_sentinels: parse_sentinels(env.optional("REDIS_SENTINELS")?.as_deref())?,
            redis_sentinel_master: env.get("REDIS_SENTINEL_MASTER")?,
            redis_sentinel_auth: sentinel_auth(&env)?,
            listen_addr: env.parse("LISTEN_ADDR")?,
            listen_socket: env.optional("LISTEN_SOCKET")?.map(Into::into),
            metrics_addr: env.parse("METRICS_ADDR")?,
            db_pool_size: env.parse("DB_POOL_SIZE")?,
            write_batch_workers: env.parse("WRITE_BATCH_WORKERS")?,
            db_acquire_timeout: env.millis("DB_ACQUIRE_TIMEOUT_MS")?,
            db_statement_timeout: env.millis("DB_STATEMENT_TIMEOUT_MS")?,
            db_lock_timeout: env.millis("DB_LOCK_TIMEOUT_MS")?,
            redis_timeout: env.millis("REDIS_TIMEOUT_MS")?,
            redis_retention: Retention {
                view_ttl: Duration::from_secs(env.positive("REDIS_VIEW_TTL_SECONDS")?),
                stream_max_len: env.positive("REDIS_STREAM_MAX_LEN")? as usize,
            },
            request_timeout: env.millis("REQUEST_TIMEOUT_MS")?,
            shutdown_timeout: env.millis("SHUTDOWN_TIMEOUT_MS")?,
            body_limit_bytes: env.parse("BODY_LIMIT_BYTES")?,
            list_max_streams: env.positive("LIST_MAX_STREAMS")? as usize,
            list_deadline: env.millis("LIST_DEADLINE_MS")?,
            feed_max_streams: env.positive("FEED_MAX_STREAMS")? as usize,
            feed_max_per_client: env.positive("FEED_MAX_PER_CLIENT")? as usize,
            pause_fence: env.millis("PAUSE_FENCE_MS")?,
            log_format: env.parse("LOG_FORMAT")?,
            cors_allowed_origins: parse_origins(&env.get("CORS_ALLOWED_ORIGINS")?)?,
            api_keys_file: env.optional("API_KEYS_FILE")?.map(Into::into),
            idempotency_key_retention: Duration::from_secs(
                env.positive("IDEMPOTENCY_KEY_RETENTION_SECONDS")?,
            ),
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
            lock_timeout: self.db_lock_timeout,
            test_before_acquire,
        }
    }

    /// The pool to run the migrations over, when the schema's owner is not the role the
    /// service serves as (`MIGRATION_DATABASE_URL`): one connection, closed once migrated.
    pub fn migration_pool_config(&self) -> Option<PoolConfig> {
        let database_url = self.migration_database_url.clone()?;
        Some(PoolConfig {
            database_url,
            application_name: "writer-migrations",
            max_connections: 1,
            ..self.pool_config(false)
        })
    }

    /// This service's Redis: the master the Sentinels name, if `REDIS_SENTINELS` is set, else
    /// `REDIS_URL`.
    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            redis_url: self.redis_url.clone(),
            ca_file: self.redis_ca_file.clone(),
            sentinels: self.redis_sentinels.clone(),
            sentinel_master: self.redis_sentinel_master.clone(),
            sentinel_auth: self.redis_sentinel_auth.clone(),
            key_prefix: self.redis_key_prefix.clone(),
            timeout: self.redis_timeout,
            retention: self.redis_retention,
        }
    }

    /// The limits of the shared HTTP middleware, and the API keys (read from `API_KEYS_FILE`
    /// now: a file that does not parse stops the service at start-up).
    pub fn http_config(&self) -> anyhow::Result<HttpConfig> {
        Ok(HttpConfig {
            body_limit_bytes: self.body_limit_bytes,
            request_timeout: self.request_timeout,
            cors_allowed_origins: self.cors_allowed_origins.clone(),
            api_keys: self
                .api_keys_file
                .as_deref()
                .map(ApiKeys::load)
                .transpose()?,
        })
    }

    /// Where the service listens, and how long it drains on shutdown.
    pub fn serve_config(&self) -> ServeConfig {
        ServeConfig {
            service_name: self.service.name(),
            listen_addr: self.listen_addr,
            listen_socket: self.listen_socket.clone(),
            metrics_addr: self.metrics_addr,
            shutdown_timeout: self.shutdown_timeout,
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
    fn the_sentinels_and_their_credentials_reach_the_cache() {
        let none = settings(Service::Reader, &[])
            .expect("defaults")
            .cache_config();
        assert!(none.sentinels.is_empty());
        assert_eq!(none.sentinel_master, "ledger");
        assert_eq!(none.sentinel_auth, SentinelAuth::default());
        let vars = [
            ("REDIS_SENTINELS", "127.0.0.1:26379, sentinel-2:26379"),
            ("REDIS_SENTINEL_USERNAME", "ledger"),
            ("REDIS_SENTINEL_PASSWORD", "s3cret"),
        ];
        let given = settings(Service::Writer, &vars)
            .expect("valid")
            .cache_config();
        assert_eq!(given.sentinels, ["127.0.0.1:26379", "sentinel-2:26379"]);
        assert_eq!(given.sentinel_auth.password.as_deref(), Some("s3cret"));
        assert_eq!(given.sentinel_auth.username.as_deref(), Some("ledger"));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let error = settings(Service::Writer, &[("DB_POOL_SIZE", "many")]).expect_err("invalid");
        assert!(error.to_string().contains("DB_POOL_SIZE"), "{error}");
        let error =
            settings(Service::Writer, &[("REDIS_TIMEOUT_MS", "soon")]).expect_err("invalid");
        assert!(error.to_string().contains("REDIS_TIMEOUT_MS"), "{error}");
    }

    /// `NAME=value` lines of `scripts/lib/defaults.sh`, the shell scripts' one source of
    /// defaults.
    fn shell_defaults() -> HashMap<String, String> {
        include_str!("../../scripts/lib/defaults.sh")
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.trim_matches('"').to_owned()))
            .collect()
    }

    #[test]
    fn the_shell_defaults_match_the_services_defaults() {
        let shell = shell_defaults();
        let writer = settings(Service::Writer, &[]).expect("defaults parse");
        let reader = settings(Service::Reader, &[]).expect("defaults parse");
        let port = |name: &str| -> u16 {
            shell[name]
                .parse()
                .unwrap_or_else(|_| panic!("{name} in scripts/lib/defaults.sh is a port"))
        };
        assert_eq!(port("DEFAULT_WRITER_PORT"), writer.listen_addr.port());
        assert_eq!(port("DEFAULT_READER_PORT"), reader.listen_addr.port());
        assert_eq!(
            port("DEFAULT_WRITER_METRICS_PORT"),
            writer.metrics_addr.port()
        );
        assert_eq!(
            port("DEFAULT_READER_METRICS_PORT"),
            reader.metrics_addr.port()
        );
        // Any DEFAULT_<VARIABLE> the scripts declare for a variable of the services.
        let mut compared = 0;
        for variable in VARIABLES {
            if let Some(value) = shell.get(&format!("DEFAULT_{}", variable.name)) {
                assert_eq!(
                    Some(value.as_str()),
                    variable.writer_default,
                    "{}",
                    variable.name
                );
                assert_eq!(
                    Some(value.as_str()),
                    variable.reader_default,
                    "{}",
                    variable.name
                );
                compared += 1;
            }
        }
        assert!(
            compared >= 2,
            "DEFAULT_DATABASE_URL and DEFAULT_REDIS_URL are compared"
        );
    }
}
