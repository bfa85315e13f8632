//! Whether account views in Redis may be trusted: the reader watches the writer's outbox, and
//! the Redis it reads views from.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::cache::Cache;
use shared::db;
use sqlx::PgPool;

/// A change older than this still in the outbox means publishing is failing (published rows
/// leave the outbox within milliseconds).
pub const PUBLISH_LAG_LIMIT: Duration = Duration::from_secs(1);
/// How often the reader checks.
pub const PUBLISH_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How often the reader checks the Redis of its views, and how long one good check vouches for
/// them: a reader frozen (a paused VM) or whose checks hang stops trusting views on its own.
pub const VIEWS_CHECK_INTERVAL: Duration = Duration::from_millis(200);
pub const VIEWS_TRUST_SPAN: Duration = Duration::from_secs(1);

/// Until when the Redis the reader's link leads to was last seen fit to serve account views
/// (`Cache::views_fit`: still the master, same generation, replicas acknowledging).
pub struct RedisViewsCheck {
    started: Instant,
    trusted_until_ms: AtomicU64,
}

impl RedisViewsCheck {
    /// Trusted for the first span, like the outbox watch starts trusting: a reader that just
    /// started serves views at once.
    pub fn new() -> Self {
        let check = Self {
            started: Instant::now(),
            trusted_until_ms: AtomicU64::new(0),
        };
        check.renew();
        check
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn renew(&self) {
        let until = self.now_ms() + VIEWS_TRUST_SPAN.as_millis() as u64;
        self.trusted_until_ms.store(until, Ordering::Relaxed);
    }

    /// No watcher any more (the application is stopping, or a test kept the router alone): the
    /// last verdict stands instead of lapsing.
    fn keep(&self) {
        self.trusted_until_ms.store(u64::MAX, Ordering::Relaxed);
    }

    fn revoke(&self) {
        self.trusted_until_ms.store(0, Ordering::Relaxed);
    }

    pub fn trusted(&self) -> bool {
        self.now_ms() < self.trusted_until_ms.load(Ordering::Relaxed)
    }
}

impl Default for RedisViewsCheck {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps `check` current until `stop`. After a partition heals, the reader's link may still
/// lead to the old master, cut off meanwhile while writes went to the new one: it answers reads
/// of views those writes overtook. Seen through the link, that master lost its replicas, or
/// was demoted since (the link is then dropped), and account reads go to PostgreSQL until a
/// link to a master with replicas is open again.
pub async fn watch_redis_views(
    cache: Cache,
    check: Arc<RedisViewsCheck>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut was_trusted = true;
    loop {
        let fit = match cache.views_fit().await {
            Ok(fit) => fit,
            Err(error) => {
                tracing::debug!(
                    error = shared::telemetry::error_chain(&error),
                    "cannot check the Redis of the views"
                );
                false
            }
        };
        if fit {
            check.renew();
        } else {
            check.revoke();
        }
        if fit != was_trusted {
            tracing::warn!(
                fit,
                "the Redis of the account views {}",
                if fit {
                    "is fit again: views used"
                } else {
                    "lost its replicas, its role or its generation: views bypassed"
                }
            );
            was_trusted = fit;
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(VIEWS_CHECK_INTERVAL) => {}
        }
    }
    if was_trusted {
        check.keep();
    }
}

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
