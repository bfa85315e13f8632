//! Redis: the read views and the change stream.
//!
//! Key layout (all under `REDIS_KEY_PREFIX`, default `tm:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}account:{account_id}` | hash | `version`, `body` (the account's JSON as served) |
//! | `{prefix}transaction:{transaction_id}` | string | the transaction's JSON as served |
//! | `{prefix}events` | stream | one `transaction.created` entry per published change |
//! | `{prefix}views-generation` | string | the run id of the Redis process the views are current on |
//!
//! Views hold ready-to-send JSON, so a cache hit costs one round trip and no serialization. This
//! module owns that format end to end: [`AccountView`] and [`TransactionView`] are the one
//! serialization of each view, used by the writer's publish, the reader's fill, and the reader's
//! answer on a miss.
//! Account views are versioned (the account's transaction count) and only a higher version may
//! replace a view, in a Lua script so the compare and the set are atomic: whichever of a writer's
//! publish and a reader's fill lands last, the newest balance wins. Transactions are immutable,
//! so their views never change once set. Redis is never the source of truth: any key may be
//! lost, and the next read refills it from PostgreSQL.
//!
//! Account views are only read while they are known current on the Redis process answering
//! (a failover or a restart can lose publishes the old process acknowledged), and only a
//! publish or fill whose [`Ticket`] matches the generation may create one; see `cache/link.rs` and
//! `docs/ha.md`.
//!
//! The stream is at-least-once: a change may appear twice (e.g. republished after a crash),
//! so consumers deduplicate by `transaction_id`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use redis::Script;
use tokio::sync::{mpsc, oneshot};

mod link;
mod lua;
#[cfg(feature = "testing")]
pub(crate) use link::run_id_of;
use link::{Link, Links};
pub use link::{Target, Ticket};
use lua::{FILL_ACCOUNT_LUA, PUBLISH_LUA};

use crate::domain::{AccountId, AccountState, Recorded, Transaction, TransactionId};
use crate::telemetry::metrics as m;

/// The Redis operations the writer runs on every request (`redis_operation_duration_seconds`).
pub const PUBLISH_OPERATIONS: &[&str] = &[PUBLISH];
/// The Redis operations the reader runs on its read path.
pub const READ_OPERATIONS: &[&str] = &[GET_VIEWS, FILL_ACCOUNT, FILL_TRANSACTION];
const PUBLISH: &str = "publish";
const GET_VIEWS: &str = "get_views";
const FILL_ACCOUNT: &str = "fill_account";
const FILL_TRANSACTION: &str = "fill_transaction";

/// The stream is trimmed to about this many entries; consumers that fall further behind
/// resynchronise from PostgreSQL.
const STREAM_MAX_LEN: usize = 100_000;

/// An account view: the JSON `GET /accounts/{id}` serves, as Redis holds it, with the version
/// that orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    account_id: AccountId,
    version: i64,
    body: Bytes,
}

impl AccountView {
    pub fn new(state: &AccountState) -> Self {
        Self {
            account_id: state.account.account_id,
            version: state.version,
            body: json(&state.account),
        }
    }

    /// The JSON, exactly as served.
    pub fn into_body(self) -> Bytes {
        self.body
    }
}

/// A transaction view: the JSON `GET /transactions/{id}` serves, as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionView {
    transaction_id: TransactionId,
    body: Bytes,
}

impl TransactionView {
    pub fn new(transaction: &Transaction) -> Self {
        Self {
            transaction_id: transaction.transaction_id,
            body: json(transaction),
        }
    }

    /// The JSON, exactly as served.
    pub fn into_body(self) -> Bytes {
        self.body
    }
}

/// Serializing a view cannot fail: the domain types are structs of ids, integers and strings,
/// with no maps and no fallible `Serialize` of their own.
fn json(view: &impl serde::Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(view).expect("a domain type serializes to JSON"))
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis call timed out")]
    Timeout,
    /// A recent call timed out or lost its connection; calls fail fast for a moment instead of
    /// each waiting for its own timeout.
    #[error("redis marked unavailable after a recent failure")]
    Unavailable,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The pipeline this read was sent in failed; every read in it shares the error.
    #[error("the pipeline of view reads failed")]
    Pipeline(#[source] std::sync::Arc<CacheError>),
    /// Redis answered a pipeline with a different number of replies than it was sent.
    #[error("{answers} answers to {reads} reads")]
    PipelineAnswers { reads: usize, answers: usize },
    /// The task that sends the view reads has stopped (the cache is being dropped).
    #[error("the view reader stopped")]
    ViewReaderStopped,
    /// The Redis process answering is not known to hold current account views (it was
    /// promoted or restarted and its views are being reset): the read goes to PostgreSQL.
    #[error("account views are not known current on this Redis")]
    ViewsNotCurrent,
}

