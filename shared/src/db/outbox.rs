//! The outbox: commits whose changes are not yet all in Redis (`publish_batches`). The writer
//! deletes a commit's row once its changes are published, and republishes what stays too long.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{transaction_from_row, with_account_state, OutboxBatch};
use crate::domain::Recorded;
use crate::telemetry::metrics::time_query;

/// What one commit recorded (its transactions, in input order), with its outbox row, to delete
/// once the commit's changes are published.
#[derive(Debug)]
pub struct Committed<T> {
    pub recorded: T,
    pub outbox: OutboxBatch,
}

/// Removes the outbox rows of commits whose changes are all in Redis. Committed without waiting
/// for the WAL flush (`synchronous_commit = off`): a delete lost in a crash only leaves a row
/// the repair loop republishes (harmless, views are versioned), and not waiting keeps these
/// commits from taking turns at the disk with the writes clients wait for. One round trip:
/// the ids are integers, written into the statement.
pub async fn mark_published(pool: &PgPool, batches: &[OutboxBatch]) -> Result<(), sqlx::Error> {
    if batches.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = batches.iter().map(|batch| batch.0.to_string()).collect();
    let sql = format!(
        "BEGIN; SET LOCAL synchronous_commit = off; \
         DELETE FROM publish_batches WHERE batch_id IN ({}); COMMIT;",
        ids.join(",")
    );
    time_query("mark_published", sqlx::raw_sql(&sql).execute(pool)).await?;
    Ok(())
}

/// Commits still in the outbox that are older than `grace` (younger ones are most likely being
/// published right now by the requests that made them), oldest first, at most `limit` of them,
/// each with its transactions and their accounts' *current* states: publishing that is always
/// correct, whatever was missed in between.
pub async fn unpublished(
    pool: &PgPool,
    grace: Duration,
    limit: i64,
) -> Result<Vec<Committed<Vec<Recorded>>>, sqlx::Error> {
    let query = sqlx::query_as(
        "WITH overdue AS (
             SELECT batch_id, transaction_ids, created_at FROM publish_batches
             WHERE created_at < now() - make_interval(secs => $1)
             ORDER BY created_at, batch_id
             LIMIT $2
         )
         SELECT o.batch_id, t.transaction_id, t.account_id, t.amount, t.created_at,
                a.balance, a.version
         FROM overdue o
         CROSS JOIN LATERAL unnest(o.transaction_ids) WITH ORDINALITY AS u (transaction_id, n)
         JOIN transactions t ON t.transaction_id = u.transaction_id
         JOIN accounts a ON a.account_id = t.account_id
         ORDER BY o.created_at, o.batch_id, u.n",
    )
    .bind(grace.as_secs_f64())
    .bind(limit);
    type Row = (i64, Uuid, Uuid, i64, DateTime<Utc>, i64, i64);
    let rows: Vec<Row> = time_query("unpublished", query.fetch_all(pool)).await?;
    let mut commits: Vec<Committed<Vec<Recorded>>> = Vec::new();
    for (batch_id, transaction_id, account_id, amount, created_at, balance, version) in rows {
        let transaction = transaction_from_row((transaction_id, account_id, amount, created_at));
        let recorded = with_account_state(transaction, balance, version);
        match commits.last_mut() {
            Some(commit) if commit.outbox.0 == batch_id => commit.recorded.push(recorded),
            _ => commits.push(Committed {
                recorded: vec![recorded],
                outbox: OutboxBatch(batch_id),
            }),
        }
    }
    Ok(commits)
}

/// Whether some committed change has waited longer than `older_than` to be published: the
/// writer cannot reach Redis, so account views there may be older than acknowledged writes.
pub async fn publishing_is_behind(
    pool: &PgPool,
    older_than: Duration,
) -> Result<bool, sqlx::Error> {
    let query = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM publish_batches
                        WHERE created_at < now() - make_interval(secs => $1))",
    )
    .bind(older_than.as_secs_f64());
    time_query("publishing_is_behind", query.fetch_one(pool)).await
}

/// Age in seconds of the oldest change not yet published to Redis (0 when none is pending).
pub async fn oldest_unpublished_age(pool: &PgPool) -> Result<f64, sqlx::Error> {
    let query = sqlx::query_scalar(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) FROM publish_batches",
    );
    time_query("oldest_unpublished_age", query.fetch_one(pool)).await
}
