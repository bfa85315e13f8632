//! Group commit on a real PostgreSQL database (fresh per test): a batch is recorded as if its
//! transactions had been applied one by one, a refused transaction is refused alone while the
//! rest of its batch is recorded, and a batch PostgreSQL refuses as a whole is recorded again
//! one request at a time so each gets its own answer.

use std::collections::HashMap;

use shared::db::{self, NewRecord, RecordError};
use shared::domain::{IdempotencyKey, NewTransaction, TransactionId};
use sqlx::PgPool;
use uuid::Uuid;
use writer::recorder;
use writer::{Application, WriterConfig};

/// The ends of the balance range (±(2^53 - 1), what JSON clients hold exactly).
const MAX: i64 = shared::domain::Amount::MAX_SAFE;

fn record(account_id: Uuid, amount: i64, key: Option<&str>) -> NewRecord {
    NewRecord {
        transaction_id: TransactionId::new_random(),
        new: NewTransaction {
            account_id: account_id.into(),
            amount: amount.into(),
        },
        idempotency_key: key.map(|key| IdempotencyKey::parse(key.as_bytes()).expect("key")),
    }
}

async fn stored_count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_batch_gives_each_transaction_the_balance_and_version_right_after_it(pool: PgPool) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    db::record_transactions(&pool, &[record(a, 100, None)])
        .await
        .expect("first");
    let batch = [
        record(b, 7, None),
        record(a, -30, Some("batch-key")),
        record(b, 5, None),
        record(a, 1, None),
        record(a, 2, None),
    ];
    let recorded: Vec<_> = db::record_transactions(&pool, &batch)
        .await
        .expect("batch")
        .outcomes
        .into_iter()
        .map(|outcome| outcome.expect("recorded"))
        .collect();

    let after: Vec<(Uuid, i64, i64)> = recorded
        .iter()
        .map(|r| {
            (
                r.account.account.account_id.as_uuid(),
                r.account.account.balance,
                r.account.version,
            )
        })
        .collect();
    assert_eq!(
        after,
        [(b, 7, 1), (a, 70, 2), (b, 12, 2), (a, 71, 3), (a, 73, 4)]
    );
    for (input, output) in batch.iter().zip(&recorded) {
        assert_eq!(output.transaction.transaction_id, input.transaction_id);
        assert_eq!(output.transaction.amount, input.new.amount);
    }
    // The stored rows agree: each balance is the sum of its amounts, each version their count.
    let stored: Vec<(Uuid, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT a.account_id, a.balance, a.version, sum(t.amount)::bigint, count(*)
         FROM accounts a JOIN transactions t USING (account_id)
         GROUP BY a.account_id ORDER BY a.balance",
    )
    .fetch_all(&pool)
    .await
    .expect("stored");
    assert_eq!(stored, [(b, 12, 2, 12, 2), (a, 73, 4, 73, 4)]);
    // One outbox row per commit, listing its transactions (the view has one row per transaction).
    assert_eq!(stored_count(&pool, "publish_batches").await, 2);
    assert_eq!(stored_count(&pool, "publish_outbox").await, 6);
    let key: Option<Uuid> = sqlx::query_scalar(
        "SELECT transaction_id FROM transactions WHERE idempotency_key = 'batch-key'",
    )
    .fetch_optional(&pool)
    .await
    .expect("key lookup");
    assert_eq!(key, Some(batch[1].transaction_id.as_uuid()));
}

