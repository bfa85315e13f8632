//! The read side: `GET /ping`, `GET /openapi.json`, `GET /accounts/{id}`,
//! `GET /transactions/{id}` and `GET /transactions`.
//!
//! Account and transaction reads are served from the views in Redis; on a miss (or while Redis
//! is unreachable) they read PostgreSQL and fill the view. The list is read from PostgreSQL in
//! batches and streamed: it is every transaction, so it is neither cached nor held in memory.
//!
//! One module per resource, each with its own `routes()`, merged in [`routes`]; the state and
//! the outbox watcher that decides whether account views may be trusted are modules of their
//! own.

mod accounts;
mod meta;
mod publish_watch;
mod state;
mod transactions;
mod views;

use axum::Router;
use shared::cache::{self, Cache};
use shared::db;
use shared::http::{self, HttpConfig, Routes};
use shared::settings::Settings;
use shared::telemetry::metrics as m;

pub use meta::OPENAPI_JSON;
pub use publish_watch::{watch_publishing, PUBLISH_CHECK_INTERVAL, PUBLISH_LAG_LIMIT};
pub use state::AppState;

/// Every route the reader serves (the route-table test compares them with the public API).
pub fn routes() -> Routes<AppState> {
    meta::routes()
        .merge(accounts::routes())
        .merge(transactions::routes())
}

/// The reader's router with the shared middleware.
pub fn app(state: AppState, config: HttpConfig) -> Router {
    http::with_middleware(routes().into_router().with_state(state), config)
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = m::install(settings.service.name())?;
    m::register_hot_series(cache::READ_OPERATIONS, views::NAMES);
    // The reader queries only on cache misses and listings, so it keeps the ping of a pooled
    // connection before each use and recovers from a PostgreSQL restart without any error.
    let state = AppState::new(
        db::connect(&settings.pool_config(true))?,
        Cache::from_settings(&settings)?,
    );
    let pool = state.pool.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch_publishing(
        pool.clone(),
        state.account_views_trusted.clone(),
        stopped,
    ));
    let app = app(state, HttpConfig::from(&settings));
    http::serve_until_signal(&settings, app, metrics, stop).await?;
    let watcher_ended = watcher.await;
    tracing::info!(
        publish_watcher_ok = watcher_ended.is_ok(),
        "background tasks stopped"
    );
    pool.close().await;
    tracing::info!("reader stopped");
    Ok(())
}
