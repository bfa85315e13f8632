//! The one place the reader is wired: [`Application::build`] connects its stores, starts the
//! outbox watcher and builds its router; `main` (through [`run`]) and every test use it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use shared::cache::{self, Cache};
use shared::db;
use shared::http::{self, HttpConfig, ServeConfig};
use shared::settings::Settings;
use shared::telemetry::metrics::{self as m, PrometheusHandle};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::feed::{FeedHub, FeedLimits};
use crate::pause_fence::{keep_time, PauseFence};
use crate::transactions::ListLimits;
use crate::{routes, views, watch_publishing, watch_redis_views, AppState};

/// What the reader needs besides its stores.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    pub http: HttpConfig,
    pub listings: ListLimits,
    pub feeds: FeedLimits,
    /// `PAUSE_FENCE_MS`: how long balance reads from PostgreSQL answer 503 after this process
    /// was paused; zero (the default) never.
    pub pause_fence: Duration,
}

impl ReaderConfig {
    /// The shared HTTP limits, and the default bounds on unpaged listings and change feeds.
    pub fn new(http: HttpConfig) -> Self {
        Self {
            http,
            listings: ListLimits::default(),
            feeds: FeedLimits::default(),
            pause_fence: Duration::ZERO,
        }
    }
}

/// The reader, wired, with its outbox watcher running. Serve its [`router`](Self::router), then
/// [`stop`](Self::stop).
pub struct Application {
    router: Router,
    state: AppState,
    stop: watch::Sender<bool>,
    watcher: JoinHandle<()>,
    views_watcher: JoinHandle<()>,
}

impl Application {
    /// Connects (lazily) to the stores the settings name and builds the reader on them. Fails
    /// when a link that asks for TLS fails its handshake (`db::check_tls`, `Cache::check_tls`).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // The reader queries only on cache misses and listings, so it keeps the ping of a
        // pooled connection before each use and recovers from a PostgreSQL restart without any
        // error.
        let pool =
            db::connect(&settings.pool_config(true)).context("DATABASE_URL is not usable")?;
        db::check_tls(&pool).await?;
        let cache = Cache::connect(&settings.cache_config())?;
        cache.check_tls().await?;
        let http = settings.http_config()?;
        if let Some(keys) = &http.api_keys {
            keys.reload_on_change();
        }
        let config = ReaderConfig {
            http,
            listings: ListLimits::new(settings.list_max_streams, settings.list_deadline),
            feeds: FeedLimits {
                max_streams: settings.feed_max_streams,
                max_per_client: settings.feed_max_per_client,
                ..FeedLimits::default()
            },
            pause_fence: settings.pause_fence,
        };
        Ok(Self::build_on(pool, cache, config))
    }

    /// Builds the reader on stores already connected (tests pass a fresh database and key
    /// prefix): starts the outbox watcher and builds the router.
    pub fn build_on(pool: PgPool, cache: Cache, config: ReaderConfig) -> Self {
        let (stop, stopped) = watch::channel(false);
        let feeds = FeedHub::start(pool.clone(), config.feeds, stopped.clone());
        let pause_fence = Arc::new(PauseFence::new(config.pause_fence));
        tokio::spawn(keep_time(pause_fence.clone(), stop.subscribe()));
        let state = AppState::new(pool, cache, config.listings, feeds, pause_fence);
        let watcher = tokio::spawn(
            watch_publishing(
                state.pool.clone(),
                state.account_views_trusted.clone(),
                stopped,
            )
            .instrument(tracing::info_span!("publish_watch")),
        );
        let views_watcher = tokio::spawn(
            watch_redis_views(
                state.cache.clone(),
                state.redis_views.clone(),
                stop.subscribe(),
            )
            .instrument(tracing::info_span!("redis_views_watch")),
        );
        let router = http::with_middleware(
            routes().into_router().with_state(state.clone()),
            config.http,
        );
        Self {
            router,
            state,
            stop,
            watcher,
            views_watcher,
        }
    }

    /// The router, with the shared middleware.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The router alone, for a caller that only sends requests (tests): the outbox watcher
    /// and the feed hub end when this application is dropped.
    pub fn into_router(self) -> Router {
        self.router
    }

    /// What the handlers share (tests look at whether account views are trusted).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves the router on the configured listeners until SIGTERM or Ctrl-C, then stops.
    pub async fn serve(
        self,
        config: &ServeConfig,
        metrics: PrometheusHandle,
    ) -> anyhow::Result<()> {
        let served =
            http::serve_until_signal(config, self.router.clone(), metrics, self.stop.clone()).await;
        self.stop().await;
        served
    }

    /// Stops the outbox watcher.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let watcher_ended = self.watcher.await;
        let views_watcher_ended = self.views_watcher.await;
        tracing::info!(
            publish_watcher_ok = watcher_ended.is_ok(),
            views_watcher_ok = views_watcher_ended.is_ok(),
            "reader's background tasks stopped"
        );
    }
}

/// Everything `main` does: install the metrics, build the reader, serve until SIGTERM, then
/// drain and stop.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = m::install(settings.service.name())?;
    m::register_hot_series(cache::READ_OPERATIONS, views::NAMES);
    m::feed_metrics_at_zero();
    let app = Application::build(&settings).await?;
    let pool = app.state().pool.clone();
    app.serve(&settings.serve_config(), metrics).await?;
    pool.close().await;
    tracing::info!("reader stopped");
    Ok(())
}
