//! What the receivers count: per-transport messages, every way a message can be dropped,
//! connections, and a bounded table of sources with their token buckets.
//!
//! Every message read from a socket ends in exactly one of: delivered, dropped because the
//! queue was full, dropped by the rate limit, rejected (strict mode), or dropped because the
//! receivers were shutting down or the consumer was gone. [`ReceiverStats::accounted_total`]
//! adds them up; once the receivers are quiet it equals [`ReceiverStats::received_total`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Messages per transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Live counters, shared by every receiver task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub udp_messages: AtomicU64,
    pub tcp_messages: AtomicU64,
    pub tls_messages: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_rate_limited: AtomicU64,
    pub rejected: AtomicU64,
    pub dropped_closed: AtomicU64,
    pub truncated: AtomicU64,
    pub framer_discarded_bytes: AtomicU64,
    pub framer_bad_length: AtomicU64,
    pub udp_receive_errors: AtomicU64,
    pub tcp_connections_accepted: AtomicU64,
    pub tls_connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_refused_per_source: AtomicU64,
    pub connections_evicted: AtomicU64,
    pub connections_idle_closed: AtomicU64,
    pub connection_errors: AtomicU64,
    pub connections_active: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub accept_errors: AtomicU64,
}

/// Adds one; returns the new total (for log lines).
pub(crate) fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
}

/// Adds `n`.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Counters {
    pub fn messages(&self, t: Transport) -> &AtomicU64 {
        match t {
            Transport::Udp => &self.udp_messages,
            Transport::Tcp => &self.tcp_messages,
            Transport::Tls => &self.tls_messages,
        }
    }

    pub fn snapshot(&self) -> ReceiverStats {
        ReceiverStats {
            udp_messages_total: get(&self.udp_messages),
            tcp_messages_total: get(&self.tcp_messages),
            tls_messages_total: get(&self.tls_messages),
            delivered_total: get(&self.delivered),
            dropped_queue_full_total: get(&self.dropped_queue_full),
            dropped_rate_limited_total: get(&self.dropped_rate_limited),
            rejected_total: get(&self.rejected),
            dropped_closed_total: get(&self.dropped_closed),
            truncated_total: get(&self.truncated),
            framer_discarded_bytes_total: get(&self.framer_discarded_bytes),
            framer_bad_length_total: get(&self.framer_bad_length),
            udp_receive_errors_total: get(&self.udp_receive_errors),
            tcp_connections_accepted_total: get(&self.tcp_connections_accepted),
            tls_connections_accepted_total: get(&self.tls_connections_accepted),
            connections_refused_total: get(&self.connections_refused),
            connections_refused_per_source_total: get(&self.connections_refused_per_source),
            connections_evicted_total: get(&self.connections_evicted),
            connections_idle_closed_total: get(&self.connections_idle_closed),
            connection_errors_total: get(&self.connection_errors),
            connections_active: get(&self.connections_active),
            tls_handshake_failures_total: get(&self.tls_handshake_failures),
            accept_errors_total: get(&self.accept_errors),
            queue_events: 0,
            queue_bytes: 0,
        }
    }
}

/// A snapshot of the receivers' counters. Totals count since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Datagrams read from the UDP socket (one message each).
    pub udp_messages_total: u64,
    /// Messages framed from plain TCP connections.
    pub tcp_messages_total: u64,
    /// Messages framed from TLS connections.
    pub tls_messages_total: u64,
    /// Events put on the queue.
    pub delivered_total: u64,
    /// Messages dropped because the queue was full, in events or in bytes (`when_full =
    /// drop_newest`, and UDP).
    pub dropped_queue_full_total: u64,
    /// Messages dropped because their source was above its rate.
    pub dropped_rate_limited_total: u64,
    /// Messages strict mode rejected (not RFC 5424).
    pub rejected_total: u64,
    /// Messages dropped because the receivers were shutting down or the consumer was gone.
    pub dropped_closed_total: u64,
    /// Delivered or dropped messages that were cut at `max_message_bytes`.
    pub truncated_total: u64,
    /// Bytes of TCP/TLS streams discarded: over-long messages past the cut, and octet-counting
    /// length prefixes that could not be right.
    pub framer_discarded_bytes_total: u64,
    /// Octet-counting length prefixes that could not be right (not a number, or above
    /// `max_message_bytes`); the stream was resynchronised on the next frame after each.
    pub framer_bad_length_total: u64,
    /// Errors reading the UDP socket.
    pub udp_receive_errors_total: u64,
    pub tcp_connections_accepted_total: u64,
    /// TLS connections accepted (before the handshake; failures are counted apart).
    pub tls_connections_accepted_total: u64,
    /// TCP and TLS connections closed at once because `max_connections` were open and none
    /// had been idle long enough to be evicted.
    pub connections_refused_total: u64,
    /// TCP and TLS connections closed at once because their source address already held
    /// `max_connections_per_source`.
    pub connections_refused_per_source_total: u64,
    /// Idle connections closed to make room for a new one when `max_connections` were open.
    pub connections_evicted_total: u64,
    /// Connections closed because they completed no message within the idle timeout.
    pub connections_idle_closed_total: u64,
    /// Connections that ended with a read error (reset, TLS alert after the handshake, ...).
    pub connection_errors_total: u64,
    /// TCP and TLS connections open now (a gauge).
    pub connections_active: u64,
    /// TLS handshakes that failed or timed out (no certificate, unknown CA, not TLS, ...).
    pub tls_handshake_failures_total: u64,
    /// Errors accepting connections (out of file descriptors, ...).
    pub accept_errors_total: u64,
    /// Events in the queue now (a gauge).
    pub queue_events: u64,
    /// Bytes the queued events take now (a gauge; see `queue_max_bytes`).
    pub queue_bytes: u64,
}

