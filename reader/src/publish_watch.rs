//! Whether account views in Redis may be trusted: the reader watches the writer's outbox.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shared::db;
use sqlx::PgPool;

/// A change older than this still in the outbox means publishing is failing (published rows
/// leave the outbox within milliseconds).
pub const PUBLISH_LAG_LIMIT: Duration = Duration::from_secs(1);
/// How often the reader checks.
pub const PUBLISH_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Keeps `trusted` in step with the writer's outbox until `stop`. When the writer cannot publish
/// (Redis unreachable for it, or it died between commit and publish), its changes wait in the
/// outbox; a view the reader filled, or one that survived in Redis, could then be older than a
/// write the client already got a 201 for. While that lasts, account reads bypass Redis.
/// Transaction views never change, so they are always safe to serve.
pub async fn watch_publishing(
    pool: PgPool,
    trusted: Arc<AtomicBool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match db::publishing_is_behind(&pool, PUBLISH_LAG_LIMIT).await {
            Ok(behind) => {
                if trusted.swap(!behind, Ordering::Relaxed) == behind {
                    tracing::warn!(
                        behind,
                        "writer publishing lag changed; account views in Redis {}",
                        if behind { "bypassed" } else { "used again" }
                    );
                }
            }
            // PostgreSQL down: no write can be acknowledged, so nothing new can go stale.
            Err(error) => tracing::debug!(
                error = shared::telemetry::error_chain(&error),
                "cannot check the publish backlog"
            ),
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(PUBLISH_CHECK_INTERVAL) => {}
        }
    }
}
