//! Who gets a descriptor and a task on the intake before proving who they are.
//!
//! A TCP connection costs the collector a file descriptor and a task from the moment it is
//! accepted, long before its TLS handshake shows an agent certificate. If those connections
//! shared one cap with authenticated ones, anyone who can reach the port could fill it with
//! idle sockets and keep every agent out. So admission has two tables:
//!
//! - **Handshakes** (`max_handshakes`, and `max_handshakes_per_address` per source address,
//!   an IPv6 source being its /64): connections not yet authenticated. A newcomer is always
//!   taken; when its address is at its quota, that address's oldest handshake is closed, and
//!   when the table is full, the oldest handshake of the address holding the most is closed.
//!   A real agent's handshake takes milliseconds, so the oldest entries are the idle ones, and
//!   an address with one handshake in progress (an agent) is the last to lose it.
//! - **Authenticated connections** (`max_connections`): taken once the handshake is done.
//!
//! Both tables are bounded, so the descriptors the intake can hold are bounded too
//! (`descriptors.rs` checks them against the process's limit at start). Failed `accept`s
//! (out of descriptors anyway: another process, a lower limit) back off and are counted,
//! logged once a minute ([`AcceptBackoff`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::config::IntakeSection;
use crate::stats::{IntakeStats, RefusalReason};

/// A source as admission and the API's lockout count it: an IPv4 address, or the /64 of an
/// IPv6 one (a single host commonly holds a whole /64, so counting addresses would let it
/// take any number of slots). IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => a.fmt(f),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// Why a handshake was closed to make room for a newer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// `max_handshakes` were in progress.
    Full,
    /// `max_handshakes_per_address` were in progress from its address.
    PerAddress,
}

impl Eviction {
    pub fn reason(self) -> RefusalReason {
        match self {
            Eviction::Full => RefusalReason::HandshakesFull,
            Eviction::PerAddress => RefusalReason::HandshakesPerAddress,
        }
    }
}

/// The handshakes in progress. Ids grow with arrival, so a smaller id is an older handshake.
#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    /// id → its source and how to tell it that it was evicted.
    pending: BTreeMap<u64, (Source, oneshot::Sender<Eviction>)>,
    /// Per source, its handshakes oldest first (never empty: a source without any is removed).
    by_source: BTreeMap<Source, VecDeque<u64>>,
    /// (handshakes of the source, its oldest id reversed, source): the last element is the
    /// source holding the most, and among equals the one with the oldest handshake.
    load: BTreeSet<(usize, Reverse<u64>, Source)>,
}

impl Table {
    fn load_key(&self, source: Source) -> Option<(usize, Reverse<u64>, Source)> {
        let ids = self.by_source.get(&source)?;
        Some((ids.len(), Reverse(*ids.front()?), source))
    }

    /// Runs `change` on `source`'s handshakes, keeping `load` in step.
    fn with_source(&mut self, source: Source, change: impl FnOnce(&mut VecDeque<u64>)) {
        if let Some(key) = self.load_key(source) {
            self.load.remove(&key);
        }
        let ids = self.by_source.entry(source).or_default();
        change(ids);
        if ids.is_empty() {
            self.by_source.remove(&source);
        }
        if let Some(key) = self.load_key(source) {
            self.load.insert(key);
        }
    }

    fn count(&self, source: Source) -> usize {
        self.by_source.get(&source).map_or(0, VecDeque::len)
    }

    /// Removes handshake `id`; its sender, if it was still there.
    fn remove(&mut self, id: u64) -> Option<oneshot::Sender<Eviction>> {
        let (source, tx) = self.pending.remove(&id)?;
        self.with_source(source, |ids| ids.retain(|&x| x != id));
        Some(tx)
    }

    /// Closes `source`'s oldest handshake, telling it why.
    fn evict_oldest_of(&mut self, source: Source, why: Eviction) {
        let oldest = self
            .by_source
            .get(&source)
            .and_then(|ids| ids.front().copied());
        if let Some(tx) = oldest.and_then(|id| self.remove(id)) {
            // The connection may be finishing at this moment: then nobody listens. Dropping
            // the sender wakes it either way.
            let _ = tx.send(why);
        }
    }

    /// The source holding the most handshakes (among equals, the one with the oldest).
    fn heaviest(&self) -> Option<Source> {
        self.load.last().map(|(_, _, s)| *s)
    }
}

/// The intake's two tables: handshakes in progress and authenticated connections.
#[derive(Debug)]
pub struct Admission {
    table: Mutex<Table>,
    max_handshakes: usize,
    max_per_source: usize,
    authenticated: Arc<Semaphore>,
    stats: Arc<IntakeStats>,
}