impl CacheError {
    /// Redis could not be reached or did not answer (as opposed to refusing one command, e.g.
    /// when it is out of memory, which says nothing about the next call).
    fn means_unreachable(&self) -> bool {
        match self {
            Self::Timeout | Self::Unavailable => true,
            Self::Redis(error) => {
                error.is_io_error()
                    || error.is_timeout()
                    || error.is_connection_dropped()
                    || error.is_connection_refusal()
            }
            Self::Pipeline(error) => error.means_unreachable(),
            Self::PipelineAnswers { .. } | Self::ViewReaderStopped | Self::ViewsNotCurrent => false,
        }
    }

    /// The connection in use leads nowhere useful: Redis is unreachable through it, or the
    /// process behind it is no longer the master. The master is resolved again.
    fn means_new_link(&self) -> bool {
        use redis::ErrorKind::{MasterDown, MasterNameNotFoundBySentinel, ReadOnly};
        self.means_unreachable()
            || matches!(self, Self::Redis(error)
                if matches!(error.kind(), ReadOnly | MasterDown | MasterNameNotFoundBySentinel))
    }
}

/// Where this deployment's keys live.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
    pub fn account(&self, id: AccountId) -> String {
        format!("{}account:{id}", self.prefix)
    }
    pub fn transaction(&self, id: TransactionId) -> String {
        format!("{}transaction:{id}", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }
    /// Every account view's key starts with this.
    pub fn account_prefix(&self) -> String {
        format!("{}account:", self.prefix)
    }
    pub fn generation(&self) -> String {
        format!("{}views-generation", self.prefix)
    }
}

/// A shared, multiplexed Redis connection to the master (see `cache/link.rs`). It is opened on first
/// use, so a service starts even while Redis is down, and opened again (the master resolved
/// again) after a failure. Every call is bounded by `timeout`.
/// Cloning is one reference count: the router clones its state for every request.
#[derive(Clone)]
pub struct Cache(std::sync::Arc<CacheInner>);

pub struct CacheInner {
    links: Links,
    pub keys: Keys,
    timeout: Duration,
    fill_account_script: Script,
    publish_script: Script,
    /// Milliseconds since `epoch` before which calls fail fast (see [`UNAVAILABLE_BACKOFF`]).
    unavailable_until_ms: AtomicU64,
    epoch: Instant,
    /// The queue of view reads, started on first use (see [`run_view_reads`]).
    view_reads: std::sync::OnceLock<mpsc::Sender<ViewRead>>,
}

/// A view lookup waiting to be sent (see [`run_view_reads`]).
struct ViewRead {
    /// `HGET key body` (account views) or `GET key` (transaction views).
    hash_body: bool,
    key: String,
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
async fn run_view_reads(cache: std::sync::Weak<CacheInner>, mut queue: mpsc::Receiver<ViewRead>) {
    let mut reads = Vec::with_capacity(MAX_READ_PIPELINE);
    while queue.recv_many(&mut reads, MAX_READ_PIPELINE).await > 0 {
        let Some(cache) = cache.upgrade().map(Cache) else {
            break;
        };
        let mut pipe = redis::pipe();
        for read in &reads {
            if read.hash_body {
                pipe.cmd("HGET").arg(&read.key).arg("body");
            } else {
                pipe.cmd("GET").arg(&read.key);
            }
        }
        // Whether account views may be read is decided before they are sent: a view read
        // while a reset is still going may be one it has yet to delete.
        let answers: Result<(bool, Vec<ViewBody>), CacheError> = cache
            .call(GET_VIEWS, true, async |link: &Link| {
                let current = link.views_current();
                Ok((
                    current,
                    pipe.query_async(&mut link.connection.clone()).await?,
                ))
            })
            .await;
        match answers {
            Ok((current, answers)) if answers.len() == reads.len() => {
                for (read, answer) in reads.drain(..).zip(answers) {
                    let answer = if read.hash_body && !current {
                        Err(CacheError::ViewsNotCurrent)
                    } else {
                        Ok(answer)
                    };
                    let _ = read.reply.send(answer);
                }
            }
            other => {
                let error = std::sync::Arc::new(match other {
                    Err(error) => error,
                    Ok((_, answers)) => CacheError::PipelineAnswers {
                        reads: reads.len(),
                        answers: answers.len(),
                    },
                });
                for read in reads.drain(..) {
                    let shared = std::sync::Arc::clone(&error);
                    let _ = read.reply.send(Err(CacheError::Pipeline(shared)));
                }
            }
        }
    }
}

impl std::ops::Deref for Cache {
    type Target = CacheInner;
    fn deref(&self) -> &CacheInner {
        &self.0
    }
}

/// After a timeout or a lost connection, how long reads and fills fail fast. While Redis is
/// down, a read then goes straight to PostgreSQL instead of waiting `REDIS_TIMEOUT_MS` twice
/// (lookup and fill). Publishes are exempt (see `call`): each one tries, within its timeout.
pub const UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(1);

impl Cache {
    /// A cache on the one Redis at `redis_url`.
    pub fn new(redis_url: &str, key_prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self::on(
            Target::new(redis_url, &[], "")?,
            key_prefix,
            timeout,
        ))
    }

