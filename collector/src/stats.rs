//! The intake's and the store's counters: plain atomics, read with [`IntakeStats::snapshot`]
//! and exported by `metrics.rs` (the Prometheus names are listed there, prefix `mamori_`).
//! Per-site counters exist only for the sites of the configured allowlist, so their number is
//! bounded by the configuration, never by what a client sends.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mamori_models::Event;
use mamori_models::detect::Severity;

/// The event types (`type` in `docs/events.md`): a metric label, in this order.
pub const EVENT_TYPES: [&str; 3] = ["modbus", "flow", "syslog"];

/// The index of `event`'s type in [`EVENT_TYPES`].
pub fn event_type_index(event: &Event) -> usize {
    match event {
        Event::Modbus(_) => 0,
        Event::Flow(_) => 1,
        Event::Syslog(_) => 2,
    }
}

/// Counters of one site (every agent filed under it).
#[derive(Debug, Default)]
pub struct SiteStats {
    /// New events stored, indexed like [`EVENT_TYPES`].
    events: [AtomicU64; 3],
    /// When a batch from one of the site's agents was last acknowledged (new or duplicate),
    /// Unix milliseconds; 0: never.
    last_seen_unix_ms: AtomicU64,
    /// Online detection: the site is learning its baseline (no baseline yet).
    learning: AtomicBool,
    /// Size of the site's baseline in use (its JSON), bytes; 0: none yet.
    baseline_bytes: AtomicU64,
}

impl SiteStats {
    /// Records the size of the baseline the site detects with.
    pub fn set_baseline_bytes(&self, bytes: u64) {
        self.baseline_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Records whether the site is learning (`true`) or detecting.
    pub fn set_learning(&self, learning: bool) {
        self.learning.store(learning, Ordering::Relaxed);
    }

    /// Whether the site is learning (`true`) or detecting.
    pub fn learning(&self) -> bool {
        self.learning.load(Ordering::Relaxed)
    }

    /// Counts the new events of a stored batch, by type (indexed like [`EVENT_TYPES`]).
    pub fn add_events(&self, by_type: &[u64; 3]) {
        for (c, n) in self.events.iter().zip(by_type) {
            c.fetch_add(*n, Ordering::Relaxed);
        }
    }

    /// Records that one of the site's agents was heard from at `unix_ms`.
    pub fn seen(&self, unix_ms: u64) {
        self.last_seen_unix_ms.fetch_max(unix_ms, Ordering::Relaxed);
    }

    fn snapshot(&self) -> SiteStatsSnapshot {
        SiteStatsSnapshot {
            events_stored_total: self.events.each_ref().map(|c| c.load(Ordering::Relaxed)),
            last_seen_unix_ms: self.last_seen_unix_ms.load(Ordering::Relaxed),
            learning: self.learning(),
            baseline_bytes: self.baseline_bytes.load(Ordering::Relaxed),
        }
    }
}

/// One site's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteStatsSnapshot {
    /// New events stored, indexed like [`EVENT_TYPES`].
    pub events_stored_total: [u64; 3],
    /// Last batch acknowledged to one of the site's agents, Unix ms; 0: never.
    pub last_seen_unix_ms: u64,
    /// Online detection: learning its baseline (`true`) or detecting.
    pub learning: bool,
    /// Size of the baseline in use, bytes; 0: none yet.
    pub baseline_bytes: u64,
}

