//! The two services, built for tests the way `main` builds them ([`writer::Application`] and
//! [`reader::Application`]), on a test's own database and Redis key prefix. The tests in
//! `tests/` are the ones that need both services at once: a write through the writer read back
//! through the reader, several writers on one outbox, Redis failover under both, and the route
//! table the two services share with nginx.

use std::time::Duration;

use shared::cache::Cache;
use shared::testing;
use sqlx::PgPool;

/// The writer with one batch worker. Its repair loop waits an hour between passes, so a test
/// decides when changes are republished (it runs `writer::publisher::repair_once` itself).
pub fn writer(pool: &PgPool, cache: Cache) -> writer::Application {
    let config = writer::WriterConfig {
        repair_interval: Duration::from_secs(3600),
        ..writer::WriterConfig::new(testing::http_config(), 1)
    };
    writer::Application::build_on(pool.clone(), cache, config)
}

/// The reader, with its outbox watcher running.
pub fn reader(pool: &PgPool, cache: Cache) -> reader::Application {
    let config = reader::ReaderConfig::new(testing::http_config());
    reader::Application::build_on(pool.clone(), cache, config)
}
