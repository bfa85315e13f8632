//! What every handler of the reader shares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use shared::cache::Cache;
use sqlx::PgPool;

use crate::feed::FeedHub;
use crate::pause_fence::PauseFence;
use crate::transactions::ListLimits;
use crate::RedisViewsCheck;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub cache: Cache,
    /// False while the writer is behind with publishing (see
    /// [`watch_publishing`](crate::watch_publishing)): account views in Redis may then be older
    /// than acknowledged writes, so account reads go to PostgreSQL and fill nothing.
    pub account_views_trusted: Arc<AtomicBool>,
    /// Whether the Redis the views come from is fit to serve them (see
    /// [`watch_redis_views`](crate::watch_redis_views)); account reads need both.
    pub redis_views: Arc<RedisViewsCheck>,
    /// The cap and deadline of unpaged listings on this instance.
    pub listings: ListLimits,
    /// The change feeds of this instance and the task that reads new commits for them.
    pub feeds: FeedHub,
    /// Whether balances may be read from PostgreSQL: not just after this process was paused
    /// (`PAUSE_FENCE_MS`, see [`PauseFence`]).
    pub pause_fence: Arc<PauseFence>,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        cache: Cache,
        listings: ListLimits,
        feeds: FeedHub,
        pause_fence: Arc<PauseFence>,
    ) -> Self {
        Self {
            pool,
            cache,
            account_views_trusted: Arc::new(AtomicBool::new(true)),
            redis_views: Arc::new(RedisViewsCheck::new()),
            listings,
            feeds,
            pause_fence,
        }
    }
}
