//! The read side: `GET /ping`, `GET /openapi.json`, `GET /accounts/{id}`,
//! `GET /transactions/{id}`, `GET /transactions`, and the change feeds `GET /events` and
//! `GET /accounts/{id}/events` (server-sent events, `feed.rs`).
//!
//! Account and transaction reads are served from the views in Redis; on a miss (or while Redis
//! is unreachable) they read PostgreSQL and fill the view. The list is read from PostgreSQL in
//! batches and streamed: it is every transaction, so it is neither cached nor held in memory.
//!
//! One module per resource, each with its own `routes()`, merged in [`routes`]; the state and
//! the outbox watcher that decides whether account views may be trusted are modules of their
//! own. [`Application::build`] wires it all, for `main` and for every test.

mod accounts;
mod feed;
mod meta;
mod pause_fence;
mod publish_watch;
mod startup;
mod state;
mod transactions;
mod views;

use shared::http::Routes;

pub use feed::{
    FeedLimits, HEARTBEAT_INTERVAL, POLL_INTERVAL, TOO_MANY_CLIENT_FEEDS, TOO_MANY_FEEDS,
};
pub use meta::OPENAPI_JSON;
pub use pause_fence::PauseFence;
pub use publish_watch::{
    watch_publishing, watch_redis_views, RedisViewsCheck, PUBLISH_CHECK_INTERVAL,
    PUBLISH_LAG_LIMIT, VIEWS_CHECK_INTERVAL, VIEWS_TRUST_SPAN,
};
pub use startup::{run, Application, ReaderConfig};
pub use state::AppState;
pub use transactions::{ListLimits, TOO_MANY_LISTINGS};

/// Every route the reader serves (the route-table test compares them with the public API).
pub fn routes() -> Routes<AppState> {
    meta::routes()
        .merge(accounts::routes())
        .merge(transactions::routes())
        .merge(feed::routes())
}
