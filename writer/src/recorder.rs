//! Group commit: the requests that arrive while the database is busy are recorded together.
//!
//! Every `POST /transactions` hands its transaction to [`Recorder::record`] and waits. Workers
//! (`WRITE_BATCH_WORKERS`, default 1) each take *everything* that is waiting (up to
//! [`MAX_BATCH`]), record it in one statement and one commit ([`db::record_transactions`], the
//! writer's one record statement),
//! publish it to Redis in one round trip, and only then answer each request. Nothing waits for
//! a batch to fill: under light load a batch is one request and costs what a lone statement
//! costs; under heavy load the cost of a commit, a round trip and a Redis call is shared by the
//! whole batch.
//!
//! A request is answered only after its batch committed, so nothing acknowledged can be lost.
//! The statement refuses a request whose idempotency key is taken or whose balance would
//! overflow on its own, and records the rest of the batch: a bad request costs its batch
//! nothing. A batch that PostgreSQL refused as a whole (a key taken by a concurrent batch, a
//! deadlock, an overflow the statement could not decide set-based) was rolled back, so it is
//! recorded again one request at a time, each getting its own answer. A batch whose outcome is
//! unknown (the connection broke) is never retried, which could apply it twice: its requests get
//! a 503 saying so, and clients retry only with their `Idempotency-Key`. A request no batch took
//! within its start deadline is answered 503 with nothing written, so every request taken is
//! answered with its outcome before the request timeout (see `startup::start_deadline`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use shared::db::{self, NewRecord, OutboxBatch, RecordError};
use shared::domain::Recorded;
use shared::http::{ApiError, DATABASE_UNAVAILABLE, OUTCOME_UNKNOWN};
use shared::telemetry::{error_chain, metrics as m};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::publisher::Publisher;

/// The most transactions in one statement.
pub const MAX_BATCH: usize = 256;
/// Requests waiting for a worker; beyond this, `record` waits for room (backpressure).
const QUEUE: usize = 4 * MAX_BATCH;

/// Why a request's transaction was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordFailure {
    /// Its own statement failed or was refused (a lone request, or the one-by-one retry of a
    /// refused batch).
    #[error(transparent)]
    Statement(#[from] RecordError),
    /// The batch it was part of failed as a whole and, its outcome unknown, was not retried.
    /// One error shared by every request of the batch, logged once by the worker.
    #[error("its batch of {size} transactions failed")]
    Batch {
        size: usize,
        #[source]
        cause: Arc<RecordError>,
    },
    /// The recorder stopped (the writer is shutting down) before it answered.
    #[error("the recorder has stopped")]
    Stopped,
    /// No batch took it before its start deadline (the writer is overloaded); nothing was
    /// written.
    #[error("no batch took it within its start deadline")]
    NotStarted,
}

impl From<RecordFailure> for ApiError {
    fn from(failure: RecordFailure) -> Self {
        match failure {
            RecordFailure::Statement(error) => error.into(),
            RecordFailure::Batch { cause, .. } if cause.outcome_unknown() => {
                ApiError::Unavailable(OUTCOME_UNKNOWN)
            }
            RecordFailure::Batch { cause, .. } if cause.is_unavailable() => {
                ApiError::Unavailable(DATABASE_UNAVAILABLE)
            }
            RecordFailure::Batch { .. } => ApiError::InternalLogged,
            // Nothing was written; another writer instance (or this one, restarted) can take
            // the retry.
            RecordFailure::Stopped => ApiError::Unavailable(WRITER_STOPPING),
            RecordFailure::NotStarted => ApiError::Unavailable(WRITER_BUSY),
        }
    }
}

/// What a client gets when the writer stops before recording its request.
pub const WRITER_STOPPING: &str = "the writer is shutting down, retry later";
/// What a client gets when no batch took its request in time.
pub const WRITER_BUSY: &str =
    "the writer is too busy to record this now; nothing was written, retry later";

type Reply = oneshot::Sender<Result<Recorded, RecordFailure>>;

/// A request waiting for a worker: what to record, the request's `X-Request-Id` (so the
/// batch's log lines name the requests they are about), and where to answer.
struct Pending {
    record: NewRecord,
    request_id: String,
    reply: Reply,
    /// A batch that takes it later answers it [`RecordFailure::NotStarted`] instead.
    start_by: Instant,
}

