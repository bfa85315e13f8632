//! Getting committed changes into Redis, reliably.
//!
//! Each commit also writes an outbox row listing its transactions (same statement, same
//! transaction). The commit's requests are answered only after the change is published, which
//! is what makes read-your-writes hold. What happens next:
//!
//! - publish succeeded: the outbox row is deleted, many per statement, by [`run_outbox_cleaner`];
//! - publish failed (Redis down, timeout) or the process died before publishing: the row stays,
//!   and [`repair_loop`] republishes it with the account's *current* state once it is older
//!   than [`REPAIR_GRACE`]. Views are versioned, so republishing is always safe.
//!
//! So Redis always catches up with PostgreSQL, within about `REPAIR_GRACE + REPAIR_INTERVAL`
//! of Redis being reachable again.

use std::time::Duration;

use shared::cache::{self, Cache, Ticket};
use shared::db::{self, OutboxBatch};
use shared::domain::Recorded;
use shared::telemetry::{error_chain, metrics as m};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Outbox rows younger than this are left to the request that is publishing them.
pub const REPAIR_GRACE: Duration = Duration::from_secs(2);
/// How often the repair loop looks for unpublished changes.
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(1);
/// Commits republished per repair pass at most (each up to `recorder::MAX_BATCH` changes).
const REPAIR_BATCH: i64 = 64;
/// Changes republished per Redis call (one Lua script call; Redis serves nothing else meanwhile,
/// so keep it short).
const REPUBLISH_CHUNK: usize = 100;
/// Outbox deletions are batched up to this many per statement.
const CLEANUP_BATCH: usize = 512;
/// Published commits waiting for their outbox deletion. If the queue is full the id is dropped:
/// its row stays and gets republished later, which is harmless.
const CLEANUP_QUEUE: usize = 4_096;

/// Registers the publisher's metrics at start-up (after `metrics::install`): its Redis call as
/// a hot series, and its rare-event counters at zero.
pub fn init_metrics() {
    m::register_hot_series(cache::PUBLISH_OPERATIONS, &[]);
    m::counters_at_zero(&[m::PUBLISH_FAILURES_TOTAL, m::PUBLISH_REPAIRS_TOTAL]);
    m::set_publish_backlog_age(0.0);
}

#[derive(Clone)]
pub struct Publisher {
    cache: Cache,
    published: mpsc::Sender<OutboxBatch>,
}

impl Publisher {
    /// Returns the publisher and the task that deletes published outbox rows. The task ends
    /// once every clone of the publisher is dropped, after deleting what is still queued.
    pub fn start(pool: PgPool, cache: Cache) -> (Self, JoinHandle<()>) {
        let (published, queue) = mpsc::channel(CLEANUP_QUEUE);
        let cleaner = tokio::spawn(
            run_outbox_cleaner(pool, queue).instrument(tracing::info_span!("outbox_cleaner")),
        );
        (Self { cache, published }, cleaner)
    }

    /// The views' generation, to take before committing (or reading) what is then published.
    pub async fn ticket(&self) -> Ticket {
        self.cache.ticket().await
    }

    /// Publishes the current state of an account and one of its transactions, which are in
    /// PostgreSQL but may not be in Redis (a replayed request). Never fails the request.
    pub async fn publish(&self, recorded: &Recorded, ticket: &Ticket) -> bool {
        self.publish_all(&[recorded], &[], ticket).await
    }

    /// Publishes committed changes in one Redis round trip, then has `outbox`, the rows of the
    /// commits they are all of, deleted. Never fails the request: a change that could not be
    /// published stays in the outbox for the repair loop.
    pub async fn publish_all(
        &self,
        changes: &[&Recorded],
        outbox: &[OutboxBatch],
        ticket: &Ticket,
    ) -> bool {
        let published = self.cache.publish(changes.iter().copied(), ticket).await;
        match published {
            Ok(()) => {
                for batch in outbox {
                    let _ = self.published.try_send(*batch);
                }
                true
            }
            Err(error) => {
                m::record_publish_failure();
                tracing::warn!(
                    error = error_chain(&error),
                    changes = changes.len(),
                    first_transaction_id = %changes[0].transaction.transaction_id,
                    "publish to Redis failed; the repair loop will retry it"
                );
                false
            }
        }
    }
}

/// Deletes the outbox rows of published changes, many per statement.
pub async fn run_outbox_cleaner(pool: PgPool, mut queue: mpsc::Receiver<OutboxBatch>) {
    let mut batch = Vec::with_capacity(CLEANUP_BATCH);
    while queue.recv_many(&mut batch, CLEANUP_BATCH).await > 0 {
        if let Err(error) = db::mark_published(&pool, &batch).await {
            // The rows stay; the repair loop will republish and delete them.
            tracing::warn!(
                error = error_chain(&error),
                count = batch.len(),
                "could not clear published outbox rows"
            );
        }
        batch.clear();
    }
    tracing::info!("outbox cleaner stopped: no more publishers");
}

/// Republishes changes that were committed but not published, a pass every `interval` (at once
/// again when a pass found work), until `stop` turns true.
pub async fn repair_loop(
    pool: PgPool,
    publisher: Publisher,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match repair_once(&pool, &publisher.cache).await {
            // It found work: there may be more; go on at once.
            Ok(done) if done > 0 => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(error = format!("{error:#}"), "outbox repair pass failed"),
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    tracing::info!("outbox repair loop stopped");
}

/// One pass: republish what is overdue, delete what got through, update the backlog gauge.
/// Returns how many changes it republished.
pub async fn repair_once(pool: &PgPool, cache: &Cache) -> anyhow::Result<usize> {
    // Before the read: the accounts' current states it returns are then at least as new as
    // anything a Redis failover since could have lost.
    let ticket = cache.ticket().await;
    let overdue = db::unpublished(pool, REPAIR_GRACE, REPAIR_BATCH).await?;
    let mut republished = Vec::with_capacity(overdue.len());
    let mut changes = 0;
    'commits: for commit in &overdue {
        for chunk in commit.recorded.chunks(REPUBLISH_CHUNK) {
            if let Err(error) = cache.publish(chunk, &ticket).await {
                tracing::warn!(
                    error = error_chain(&error),
                    "republishing failed; Redis still unavailable, will retry"
                );
                break 'commits;
            }
        }
        republished.push(commit.outbox);
        changes += commit.recorded.len();
    }
    if !republished.is_empty() {
        db::mark_published(pool, &republished).await?;
        m::record_publish_repairs(changes as u64);
        tracing::info!(
            count = changes,
            commits = republished.len(),
            "republished changes from the outbox"
        );
    }
    let age = db::oldest_unpublished_age(pool).await?;
    m::set_publish_backlog_age(age);
    Ok(changes)
}