    /// A cache on the service's Redis: the master the Sentinels name, if `REDIS_SENTINELS` is
    /// set, else `REDIS_URL`.
    pub fn from_settings(settings: &crate::settings::Settings) -> anyhow::Result<Self> {
        let target = Target::new(
            &settings.redis_url,
            &settings.redis_sentinels,
            &settings.redis_sentinel_master,
        )?;
        Ok(Self::on(
            target,
            &settings.redis_key_prefix,
            settings.redis_timeout,
        ))
    }

    pub fn on(target: Target, key_prefix: &str, timeout: Duration) -> Self {
        let keys = Keys::new(key_prefix);
        Self(std::sync::Arc::new(CacheInner {
            links: Links::new(target, keys.clone(), timeout),
            keys,
            timeout,
            fill_account_script: Script::new(FILL_ACCOUNT_LUA),
            publish_script: Script::new(PUBLISH_LUA),
            unavailable_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            view_reads: std::sync::OnceLock::new(),
        }))
    }

    fn marked_unavailable(&self) -> bool {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        now_ms < self.unavailable_until_ms.load(Ordering::Relaxed)
    }

    /// The views' generation now, to be taken *before* reading PostgreSQL or committing, and
    /// passed to the publish or fill of what was read (see [`Ticket`]). Free while a link is
    /// open; otherwise opens one, within the timeout. No ticket while Redis is unavailable.
    pub async fn ticket(&self) -> Ticket {
        if let Some(link) = self.links.peek() {
            return link.ticket();
        }
        if self.marked_unavailable() {
            return Ticket::none();
        }
        match tokio::time::timeout(self.timeout, self.links.get()).await {
            Ok(Ok(link)) => link.ticket(),
            _ => Ticket::none(),
        }
    }

    /// Whether the Redis in use is known to hold current account views (false while none is
    /// connected).
    pub fn views_current(&self) -> bool {
        self.links.peek().is_some_and(|link| link.views_current())
    }

    /// Runs one Redis operation with the timeout and records its duration and outcome.
    /// `fail_fast`: fail at once while Redis is marked unavailable (reads and fills); a publish
    /// passes `false` and always tries: a write that skipped a Redis that is back would leave
    /// the view a reader just refilled older than the write it acknowledged.
    async fn call<T>(
        &self,
        operation: &'static str,
        fail_fast: bool,
        run: impl AsyncFnOnce(&Link) -> redis::RedisResult<T>,
    ) -> Result<T, CacheError> {
        let started = Instant::now();
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if fail_fast && self.marked_unavailable() {
            m::record_redis_call(operation, started.elapsed(), false);
            return Err(CacheError::Unavailable);
        }
        let mut used = None;
        let result = match tokio::time::timeout(self.timeout, async {
            let link = used.insert(self.links.get().await?);
            Ok::<_, CacheError>(run(link).await?)
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(CacheError::Timeout),
        };
        if let Err(error) = &result {
            // A timeout too: a master that hangs keeps its connections open, and only asking
            // the Sentinels again finds the one that replaced it.
            if let (true, Some(link)) = (error.means_new_link(), &used) {
                self.links.drop_link(link);
            }
            if error.means_unreachable() {
                let until = now_ms + UNAVAILABLE_BACKOFF.as_millis() as u64;
                self.unavailable_until_ms.store(until, Ordering::Relaxed);
            }
        }
        m::record_redis_call(operation, started.elapsed(), result.is_ok());
        result
    }

    /// Publishes committed changes, in order, in one round trip: for each, its account view,
    /// its transaction view and a stream entry (see `PUBLISH_LUA` in `cache/lua.rs`). `ticket`: taken before
    /// the changes were committed (or their state read).
    pub async fn publish<'a>(
        &self,
        changes: impl IntoIterator<Item = &'a Recorded>,
        ticket: &Ticket,
    ) -> Result<(), CacheError> {
        let mut invocation = self.publish_script.prepare_invoke();
        invocation
            .key(self.keys.events())
            .key(self.keys.generation())
            .arg(STREAM_MAX_LEN)
            .arg(ticket.as_arg());
        for Recorded {
            transaction,
            account,
        } in changes
        {
            let (account, transaction) =
                (AccountView::new(account), TransactionView::new(transaction));
            invocation
                .key(self.keys.account(account.account_id))
                .key(self.keys.transaction(transaction.transaction_id))
                .arg(account.version)
                .arg(&account.body[..])
                .arg(&transaction.body[..])
                .arg(transaction.transaction_id.to_string())
                .arg(account.account_id.to_string());
        }
        self.call(PUBLISH, false, async |link: &Link| {
            invocation
                .invoke_async::<i64>(&mut link.connection.clone())
                .await
        })
        .await
        .map(drop)
    }

