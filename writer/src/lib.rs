//! The write side: `POST /transactions`.
//!
//! A request is validated, committed to PostgreSQL (transaction, balance and outbox entry in
//! one statement), published to Redis, and only then answered with 201, so a read that follows
//! the 201 finds the new views. [`Application::build`] wires it all, for `main` and for every
//! test: [`transactions`] is the handler, [`recorder`] the group commit, [`publisher`] getting
//! changes into Redis (and what happens when Redis is not there).

mod idempotency;
pub mod publisher;
pub mod recorder;
mod startup;
mod transactions;

use shared::http::{self, Routes};
use sqlx::PgPool;

pub use startup::{run, Application, WriterConfig};
pub use transactions::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};

use crate::publisher::Publisher;
use crate::recorder::Recorder;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub recorder: Recorder,
}

/// Every route the writer serves: `POST /transactions`, and `GET /ping` for health checks that
/// bypass the proxy. The route-table test compares them with the public API.
pub fn routes() -> Routes<AppState> {
    Routes::new()
        .post("/transactions", transactions::create_transaction)
        .get("/ping", http::ping)
}
