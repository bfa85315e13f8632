//! What the writer and the reader both need, in layers that only point down (a test,
//! `tests/layers.rs`, fails when one points up):
//!
//! | layer | knows | what |
//! |---|---|---|
//! | [`settings`] | all below | reads the environment, builds each layer's config |
//! | [`http`] | storage, telemetry, domain | axum plumbing: routes, middleware, extractors, `ApiError`, serving |
//! | [`db`], [`cache`] (storage) | telemetry, domain | PostgreSQL and Redis; neither settings, axum nor which service runs them |
//! | [`telemetry`] | nothing | logs and metrics |
//! | [`domain`] | nothing | types that parse, validation |

pub mod cache;
pub mod db;
pub mod domain;
pub mod http;
pub mod settings;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use http::ApiError;

use settings::{Service, Settings};

/// The whole `main` of a service binary: read the settings (exit 2 with a message naming the
/// bad variable), set up logging, run, and turn the outcome into an exit code.
pub async fn main_for<F, Fut>(service: Service, run: F) -> std::process::ExitCode
where
    F: FnOnce(Settings) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let settings = match Settings::from_env(service) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{}: invalid configuration: {error:#}", service.name());
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init_logging(settings.log_format);
    match run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{} failed", service.name());
            std::process::ExitCode::FAILURE
        }
    }
}
