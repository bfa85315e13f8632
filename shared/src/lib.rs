//! What the writer and the reader both need: domain types, the one API error type, settings,
//! PostgreSQL and Redis access, telemetry and HTTP plumbing.

pub mod cache;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod settings;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::ApiError;

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
    telemetry::init_logging(&settings);
    match run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{} failed", service.name());
            std::process::ExitCode::FAILURE
        }
    }
}