/// Why a connection or a request was refused: a small, fixed set (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalReason {
    /// The TLS handshake failed: no client certificate, another CA, expired, revoked, not TLS.
    TlsHandshake,
    /// The TLS handshake did not finish within `header_timeout_seconds`.
    HandshakeTimeout,
    /// A connection authenticated beyond `max_connections` (closed at once).
    TooManyConnections,
    /// A handshake closed to make room for a newer connection: `max_handshakes` were in
    /// progress (the oldest of the source address holding the most is closed).
    HandshakesFull,
    /// A handshake closed to make room for a newer connection from the same source address:
    /// `max_handshakes_per_address` were in progress from it.
    HandshakesPerAddress,
    /// Request headers not complete within `header_timeout_seconds` (slow loris).
    HeaderTimeout,
    /// A request body not complete within `body_timeout_seconds` (`408`).
    BodyTimeout,
    /// Not `POST /v1/batches` (`404`/`405`).
    NotFound,
    /// Missing or unparsable `Mamori-*` headers, wrong encoding, bad gzip or JSON (`400`).
    Malformed,
    /// Body over `max_body_bytes` or decompressed over `max_decompressed_bytes` (`413`).
    TooLarge,
    /// `Mamori-Agent` is not one of the client certificate's DNS names (`403`).
    IdentityMismatch,
    /// The agent is not in `[[agents]]` (`403`).
    UnknownAgent,
    /// Every request slot or the storage queue was busy (`503`).
    Overloaded,
    /// Storing failed (`503`: the agent resends).
    StorageError,
    /// The collector is shutting down (`503`).
    ShuttingDown,
    /// The batch did not fit in `max_inflight_bytes` within a second (`503`).
    MemoryBudget,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 16] = [
        RefusalReason::TlsHandshake,
        RefusalReason::HandshakeTimeout,
        RefusalReason::TooManyConnections,
        RefusalReason::HandshakesFull,
        RefusalReason::HandshakesPerAddress,
        RefusalReason::HeaderTimeout,
        RefusalReason::BodyTimeout,
        RefusalReason::NotFound,
        RefusalReason::Malformed,
        RefusalReason::TooLarge,
        RefusalReason::IdentityMismatch,
        RefusalReason::UnknownAgent,
        RefusalReason::Overloaded,
        RefusalReason::StorageError,
        RefusalReason::ShuttingDown,
        RefusalReason::MemoryBudget,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::TlsHandshake => "tls_handshake",
            RefusalReason::HandshakeTimeout => "handshake_timeout",
            RefusalReason::TooManyConnections => "too_many_connections",
            RefusalReason::HandshakesFull => "handshakes_full",
            RefusalReason::HandshakesPerAddress => "handshakes_per_address",
            RefusalReason::HeaderTimeout => "header_timeout",
            RefusalReason::BodyTimeout => "body_timeout",
            RefusalReason::NotFound => "not_found",
            RefusalReason::Malformed => "malformed",
            RefusalReason::TooLarge => "too_large",
            RefusalReason::IdentityMismatch => "identity_mismatch",
            RefusalReason::UnknownAgent => "unknown_agent",
            RefusalReason::Overloaded => "overloaded",
            RefusalReason::StorageError => "storage_error",
            RefusalReason::ShuttingDown => "shutting_down",
            RefusalReason::MemoryBudget => "memory_budget",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Live counters of the intake and the store.
#[derive(Debug, Default)]
pub struct IntakeStats {
    /// `connections_accepted_total`: TLS handshakes completed.
    pub connections_accepted: AtomicU64,
    /// `connections_open`: a gauge of authenticated connections.
    pub connections_open: AtomicU64,
    /// `handshakes_pending`: a gauge of connections still in the TLS handshake.
    pub handshakes_pending: AtomicU64,
    /// `accept_errors_total`: the listener's `accept` failed (out of descriptors, ...).
    pub accept_errors: AtomicU64,
    /// `batches_stored_total`: new batches stored and acknowledged.
    pub batches_stored: AtomicU64,
    /// `batches_duplicate_total`: batches stored before, acknowledged again, not stored.
    pub batches_duplicate: AtomicU64,
    /// `batches_out_of_order_total`: a new batch below the agent's highest sequence
    /// (stored anyway: refusing it would lose it).
    pub batches_out_of_order: AtomicU64,
    /// `events_stored_total`
    pub events_stored: AtomicU64,
    /// `received_bytes_total`: compressed bodies read, refused or not.
    pub received_bytes: AtomicU64,
    /// `events_expired_total`: raw events deleted by retention.
    pub events_expired: AtomicU64,
    /// `events_quarantined_total`: lines of stored batches that were not events, kept aside
    /// (`/api/v1/quarantine`) instead of refusing their batch.
    pub events_quarantined: AtomicU64,
    /// `agent_spool_changes_total`: batches from another spool than the agent's latest (its
    /// numbering started again).
    pub spool_changes: AtomicU64,
    /// `agent_sequence_reuses_total`: batches under a number the agent's spool had used for
    /// other content.
    pub sequence_reuses: AtomicU64,
    /// `inflight_bytes`: memory reserved by batches in progress (gauge).
    pub inflight_bytes: AtomicU64,
    /// `refused_total{reason}`, indexed by [`RefusalReason`].
    refused: [AtomicU64; RefusalReason::ALL.len()],
    /// Per site of the allowlist (empty with [`Default`]).
    sites: BTreeMap<String, SiteStats>,
    /// Online detection: stored batches not handed to detection because its queue was full
    /// (their events are in the database, unseen by the detectors).
    pub detection_batches_skipped: AtomicU64,
    /// Online detection: baselines stored (a site finished learning).
    pub baselines_stored: AtomicU64,
    /// Online detection: alerts stored, by (detector, severity); both label sets are small
    /// fixed enums, so this map is bounded.
    alerts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Incidents opened.
    pub incidents_opened: AtomicU64,
    /// The HTTP API's refusals.
    pub api: ApiStats,
    /// Open and acknowledged incidents by severity, as of the last change.
    open_incidents: Mutex<BTreeMap<Severity, u64>>,
    /// Wall time from a batch's arrival to its alerts and incidents being stored
    /// (batches that raised alerts only), milliseconds: bounded buckets, not samples.
    alert_latency: Mutex<LatencyBuckets>,
}

/// Refusals of the HTTP API, counted (`mamori_api_refused_total{reason}`), and its
/// failed-authentication lockouts.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// No token, or a token that is not configured.
    pub unauthorized: AtomicU64,
    /// A read-only token asking for a change.
    pub forbidden: AtomicU64,
    /// `429`: the source address is locked out after too many failed authentications.
    pub locked_out: AtomicU64,
    /// A connection closed because its request headers were not in within
    /// `header_timeout_seconds`.
    pub header_timeout: AtomicU64,
    /// `408`: a body not in within `body_timeout_seconds`.
    pub body_timeout: AtomicU64,
    /// `413`: a body over the API's cap.
    pub too_large: AtomicU64,
    /// A connection beyond `max_connections` (closed at once).
    pub too_many_connections: AtomicU64,
    /// `mamori_api_lockouts_total`: a source address reached `auth_failures_per_minute`.
    pub lockouts: AtomicU64,
    /// `mamori_api_auth_table_evictions_total`: an address dropped from the full table of
    /// failed authentications.
    pub auth_table_evictions: AtomicU64,
    /// `mamori_api_accept_errors_total`: the API listener's `accept` failed.
    pub accept_errors: AtomicU64,
}

