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
//!
//! This is the storage layer: it knows neither settings nor HTTP nor which service runs it. Here:
//! [`Cache`] and its calls; `cache/views.rs` the views' format and keys; `cache/pipeline.rs` the
//! batched view reads; `cache/link.rs` the connection to the master and the views' generation;
//! `cache/lua.rs` the scripts; `cache/error.rs` the errors. Every call runs in a `redis` span
//! (debug level) and is timed as `redis_operation_duration_seconds{operation=…}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::Script;
use tokio::sync::mpsc;
use tracing::Instrument;

mod error;
mod link;
mod lua;
mod pipeline;
mod views;
#[cfg(feature = "testing")]
pub(crate) use link::run_id_of;
use link::{Link, Links};
pub use link::{Target, Ticket};
use lua::{FILL_ACCOUNT_LUA, PUBLISH_LUA};

pub use error::CacheError;
use pipeline::ViewRead;
pub use views::{AccountView, Keys, TransactionView};

use crate::domain::{AccountId, Recorded, TransactionId};
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

/// What a cache needs; settings fill it from `REDIS_*`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The Redis, or (with `sentinels`) the database number and credentials of the master.
    pub redis_url: String,
    /// `host:port` of each Sentinel; empty: the one Redis at `redis_url`.
    pub sentinels: Vec<String>,
    /// The master's name at the Sentinels.
    pub sentinel_master: String,
    /// Every key of this deployment starts with it.
    pub key_prefix: String,
    /// The bound on every call.
    pub timeout: Duration,
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
    /// The queue of view reads, started on first use (see `cache/pipeline.rs`).
    view_reads: std::sync::OnceLock<mpsc::Sender<ViewRead>>,
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

    /// A cache on a service's Redis: the master the Sentinels name, if there are any, else the
    /// one at the URL.
    pub fn connect(config: &CacheConfig) -> anyhow::Result<Self> {
        let target = Target::new(
            &config.redis_url,
            &config.sentinels,
            &config.sentinel_master,
        )?;
        Ok(Self::on(target, &config.key_prefix, config.timeout))
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
        let attempt = async {
            let link = used.insert(self.links.get().await?);
            Ok::<_, CacheError>(run(link).await?)
        };
        let span = tracing::debug_span!("redis", operation);
        let result = match tokio::time::timeout(self.timeout, attempt.instrument(span)).await {
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