/// Each outcome as the balance after it, or the error's name.
fn summary(outcomes: &[Result<shared::domain::Recorded, impl std::fmt::Debug>]) -> Vec<String> {
    outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(recorded) => recorded.account.account.balance.to_string(),
            Err(error) => format!("{error:?}"),
        })
        .collect()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn refused_transactions_are_refused_alone_and_the_rest_of_the_batch_is_recorded(
    pool: PgPool,
) {
    let (account, low, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    db::record_transactions(
        &pool,
        &[
            record(account, MAX - 5, Some("taken")),
            record(low, -MAX + 5, None),
        ],
    )
    .await
    .expect("first");

    let recording = db::record_transactions(
        &pool,
        &[
            record(other, 1, Some("fresh")),
            record(account, 10, None),       // overflows the balance
            record(other, 2, Some("taken")), // a key already recorded
            record(account, -5, None),       // fits once the overflow is refused
            record(other, 3, Some("taken")), // a key already recorded
            record(low, -10, None),          // below the range
            record(low, 5, None),
            record(other, 4, None),
        ],
    )
    .await
    .expect("one statement");

    assert_eq!(
        summary(&recording.outcomes),
        [
            "1",
            "BalanceOutOfRange",
            "IdempotencyKeyTaken",
            &(MAX - 10).to_string(),
            "IdempotencyKeyTaken",
            "BalanceOutOfRange",
            &(-MAX + 10).to_string(),
            "5",
        ]
    );
    assert!(recording.outbox.is_some());
    let stored: Vec<(Uuid, i64, i64)> =
        sqlx::query_as("SELECT account_id, balance, version FROM accounts ORDER BY balance")
            .fetch_all(&pool)
            .await
            .expect("accounts");
    assert_eq!(
        stored,
        [(low, -MAX + 10, 2), (other, 5, 2), (account, MAX - 10, 2)]
    );
    assert_eq!(stored_count(&pool, "transactions").await, 6);
    // One outbox row for the commit, listing only what it recorded.
    assert_eq!(stored_count(&pool, "publish_batches").await, 2);
    assert_eq!(stored_count(&pool, "publish_outbox").await, 6);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_key_twice_in_one_batch_is_recorded_once_and_the_repeat_finds_it_taken(pool: PgPool) {
    let (account, other) = (Uuid::new_v4(), Uuid::new_v4());
    let batch = [
        record(account, 5, Some("retried")),
        record(other, 7, None),
        record(account, 5, Some("retried")), // the client's retry, in the same batch
        record(other, 1, Some("retried")),   // the same key again, with another body
    ];

    let recorder::BatchOutcome { outcomes, outbox } = recorder::record_batch(&pool, &batch).await;

    assert_eq!(
        summary(&outcomes),
        [
            "5",
            "7",
            "Statement(IdempotencyKeyTaken)",
            "Statement(IdempotencyKeyTaken)"
        ]
    );
    // The batch's own commit; the repeats, recorded after it, wrote nothing.
    assert_eq!(outbox.len(), 1);
    assert_eq!(stored_count(&pool, "transactions").await, 2);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_batch_whose_every_transaction_is_refused_writes_nothing(pool: PgPool) {
    let account = Uuid::new_v4();
    db::record_transactions(&pool, &[record(account, MAX, Some("taken"))])
        .await
        .expect("first");
    let recording = db::record_transactions(
        &pool,
        &[
            record(account, 1, None),
            record(Uuid::new_v4(), 1, Some("taken")),
        ],
    )
    .await
    .expect("one statement");
    assert_eq!(
        summary(&recording.outcomes),
        ["BalanceOutOfRange", "IdempotencyKeyTaken"]
    );
    assert_eq!(recording.outbox, None);
    assert_eq!(stored_count(&pool, "transactions").await, 1);
    assert_eq!(stored_count(&pool, "accounts").await, 1);
    assert_eq!(stored_count(&pool, "publish_batches").await, 1);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_batch_the_statement_cannot_decide_is_recorded_one_by_one(pool: PgPool) {
    let account = Uuid::new_v4();
    db::record_transactions(&pool, &[record(account, MAX - 5, None)])
        .await
        .expect("first");
    // One by one: +10 overflows; +3 then fits. Adding every earlier row, as the statement does,
    // +3 would look like an overflow too, so the statement refuses the batch as a whole.
    let batch = [record(account, 10, None), record(account, 3, None)];
    let refused = db::record_transactions(&pool, &batch).await;
    assert!(
        matches!(refused, Err(RecordError::BalanceOutOfRange)),
        "{refused:?}"
    );
    assert_eq!(stored_count(&pool, "transactions").await, 1);

    let recorder::BatchOutcome { outcomes, outbox } = recorder::record_batch(&pool, &batch).await;

    assert_eq!(
        summary(&outcomes),
        ["Statement(BalanceOutOfRange)", &(MAX - 2).to_string()]
    );
    assert_eq!(outbox.len(), 1);
    assert_eq!(stored_count(&pool, "transactions").await, 2);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn many_concurrent_requests_are_all_recorded_exactly_once(pool: PgPool) {
    let cache = shared::testing::isolated_cache();
    let app = Application::build_on(
        pool.clone(),
        cache.clone(),
        WriterConfig::new(shared::testing::http_config(), 3),
    );
    let recorder = app.state().recorder.clone();
    let accounts: Vec<Uuid> = (0..7).map(|_| Uuid::new_v4()).collect();

    let requests = (0..300_i64).map(|i| {
        let recorder = recorder.clone();
        let account = accounts[i as usize % accounts.len()];
        tokio::spawn(async move {
            let request_id = format!("request-{i}");
            recorder.record(record(account, i, None), request_id).await
        })
    });
    let answers = futures_util::future::join_all(requests).await;

    let mut expected: HashMap<Uuid, (i64, i64)> = HashMap::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let recorded = answer.expect("task").expect("recorded");
        let entry = expected
            .entry(recorded.account.account.account_id.as_uuid())
            .or_default();
        entry.0 += i as i64;
        entry.1 = entry.1.max(recorded.account.version);
    }
    for account in &accounts {
        let (balance, version): (i64, i64) =
            sqlx::query_as("SELECT balance, version FROM accounts WHERE account_id = $1")
                .bind(account)
                .fetch_one(&pool)
                .await
                .expect("account");
        assert_eq!((balance, version), expected[account], "{account}");
        // The newest answer's view is what Redis serves.
        let view = shared::testing::cached_account(&cache, *account).await;
        assert_eq!(view["balance"], balance, "{account}");
    }
    assert_eq!(stored_count(&pool, "transactions").await, 300);
}