/// The front of the workers: cheap to clone, one per request handler.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Pending>,
    start_deadline: Duration,
}

impl Recorder {
    /// Starts the workers. They stop once every clone of the recorder is dropped, after
    /// recording and answering what is still queued.
    pub fn start(
        pool: PgPool,
        publisher: Publisher,
        workers: usize,
        start_deadline: Duration,
    ) -> (Self, JoinSet<()>) {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        let mut tasks = JoinSet::new();
        for _ in 0..workers.max(1) {
            tasks.spawn(run_worker(
                pool.clone(),
                publisher.clone(),
                Arc::clone(&waiting),
            ));
        }
        (
            Self {
                queue,
                start_deadline,
            },
            tasks,
        )
    }

    /// Records one transaction and publishes it; returns once it is committed (and, unless
    /// Redis failed, published). `request_id`: the request's `X-Request-Id`, for the logs.
    pub async fn record(
        &self,
        record: NewRecord,
        request_id: String,
    ) -> Result<Recorded, RecordFailure> {
        let (reply, answer) = oneshot::channel();
        let start_by = Instant::now() + self.start_deadline;
        self.queue
            .send(Pending {
                record,
                request_id,
                reply,
                start_by,
            })
            .await
            .map_err(|_| RecordFailure::Stopped)?;
        answer.await.unwrap_or(Err(RecordFailure::Stopped))
    }
}

/// Records a batch, publishes it, answers its requests; then the next batch. Publishing before
/// taking the next batch looks wasteful, but on a CPU-bound machine the requests that arrive
/// meanwhile make the next batch larger, which is cheaper than overlapping the two (measured:
/// a separate publisher task gave smaller batches and about 15 % fewer writes per second).
async fn run_worker(
    pool: PgPool,
    publisher: Publisher,
    waiting: Arc<Mutex<mpsc::Receiver<Pending>>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // One worker at a time takes what is waiting; the others wait for the next arrivals.
        let taken = waiting.lock().await.recv_many(&mut batch, MAX_BATCH).await;
        if taken == 0 {
            break; // every Recorder is gone and the queue is empty
        }
        let mut records = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut request_ids = String::new();
        let now = Instant::now();
        for Pending {
            record,
            request_id,
            reply,
            start_by,
        } in batch.drain(..)
        {
            if now > start_by {
                // Waited too long to still be answered with its outcome in time: nothing is
                // written, and the client is told so.
                let _ = reply.send(Err(RecordFailure::NotStarted));
                continue;
            }
            records.push(record);
            replies.push(reply);
            if !request_ids.is_empty() {
                request_ids.push(',');
            }
            request_ids.push_str(&request_id);
        }
        if records.is_empty() {
            continue;
        }
        // Everything logged about this batch (its statement, its publish, their store calls)
        // names the requests it serves: a request id from a 500 finds its cause with one grep.
        let span =
            tracing::info_span!("write_batch", size = records.len(), request_ids = %request_ids);
        let outcomes = async {
            // Before the commit: what it commits is then newer than anything a Redis failover
            // since could have lost, so its publish may create views (see
            // `shared::cache::Ticket`).
            let ticket = publisher.ticket().await;
            let BatchOutcome { outcomes, outbox } = record_batch(&pool, &records).await;
            let committed: Vec<&Recorded> = outcomes.iter().flatten().collect();
            if !committed.is_empty() {
                publisher.publish_all(&committed, &outbox, &ticket).await;
            }
            outcomes
        }
        .instrument(span)
        .await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The request may have gone (client disconnected, timed out): nothing to answer.
            let _ = reply.send(outcome);
        }
    }
}

/// What recording a batch gave: one outcome per record, in order, and the outbox rows of what
/// was committed (one for the batch, or one per request recorded one by one).
pub struct BatchOutcome {
    pub outcomes: Vec<Result<Recorded, RecordFailure>>,
    pub outbox: Vec<OutboxBatch>,
}

