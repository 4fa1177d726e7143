//! What every sink shares: a bounded queue that drops its oldest entry when full (a
//! responder wants the latest state of an incident more than a stale one), the sink's
//! counters, and the retry backoff.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Sink, SinkSnapshot, unix_ms_now};

/// A bounded multi-producer queue with one consumer; `push` never waits.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    ready: Notify,
    closed: AtomicBool,
}

impl<T> Queue<T> {
    pub(crate) fn new(capacity: usize) -> Queue<T> {
        Queue {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        // A panic while holding this lock leaves a consistent deque (push/pop only).
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `item`; when full, the oldest entry is removed and returned.
    pub(crate) fn push(&self, item: T) -> Option<T> {
        let dropped = {
            let mut items = self.lock();
            let dropped = if items.len() >= self.capacity {
                items.pop_front()
            } else {
                None
            };
            items.push_back(item);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    /// The oldest entry, if any.
    pub(crate) fn pop(&self) -> Option<T> {
        self.lock().pop_front()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Removes every entry (what is left when the grace period ends).
    pub(crate) fn drain(&self) -> Vec<T> {
        self.lock().drain(..).collect()
    }

    /// No more waiting: [`Queue::next`] returns `None` once the queue is empty.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.ready.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits for the next entry; `None` when closed and empty. Cancel-safe.
    pub(crate) async fn next(&self) -> Option<T> {
        loop {
            // Register interest before looking, so a push in between is not missed.
            let notified = self.ready.notified();
            if let Some(item) = self.pop() {
                return Some(item);
            }
            if self.is_closed() {
                // Let another waiter (none today) see the close too.
                self.ready.notify_one();
                return None;
            }
            notified.await;
        }
    }
}

/// One sink's counters (plain atomics, read by [`super::Notifier::stats`]).
#[derive(Debug)]
pub(crate) struct SinkStats {
    pub(crate) sink: Sink,
    sent: AtomicU64,
    failed_attempts: AtomicU64,
    retries: AtomicU64,
    given_up: AtomicU64,
    dropped: AtomicU64,
    last_success_unix_ms: AtomicU64,
    /// Messages being delivered now (what an aborted task leaves undelivered).
    in_flight: AtomicU64,
    /// An overflow streak has been logged; cleared when the queue is next found empty.
    overflow_logged: AtomicBool,
    /// A failure streak has been logged; cleared by the next success.
    failing: AtomicBool,
}

impl SinkStats {
    pub(crate) fn new(sink: Sink) -> SinkStats {
        SinkStats {
            sink,
            sent: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            given_up: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_success_unix_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            overflow_logged: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }

    /// `n` messages delivered.
    pub(crate) fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        self.last_success_unix_ms
            .fetch_max(unix_ms_now(), Ordering::Relaxed);
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                sink = self.sink.as_str(),
                "notification delivery works again"
            );
        }
    }

    /// An attempt failed (logged once per streak of failures).
    pub(crate) fn failed_attempt(&self, target: &str, error: &dyn std::fmt::Display) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(sink = self.sink.as_str(), target, error = %error,
                "notification delivery failed; retrying with backoff");
        } else {
            tracing::debug!(sink = self.sink.as_str(), target, error = %error,
                "notification delivery failed again");
        }
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` messages abandoned after their last attempt (or at shutdown).
    pub(crate) fn gave_up(&self, n: u64) {
        self.given_up.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` messages pushed out of a full queue.
    pub(crate) fn overflowed(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        if !self.overflow_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                sink = self.sink.as_str(),
                "notification queue full: dropping the oldest notices (counted; logged once until it drains)"
            );
        }
    }

    /// The messages in flight when their task was stopped (then zero).
    pub(crate) fn take_in_flight(&self) -> u64 {
        self.in_flight.swap(0, Ordering::Relaxed)
    }

    /// The queue was found empty: a later overflow is news again.
    pub(crate) fn drained(&self) {
        self.overflow_logged.store(false, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, queue_depth: u64) -> SinkSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkSnapshot {
            sink: self.sink,
            sent_total: get(&self.sent),
            failed_attempts_total: get(&self.failed_attempts),
            retries_total: get(&self.retries),
            given_up_total: get(&self.given_up),
            dropped_total: get(&self.dropped),
            queue_depth,
            last_success_unix_ms: get(&self.last_success_unix_ms),
        }
    }
}

/// The wait before retry `retry` (1 for the first): `initial` doubled per retry up to `max`,
/// then a random point in its upper half, so collectors that lost a receiver together do
/// not come back in step.
pub(crate) fn backoff_delay(retry: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = retry.saturating_sub(1).min(30);
    let base = initial.saturating_mul(1u32 << doublings).min(max);
    let half = base / 2;
    let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=jitter_ns))
}

