//! The hub of one reader's change feeds: the registry of open feeds under their caps, and the
//! task that reads new commits from PostgreSQL and hands each, rendered once, to the feeds that
//! want it (see the parent module's comment).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use shared::db;
use shared::domain::AccountId;
use shared::telemetry::error_chain;
use shared::telemetry::metrics as m;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch, Notify};
use tracing::Instrument;

use super::stream::Live;
use super::*;

/// A feed's place in the hub.
pub(super) struct Subscriber {
    pub(super) account: Option<AccountId>,
    pub(super) events: mpsc::Sender<Arc<Event>>,
    /// Set when the hub dropped it for a full buffer.
    pub(super) too_slow: Arc<AtomicBool>,
}

#[derive(Default)]
pub(super) struct Registry {
    pub(super) next_id: u64,
    /// Feeds of every account.
    pub(super) all: HashMap<u64, Subscriber>,
    /// Feeds of one account, by account.
    pub(super) by_account: HashMap<AccountId, HashMap<u64, Subscriber>>,
    /// Open feeds (counted from the request, before they subscribe), and per client.
    pub(super) open: usize,
    pub(super) per_client: HashMap<Arc<str>, usize>,
    /// The last position handed to subscribers; `None` until the hub first read the head.
    pub(super) head: Option<i64>,
}

pub(super) struct HubInner {
    pub(super) pool: PgPool,
    pub(super) limits: FeedLimits,
    pub(super) registry: Mutex<Registry>,
    /// Wakes the hub's task when the first feed opens.
    pub(super) opened: Notify,
    pub(super) stop: watch::Receiver<bool>,
}

/// The feeds of one reader instance and the task that feeds them. Cheap to clone.
#[derive(Clone)]
pub struct FeedHub {
    pub(super) inner: Arc<HubInner>,
}

/// A feed's place under the caps, given back when the feed ends (however it ends).
pub(super) struct Slot {
    pub(super) hub: Arc<HubInner>,
    pub(super) client: Arc<str>,
    pub(super) account_feed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut registry = self.hub.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.open -= 1;
        if let Some(count) = registry.per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                registry.per_client.remove(&self.client);
            }
        }
        drop(registry);
        m::feed_streams_changed(self.account_feed, -1.0);
    }
}

impl FeedHub {
    /// The hub and its task, which ends when `stop` turns true.
    pub fn start(pool: PgPool, limits: FeedLimits, stop: watch::Receiver<bool>) -> Self {
        let hub = Self {
            inner: Arc::new(HubInner {
                pool,
                limits,
                registry: Mutex::new(Registry::default()),
                opened: Notify::new(),
                stop,
            }),
        };
        let task = hub.clone();
        tokio::spawn(async move { task.run().await }.instrument(tracing::info_span!("feed_hub")));
        hub
    }

    pub(super) fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds open on this instance now.
    pub fn open_feeds(&self) -> usize {
        self.registry().open
    }

    pub(super) fn open(&self, client: Arc<str>, account_feed: bool) -> Result<Slot, Refused> {
        let limits = self.inner.limits;
        let mut registry = self.registry();
        if registry.open >= limits.max_streams {
            m::feed_refused("instance_cap");
            return Err(Refused::Instance);
        }
        let count = registry.per_client.entry(client.clone()).or_insert(0);
        if *count >= limits.max_per_client {
            m::feed_refused("client_cap");
            return Err(Refused::Client);
        }
        *count += 1;
        registry.open += 1;
        drop(registry);
        m::feed_streams_changed(account_feed, 1.0);
        self.inner.opened.notify_one();
        Ok(Slot {
            hub: self.inner.clone(),
            client,
            account_feed,
        })
    }

