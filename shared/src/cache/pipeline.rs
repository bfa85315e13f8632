//! Auto-pipelined view reads: the lookups of concurrent requests go to Redis together.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::link::Link;
use super::{Cache, CacheError, CacheInner, GET_VIEWS};
use crate::domain::{AccountId, TransactionId};

/// Which view to read. Its key is named when the read is sent, under the generation of the
/// link it is sent on (see `cache/link.rs`).
#[derive(Debug, Clone, Copy)]
pub(super) enum ViewId {
    /// `HGET {account view} body`
    Account(AccountId),
    /// `GET {transaction view}`
    Transaction(TransactionId),
}

/// A view lookup waiting to be sent (see `run_view_reads`).
pub(super) struct ViewRead {
    view: ViewId,
    reply: oneshot::Sender<Result<Option<Vec<u8>>, CacheError>>,
}

/// A view as Redis answers it: its JSON, or nothing.
type ViewBody = Option<Vec<u8>>;

/// The most view reads sent in one pipeline.
const MAX_READ_PIPELINE: usize = 256;

/// Sends the view reads that are waiting, all of them in one pipeline, and hands each its
/// answer: the reads of concurrent requests share one write, one Redis read and one wake-up
/// instead of one each (auto-pipelining). Nothing waits for a pipeline to fill: a lone read is
/// sent at once. Ends when the cache is dropped.
async fn run_view_reads(cache: Weak<CacheInner>, mut queue: mpsc::Receiver<ViewRead>) {
    let mut reads = Vec::with_capacity(MAX_READ_PIPELINE);
    while queue.recv_many(&mut reads, MAX_READ_PIPELINE).await > 0 {
        let Some(cache) = cache.upgrade().map(Cache) else {
            break;
        };
        let answers: Result<Vec<ViewBody>, CacheError> = cache
            .call(GET_VIEWS, true, async |link: &Link| {
                let mut pipe = redis::pipe();
                for read in &reads {
                    match read.view {
                        ViewId::Account(id) => pipe
                            .cmd("HGET")
                            .arg(cache.keys.account(link.epoch(), id))
                            .arg("body"),
                        ViewId::Transaction(id) => pipe.cmd("GET").arg(cache.keys.transaction(id)),
                    };
                }
                pipe.query_async(&mut link.connection.clone()).await
            })
            .await;
        match answers {
            Ok(answers) if answers.len() == reads.len() => {
                for (read, answer) in reads.drain(..).zip(answers) {
                    let _ = read.reply.send(Ok(answer));
                }
            }
            other => {
                let error = Arc::new(match other {
                    Err(error) => error,
                    Ok(answers) => CacheError::PipelineAnswers {
                        reads: reads.len(),
                        answers: answers.len(),
                    },
                });
                for read in reads.drain(..) {
                    let shared = Arc::clone(&error);
                    let _ = read.reply.send(Err(CacheError::Pipeline(shared)));
                }
            }
        }
    }
}

impl Cache {
    /// One view lookup, sent with the others that are waiting (see `run_view_reads`).
    pub(super) async fn read_view(&self, view: ViewId) -> Result<Option<Bytes>, CacheError> {
        // Fail fast here too, without queueing, while Redis is marked unavailable.
        if self.marked_unavailable() {
            return Err(CacheError::Unavailable);
        }
        let queue = self.view_reads.get_or_init(|| {
            let (queue, reads) = mpsc::channel(4 * MAX_READ_PIPELINE);
            // Serves the reads of many requests; each request logs its own outcome.
            let span = tracing::info_span!(parent: None, "view_reads");
            tokio::spawn(run_view_reads(Arc::downgrade(&self.0), reads).instrument(span));
            queue
        });
        let (reply, answer) = oneshot::channel();
        queue
            .send(ViewRead { view, reply })
            .await
            .map_err(|_| CacheError::ViewReaderStopped)?;
        let body = answer.await.unwrap_or(Err(CacheError::ViewReaderStopped))?;
        Ok(body.map(Bytes::from))
    }
}