/// Whether an attempt's failure is worth another attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Network trouble, a timeout, a 5xx, 408 or 429.
    Transient,
    /// The receiver refused the message itself (other 4xx): the same bytes will not fare
    /// better.
    Permanent,
}

/// The retry policy of one sink.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub(crate) max_attempts: u32,
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Policy {
    pub(crate) fn from_settings(d: &super::config::DeliverySettings) -> Policy {
        let (initial, max) = d.backoff();
        Policy {
            max_attempts: d.max_attempts.max(1),
            initial,
            max,
        }
    }
}

/// Runs `attempt` until it succeeds, fails permanently or `policy.max_attempts` are spent,
/// counting every failed attempt, retry and give-up of `count` messages in `stats`.
/// Returns whether it was delivered.
pub(crate) async fn deliver<F, Fut, E>(
    stats: &SinkStats,
    policy: Policy,
    target: &str,
    count: u64,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), (Retry, E)>>,
    E: std::fmt::Display,
{
    stats.in_flight.fetch_add(count, Ordering::Relaxed);
    let delivered = attempts(stats, policy, target, count, &mut attempt).await;
    stats.in_flight.fetch_sub(count, Ordering::Relaxed);
    delivered
}

async fn attempts<F, Fut, E>(
    stats: &SinkStats,
    policy: Policy,
    target: &str,
    count: u64,
    attempt: &mut F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), (Retry, E)>>,
    E: std::fmt::Display,
{
    let mut n = 0u32;
    loop {
        n = n.saturating_add(1);
        match attempt().await {
            Ok(()) => {
                stats.sent(count);
                return true;
            }
            Err((retry, e)) => {
                stats.failed_attempt(target, &e);
                if retry == Retry::Permanent || n >= policy.max_attempts {
                    stats.gave_up(count);
                    tracing::warn!(sink = stats.sink.as_str(), target, attempts = n, messages = count,
                        error = %e, "notification given up");
                    return false;
                }
                tokio::time::sleep(backoff_delay(n, policy.initial, policy.max)).await;
                stats.retried();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_its_oldest_entry() {
        let q = Queue::new(3);
        for n in 0..3 {
            assert_eq!(q.push(n), None);
        }
        assert_eq!(q.push(3), Some(0));
        assert_eq!(q.push(4), Some(1));
        assert_eq!(q.len(), 3);
        assert_eq!(q.drain(), vec![2, 3, 4]);
        assert_eq!(q.pop(), None);
    }

    #[tokio::test]
    async fn next_waits_for_a_push_and_ends_when_closed_and_empty() {
        let q = std::sync::Arc::new(Queue::new(2));
        let reader = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(x) = q.next().await {
                    got.push(x);
                }
                got
            })
        };
        tokio::task::yield_now().await;
        q.push(1);
        q.push(2);
        q.close();
        assert_eq!(reader.await.unwrap(), vec![1, 2]);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..50 {
            let d1 = backoff_delay(1, initial, max);
            assert!(
                (Duration::from_millis(50)..=initial).contains(&d1),
                "{d1:?}"
            );
            let d3 = backoff_delay(3, initial, max);
            assert!(
                (Duration::from_millis(200)..=Duration::from_millis(400)).contains(&d3),
                "{d3:?}"
            );
            let d40 = backoff_delay(40, initial, max);
            assert!((Duration::from_secs(1)..=max).contains(&d40), "{d40:?}");
        }
    }

    #[tokio::test]
    async fn deliver_counts_every_failure_retry_and_give_up() {
        let stats = SinkStats::new(Sink::Webhook);
        let policy = Policy {
            max_attempts: 3,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let mut calls = 0;
        let ok = deliver(&stats, policy, "t", 1, || {
            calls += 1;
            let fail = calls < 3;
            async move {
                if fail {
                    Err((Retry::Transient, "down"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(ok);
        let s = stats.snapshot(0);
        assert_eq!(
            (s.sent_total, s.failed_attempts_total, s.retries_total),
            (1, 2, 2)
        );
        assert!(s.last_success_unix_ms > 0);

        let ok = deliver(&stats, policy, "t", 2, || async {
            Err::<(), _>((Retry::Transient, "down"))
        })
        .await;
        assert!(!ok);
        let s = stats.snapshot(0);
        assert_eq!(
            (s.failed_attempts_total, s.retries_total, s.given_up_total),
            (5, 4, 2)
        );

        let ok = deliver(&stats, policy, "t", 1, || async {
            Err::<(), _>((Retry::Permanent, "400 bad request"))
        })
        .await;
        assert!(!ok);
        let s = stats.snapshot(0);
        assert_eq!(
            (s.failed_attempts_total, s.retries_total, s.given_up_total),
            (6, 4, 3)
        );
    }
}
