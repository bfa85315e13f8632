//! Every variable the services read, with each service's default: the one list that the
//! README's configuration table and the shell scripts' defaults are tested against.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, Context};

use super::Service;
use crate::telemetry::DEFAULT_LOG_FILTER;

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

/// Every variable, in the order of the README's table, which says what each means.
pub const VARIABLES: &[Variable] = &[
    both(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/transactions",
    ),
    // Writer only (the reader never migrates); unset: migrations run over DATABASE_URL.
    optional("MIGRATION_DATABASE_URL"),
    both("REDIS_URL", "redis://127.0.0.1:6379/0"),
    optional("REDIS_CA_FILE"),
    both("REDIS_KEY_PREFIX", "tm:"),
    optional("REDIS_SENTINELS"),
    both("REDIS_SENTINEL_MASTER", "ledger"),
    optional("REDIS_SENTINEL_USERNAME"),
    optional("REDIS_SENTINEL_PASSWORD"),
    per_service("LISTEN_ADDR", "127.0.0.1:8081", "127.0.0.1:8082"),
    optional("LISTEN_SOCKET"),
    per_service("METRICS_ADDR", "127.0.0.1:9181", "127.0.0.1:9182"),
    per_service("DB_POOL_SIZE", "16", "8"),
    both("WRITE_BATCH_WORKERS", "1"),
    // tokio reads it in `#[tokio::main]`; unset, one worker per core.
    read_by_library("TOKIO_WORKER_THREADS", None),
    both("DB_ACQUIRE_TIMEOUT_MS", "2000"),
    both("DB_STATEMENT_TIMEOUT_MS", "5000"),
    both("DB_LOCK_TIMEOUT_MS", "2000"),
    both("REDIS_TIMEOUT_MS", "500"),
    both("REDIS_VIEW_TTL_SECONDS", "300"),
    both("REDIS_STREAM_MAX_LEN", "100000"),
    both("REQUEST_TIMEOUT_MS", "10000"),
    both("SHUTDOWN_TIMEOUT_MS", "10000"),
    both("BODY_LIMIT_BYTES", "16384"),
    both("LIST_MAX_STREAMS", "4"),
    both("LIST_DEADLINE_MS", "60000"),
    both("FEED_MAX_STREAMS", "10000"),
    both("FEED_MAX_PER_CLIENT", "32"),
    both("PAUSE_FENCE_MS", "0"),
    // tracing-subscriber's `EnvFilter` reads it (see `telemetry::init_logging`).
    read_by_library("RUST_LOG", Some(DEFAULT_LOG_FILTER)),
    both("LOG_FORMAT", "json"),
    both("CORS_ALLOWED_ORIGINS", "*"),
    optional("API_KEYS_FILE"),
    both("IDEMPOTENCY_KEY_RETENTION_SECONDS", "86400"),
];

/// A source of variables, where an unset and an empty variable both mean "use the default"
/// (this service's, from [`VARIABLES`]).
pub(super) struct Env<F> {
    pub(super) lookup: F,
    pub(super) service: Service,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub(super) fn get(&self, name: &str) -> anyhow::Result<String> {
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
    pub(super) fn optional(&self, name: &str) -> anyhow::Result<Option<String>> {
        anyhow::ensure!(
            VARIABLES.iter().any(|variable| variable.name == name),
            "{name} is not declared in settings::VARIABLES"
        );
        Ok((self.lookup)(name).filter(|value| !value.is_empty()))
    }

    pub(super) fn parse<T>(&self, name: &str) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let raw = self.get(name)?;
        raw.parse()
            .map_err(|error| anyhow!("{name} has an invalid value `{raw}`: {error}"))
    }

    /// A whole number above zero (a bound: zero would mean "nothing kept").
    pub(super) fn positive(&self, name: &str) -> anyhow::Result<u64> {
        let raw = self.get(name)?;
        match raw.parse::<u64>() {
            Ok(value) if value > 0 => Ok(value),
            _ => Err(anyhow!(
                "{name} must be a whole number above zero, got `{raw}`"
            )),
        }
    }

    pub(super) fn millis(&self, name: &str) -> anyhow::Result<Duration> {
        let raw = self.get(name)?;
        let value: u64 = raw.parse().with_context(|| {
            format!("{name} must be a whole number of milliseconds, got `{raw}`")
        })?;
        Ok(Duration::from_millis(value))
    }
}