impl ReceiverStats {
    /// Messages read from the network, all transports.
    pub fn received_total(&self) -> u64 {
        self.udp_messages_total + self.tcp_messages_total + self.tls_messages_total
    }

    /// Messages dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_queue_full_total
            + self.dropped_rate_limited_total
            + self.rejected_total
            + self.dropped_closed_total
    }

    /// Messages whose fate is known: delivered or dropped.
    pub fn accounted_total(&self) -> u64 {
        self.delivered_total + self.dropped_total()
    }
}

/// Why something was dropped or refused; each is logged at most once a minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WarnReason {
    QueueFull = 0,
    RateLimited,
    Rejected,
    ConnectionLimit,
    TlsHandshake,
    UdpReceive,
    Accept,
    SourceTableFull,
    PerSourceLimit,
    Evicted,
    BadLength,
}
const WARN_REASONS: usize = 11;
const WARN_INTERVAL_SECS: u64 = 60;

/// Rate-limits repeated warnings: one line per reason per minute, never one per message.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    start: Instant,
    /// Seconds since `start` of the last warning, plus one; 0 = never warned.
    last: [AtomicU64; WARN_REASONS],
}

impl Default for WarnLimiter {
    fn default() -> Self {
        WarnLimiter {
            start: Instant::now(),
            last: Default::default(),
        }
    }
}

impl WarnLimiter {
    /// Whether a warning for `reason` may be logged now.
    pub fn allow(&self, reason: WarnReason) -> bool {
        let Some(slot) = self.last.get(reason as usize) else {
            return false;
        };
        let now = self.start.elapsed().as_secs().saturating_add(1);
        let last = slot.load(Ordering::Relaxed);
        if last != 0 && now < last.saturating_add(WARN_INTERVAL_SECS) {
            return false;
        }
        slot.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Counts of one source (or of the `other` bucket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounts {
    /// Messages read from this source.
    pub messages_total: u64,
    /// Of those, dropped by the rate limit.
    pub dropped_rate_limited_total: u64,
    /// Of those, dropped because the queue was full.
    pub dropped_queue_full_total: u64,
}

impl SourceCounts {
    fn add(&mut self, o: &SourceCounts) {
        self.messages_total += o.messages_total;
        self.dropped_rate_limited_total += o.dropped_rate_limited_total;
        self.dropped_queue_full_total += o.dropped_queue_full_total;
    }
}

/// One source in a [`SourcesSnapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceStats {
    pub ip: IpAddr,
    pub counts: SourceCounts,
}

/// The busiest sources, and everything else folded into `other`, so that the sum of `top` and
/// `other` is the total of every source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcesSnapshot {
    /// Sorted by `messages_total`, busiest first.
    pub top: Vec<SourceStats>,
    /// Sources beyond `top`, beyond the table's bound, or evicted from it.
    pub other: SourceCounts,
    /// Sources in the table now.
    pub tracked: usize,
}

/// A token bucket: `burst` tokens at most, refilled at `rate` per second.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Clone, Copy, Debug)]
struct RateSpec {
    per_second: f64,
    burst: f64,
}

impl Bucket {
    fn full(spec: &RateSpec, now: Instant) -> Self {
        Bucket {
            tokens: spec.burst,
            last: now,
        }
    }

