//! Failed authentications on the HTTP API, counted per source address in one-minute windows:
//! after `auth_failures_per_minute` failures every request from that source is refused
//! (`429`, `Retry-After`) until its window ends. The API's tokens are long random strings,
//! so this is not what keeps them secret; it keeps a guessing client from costing the
//! collector a request's work thousands of times a second, and makes the guessing visible:
//! one log line and one `mamori_api_lockouts_total` per lockout, never one per attempt.
//!
//! A locked source is refused even with a valid token: answering a right guess with `200`
//! and the rest with `429` would keep the guessing going. Other sources are untouched.
//!
//! The table is bounded (`max_tracked_addresses`). A new source finding it full takes the
//! place of the source whose window began first (whose minute ends soonest), counted in
//! `mamori_api_auth_table_evictions_total`: only a client with more addresses than the table
//! holds gets there, and it could guess as fast with or without the table.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::admission::Source;
use crate::stats::{self, IntakeStats};

/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// When the source's current window began (its first failure in it).
    start: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<Source, Entry>,
    /// (window start, source) of every entry: the first is the one to replace.
    by_start: BTreeSet<(Instant, Source)>,
}

impl Table {
    fn remove(&mut self, source: Source) {
        if let Some(e) = self.entries.remove(&source) {
            self.by_start.remove(&(e.start, source));
        }
    }

    fn insert(&mut self, source: Source, entry: Entry) {
        self.remove(source);
        self.entries.insert(source, entry);
        self.by_start.insert((entry.start, source));
    }
}

/// The table of failed authentications.
#[derive(Debug)]
pub struct Lockout {
    table: Mutex<Table>,
    limit: u32,
    max_tracked: usize,
    stats: Arc<IntakeStats>,
}

impl Lockout {
    /// `limit` failures per source per minute; at most `max_tracked` sources.
    pub fn new(limit: u32, max_tracked: usize, stats: Arc<IntakeStats>) -> Lockout {
        Lockout {
            table: Mutex::new(Table::default()),
            limit: limit.max(1),
            max_tracked: max_tracked.max(1),
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(wait)` while `source` is locked out: how long until its window ends.
    pub fn check(&self, source: Source, now: Instant) -> Result<(), Duration> {
        let t = self.lock();
        match t.entries.get(&source) {
            Some(e) if e.failures >= self.limit => {
                let end = e.start + WINDOW;
                if now < end { Err(end - now) } else { Ok(()) }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `source`; locks it out at the limit (counted and
    /// logged once per lockout).
    pub fn failed(&self, source: Source, now: Instant) {
        let mut t = self.lock();
        let entry = match t.entries.get(&source) {
            Some(e) if now < e.start + WINDOW => *e,
            // A window that is over starts again.
            Some(_) => Entry {
                start: now,
                failures: 0,
            },
            None => {
                if t.entries.len() >= self.max_tracked {
                    let oldest = t.by_start.first().map(|(_, s)| *s);
                    if let Some(oldest) = oldest {
                        let expired = t
                            .entries
                            .get(&oldest)
                            .is_some_and(|e| now >= e.start + WINDOW);
                        t.remove(oldest);
                        if !expired {
                            stats::add(&self.stats.api.auth_table_evictions, 1);
                        }
                    }
                }
                Entry {
                    start: now,
                    failures: 0,
                }
            }
        };
        let entry = Entry {
            failures: entry.failures.saturating_add(1),
            ..entry
        };
        t.insert(source, entry);
        drop(t);
        if entry.failures == self.limit {
            stats::add(&self.stats.api.lockouts, 1);
            let rest = (entry.start + WINDOW).saturating_duration_since(now);
            tracing::warn!(
                %source,
                failures = entry.failures,
                locked_seconds = rest.as_secs_f64().ceil(),
                "API: too many failed authentications; every request from this source is \
                 refused (429) until its minute is over"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn source(s: &str) -> Source {
        Source::of(s.parse().unwrap())
    }

    #[test]
    fn the_limit_locks_one_source_for_the_rest_of_its_minute() {
        let stats = Arc::new(IntakeStats::default());
        let l = Lockout::new(3, 16, Arc::clone(&stats));
        let (a, b) = (source("192.0.2.1"), source("192.0.2.2"));
        let t0 = Instant::now();
        for n in 0..3 {
            assert!(l.check(a, t0).is_ok());
            l.failed(a, t0 + Duration::from_secs(n));
        }
        let wait = l.check(a, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(l.check(b, t0 + Duration::from_secs(10)).is_ok());
        // More failures while locked do not count another lockout.
        l.failed(a, t0 + Duration::from_secs(11));
        assert_eq!(
            stats
                .api
                .lockouts
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // The window is over: free again, and counting from zero.
        let later = t0 + WINDOW;
        assert!(l.check(a, later).is_ok());
        l.failed(a, later);
        assert!(l.check(a, later).is_ok());
    }

    #[test]
    fn the_table_is_bounded_and_replaces_the_oldest_window() {
        let stats = Arc::new(IntakeStats::default());
        let l = Lockout::new(2, 16, Arc::clone(&stats));
        let t0 = Instant::now();
        for n in 0..1000u32 {
            let s = source(&format!("10.{}.{}.1", n / 256, n % 256));
            let t = t0 + Duration::from_millis(u64::from(n));
            l.failed(s, t);
            l.failed(s, t);
        }
        assert_eq!(l.lock().entries.len(), 16);
        assert_eq!(l.lock().by_start.len(), 16);
        assert_eq!(
            stats
                .api
                .auth_table_evictions
                .load(std::sync::atomic::Ordering::Relaxed),
            1000 - 16
        );
        // The newest sources are the ones still locked.
        let t = t0 + Duration::from_millis(1000);
        assert!(l.check(source("10.3.231.1"), t).is_err());
        assert!(l.check(source("10.0.0.1"), t).is_ok());
        // Expired windows are replaced without counting an eviction.
        let l = Lockout::new(2, 16, Arc::clone(&stats));
        let before = stats
            .api
            .auth_table_evictions
            .load(std::sync::atomic::Ordering::Relaxed);
        for n in 0..32u64 {
            l.failed(
                source(&format!("10.9.0.{n}")),
                t0 + WINDOW * u32::try_from(n).unwrap(),
            );
        }
        assert_eq!(
            stats
                .api
                .auth_table_evictions
                .load(std::sync::atomic::Ordering::Relaxed),
            before
        );
    }
}