    /// The cached JSON of an account, if any.
    pub async fn account_view(&self, id: AccountId) -> Result<Option<Bytes>, CacheError> {
        self.read_view(true, self.keys.account(id)).await
    }

    /// One view lookup, sent with the others that are waiting (see [`run_view_reads`]).
    async fn read_view(&self, hash_body: bool, key: String) -> Result<Option<Bytes>, CacheError> {
        // Fail fast here too, without queueing, while Redis is marked unavailable.
        if self.marked_unavailable() {
            return Err(CacheError::Unavailable);
        }
        let queue = self.view_reads.get_or_init(|| {
            let (queue, reads) = mpsc::channel(4 * MAX_READ_PIPELINE);
            tokio::spawn(run_view_reads(std::sync::Arc::downgrade(&self.0), reads));
            queue
        });
        let (reply, answer) = oneshot::channel();
        queue
            .send(ViewRead {
                hash_body,
                key,
                reply,
            })
            .await
            .map_err(|_| CacheError::ViewReaderStopped)?;
        let body = answer.await.unwrap_or(Err(CacheError::ViewReaderStopped))?;
        Ok(body.map(Bytes::from))
    }

    /// Caches an account view read from PostgreSQL, unless a newer one is already there.
    /// `ticket`: taken before the read (see [`Cache::ticket`]).
    pub async fn fill_account(
        &self,
        view: &AccountView,
        ticket: &Ticket,
    ) -> Result<(), CacheError> {
        let key = self.keys.account(view.account_id);
        self.call(FILL_ACCOUNT, true, async |link: &Link| {
            self.fill_account_script
                .key(key)
                .key(self.keys.generation())
                .arg(view.version)
                .arg(&view.body[..])
                .arg(ticket.as_arg())
                .invoke_async::<i64>(&mut link.connection.clone())
                .await
        })
        .await
        .map(drop)
    }

    /// The cached JSON of a transaction, if any.
    pub async fn transaction_view(&self, id: TransactionId) -> Result<Option<Bytes>, CacheError> {
        self.read_view(false, self.keys.transaction(id)).await
    }

    /// Caches a transaction view read from PostgreSQL. Transactions never change, so there is
    /// nothing to order.
    pub async fn fill_transaction(&self, view: &TransactionView) -> Result<(), CacheError> {
        let key = self.keys.transaction(view.transaction_id);
        self.call(FILL_TRANSACTION, true, async |link: &Link| {
            redis::cmd("SET")
                .arg(key)
                .arg(&view.body[..])
                .query_async::<()>(&mut link.connection.clone())
                .await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn after_a_timeout_calls_fail_fast_instead_of_each_waiting_for_its_own() {
        // A "Redis" that accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = silent.local_addr().expect("address");
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                sockets.push(socket);
            }
        });
        let cache = Cache::new(
            &format!("redis://{address}/0"),
            "test:",
            Duration::from_millis(300),
        )
        .expect("valid url");
        let id = AccountId::from(uuid::Uuid::new_v4());

        let started = Instant::now();
        let first = cache.account_view(id).await;
        assert!(
            first.as_ref().is_err_and(CacheError::means_unreachable),
            "{first:?}"
        );
        assert!(
            first
                .as_ref()
                .is_err_and(|error| crate::telemetry::error_chain(error).contains("timed out")),
            "{first:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));

        let started = Instant::now();
        let second = cache.account_view(id).await;
        assert!(matches!(second, Err(CacheError::Unavailable)), "{second:?}");
        assert!(started.elapsed() < Duration::from_millis(100));
        held.abort();
    }
}
