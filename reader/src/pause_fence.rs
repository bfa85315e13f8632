//! A reader that was paused (SIGSTOP, a frozen VM) answers nothing from PostgreSQL as it wakes,
//! until the cluster has had time to fence the primary it was talking to.
//!
//! While a host is frozen, the others elect a new primary once the old one's leader lock
//! expires (Patroni's ttl) and acknowledge writes on it. When the host wakes, its old primary
//! still serves reads until its Patroni demotes it, and the host's HAProxy still sends reads
//! there until its next check: a balance read then would miss writes already acknowledged
//! (found by the partition test, docs/ha.md). A process cannot tell it was frozen from inside a
//! request, but a clock task can: it ticks every [`TICK`], and a tick that comes more than
//! [`LATE`] after the previous one means the process stood still. Then, and while the clock has
//! not ticked for [`LATE`] (a request served before the first tick after waking), account
//! reads from PostgreSQL answer 503 with `Retry-After` for `PAUSE_FENCE_MS`: set it to the
//! leader lock's ttl or more (the replicated topology on simulated hosts sets it; off, 0, by
//! default: a lone PostgreSQL has no other primary to lose to).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The 503's message.
pub const PAUSED: &str =
    "this reader was paused and cannot vouch for the database it reads yet; retry";

/// How often the clock task ticks.
pub const TICK: Duration = Duration::from_millis(100);
/// A gap between ticks longer than this means the process was paused.
pub const LATE: Duration = Duration::from_secs(1);

/// The clock and what it decided (see the module's comment).
pub struct PauseFence {
    started: Instant,
    /// How long reads from PostgreSQL stay refused after a pause; zero: never.
    fence: Duration,
    last_tick_ms: AtomicU64,
    fenced_until_ms: AtomicU64,
}

impl PauseFence {
    pub fn new(fence: Duration) -> Self {
        Self {
            started: Instant::now(),
            fence,
            last_tick_ms: AtomicU64::new(0),
            fenced_until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// One tick of the clock task: a late one raises the fence.
    fn tick(&self) {
        let now = self.now_ms();
        let last = self.last_tick_ms.swap(now, Ordering::Relaxed);
        if now.saturating_sub(last) > LATE.as_millis() as u64 {
            self.fenced_until_ms
                .store(now + self.fence.as_millis() as u64, Ordering::Relaxed);
            tracing::warn!(
                paused_ms = now - last,
                fence_ms = self.fence.as_millis() as u64,
                "this reader was paused: account reads from PostgreSQL answer 503 for a while"
            );
        }
    }

    /// Whether a balance read from PostgreSQL may be answered now.
    pub fn allows_reads(&self) -> bool {
        if self.fence.is_zero() {
            return true;
        }
        let now = self.now_ms();
        now.saturating_sub(self.last_tick_ms.load(Ordering::Relaxed)) <= LATE.as_millis() as u64
            && now >= self.fenced_until_ms.load(Ordering::Relaxed)
    }
}

/// The clock task, until `stop`; with the fence off it does nothing.
pub async fn keep_time(fence: Arc<PauseFence>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if fence.fence.is_zero() {
        return;
    }
    // Counted from now, not from when the fence was made.
    fence.last_tick_ms.store(fence.now_ms(), Ordering::Relaxed);
    let mut ticks = tokio::time::interval(TICK);
    // After a pause, one tick, not a burst of the ones missed.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => fence.tick(),
            _ = stop.changed() => break,
        }
    }
    // No clock any more (stopping, or a test kept the router alone): never refuse for it.
    fence.last_tick_ms.store(u64::MAX, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_never_refuses() {
        let fence = PauseFence::new(Duration::ZERO);
        std::thread::sleep(LATE + Duration::from_millis(50));
        assert!(fence.allows_reads());
    }

    #[test]
    fn a_late_clock_refuses_until_the_fence_has_passed() {
        let fence = PauseFence::new(Duration::from_millis(300));
        fence.tick();
        assert!(fence.allows_reads(), "ticking in time");
        std::thread::sleep(LATE + Duration::from_millis(100));
        assert!(
            !fence.allows_reads(),
            "the clock stood still: not yet ticked after the pause"
        );
        fence.tick();
        assert!(!fence.allows_reads(), "the late tick raised the fence");
        std::thread::sleep(Duration::from_millis(350));
        fence.tick();
        assert!(fence.allows_reads(), "the fence has passed");
    }
}
