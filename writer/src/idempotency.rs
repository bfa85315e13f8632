//! Idempotency keys are honoured for `IDEMPOTENCY_KEY_RETENTION_SECONDS`, then cleared: this
//! loop clears the expired ones a bounded batch at a time, so the unique index (and what a
//! client could learn from it) stays as small as the retention. The transactions stay.

use std::time::Duration;

use shared::db;
use sqlx::PgPool;
use tokio::sync::watch;

/// The most keys one statement clears; the loop goes on at once while it clears this many.
const EXPIRY_BATCH: i64 = 10_000;

/// How often the loop looks for expired keys: a quarter of the retention, from 1 s to a minute.
pub fn expiry_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Clears keys older than `retention` until `stop` is set. Several writers may run it at once
/// (rows another writer is clearing are skipped).
pub async fn expire_keys(pool: PgPool, retention: Duration, mut stop: watch::Receiver<bool>) {
    let interval = expiry_interval(retention);
    loop {
        match db::clear_expired_idempotency_keys(&pool, retention, EXPIRY_BATCH).await {
            Ok(cleared) if cleared as i64 == EXPIRY_BATCH => continue,
            Ok(cleared) if cleared > 0 => tracing::debug!(cleared, "expired idempotency keys"),
            Ok(_) => {}
            Err(error) => tracing::warn!(
                error = shared::telemetry::error_chain(&error),
                "clearing expired idempotency keys failed; the next pass retries"
            ),
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