impl ApiStats {
    /// `(reason, count)` for `mamori_api_refused_total{reason}`: every reason, in a fixed
    /// order.
    pub fn refused(&self) -> [(&'static str, u64); 7] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("unauthorized", get(&self.unauthorized)),
            ("forbidden", get(&self.forbidden)),
            ("locked_out", get(&self.locked_out)),
            ("header_timeout", get(&self.header_timeout)),
            ("body_timeout", get(&self.body_timeout)),
            ("too_large", get(&self.too_large)),
            ("too_many_connections", get(&self.too_many_connections)),
        ]
    }
}

/// Upper bounds (seconds) of the alert-latency histogram buckets.
pub const LATENCY_BUCKETS_SECONDS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A fixed-bucket histogram (cumulative counts are made when exported).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyBuckets {
    /// Per bucket of [`LATENCY_BUCKETS_SECONDS`], then one for larger values.
    pub counts: [u64; 14],
    pub sum_seconds: f64,
    pub count: u64,
}

impl IntakeStats {
    /// Counters with a per-site breakdown for `sites` (the allowlist's sites).
    pub fn with_sites(sites: impl IntoIterator<Item = String>) -> IntakeStats {
        IntakeStats {
            sites: sites
                .into_iter()
                .map(|s| (s, SiteStats::default()))
                .collect(),
            ..IntakeStats::default()
        }
    }

    /// The counters of `site`, if it is one of the configured sites.
    pub fn site(&self, site: &str) -> Option<&SiteStats> {
        self.sites.get(site)
    }