impl Admission {
    pub fn new(config: &IntakeSection, stats: Arc<IntakeStats>) -> Admission {
        let n = |v: u32| usize::try_from(v).unwrap_or(1).max(1);
        Admission {
            table: Mutex::new(Table::default()),
            max_handshakes: n(config.max_handshakes),
            max_per_source: n(config.max_handshakes_per_address),
            authenticated: Arc::new(Semaphore::new(n(config.max_connections))),
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a new connection from `peer` into the handshake table, closing an older
    /// handshake if a cap is reached (never refusing the newcomer).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Pending {
        let source = Source::of(peer);
        let (tx, rx) = oneshot::channel();
        let mut t = self.lock();
        if t.count(source) >= self.max_per_source {
            t.evict_oldest_of(source, Eviction::PerAddress);
        } else if t.pending.len() >= self.max_handshakes
            && let Some(heaviest) = t.heaviest()
        {
            t.evict_oldest_of(heaviest, Eviction::Full);
        }
        let id = t.next_id;
        t.next_id += 1;
        t.pending.insert(id, (source, tx));
        t.with_source(source, |ids| ids.push_back(id));
        self.stats
            .handshakes_pending
            .store(t.pending.len() as u64, Ordering::Relaxed);
        drop(t);
        Pending {
            id,
            source,
            admission: Arc::clone(self),
            evicted: rx,
        }
    }

    fn leave(&self, id: u64) {
        let mut t = self.lock();
        t.remove(id);
        self.stats
            .handshakes_pending
            .store(t.pending.len() as u64, Ordering::Relaxed);
    }
}

/// A connection in its handshake: its place in the table, given up when dropped.
#[derive(Debug)]
pub struct Pending {
    id: u64,
    source: Source,
    admission: Arc<Admission>,
    evicted: oneshot::Receiver<Eviction>,
}

impl Pending {
    /// The connection's source (an address, or an IPv6 /64).
    pub fn source(&self) -> Source {
        self.source
    }

    /// Resolves when a newer connection took this one's place.
    pub async fn evicted(&mut self) -> Eviction {
        // A dropped sender without a reason: the admission itself is gone (shutting down).
        (&mut self.evicted).await.unwrap_or(Eviction::Full)
    }

    /// The handshake is done: leaves the handshake table and takes a place among the
    /// authenticated connections, `None` when `max_connections` are open.
    pub fn authenticated(self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.admission.authenticated)
            .try_acquire_owned()
            .ok()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.admission.leave(self.id);
    }
}

/// Backoff and accounting for failed `accept`s. A failure such as EMFILE leaves the pending
/// connection in the backlog, so the listener is ready again at once: without a pause the
/// loop would spin, and without a rate limit it would log a line per attempt.
#[derive(Debug)]
pub struct AcceptBackoff {
    /// The listener, for the log: `intake` or `API`.
    what: &'static str,
    stats: Arc<IntakeStats>,
    counter: fn(&IntakeStats) -> &AtomicU64,
    delay: Duration,
    last_warned: Option<Instant>,
    since_warned: u64,
}

/// First pause after a failed accept; doubled per consecutive failure up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// A failed accept is logged at most this often; the counter has the rest.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

impl AcceptBackoff {
    /// For the intake's listener (`mamori_intake_accept_errors_total`).
    pub fn intake(stats: Arc<IntakeStats>) -> AcceptBackoff {
        Self::new("intake", stats, |s| &s.accept_errors)
    }

    /// For the API's listener (`mamori_api_accept_errors_total`).
    pub fn api(stats: Arc<IntakeStats>) -> AcceptBackoff {
        Self::new("API", stats, |s| &s.api.accept_errors)
    }

    fn new(
        what: &'static str,
        stats: Arc<IntakeStats>,
        counter: fn(&IntakeStats) -> &AtomicU64,
    ) -> AcceptBackoff {
        AcceptBackoff {
            what,
            stats,
            counter,
            delay: FIRST_PAUSE,
            last_warned: None,
            since_warned: 0,
        }
    }

    /// An accept succeeded: the next failure pauses briefly again.
    pub fn succeeded(&mut self) {
        self.delay = FIRST_PAUSE;
    }