    fn take(&mut self, spec: &RateSpec, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * spec.per_second).min(spec.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct SourceEntry {
    counts: SourceCounts,
    bucket: Option<Bucket>,
    last_seen: Instant,
}

impl SourceEntry {
    fn new(spec: Option<&RateSpec>, now: Instant) -> Self {
        SourceEntry {
            counts: SourceCounts::default(),
            bucket: spec.map(|s| Bucket::full(s, now)),
            last_seen: now,
        }
    }
}

/// A source silent this long may be evicted when the table is full.
const SOURCE_IDLE_EVICT: Duration = Duration::from_secs(300);
/// A full table is swept for idle sources at most this often (a flood of new sources must not
/// turn every message into a scan).
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Per-source accounting and rate limiting, bounded to `max` sources.
#[derive(Debug)]
pub(crate) struct SourceTable {
    entries: HashMap<IpAddr, SourceEntry>,
    /// Sources that did not fit, and the counts of evicted ones. Shares one token bucket:
    /// under a flood from more sources than the table holds, the overflow is limited as one.
    other: SourceEntry,
    max: usize,
    rate: Option<RateSpec>,
    last_sweep: Option<Instant>,
    /// Whether the last admitted message went to `other` because the table was full.
    pub last_overflowed: bool,
}

impl SourceTable {
    pub fn new(max: usize, rate_per_second: Option<u32>, burst: Option<u32>) -> Self {
        let rate = rate_per_second.map(|r| RateSpec {
            per_second: f64::from(r),
            burst: f64::from(burst.unwrap_or(r).max(1)),
        });
        let now = Instant::now();
        SourceTable {
            entries: HashMap::new(),
            other: SourceEntry::new(rate.as_ref(), now),
            max: max.max(1),
            rate,
            last_sweep: None,
            last_overflowed: false,
        }
    }

    fn entry(&mut self, ip: IpAddr, now: Instant) -> &mut SourceEntry {
        if !self.entries.contains_key(&ip) && self.entries.len() >= self.max {
            self.sweep(now);
        }
        if self.entries.contains_key(&ip) || self.entries.len() < self.max {
            self.last_overflowed = false;
            let rate = self.rate;
            self.entries
                .entry(ip)
                .or_insert_with(|| SourceEntry::new(rate.as_ref(), now))
        } else {
            self.last_overflowed = true;
            &mut self.other
        }
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        let other = &mut self.other.counts;
        self.entries.retain(|_, e| {
            let keep = now.saturating_duration_since(e.last_seen) < SOURCE_IDLE_EVICT;
            if !keep {
                other.add(&e.counts);
            }
            keep
        });
    }

    /// Counts a message from `ip`; `false` when the source is above its rate (counted too).
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let rate = self.rate;
        let e = self.entry(ip, now);
        e.last_seen = now;
        e.counts.messages_total += 1;
        let ok = match (e.bucket.as_mut(), rate.as_ref()) {
            (Some(b), Some(spec)) => b.take(spec, now),
            _ => true,
        };
        if !ok {
            e.counts.dropped_rate_limited_total += 1;
        }
        ok
    }

    pub fn count_queue_full(&mut self, ip: IpAddr) {
        match self.entries.get_mut(&ip) {
            Some(e) => e.counts.dropped_queue_full_total += 1,
            None => self.other.counts.dropped_queue_full_total += 1,
        }
    }

    pub fn snapshot(&self, top_n: usize) -> SourcesSnapshot {
        let mut all: Vec<SourceStats> = self
            .entries
            .iter()
            .map(|(ip, e)| SourceStats {
                ip: *ip,
                counts: e.counts,
            })
            .collect();
        all.sort_by(|a, b| {
            b.counts
                .messages_total
                .cmp(&a.counts.messages_total)
                .then(a.ip.cmp(&b.ip))
        });
        let mut other = self.other.counts;
        for s in all.iter().skip(top_n) {
            other.add(&s.counts);
        }
        all.truncate(top_n);
        SourcesSnapshot {
            top: all,
            other,
            tracked: self.entries.len(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut t = SourceTable::new(8, Some(10), Some(3));
        let t0 = Instant::now();
        let admitted = (0..10).filter(|_| t.admit(ip(1), t0)).count();
        assert_eq!(admitted, 3, "the burst, nothing more at the same instant");
        // 0.5 s later: 5 tokens at 10/s, capped at the burst of 3.
        let t1 = t0 + Duration::from_millis(500);
        let admitted = (0..10).filter(|_| t.admit(ip(1), t1)).count();
        assert_eq!(admitted, 3);
        let s = t.snapshot(10);
        assert_eq!(s.top[0].counts.messages_total, 20);
        assert_eq!(s.top[0].counts.dropped_rate_limited_total, 14);
    }

    #[test]
    fn table_is_bounded_and_totals_are_kept_in_other() {
        let mut t = SourceTable::new(2, None, None);
        let now = Instant::now();
        for n in 1..=5 {
            for _ in 0..n {
                assert!(t.admit(ip(n), now));
            }
        }
        assert!(t.last_overflowed);
        let s = t.snapshot(1);
        assert_eq!(s.tracked, 2);
        assert_eq!(s.top.len(), 1);
        assert_eq!((s.top[0].ip, s.top[0].counts.messages_total), (ip(2), 2));
        // 1 (the other tracked source) + 3 + 4 + 5 (beyond the bound).
        assert_eq!(s.other.messages_total, 13);
    }

    #[test]
    fn idle_sources_are_evicted_when_the_table_is_full() {
        let mut t = SourceTable::new(1, None, None);
        let t0 = Instant::now();
        t.admit(ip(1), t0);
        let later = t0 + SOURCE_IDLE_EVICT + Duration::from_secs(1);
        t.admit(ip(2), later);
        let s = t.snapshot(5);
        assert_eq!(s.top.len(), 1);
        assert_eq!(s.top[0].ip, ip(2));
        assert_eq!(
            s.other.messages_total, 1,
            "the evicted source's count is kept"
        );
    }

    #[test]
    fn warnings_are_rate_limited_per_reason() {
        let w = WarnLimiter::default();
        assert!(w.allow(WarnReason::QueueFull));
        assert!(!w.allow(WarnReason::QueueFull));
        assert!(w.allow(WarnReason::RateLimited));
    }
}