    /// Counts `n` alerts stored of `detector` at `severity`.
    pub fn add_alerts(&self, detector: &'static str, severity: &'static str, n: u64) {
        let mut alerts = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        *alerts.entry((detector, severity)).or_default() += n;
    }

    /// Alerts stored so far, by (detector, severity).
    pub fn alerts(&self) -> Vec<((&'static str, &'static str), u64)> {
        let alerts = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        alerts.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Records the open and acknowledged incidents by severity.
    pub fn set_open_incidents(&self, by_severity: &BTreeMap<Severity, u64>) {
        *self
            .open_incidents
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = by_severity.clone();
    }

    /// Open and acknowledged incidents by severity (every severity, zero included).
    pub fn open_incidents(&self) -> Vec<(&'static str, u64)> {
        let open = self
            .open_incidents
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Severity::ALL
            .iter()
            .map(|s| (s.as_str(), open.get(s).copied().unwrap_or(0)))
            .collect()
    }

    /// Records one alert latency.
    pub fn observe_alert_latency(&self, ms: u64) {
        let secs = ms as f64 / 1000.0;
        let mut h = self.alert_latency.lock().unwrap_or_else(|e| e.into_inner());
        let i = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        if let Some(c) = h.counts.get_mut(i) {
            *c += 1;
        }
        h.sum_seconds += secs;
        h.count += 1;
    }

    /// The alert-latency histogram so far.
    pub fn alert_latency(&self) -> LatencyBuckets {
        self.alert_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn refuse(&self, reason: RefusalReason) {
        if let Some(c) = self.refused.get(reason.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refused(&self, reason: RefusalReason) -> u64 {
        self.refused
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> IntakeStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IntakeStatsSnapshot {
            connections_accepted_total: get(&self.connections_accepted),
            connections_open: get(&self.connections_open),
            handshakes_pending: get(&self.handshakes_pending),
            accept_errors_total: get(&self.accept_errors),
            batches_stored_total: get(&self.batches_stored),
            batches_duplicate_total: get(&self.batches_duplicate),
            batches_out_of_order_total: get(&self.batches_out_of_order),
            events_stored_total: get(&self.events_stored),
            received_bytes_total: get(&self.received_bytes),
            events_expired_total: get(&self.events_expired),
            events_quarantined_total: get(&self.events_quarantined),
            spool_changes_total: get(&self.spool_changes),
            sequence_reuses_total: get(&self.sequence_reuses),
            inflight_bytes: get(&self.inflight_bytes),
            refused_total: RefusalReason::ALL
                .iter()
                .map(|&r| (r.as_str(), self.refused(r)))
                .collect(),
            sites: self
                .sites
                .iter()
                .map(|(name, s)| (name.clone(), s.snapshot()))
                .collect(),
        }
    }
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn sub(c: &AtomicU64, n: u64) {
    c.fetch_sub(n, Ordering::Relaxed);
}

/// The counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntakeStatsSnapshot {
    pub connections_accepted_total: u64,
    pub connections_open: u64,
    pub handshakes_pending: u64,
    pub accept_errors_total: u64,
    pub batches_stored_total: u64,
    pub batches_duplicate_total: u64,
    pub batches_out_of_order_total: u64,
    pub events_stored_total: u64,
    pub received_bytes_total: u64,
    pub events_expired_total: u64,
    pub events_quarantined_total: u64,
    pub spool_changes_total: u64,
    pub sequence_reuses_total: u64,
    pub inflight_bytes: u64,
    /// (reason, count) for every reason, in [`RefusalReason::ALL`] order.
    pub refused_total: Vec<(&'static str, u64)>,
    /// Per configured site, in name order.
    pub sites: Vec<(String, SiteStatsSnapshot)>,
}

impl IntakeStatsSnapshot {
    /// Refusals for `reason`.
    pub fn refused(&self, reason: RefusalReason) -> u64 {
        self.refused_total
            .iter()
            .find(|(r, _)| *r == reason.as_str())
            .map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        let s = IntakeStats::default();
        for (n, r) in RefusalReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), n);
            s.refuse(*r);
        }
        let snap = s.snapshot();
        assert!(snap.refused_total.iter().all(|(_, n)| *n == 1));
    }
}
