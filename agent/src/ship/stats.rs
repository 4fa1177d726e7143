//! What shipping counts. Every event accepted by the spool (this run, or an earlier one and
//! recovered at start) ends in exactly one of: acked by the collector, dropped (at the full
//! spool with `drop_oldest`, refused by the collector as bad input, or corrupt on disk), or
//! still in the spool:
//! `events_recovered + events_accepted = events_acked + events_dropped{*} + spool_events`.
//! Names below are the metric names without the `mamori_ship_` prefix.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters and gauges, shared by the producer side, the flusher and the client task.
#[derive(Debug, Default)]
pub struct ShipStats {
    /// `events_accepted_total`: events written to the spool's journal.
    pub events_accepted: AtomicU64,
    /// `events_refused_total`: events refused because the spool was full (`block`).
    pub events_refused: AtomicU64,
    /// `events_dropped_total{reason="spool_full"}`: events in batches dropped to make room
    /// (`drop_oldest`).
    pub events_dropped: AtomicU64,
    /// `events_acked_total`: events in batches the collector acknowledged.
    pub events_acked: AtomicU64,
    /// `events_recovered_total`: events found in the spool at start (accepted by an earlier
    /// run, not yet acknowledged).
    pub events_recovered: AtomicU64,
    /// `events_dropped_total{reason="rejected"}`: events in batches the collector refused as
    /// bad input (set aside in `rejected/`).
    pub events_rejected: AtomicU64,
    /// `events_dropped_total{reason="corrupt"}`: events in sealed batches that failed their
    /// checks when read for sending (moved to `quarantine/`).
    pub events_corrupt: AtomicU64,
    /// `spool_events`: events in the spool, sealed or in the open batch (gauge).
    pub spool_events: AtomicU64,
    /// `batches_rejected_total`: batches the collector refused as bad input.
    pub batches_rejected: AtomicU64,
    /// `batches_spooled_total`: batches sealed into the spool.
    pub batches_spooled: AtomicU64,
    /// `batches_sent_total`: requests sent (first tries and retries).
    pub batches_sent: AtomicU64,
    /// `batches_retried_total`: sends of a batch that had been sent before.
    pub batches_retried: AtomicU64,
    /// `batches_acked_total`: batches the collector acknowledged (deleted from the spool).
    pub batches_acked: AtomicU64,
    /// `batches_duplicate_total`: acks saying the collector already had the batch.
    pub batches_duplicate: AtomicU64,
    /// `batches_dropped_total{reason="spool_full"}`.
    pub batches_dropped: AtomicU64,
    /// `connect_failures_total`: TCP connect or TLS handshake failed or timed out.
    pub connect_failures: AtomicU64,
    /// `send_failures_total`: a request failed, timed out, or was answered with an error.
    pub send_failures: AtomicU64,
    /// `spool_corrupt_files_total`: torn or corrupt spool files quarantined.
    pub corrupt_files: AtomicU64,
    /// `journal_lines_discarded_total`: incomplete or unreadable lines in a crashed batch's
    /// journal (an event whose write was cut by the crash).
    pub journal_lines_discarded: AtomicU64,
    /// `spool_bytes`: bytes of sealed batches in the spool (gauge).
    pub spool_bytes: AtomicU64,
    /// `spool_batches`: sealed batches in the spool (gauge).
    pub spool_batches: AtomicU64,
    /// `spool_oldest_batch_created_timestamp_seconds` in ms; 0 when the spool is empty
    /// (gauge; the age is now minus this).
    pub oldest_batch_created_unix_ms: AtomicU64,
    /// `connection_state`: 0 disconnected, 1 connecting, 2 connected (gauge).
    pub connection_state: AtomicU64,
}

/// [`ShipStats::connection_state`] values.
pub const DISCONNECTED: u64 = 0;
pub const CONNECTING: u64 = 1;
pub const CONNECTED: u64 = 2;

/// A copy of [`ShipStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShipStatsSnapshot {
    pub events_accepted_total: u64,
    pub events_refused_total: u64,
    pub events_dropped_total: u64,
    pub events_acked_total: u64,
    pub events_recovered_total: u64,
    pub events_rejected_total: u64,
    pub events_corrupt_total: u64,
    pub spool_events: u64,
    pub batches_rejected_total: u64,
    pub batches_spooled_total: u64,
    pub batches_sent_total: u64,
    pub batches_retried_total: u64,
    pub batches_acked_total: u64,
    pub batches_duplicate_total: u64,
    pub batches_dropped_total: u64,
    pub connect_failures_total: u64,
    pub send_failures_total: u64,
    pub spool_corrupt_files_total: u64,
    pub journal_lines_discarded_total: u64,
    pub spool_bytes: u64,
    pub spool_batches: u64,
    pub oldest_batch_created_unix_ms: u64,
    pub connection_state: u64,
}

impl ShipStats {
    pub fn snapshot(&self) -> ShipStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ShipStatsSnapshot {
            events_accepted_total: g(&self.events_accepted),
            events_refused_total: g(&self.events_refused),
            events_dropped_total: g(&self.events_dropped),
            events_acked_total: g(&self.events_acked),
            events_recovered_total: g(&self.events_recovered),
            events_rejected_total: g(&self.events_rejected),
            events_corrupt_total: g(&self.events_corrupt),
            spool_events: g(&self.spool_events),
            batches_rejected_total: g(&self.batches_rejected),
            batches_spooled_total: g(&self.batches_spooled),
            batches_sent_total: g(&self.batches_sent),
            batches_retried_total: g(&self.batches_retried),
            batches_acked_total: g(&self.batches_acked),
            batches_duplicate_total: g(&self.batches_duplicate),
            batches_dropped_total: g(&self.batches_dropped),
            connect_failures_total: g(&self.connect_failures),
            send_failures_total: g(&self.send_failures),
            spool_corrupt_files_total: g(&self.corrupt_files),
            journal_lines_discarded_total: g(&self.journal_lines_discarded),
            spool_bytes: g(&self.spool_bytes),
            spool_batches: g(&self.spool_batches),
            oldest_batch_created_unix_ms: g(&self.oldest_batch_created_unix_ms),
            connection_state: g(&self.connection_state),
        }
    }
}

/// Adds `n`; returns the new total (for log lines).
pub(crate) fn add(c: &AtomicU64, n: u64) -> u64 {
    c.fetch_add(n, Ordering::Relaxed).wrapping_add(n)
}

pub(crate) fn set(c: &AtomicU64, v: u64) {
    c.store(v, Ordering::Relaxed);
}
