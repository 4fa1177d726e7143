//! The intake's memory budget: the bytes of batches held at once across every request, from
//! the compressed body as it is read, through its decompressed JSON Lines, to the decoded
//! events until detection is done with them. Counts of requests alone do not bound memory
//! (eight maximal batches took the collector past 3 GB); bytes do.
//!
//! A request reserves before it reads: its declared body size (or the body cap), then twice
//! the decompressed size its gzip trailer claims (the JSON text and the events decoded from
//! it), so a gzip bomb is refused before it is inflated and a body that inflates past its
//! claim is cut off there. A reservation that does not fit within a short wait is answered
//! `503` and the agent retries with backoff; the permits travel with the events into the
//! detection queue and are given back when detection has seen them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::stats::IntakeStats;

/// Permits are KiB: a `u32` count of them covers any body.
const UNIT: u64 = 1024;

/// The budget shared by all requests.
#[derive(Debug, Clone)]
pub(crate) struct MemoryBudget {
    sem: Arc<Semaphore>,
    total_units: u32,
    /// `inflight_bytes` is kept there.
    stats: Arc<IntakeStats>,
}

/// Why a reservation was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shortfall {
    /// The budget is taken by other batches for now.
    NotNow,
    /// More than the whole budget: this batch can never be taken.
    Never,
}

/// Bytes reserved from the budget, returned when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
    stats: Option<Arc<IntakeStats>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(s) = &self.stats {
            s.inflight_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT).max(1)
}

impl MemoryBudget {
    pub(crate) fn new(bytes: u64, stats: Arc<IntakeStats>) -> MemoryBudget {
        let total_units = u32::try_from(units(bytes)).unwrap_or(u32::MAX);
        MemoryBudget {
            sem: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            stats,
        }
    }

    /// Adds `bytes` to `held` (an empty reservation to start), waiting up to `wait` for
    /// room.
    pub(crate) async fn reserve(
        &self,
        held: &mut Reservation,
        bytes: u64,
        wait: Duration,
    ) -> Result<(), Shortfall> {
        let n = u32::try_from(units(bytes)).map_err(|_| Shortfall::Never)?;
        // With what it holds already, can it ever fit?
        let held_units = u32::try_from(held.bytes / UNIT).unwrap_or(u32::MAX);
        if n.saturating_add(held_units) > self.total_units {
            return Err(Shortfall::Never);
        }
        let acquire = Arc::clone(&self.sem).acquire_many_owned(n);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => {
                match held.permit.as_mut() {
                    Some(p) => p.merge(permit),
                    None => held.permit = Some(permit),
                }
                let added = u64::from(n) * UNIT;
                held.bytes += added;
                self.stats
                    .inflight_bytes
                    .fetch_add(added, Ordering::Relaxed);
                if held.stats.is_none() {
                    held.stats = Some(Arc::clone(&self.stats));
                }
                Ok(())
            }
            _ => Err(Shortfall::NotNow),
        }
    }
}

impl Reservation {
    /// Returns `bytes` of what is held (rounded down to whole units; never below zero).
    pub(crate) fn give_back(&mut self, bytes: u64) {
        let n = usize::try_from((bytes / UNIT).min(self.bytes / UNIT)).unwrap_or(0);
        let Some(permit) = self.permit.as_mut() else {
            return;
        };
        if n == 0 || n >= permit.num_permits() {
            return;
        }
        if let Some(part) = permit.split(n) {
            drop(part);
            let freed = n as u64 * UNIT;
            self.bytes -= freed;
            if let Some(s) = &self.stats {
                s.inflight_bytes.fetch_sub(freed, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn empty() -> Reservation {
        Reservation {
            permit: None,
            bytes: 0,
            stats: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_add_up_wait_and_come_back() {
        let stats = Arc::new(IntakeStats::default());
        let budget = MemoryBudget::new(10 * 1024, Arc::clone(&stats));
        let mut a = Reservation::empty();
        assert_eq!(budget.reserve(&mut a, 6000, Duration::ZERO).await, Ok(()));
        assert_eq!(budget.reserve(&mut a, 2000, Duration::ZERO).await, Ok(()));
        assert_eq!(stats.inflight_bytes.load(Ordering::Relaxed), 8 * 1024);
        let mut b = Reservation::empty();
        assert_eq!(
            budget
                .reserve(&mut b, 4096, Duration::from_millis(10))
                .await,
            Err(Shortfall::NotNow)
        );
        // More than the whole budget can never fit, with what is held or alone.
        assert_eq!(
            budget.reserve(&mut a, 4096, Duration::from_secs(60)).await,
            Err(Shortfall::Never)
        );
        assert_eq!(
            budget
                .reserve(&mut b, 11 * 1024, Duration::from_secs(60))
                .await,
            Err(Shortfall::Never)
        );
        a.give_back(3 * 1024);
        assert_eq!(stats.inflight_bytes.load(Ordering::Relaxed), 5 * 1024);
        drop(a);
        assert_eq!(stats.inflight_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(budget.reserve(&mut b, 4096, Duration::ZERO).await, Ok(()));
    }
}
