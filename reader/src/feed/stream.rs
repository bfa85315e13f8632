//! One client's feed: its stream of frames, from catching up in PostgreSQL to taking what the
//! hub hands it (see the parent module's comment).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use shared::db;
use shared::domain::AccountId;
use shared::telemetry::error_chain;
use shared::telemetry::metrics as m;
use tokio::sync::{mpsc, watch};

use super::hub::*;
use super::*;

pub(super) enum Phase {
    /// Catch up from PostgreSQL alone, up to about the hub's position.
    CatchUp,
    /// Join the hub, then read from PostgreSQL up to the position it joined at.
    Bridge { upto: i64 },
    /// Take what the hub hands over.
    Live,
    /// The stream ends once `pending` is sent.
    Ended,
}

pub(super) struct Live {
    pub(super) events: mpsc::Receiver<Arc<Event>>,
    pub(super) too_slow: Arc<AtomicBool>,
    pub(super) id: u64,
}

/// One client's feed: the state of its stream.
pub(super) struct Feed {
    pub(super) hub: FeedHub,
    pub(super) account: Option<AccountId>,
    /// Every transaction of the feed at or below this position has been sent (or skipped as
    /// not the feed's account).
    pub(super) cursor: i64,
    pub(super) phase: Phase,
    pub(super) pending: VecDeque<Bytes>,
    pub(super) live: Option<Live>,
    pub(super) heartbeat: Option<tokio::time::Interval>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) _slot: Slot,
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(live) = &self.live {
            self.hub.unsubscribe(self.account, live.id);
        }
    }
}

impl Feed {
    /// The next bytes to send; `None` ends the stream.
    pub(super) async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            if *self.stop.borrow() {
                return None;
            }
            match self.phase {
                Phase::Ended => return None,
                Phase::CatchUp => match self.hub.head() {
                    // The hub reads the ledger's head within a poll of the first feed opening.
                    None => tokio::time::sleep(POLL_INTERVAL).await,
                    Some(upto) => {
                        if upto <= self.cursor || Box::pin(self.read_up_to(upto)).await {
                            self.join();
                        }
                    }
                },
                Phase::Bridge { upto } => {
                    if upto <= self.cursor || Box::pin(self.read_up_to(upto)).await {
                        self.phase = Phase::Live;
                    }
                }
                Phase::Live => return self.live_frame().await,
            }
        }
    }

    /// Reads the feed's transactions in `(cursor, upto]` a page at a time into `pending`. True
    /// once it reached `upto`.
    pub(super) async fn read_up_to(&mut self, upto: i64) -> bool {
        let page = db::feed_page(
            &self.hub.inner.pool,
            self.account,
            self.cursor,
            upto,
            CATCH_UP_PAGE,
        )
        .await;
        let rows = match page {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(error = error_chain(&error), "change feed cannot catch up");
                self.end_with(
                    "unavailable",
                    "the ledger cannot be read now; reconnect later with the last id received",
                );
                return false;
            }
        };
        let reached = (rows.len() as i64) < CATCH_UP_PAGE;
        for row in &rows {
            match Event::of(row) {
                Some(event) => self.send(&event),
                None => {
                    self.end_with(
                        "history_unavailable",
                        "Last-Event-ID is older than the feed's history; read the account (or \
                         page GET /transactions) and start again without it",
                    );
                    return false;
                }
            }
        }
        if reached {
            self.cursor = self.cursor.max(upto);
        }
        reached
    }

    pub(super) fn send(&mut self, event: &Event) {
        if event.position > self.cursor {
            self.cursor = event.position;
            self.pending.push_back(event.frame.clone());
            m::feed_event_sent(self.account.is_some());
        }
    }

    /// Joins the hub (which knows its position: the feed waited for it in `CatchUp`).
    pub(super) fn join(&mut self) {
        if let Some((upto, live)) = self.hub.subscribe(self.account) {
            self.live = Some(live);
            self.phase = Phase::Bridge { upto };
        }
    }

    pub(super) async fn live_frame(&mut self) -> Option<Bytes> {
        let period = self.hub.inner.limits.heartbeat;
        let heartbeat = self.heartbeat.get_or_insert_with(|| {
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every
        });
        let live = self.live.as_mut()?;
        loop {
            tokio::select! {
                event = live.events.recv() => match event {
                    Some(event) => {
                        if event.position > self.cursor {
                            self.cursor = event.position;
                            m::feed_event_sent(self.account.is_some());
                            return Some(event.frame.clone());
                        }
                    }
                    None => {
                        if live.too_slow.load(Ordering::Relaxed) {
                            self.phase = Phase::Ended;
                            return Some(error_event(
                                "too_slow",
                                "this client read the feed too slowly and was dropped; \
                                 reconnect with the last id received to catch up",
                            ));
                        }
                        return None;
                    }
                },
                _ = heartbeat.tick() => return Some(Bytes::from_static(b": heartbeat\n\n")),
                () = stopped(&mut self.stop) => return None,
            }
        }
    }

    pub(super) fn end_with(&mut self, code: &str, message: &str) {
        self.pending.push_back(error_event(code, message));
        self.phase = Phase::Ended;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every idle feed holds besides its connection: its body stream (with the future of
    /// its next frame inline) and its channel.
    #[tokio::test]
    async fn an_idle_feed_is_small() {
        let (_stop, stopped) = watch::channel(false);
        let hub = FeedHub::start(
            shared::testing::unreachable_pool(),
            FeedLimits::default(),
            stopped.clone(),
        );
        let slot = hub.open(Arc::from("test"), false).ok().expect("a slot");
        let feed = Feed {
            hub: hub.clone(),
            account: None,
            cursor: 0,
            phase: Phase::Live,
            pending: VecDeque::new(),
            live: None,
            heartbeat: None,
            stop: stopped,
            _slot: slot,
        };
        let body = frames(feed);
        let size = std::mem::size_of_val(&body);
        assert!(size < 2_048, "a feed's body stream is {size} bytes");
    }
}
