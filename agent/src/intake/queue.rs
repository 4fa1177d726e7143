//! The queue between the receivers and the consumer, bounded in events and in bytes.
//!
//! A bound in events alone is a bound on nothing: one event may hold a few hundred bytes or,
//! with a 64 KiB message, a hundred times more (100,000 datagrams of 60 KB once took the agent
//! to 800 MB). Each queued event therefore holds permits of a byte semaphore for the memory it
//! really takes ([`event_memory_bytes`]: its strings, structured data and anomalies as
//! allocated, not the datagram it came from), given back when the consumer takes it. An event
//! that does not fit is refused like one that finds the queue full in events.

use std::collections::BTreeMap;
use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mamori_models::{Anomaly, SyslogEvent};
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

/// What [`QueueSender::try_send`] did with an event.
// Handed back by value, moved not boxed: boxing would allocate on the path that drops events
// under a flood.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Offer {
    Queued,
    /// No room in events or in bytes; the event is handed back.
    Full(SyslogEvent),
    /// The consumer is gone.
    Closed,
}
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// What the allocator keeps besides the bytes asked for: glibc rounds a request up to 16 bytes
/// and adds a header of 8 (counted as 16 to stay on the safe side).
const ALLOC_OVERHEAD_BYTES: usize = 16;
/// A `BTreeMap` entry beyond its key and value: nodes hold up to 11 entries with their links
/// and are rarely full.
const BTREE_ENTRY_OVERHEAD_BYTES: usize = 32;

/// Heap bytes of one allocation of `capacity` bytes (none for an empty one).
fn heap_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        capacity.next_multiple_of(16) + ALLOC_OVERHEAD_BYTES
    }
}

fn opt_string_bytes(s: Option<&String>) -> usize {
    s.map_or(0, |s| heap_bytes(s.capacity()))
}

/// Memory one queued event takes: the event itself, its slot in the queue, and every heap
/// allocation it owns.
pub fn event_memory_bytes(ev: &SyslogEvent) -> usize {
    let mut n = size_of::<Queued>();
    for s in [
        &ev.timestamp,
        &ev.hostname,
        &ev.app_name,
        &ev.procid,
        &ev.msgid,
        &ev.msg,
    ] {
        n += opt_string_bytes(s.as_ref());
    }
    if let Some(sd) = &ev.structured_data {
        for (id, params) in sd {
            n += BTREE_ENTRY_OVERHEAD_BYTES
                + size_of::<String>()
                + size_of::<BTreeMap<String, String>>()
                + heap_bytes(id.capacity());
            for (k, v) in params {
                n += BTREE_ENTRY_OVERHEAD_BYTES
                    + 2 * size_of::<String>()
                    + heap_bytes(k.capacity())
                    + heap_bytes(v.capacity());
            }
        }
    }
    n + heap_bytes(ev.anomalies.capacity() * size_of::<Anomaly>())
}

/// Gives back an event's bytes and its count when it leaves the queue (taken, or dropped with
/// the queue).
#[derive(Debug)]
struct Charge {
    _bytes: OwnedSemaphorePermit,
    events: Arc<AtomicU64>,
}

