//! The one place the writer is wired: [`Application::build`] connects its stores, starts its
//! background tasks and builds its router; `main` (through [`run`]) and every test use it.

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use shared::cache::Cache;
use shared::db;
use shared::http::{self, HttpConfig, ServeConfig};
use shared::settings::Settings;
use shared::telemetry::metrics as m;
use shared::telemetry::metrics::PrometheusHandle;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::publisher::{self, Publisher};
use crate::recorder::Recorder;
use crate::{idempotency, routes, AppState};

/// What the writer needs besides its stores.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub http: HttpConfig,
    /// `WRITE_BATCH_WORKERS`: batches recorded at once.
    pub batch_workers: usize,
    /// The pause between the repair loop's passes (tests that run the passes themselves set it
    /// long).
    pub repair_interval: Duration,
    /// How long a POST may wait for a batch to take it. One still waiting then is answered 503
    /// with nothing written; one taken is always answered with its outcome, within the request
    /// timeout (see `startup::start_deadline`).
    pub start_deadline: Duration,
    /// `IDEMPOTENCY_KEY_RETENTION_SECONDS`: how long an idempotency key is honoured.
    pub idempotency_key_retention: Duration,
}

impl WriterConfig {
    /// The writer's configuration with the production repair interval, and a start deadline
    /// of a fifth of the request timeout.
    pub fn new(http: HttpConfig, batch_workers: usize) -> Self {
        Self {
            start_deadline: http.request_timeout / 5,
            http,
            batch_workers,
            repair_interval: publisher::REPAIR_INTERVAL,
            idempotency_key_retention: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The start deadline that leaves a batch, once taken, the whole of its bounded work before the
/// request timeout: a connection (`DB_ACQUIRE_TIMEOUT_MS`), the statement
/// (`DB_STATEMENT_TIMEOUT_MS`, which bounds its lock waits too) and the publish
/// (`REDIS_TIMEOUT_MS`), plus half a second. So a POST never times out while its transaction
/// may still commit, which would invite a retry that applies it twice. At least 100 ms.
pub fn start_deadline(settings: &Settings) -> Duration {
    let taken = settings.db_acquire_timeout
        + settings.db_statement_timeout
        + settings.redis_timeout
        + Duration::from_millis(500);
    settings
        .request_timeout
        .saturating_sub(taken)
        .max(Duration::from_millis(100))
}

/// The writer, wired and running its background tasks: the recorder's workers, the outbox
/// cleaner, the repair loop and the idempotency key expiry. Serve its [`router`](Self::router), then [`stop`](Self::stop).
pub struct Application {
    router: Router,
    state: AppState,
    stop: watch::Sender<bool>,
    recorder_workers: JoinSet<()>,
    repair: JoinHandle<()>,
    outbox_cleaner: JoinHandle<()>,
    key_expiry: JoinHandle<()>,
}

impl Application {
    /// Connects to the stores the settings name, runs the migrations (waiting up to a minute
    /// for PostgreSQL; as the schema's owner when `MIGRATION_DATABASE_URL` is set), and builds
    /// the writer on them. Fails at once when a link that asks for TLS fails its handshake
    /// (`db::check_tls`, `Cache::check_tls`).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // No ping of a pooled connection before each use: it costs a round trip per query (a
        // fifth of the writer's CPU in the benchmark), and every request of the writer queries.
        // After a PostgreSQL restart each pooled connection then fails one request with a 503
        // (clients retry, with their Idempotency-Key) and is replaced.
        let pool =
            db::connect(&settings.pool_config(false)).context("DATABASE_URL is not usable")?;
        migrate(settings, &pool).await?;
        let cache = Cache::connect(&settings.cache_config())?;
        cache.check_tls().await?;
        let http = settings.http_config()?;
        if let Some(keys) = &http.api_keys {
            keys.reload_on_change();
        }
        let config = WriterConfig {
            start_deadline: start_deadline(settings),
            idempotency_key_retention: settings.idempotency_key_retention,
            ..WriterConfig::new(http, settings.write_batch_workers)
        };
        Ok(Self::build_on(pool, cache, config))
    }

    /// Builds the writer on stores already connected (tests pass a fresh database and key
    /// prefix): starts its background tasks and builds its router.
    pub fn build_on(pool: PgPool, cache: Cache, config: WriterConfig) -> Self {
        let (publisher, outbox_cleaner) = Publisher::start(pool.clone(), cache);
        let (stop, stopped) = watch::channel(false);
        let repair = tokio::spawn(
            publisher::repair_loop(
                pool.clone(),
                publisher.clone(),
                config.repair_interval,
                stopped,
            )
            .instrument(tracing::info_span!("outbox_repair")),
        );
        let key_expiry = tokio::spawn(
            idempotency::expire_keys(
                pool.clone(),
                config.idempotency_key_retention,
                stop.subscribe(),
            )
            .instrument(tracing::info_span!("idempotency_key_expiry")),
        );
        let (recorder, recorder_workers) = Recorder::start(
            pool.clone(),
            publisher.clone(),
            config.batch_workers,
            config.start_deadline,
        );
        let state = AppState {
            pool,
            publisher,
            recorder,
        };
        let router = http::with_middleware(
            routes().into_router().with_state(state.clone()),
            config.http,
        );
        Self {
            router,
            state,
            stop,
            recorder_workers,
            repair,
            outbox_cleaner,
            key_expiry,
        }
    }

    /// The router, with the shared middleware: everything it does not serve is a JSON 404 or
    /// 405.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The router alone, for a caller that only sends requests (tests): the background tasks
    /// go on while any clone of it lives, and end, after the work they hold, once none does.
    pub fn into_router(mut self) -> Router {
        self.recorder_workers.detach_all();
        self.router
    }

    /// What the handlers share (tests use the recorder and publisher directly).
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

    /// Stops the background tasks after the work they hold. Every router clone must be dropped
    /// first: the recorder's workers answer what is queued and end once no handler can queue
    /// more, and only then can the outbox cleaner (which they feed) end.
    pub async fn stop(self) {
        let Self {
            router,
            state,
            stop,
            mut recorder_workers,
            repair,
            outbox_cleaner,
            key_expiry,
        } = self;
        drop((router, state));
        let _ = stop.send(true);
        while recorder_workers.join_next().await.is_some() {}
        let repair_ended = repair.await;
        let cleaner_ended = outbox_cleaner.await;
        let expiry_ended = key_expiry.await;
        tracing::info!(
            repair_ok = repair_ended.is_ok(),
            outbox_cleaner_ok = cleaner_ended.is_ok(),
            key_expiry_ok = expiry_ended.is_ok(),
            "writer's background tasks stopped"
        );
    }
}

/// Runs the migrations: as the schema's owner over a pool of its own when
/// `MIGRATION_DATABASE_URL` is set (the role the writer serves as may then change rows, not the
/// schema; scripts/sql/roles.sql), and then grants the roles their privileges again (roles
/// made since the last migration get them at this start); else over the serving pool.
async fn migrate(settings: &Settings, pool: &PgPool) -> anyhow::Result<()> {
    let patience = Duration::from_secs(60);
    let Some(config) = settings.migration_pool_config() else {
        return db::migrate_when_available(pool, patience).await;
    };
    let owner = db::connect(&config).context("MIGRATION_DATABASE_URL is not usable")?;
    let migrated = match db::migrate_when_available(&owner, patience).await {
        Ok(()) => db::grant_role_privileges(&owner)
            .await
            .context("granting the services' roles their privileges"),
        Err(error) => Err(error),
    }
    .context("migrating as MIGRATION_DATABASE_URL's role");
    owner.close().await;
    migrated?;
    // The migrations checked the owner's link; the serving pool's TLS is checked here.
    db::check_tls(pool).await
}

/// Everything `main` does: install the metrics, build the writer, serve until SIGTERM, then
/// drain and stop.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = m::install(settings.service.name())?;
    publisher::init_metrics();
    let app = Application::build(&settings).await?;
    let pool = app.state().pool.clone();
    app.serve(&settings.serve_config(), metrics).await?;
    pool.close().await;
    tracing::info!("writer stopped");
    Ok(())
}