    /// Joins the hub: from now on every transaction after the returned position that the feed
    /// wants is handed to it. `None` until the hub has read the ledger's head.
    pub(super) fn subscribe(&self, account: Option<AccountId>) -> Option<(i64, Live)> {
        let (events, receiver) = mpsc::channel(self.inner.limits.buffer);
        let too_slow = Arc::new(AtomicBool::new(false));
        let mut registry = self.registry();
        let head = registry.head?;
        let id = registry.next_id;
        registry.next_id += 1;
        let subscriber = Subscriber {
            account,
            events,
            too_slow: too_slow.clone(),
        };
        match account {
            Some(account) => {
                registry
                    .by_account
                    .entry(account)
                    .or_default()
                    .insert(id, subscriber);
            }
            None => {
                registry.all.insert(id, subscriber);
            }
        }
        Some((
            head,
            Live {
                events: receiver,
                too_slow,
                id,
            },
        ))
    }

    pub(super) fn unsubscribe(&self, account: Option<AccountId>, id: u64) {
        let mut registry = self.registry();
        match account {
            Some(account) => {
                if let Some(feeds) = registry.by_account.get_mut(&account) {
                    feeds.remove(&id);
                    if feeds.is_empty() {
                        registry.by_account.remove(&account);
                    }
                }
            }
            None => {
                registry.all.remove(&id);
            }
        }
    }

    /// The hub's last position, if it has one.
    pub(super) fn head(&self) -> Option<i64> {
        self.registry().head
    }

    /// Reads new commits while any feed is open; sleeps on `opened` otherwise. Ends on `stop`,
    /// or once every clone of the hub is gone (it holds the hub only while it works).
    pub(super) async fn run(self) {
        let weak = Arc::downgrade(&self.inner);
        let mut stop = self.inner.stop.clone();
        drop(self);
        // Logged once per outage, not at every poll.
        let mut failing = false;
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let hub = FeedHub { inner };
            if hub.registry().open == 0 {
                // Idle: no query at all until a feed opens (or a while passed, to see whether
                // the hub is still wanted).
                tokio::select! {
                    () = hub.inner.opened.notified() => {}
                    () = tokio::time::sleep(IDLE_CHECK) => {}
                    () = stopped(&mut stop) => return,
                }
                continue;
            }
            let full_page = match hub.poll().await {
                Ok(full_page) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("change feed reads new commits again");
                    }
                    full_page
                }
                Err(error) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(
                            error = error_chain(&error),
                            "change feed cannot read new commits; retrying every poll"
                        );
                    }
                    false
                }
            };
            drop(hub);
            if !full_page {
                tokio::select! {
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                    () = stopped(&mut stop) => return,
                }
            }
        }
    }

    /// One read of the new commits, handed to the feeds. True when it read a full page (more
    /// may be waiting).
    pub(super) async fn poll(&self) -> Result<bool, sqlx::Error> {
        let Some(head) = self.head() else {
            let head = db::feed_head(&self.inner.pool).await?;
            self.registry().head = Some(head);
            return Ok(false);
        };
        let rows = db::feed_page(&self.inner.pool, None, head, i64::MAX, HUB_PAGE).await?;
        let full_page = rows.len() as i64 == HUB_PAGE;
        let events: Vec<Arc<Event>> = rows
            .iter()
            .filter_map(|row| {
                m::record_feed_lag(row.transaction.created_at);
                let event = Event::of(row);
                if event.is_none() {
                    tracing::warn!(
                        position = row.position,
                        "a transaction without a balance was recorded after the feed began \
                         (a writer of an earlier version?); feeds skip it"
                    );
                }
                event.map(Arc::new)
            })
            .collect();
        let mut registry = self.registry();
        for event in &events {
            dispatch(&mut registry.all, event);
            if let Some(feeds) = registry.by_account.get_mut(&event.account_id) {
                dispatch(feeds, event);
                if feeds.is_empty() {
                    registry.by_account.remove(&event.account_id);
                }
            }
        }
        if let Some(last) = rows.last() {
            registry.head = Some(last.position);
        }
        Ok(full_page)
    }
}

/// Hands `event` to each feed; a feed whose buffer is full, or whose client is gone, is
/// removed from the hub (a full one learns why).
pub(super) fn dispatch(feeds: &mut HashMap<u64, Subscriber>, event: &Arc<Event>) {
    feeds.retain(|_, feed| {
        debug_assert!(feed
            .account
            .is_none_or(|account| account == event.account_id));
        match feed.events.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                feed.too_slow.store(true, Ordering::Relaxed);
                m::feed_refused("too_slow");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}
