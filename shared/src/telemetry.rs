//! Logs and metrics: the layer every other one reports through. It knows nothing of settings,
//! HTTP or storage; each service hands it what it needs ([`LogFormat`], its name).
//!
//! Logs: `tracing`, one line per event, JSON by default (`LOG_FORMAT`), level from `RUST_LOG`.
//! Every event carries the spans it happened in: the request's (with its `X-Request-Id`, so
//! one id follows a request from nginx's access log into the service's logs), a batch's (with
//! the request ids it serves), a background task's, and, at debug level, the store call's.
//! Errors are logged with their whole cause chain ([`error_chain`], or anyhow's `{:#}`).
//!
//! Metrics: see [`metrics`], the one place where every metric name is declared.

pub mod metrics;

use std::str::FromStr;

use tracing_subscriber::fmt::MakeWriter;
/// Which events are logged (`RUST_LOG`'s syntax); [`subscriber`] takes one.
pub use tracing_subscriber::EnvFilter;

/// The log filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// How log lines are written (`LOG_FORMAT`).
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
            other => Err(anyhow::anyhow!("expected `json` or `text`, got `{other}`")),
        }
    }
}

/// Installs the global log subscriber, writing to stdout. Call once, first thing in `main`.
pub fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing::subscriber::set_global_default(subscriber(format, filter, std::io::stdout))
        .expect("the log subscriber is installed once, first thing in main");
}

/// The services' log subscriber, writing to `writer`: what [`init_logging`] installs, and what
/// tests install to read the log lines a request leaves.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    match format {
        // `spans`: every span an event happened in, outermost first, so a line logged inside
        // a store call still carries the request id of the request around it.
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

/// An error and its causes, outermost first, as `a: b: c` (what anyhow prints with `{:#}`), so a
/// log line keeps the whole chain.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}
