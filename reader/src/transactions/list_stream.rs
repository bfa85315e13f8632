//! The unpaged `GET /transactions`: every selected transaction, read from PostgreSQL batch by
//! batch and streamed to the client in chunks, so memory stays flat whatever the table's size.
//! Each costs the primary O(N), so an instance serves at most `LIST_MAX_STREAMS` at once (beyond
//! that: 503 with `Retry-After`) and ends each after `LIST_DEADLINE_MS` (see [`ListLimits`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use shared::db::{self, ListFilter};
use shared::http::ApiError;
use sqlx::PgPool;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Rows are serialized into chunks of about this size before they are sent.
const LIST_CHUNK_BYTES: usize = 32 * 1024;
/// Chunks buffered between the database and the client: memory stays bounded whatever the
/// table's size, and a slow client slows the reading down instead of filling memory.
const LIST_CHUNKS_IN_FLIGHT: usize = 4;
/// Rows read per statement. Each batch is its own short query whose rows are read at once, so a
/// listing of any length is never cut by `DB_STATEMENT_TIMEOUT_MS`, and a slow client holds a
/// little memory (one batch) but no database connection.
const LIST_BATCH_ROWS: i64 = 2_000;

/// What a client gets beyond the cap on concurrent listings.
pub const TOO_MANY_LISTINGS: &str =
    "too many unpaged transaction listings in progress, retry later or page with ?limit=";

/// The bounds on unpaged listings, per reader instance.
#[derive(Debug, Clone)]
pub struct ListLimits {
    /// Listings streaming at once (`LIST_MAX_STREAMS`); one more is answered 503.
    streams: Arc<Semaphore>,
    /// How long one listing may take, its client's reading included (`LIST_DEADLINE_MS`).
    deadline: Duration,
}

impl ListLimits {
    pub fn new(max_streams: usize, deadline: Duration) -> Self {
        Self {
            streams: Arc::new(Semaphore::new(max_streams)),
            deadline,
        }
    }
}

impl Default for ListLimits {
    /// Four listings at once, a minute each: a listing of a million rows streams in seconds
    /// (bench/README.md), and four keep the primary's other work going on a two-core host.
    fn default() -> Self {
        Self::new(4, Duration::from_secs(60))
    }
}

/// Streams the whole selection. The status is decided by the first chunk: if the database
/// cannot be read the client gets a 503 instead of a 200 with a broken body. A failure later on,
/// or the deadline passing, aborts the body, so the client sees an incomplete response, never a
/// silently truncated array.
pub async fn respond(
    pool: PgPool,
    filter: ListFilter,
    limits: &ListLimits,
) -> Result<Response, ApiError> {
    // Held until the body ends or is dropped (the client went away).
    let permit = Arc::clone(&limits.streams)
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable(TOO_MANY_LISTINGS))?;
    let deadline = Instant::now() + limits.deadline;
    let (chunks, mut received) = mpsc::channel::<Result<Bytes, sqlx::Error>>(LIST_CHUNKS_IN_FLIGHT);
    tokio::spawn(produce(pool, filter, chunks));
    let first = match received.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(error)) => return Err(error.into()),
        None => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "list producer ended early"
            )))
        }
    };
    let rest = futures_util::stream::unfold(
        Some((received, permit)),
        move |state: Option<(mpsc::Receiver<_>, OwnedSemaphorePermit)>| async move {
            let (mut received, permit) = state?;
            let chunk = match tokio::time::timeout_at(deadline, received.recv()).await {
                Ok(chunk) => chunk?,
                Err(_) => {
                    tracing::warn!("a transaction listing passed its deadline; aborting the body");
                    // The error ends the body; dropping the receiver stops the producer.
                    return Some((Err(io::Error::other("listing deadline passed")), None));
                }
            };
            let chunk = chunk.map_err(|error| {
                tracing::error!(
                    error = shared::telemetry::error_chain(&error),
                    "listing transactions failed mid-stream; aborting the body"
                );
                io::Error::other("database stream failed")
            });
            Some((chunk, Some((received, permit))))
        },
    );
    let body = futures_util::stream::once(async { Ok::<_, io::Error>(first) }).chain(rest);
    Ok((
        [(CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Reads batch after batch ([`LIST_BATCH_ROWS`]) and sends the JSON array in chunks.
async fn produce(
    pool: PgPool,
    filter: ListFilter,
    chunks: mpsc::Sender<Result<Bytes, sqlx::Error>>,
) {
    let mut buffer = Vec::with_capacity(LIST_CHUNK_BYTES + 256);
    buffer.push(b'[');
    let mut first = true;
    let mut position = filter;
    loop {
        let rows = match db::list_batch(&pool, position, LIST_BATCH_ROWS).await {
            Ok(rows) => rows,
            Err(error) => {
                let _ = chunks.send(Err(error)).await;
                return;
            }
        };
        for (_, transaction) in &rows {
            if !first {
                buffer.push(b',');
            }
            first = false;
            // Straight into the chunk, without a buffer per row. Cannot fail: a transaction is
            // ids, an integer and a string.
            serde_json::to_writer(&mut buffer, transaction).expect("a transaction serializes");
            if buffer.len() >= LIST_CHUNK_BYTES {
                let chunk = Bytes::from(std::mem::replace(
                    &mut buffer,
                    Vec::with_capacity(LIST_CHUNK_BYTES + 256),
                ));
                if chunks.send(Ok(chunk)).await.is_err() {
                    return; // The client went away.
                }
            }
        }
        // Newest first: the next batch starts below the oldest row of this one. Rows committed
        // meanwhile have higher positions and are not part of this listing.
        match rows.last() {
            Some((last, _)) if rows.len() as i64 == LIST_BATCH_ROWS => {
                position.before = Some(*last);
            }
            _ => break,
        }
    }
    buffer.push(b']');
    let _ = chunks.send(Ok(Bytes::from(buffer))).await;
}
