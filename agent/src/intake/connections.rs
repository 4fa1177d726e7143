//! The open TCP and TLS connections, and who may open another.
//!
//! A bound on all connections alone lets one address take every slot and keep it with idle
//! connections for as long as the idle timeout (256 of them locked out every real sender for
//! five minutes). So: each source address holds at most `max_connections_per_source`, and when
//! `max_connections` are open a newcomer takes the slot of the connection that has gone longest
//! without completing a message, if that is at least `evict_idle_after_seconds`, rather than
//! being refused. A sender that is really sending keeps its connection; one that only holds it
//! loses it to the next sender. Both refusals and evictions are counted by the caller.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open and none has been idle long enough to be evicted.
    ConnectionLimit,
    /// The source address already holds `max_connections_per_source`.
    PerSourceLimit,
}

/// The bounds a table enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub max_per_source: usize,
    pub evict_idle_after: Duration,
}

/// What one connection shares with the table.
#[derive(Debug)]
struct Activity {
    /// Milliseconds since the table's epoch of the last complete message (or of the accept).
    last_message_ms: AtomicU64,
    /// Notified (once) when the table gave the connection's slot to another.
    evicted: Notify,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    activity: Arc<Activity>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    per_source: HashMap<IpAddr, usize>,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&e.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(&e.ip);
            }
        }
        Some(e)
    }
}

/// The open connections; entries exist only for open connections, so the table is bounded by
/// `max_connections`.
#[derive(Debug)]
pub(crate) struct ConnTable {
    limits: Limits,
    epoch: Instant,
    inner: Mutex<Inner>,
}

impl ConnTable {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(ConnTable {
            limits,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the table consistent; a panic elsewhere cannot poison it in a
        // way that matters.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes a slot for a connection from `ip`. `Ok((slot, true))`: another connection was
    /// evicted to make room.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(ConnSlot, bool), Refusal> {
        let now = self.now_ms();
        let mut t = self.inner();
        if t.per_source.get(&ip).copied().unwrap_or(0) >= self.limits.max_per_source {
            return Err(Refusal::PerSourceLimit);
        }
        let mut evicted = false;
        if t.conns.len() >= self.limits.max_connections {
            // A linear scan, only when full: at most `max_connections` entries.
            let idlest = t
                .conns
                .iter()
                .map(|(id, e)| (e.activity.last_message_ms.load(Ordering::Relaxed), *id))
                .min();
            let min_idle =
                u64::try_from(self.limits.evict_idle_after.as_millis()).unwrap_or(u64::MAX);
            match idlest {
                Some((last, id)) if now.saturating_sub(last) >= min_idle => {
                    if let Some(e) = t.remove(id) {
                        e.activity.evicted.notify_one();
                        evicted = true;
                    }
                }
                _ => return Err(Refusal::ConnectionLimit),
            }
        }
        let id = t.next_id;
        t.next_id = t.next_id.wrapping_add(1);
        let activity = Arc::new(Activity {
            last_message_ms: AtomicU64::new(now),
            evicted: Notify::new(),
        });
        t.conns.insert(
            id,
            Entry {
                ip,
                activity: Arc::clone(&activity),
            },
        );
        *t.per_source.entry(ip).or_insert(0) += 1;
        Ok((
            ConnSlot {
                table: Arc::clone(self),
                id,
                activity,
            },
            evicted,
        ))
    }

    /// Connections in the table (evicted ones leave it at once, before their task ends).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner().conns.len()
    }
}

/// One connection's place in the table; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    table: Arc<ConnTable>,
    id: u64,
    activity: Arc<Activity>,
}

impl ConnSlot {
    /// A complete message arrived: the connection is in use.
    pub fn touch(&self) {
        self.activity
            .last_message_ms
            .store(self.table.now_ms(), Ordering::Relaxed);
    }

    /// Completes when the table gave this slot to another connection. Cancel-safe: an
    /// eviction that happens while nobody waits is kept for the next wait.
    pub async fn evicted(&self) {
        self.activity.evicted.notified().await;
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.table.inner().remove(self.id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn table(max: usize, per_source: usize, evict_ms: u64) -> Arc<ConnTable> {
        ConnTable::new(Limits {
            max_connections: max,
            max_per_source: per_source,
            evict_idle_after: Duration::from_millis(evict_ms),
        })
    }

    #[test]
    fn one_source_cannot_take_every_slot() {
        let t = table(10, 2, 60_000);
        let a = [t.admit(ip(1)).unwrap(), t.admit(ip(1)).unwrap()];
        assert_eq!(t.admit(ip(1)).unwrap_err(), Refusal::PerSourceLimit);
        assert!(t.admit(ip(2)).is_ok(), "another source still gets in");
        drop(a);
        assert!(t.admit(ip(1)).is_ok(), "slots freed are slots again");
    }

    #[test]
    fn a_full_table_evicts_the_longest_idle_connection_only_when_idle_long_enough() {
        let t = table(2, 2, 50);
        let (first, _) = t.admit(ip(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let (second, _) = t.admit(ip(2)).unwrap();
        assert_eq!(t.admit(ip(3)).unwrap_err(), Refusal::ConnectionLimit);
        std::thread::sleep(Duration::from_millis(60));
        // The second completed a message meanwhile: the first is the idlest.
        second.touch();
        let (_third, evicted) = t.admit(ip(3)).unwrap();
        assert!(evicted);
        assert_eq!(t.len(), 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), first.evicted())
                .await
                .expect("the first connection is told");
        });
        drop(first);
        assert_eq!(t.len(), 2, "dropping an evicted slot frees nothing twice");
        assert_eq!(
            t.admit(ip(4)).unwrap_err(),
            Refusal::ConnectionLimit,
            "the second and third are not idle long enough"
        );
    }
}