impl Charge {
    fn new(bytes: OwnedSemaphorePermit, events: &Arc<AtomicU64>) -> Self {
        events.fetch_add(1, Ordering::Relaxed);
        Charge {
            _bytes: bytes,
            events: Arc::clone(events),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.events.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Queued {
    event: SyslogEvent,
    _charge: Charge,
}

/// How full the queue is; shared with the stats reader.
#[derive(Debug)]
pub(crate) struct QueueLevel {
    bytes: Arc<Semaphore>,
    max_bytes: u32,
    events: Arc<AtomicU64>,
}

impl QueueLevel {
    /// Bytes of the events in the queue (as [`event_memory_bytes`] counts them).
    pub fn bytes(&self) -> u64 {
        let free = u32::try_from(self.bytes.available_permits()).unwrap_or(u32::MAX);
        u64::from(self.max_bytes.saturating_sub(free))
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
}

/// The receivers' end.
#[derive(Debug, Clone)]
pub(crate) struct QueueSender {
    tx: mpsc::Sender<Queued>,
    level: Arc<QueueLevel>,
}

impl QueueSender {
    /// Permits an event needs: its memory, at most the whole queue (so an event larger than
    /// the queue still goes through an empty one rather than never).
    fn cost(&self, ev: &SyslogEvent) -> u32 {
        u32::try_from(event_memory_bytes(ev))
            .unwrap_or(u32::MAX)
            .min(self.level.max_bytes)
    }

    /// Whether a message of `raw_len` bytes may still fit: checked before parsing, so that a
    /// flood against a full queue costs no parsing. An event takes at least its raw bytes.
    pub fn may_fit(&self, raw_len: usize) -> bool {
        let need = u32::try_from(raw_len)
            .unwrap_or(u32::MAX)
            .min(self.level.max_bytes);
        self.tx.capacity() > 0
            && u32::try_from(self.level.bytes.available_permits()).unwrap_or(u32::MAX) >= need
    }

    /// Queues `ev` if there is room for it in events and in bytes.
    pub fn try_send(&self, ev: SyslogEvent) -> Offer {
        let Ok(bytes) = Arc::clone(&self.level.bytes).try_acquire_many_owned(self.cost(&ev)) else {
            return Offer::Full(ev);
        };
        let q = Queued {
            event: ev,
            _charge: Charge::new(bytes, &self.level.events),
        };
        match self.tx.try_send(q) {
            Ok(()) => Offer::Queued,
            Err(TrySendError::Full(q)) => Offer::Full(q.event),
            Err(TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    /// Queues `ev`, waiting for room; `Err` when the consumer is gone. Cancel-safe in the
    /// sense that matters: dropping the future gives back what it held.
    pub async fn send(&self, ev: SyslogEvent) -> Result<(), SyslogEvent> {
        let Ok(bytes) = Arc::clone(&self.level.bytes)
            .acquire_many_owned(self.cost(&ev))
            .await
        else {
            return Err(ev);
        };
        let q = Queued {
            event: ev,
            _charge: Charge::new(bytes, &self.level.events),
        };
        self.tx.send(q).await.map_err(|e| e.0.event)
    }
}

/// The consumer's end of the event queue. Closed (`recv` returns `None`) once the receivers
/// have stopped and everything queued was taken.
#[derive(Debug)]
pub struct SyslogQueue {
    rx: mpsc::Receiver<Queued>,
}

impl SyslogQueue {
    /// The next event; its bytes are free again as soon as it is returned.
    pub async fn recv(&mut self) -> Option<SyslogEvent> {
        self.rx.recv().await.map(|q| q.event)
    }

    pub fn try_recv(&mut self) -> Result<SyslogEvent, TryRecvError> {
        self.rx.try_recv().map(|q| q.event)
    }
}

/// A queue of at most `max_events` events and `max_bytes` bytes (both at least 1; bytes at
/// most `u32::MAX`, what the configuration's validation guarantees).
pub(crate) fn channel(
    max_events: usize,
    max_bytes: usize,
) -> (QueueSender, SyslogQueue, Arc<QueueLevel>) {
    let max_bytes = u32::try_from(max_bytes).unwrap_or(u32::MAX).max(1);
    let (tx, rx) = mpsc::channel(max_events.max(1));
    let level = Arc::new(QueueLevel {
        bytes: Arc::new(Semaphore::new(max_bytes as usize)),
        max_bytes,
        events: Arc::new(AtomicU64::new(0)),
    });
    (
        QueueSender {
            tx,
            level: Arc::clone(&level),
        },
        SyslogQueue { rx },
        level,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::proto::syslog::{ParseOptions, parse_syslog};
    use mamori_models::Timestamp;

    fn event(text: &str) -> SyslogEvent {
        parse_syslog(
            text.as_bytes(),
            Timestamp::from_micros(0),
            &ParseOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn memory_counts_what_the_event_holds_not_the_datagram() {
        let big = event(&format!("<13>1 - h a - - - {}", "x".repeat(60_000)));
        let m = event_memory_bytes(&big);
        assert!((60_000..61_000).contains(&m), "{m}");
        // Structured data costs more in memory than on the wire: 1,000 parameters of a few
        // bytes each are 1,000 map entries and 2,000 strings.
        let params: String = (0..1000).map(|i| format!(" p{i}=\"\"")).collect();
        let wire = format!("<13>1 - h a - - [x@1{params}] m");
        let m = event_memory_bytes(&event(&wire));
        assert!(m > 10 * wire.len(), "{m} for {} wire bytes", wire.len());
    }

    #[test]
    fn queue_is_bounded_in_bytes_and_gives_them_back() {
        let ev = event(&format!("<13>1 - h a - - - {}", "x".repeat(10_000)));
        let cost = event_memory_bytes(&ev) as u64;
        let (tx, mut rx, level) = channel(1000, 35_000);
        let mut accepted = 0;
        while matches!(tx.try_send(ev.clone()), Offer::Queued) {
            accepted += 1;
        }
        assert_eq!(accepted, 3, "three events of {cost} bytes fit in 35,000");
        assert_eq!(level.events(), 3);
        assert_eq!(level.bytes(), 3 * cost);
        assert!(!tx.may_fit(10_000));
        rx.try_recv().unwrap();
        assert_eq!(level.bytes(), 2 * cost);
        assert!(tx.may_fit(10_000));
        assert!(matches!(tx.try_send(ev.clone()), Offer::Queued));
        drop(rx);
        assert_eq!(level.bytes(), 0, "a dropped queue gives back what it held");
        assert_eq!(level.events(), 0);
    }

    #[test]
    fn an_event_larger_than_the_queue_goes_through_an_empty_one() {
        let ev = event(&format!("<13>1 - h a - - - {}", "x".repeat(10_000)));
        let (tx, mut rx, _) = channel(10, 1000);
        assert!(matches!(tx.try_send(ev.clone()), Offer::Queued));
        assert!(matches!(tx.try_send(ev), Offer::Full(_)));
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test]
    async fn send_waits_for_bytes() {
        let ev = event(&format!("<13>1 - h a - - - {}", "x".repeat(10_000)));
        let (tx, mut rx, _) = channel(10, 15_000);
        tx.send(ev.clone()).await.unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            let ev = ev.clone();
            async move { tx.send(ev).await.is_ok() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no room for a second event yet");
        rx.recv().await.unwrap();
        assert!(waiting.await.unwrap());
    }
}