/// Records a batch: one statement records or refuses each request on its own. When PostgreSQL
/// refused the statement as a whole (it then wrote nothing), the batch is recorded again one
/// request at a time (the same statement, with one row), so each gets its exact answer.
pub async fn record_batch(pool: &PgPool, records: &[NewRecord]) -> BatchOutcome {
    m::record_write_batch(records.len());
    if !repeats_a_key(records) {
        return record_distinct_keys(pool, records).await;
    }
    // A key twice in one batch (a client retrying before its first attempt was answered): the
    // statement takes each key once, so the repeats are recorded after it, in a statement of
    // their own, where the key is taken (the retry replays the first) or, if the first was
    // refused, free.
    let mut outcomes: Vec<Option<Result<Recorded, RecordFailure>>> =
        records.iter().map(|_| None).collect();
    let mut outbox = Vec::new();
    let mut pending: Vec<usize> = (0..records.len()).collect();
    while !pending.is_empty() {
        let mut seen = HashSet::new();
        let (now, later): (Vec<usize>, Vec<usize>) =
            pending
                .into_iter()
                .partition(|&i| match &records[i].idempotency_key {
                    Some(key) => seen.insert(key),
                    None => true,
                });
        let batch: Vec<NewRecord> = now.iter().map(|&i| records[i].clone()).collect();
        let mut recorded = record_distinct_keys(pool, &batch).await;
        outbox.append(&mut recorded.outbox);
        for (i, outcome) in now.into_iter().zip(recorded.outcomes) {
            outcomes[i] = Some(outcome);
        }
        pending = later;
    }
    BatchOutcome {
        outcomes: outcomes
            .into_iter()
            .map(|o| o.expect("every record has an outcome"))
            .collect(),
        outbox,
    }
}

/// Whether some idempotency key appears twice in `records`.
fn repeats_a_key(records: &[NewRecord]) -> bool {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter_map(|record| record.idempotency_key.as_ref())
        .any(|key| !seen.insert(key))
}

/// [`record_batch`] for records whose idempotency keys are all different.
async fn record_distinct_keys(pool: &PgPool, records: &[NewRecord]) -> BatchOutcome {
    let error = match db::record_transactions(pool, records).await {
        Ok(recording) => return BatchOutcome::from(recording),
        Err(error) => error,
    };
    // Only a statement PostgreSQL refused is known to be rolled back, so only that is retried.
    if !error.was_refused() {
        // Logged here, once for the batch; its requests answer without logging it again. An
        // unreachable database is not an error of ours: each request's 503 is logged as such.
        if !error.is_unavailable() {
            tracing::error!(
                error = error_chain(&error),
                size = records.len(),
                "recording a batch failed"
            );
        }
        let cause = Arc::new(error);
        let outcomes = records
            .iter()
            .map(|_| {
                Err(RecordFailure::Batch {
                    size: records.len(),
                    cause: Arc::clone(&cause),
                })
            })
            .collect();
        return BatchOutcome {
            outcomes,
            outbox: Vec::new(),
        };
    }
    if records.len() == 1 {
        return BatchOutcome {
            outcomes: vec![Err(error.into())],
            outbox: Vec::new(),
        };
    }
    tracing::debug!(
        error = error_chain(&error),
        size = records.len(),
        "batch refused as a whole; recording one by one"
    );
    let mut outcomes = Vec::with_capacity(records.len());
    let mut outbox = Vec::new();
    for record in records {
        let mut alone = match db::record_transactions(pool, std::slice::from_ref(record)).await {
            Ok(recording) => BatchOutcome::from(recording),
            // The statement itself failed: the request's answer says why.
            Err(error) => BatchOutcome {
                outcomes: vec![Err(error.into())],
                outbox: Vec::new(),
            },
        };
        outbox.append(&mut alone.outbox);
        outcomes.append(&mut alone.outcomes);
    }
    BatchOutcome { outcomes, outbox }
}

impl From<db::Recording> for BatchOutcome {
    fn from(recording: db::Recording) -> Self {
        Self {
            outcomes: recording
                .outcomes
                .into_iter()
                .map(|outcome| outcome.map_err(RecordFailure::from))
                .collect(),
            outbox: recording.outbox.into_iter().collect(),
        }
    }
}