    /// Counts a failed accept, logs it at most once a minute; how long to pause.
    pub fn failed(&mut self, error: &std::io::Error) -> Duration {
        crate::stats::add((self.counter)(&self.stats), 1);
        self.since_warned += 1;
        let now = Instant::now();
        if self
            .last_warned
            .is_none_or(|t| now.duration_since(t) >= WARN_INTERVAL)
        {
            tracing::warn!(
                listener = self.what,
                error = %error,
                failures = self.since_warned,
                "accept failed (out of file descriptors? see LimitNOFILE); backing off, \
                 repeats within a minute are only counted"
            );
            self.last_warned = Some(now);
            self.since_warned = 0;
        }
        let pause = self.delay;
        self.delay = (self.delay * 2).min(MAX_PAUSE);
        pause
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn admission(max_handshakes: u32, per_address: u32) -> Arc<Admission> {
        let config: crate::config::CollectorConfig =
            crate::config::CollectorConfig::parse(&format!(
                r#"
                [intake]
                listen = "127.0.0.1:0"
                cert_file = "c"
                key_file = "k"
                client_ca_file = "ca"
                max_connections = 2
                max_concurrent_requests = 1
                max_handshakes = {max_handshakes}
                max_handshakes_per_address = {per_address}
                [storage]
                sqlite_path = "db"
                "#
            ))
            .unwrap();
        Arc::new(Admission::new(
            &config.intake,
            Arc::new(IntakeStats::default()),
        ))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn evicted(p: &mut Pending) -> Option<Eviction> {
        p.evicted.try_recv().ok()
    }

    #[test]
    fn ipv6_sources_are_their_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            Source::of(ip("2001:db8:1:2:aaaa::1")),
            Source::of(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:10.0.0.1")),
            Source::of(ip("10.0.0.1"))
        );
        assert_eq!(Source::of(ip("2001:db8::1")).to_string(), "2001:db8::/64");
    }

    #[test]
    fn one_address_at_its_quota_loses_its_own_oldest_handshake_only() {
        let a = admission(100, 3);
        let mut other = a.admit(ip("10.0.0.9"));
        let mut first: Vec<Pending> = (0..3).map(|_| a.admit(ip("10.0.0.1"))).collect();
        let newest = a.admit(ip("10.0.0.1"));
        assert_eq!(evicted(&mut first[0]), Some(Eviction::PerAddress));
        assert_eq!(evicted(&mut first[1]), None);
        assert_eq!(evicted(&mut other), None);
        assert_eq!(a.stats.handshakes_pending.load(Ordering::Relaxed), 4);
        drop(newest);
        drop(first);
        assert_eq!(a.stats.handshakes_pending.load(Ordering::Relaxed), 1);
        assert!(a.lock().by_source.len() == 1 && a.lock().load.len() == 1);
    }

    #[test]
    fn a_full_table_takes_the_newcomer_and_closes_the_heaviest_address_oldest() {
        let a = admission(6, 6);
        let mut agent = a.admit(ip("192.0.2.7"));
        let mut attacker: Vec<Pending> = (0..5)
            .map(|n| a.admit(ip(&format!("198.51.100.{}", 1 + n % 2))))
            .collect();
        // Full (6). 198.51.100.1 holds 3, .2 holds 2, the agent 1: .1's oldest goes.
        let _late = a.admit(ip("203.0.113.1"));
        assert_eq!(evicted(&mut attacker[0]), Some(Eviction::Full));
        assert_eq!(evicted(&mut agent), None);
        // Now .1 and .2 hold 2 each: the one with the older handshake (.2's first) goes.
        let _later = a.admit(ip("203.0.113.2"));
        assert_eq!(evicted(&mut attacker[1]), Some(Eviction::Full));
        assert_eq!(evicted(&mut agent), None);
        assert_eq!(a.lock().pending.len(), 6);
    }

    #[test]
    fn an_endless_stream_of_idle_connections_never_evicts_a_lone_handshake() {
        // 40 attacking addresses for 64 places: some always hold two or more, so the agent's
        // lone handshake is never the one to go. (With more addresses than places, each
        // holding one, the oldest handshake goes: the agent's after 64 newer connections.)
        let a = admission(64, 8);
        let mut agent = a.admit(ip("127.0.0.1"));
        let mut held = VecDeque::new();
        for n in 0..10_000u32 {
            held.push_back(a.admit(ip(&format!("127.0.{}.2", 1 + n % 40))));
            if held.len() > 1_000 {
                held.pop_front();
            }
        }
        assert_eq!(evicted(&mut agent), None);
        let t = a.lock();
        assert!(t.pending.len() <= 64);
        assert_eq!(
            t.pending.len(),
            t.by_source.values().map(VecDeque::len).sum::<usize>()
        );
        assert_eq!(t.load.len(), t.by_source.len());
    }

    #[test]
    fn authenticated_connections_have_their_own_cap() {
        let a = admission(10, 10);
        let p1 = a.admit(ip("10.0.0.1")).authenticated();
        let p2 = a.admit(ip("10.0.0.1")).authenticated();
        let p3 = a.admit(ip("10.0.0.1")).authenticated();
        assert!(p1.is_some() && p2.is_some() && p3.is_none());
        assert_eq!(a.lock().pending.len(), 0);
        drop(p1);
        assert!(a.admit(ip("10.0.0.1")).authenticated().is_some());
    }

    #[test]
    fn failed_accepts_back_off_up_to_a_second_and_are_counted() {
        let stats = Arc::new(IntakeStats::default());
        let mut b = AcceptBackoff::intake(Arc::clone(&stats));
        let e = std::io::Error::other("EMFILE");
        let pauses: Vec<Duration> = (0..10).map(|_| b.failed(&e)).collect();
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(pauses[9], MAX_PAUSE);
        assert_eq!(stats.accept_errors.load(Ordering::Relaxed), 10);
        b.succeeded();
        assert_eq!(b.failed(&e), FIRST_PAUSE);
        let mut api = AcceptBackoff::api(Arc::clone(&stats));
        api.failed(&e);
        assert_eq!(stats.api.accept_errors.load(Ordering::Relaxed), 1);
    }
}
