//! The collector's Prometheus metrics: every name in one place, prefix `mamori_`, base units,
//! `_total` on counters, small bounded label sets (`site` only takes the allowlist's sites,
//! `type` the three event types, `reason` the [`RefusalReason`]s; never an address or a
//! certificate name). Values are copied from [`IntakeStats`] when Prometheus scrapes, so the
//! intake only bumps plain atomics. Served on plain HTTP at `[metrics] listen`.

use std::path::PathBuf;
use std::sync::Arc;

use prometheus::{
    Encoder, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::stats::{EVENT_TYPES, IntakeStats, RefusalReason};

/// Every metric name.
pub mod names {
    pub const EVENTS_INGESTED_TOTAL: &str = "mamori_events_ingested_total";
    pub const BATCHES_TOTAL: &str = "mamori_batches_total";
    pub const BATCHES_OUT_OF_ORDER_TOTAL: &str = "mamori_batches_out_of_order_total";
    pub const INTAKE_ERRORS_TOTAL: &str = "mamori_intake_errors_total";
    pub const INTAKE_CONNECTIONS_TOTAL: &str = "mamori_intake_connections_total";
    pub const INTAKE_CONNECTIONS_OPEN: &str = "mamori_intake_connections_open";
    pub const INTAKE_HANDSHAKES_PENDING: &str = "mamori_intake_handshakes_pending";
    pub const INTAKE_ACCEPT_ERRORS_TOTAL: &str = "mamori_intake_accept_errors_total";
    pub const INTAKE_RECEIVED_BYTES_TOTAL: &str = "mamori_intake_received_bytes_total";
    pub const EVENTS_EXPIRED_TOTAL: &str = "mamori_events_expired_total";
    pub const INTAKE_EVENTS_QUARANTINED_TOTAL: &str = "mamori_intake_events_quarantined_total";
    pub const INTAKE_AGENT_SPOOL_CHANGES_TOTAL: &str = "mamori_intake_agent_spool_changes_total";
    pub const INTAKE_AGENT_SEQUENCE_REUSES_TOTAL: &str =
        "mamori_intake_agent_sequence_reuses_total";
    pub const INTAKE_INFLIGHT_BYTES: &str = "mamori_intake_inflight_bytes";
    pub const AGENT_LAST_SEEN_TIMESTAMP_SECONDS: &str = "mamori_agent_last_seen_timestamp_seconds";
    pub const STORAGE_BYTES: &str = "mamori_storage_bytes";
    pub const COLLECTOR_BUILD_INFO: &str = "mamori_collector_build_info";
    pub const ALERTS_TOTAL: &str = "mamori_alerts_total";
    pub const LEARNING: &str = "mamori_learning";
    pub const BASELINE_BYTES: &str = "mamori_baseline_bytes";
    pub const BASELINES_STORED_TOTAL: &str = "mamori_baselines_stored_total";
    pub const DETECTION_BATCHES_SKIPPED_TOTAL: &str = "mamori_detection_batches_skipped_total";
    pub const INCIDENTS_OPEN: &str = "mamori_incidents_open";
    pub const INCIDENTS_OPENED_TOTAL: &str = "mamori_incidents_opened_total";
    pub const ALERT_LATENCY_SECONDS: &str = "mamori_alert_latency_seconds";
    pub const API_REFUSED_TOTAL: &str = "mamori_api_refused_total";
    pub const API_LOCKOUTS_TOTAL: &str = "mamori_api_lockouts_total";
    pub const API_AUTH_TABLE_EVICTIONS_TOTAL: &str = "mamori_api_auth_table_evictions_total";
    pub const API_ACCEPT_ERRORS_TOTAL: &str = "mamori_api_accept_errors_total";
    pub const NOTIFICATIONS_TOTAL: &str = "mamori_notifications_total";
    pub const NOTIFICATION_FAILURES_TOTAL: &str = "mamori_notification_failures_total";
    pub const NOTIFICATIONS_DROPPED_TOTAL: &str = "mamori_notifications_dropped_total";
    pub const NOTIFICATION_QUEUE: &str = "mamori_notification_queue";
    pub const NOTIFICATION_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
        "mamori_notification_last_success_timestamp_seconds";
}

/// The registry and the metrics it holds.
#[derive(Debug)]
pub struct CollectorMetrics {
    registry: Registry,
    events_ingested: IntCounterVec,
    batches: IntCounterVec,
    batches_out_of_order: IntCounterVec,
    intake_errors: IntCounterVec,
    connections: IntCounterVec,
    connections_open: IntGauge,
    handshakes_pending: IntGauge,
    accept_errors: IntCounterVec,
    received_bytes: IntCounterVec,
    events_expired: IntCounterVec,
    events_quarantined: IntCounterVec,
    spool_changes: IntCounterVec,
    sequence_reuses: IntCounterVec,
    inflight_bytes: IntGauge,
    last_seen: GaugeVec,
    storage_bytes: IntGauge,
    alerts: IntCounterVec,
    learning: IntGaugeVec,
    baseline_bytes: IntGaugeVec,
    baselines_stored: IntCounterVec,
    detection_skipped: IntCounterVec,
    incidents_open: IntGaugeVec,
    incidents_opened: IntCounterVec,
    api_refused: IntCounterVec,
    api_lockouts: IntCounterVec,
    api_auth_table_evictions: IntCounterVec,
    api_accept_errors: IntCounterVec,
    notifications: IntCounterVec,
    notification_failures: IntCounterVec,
    notifications_dropped: IntCounterVec,
    notification_queue: IntGaugeVec,
    notification_last_success: GaugeVec,
    notifier: Option<crate::notify::Notifier>,
    stats: Arc<IntakeStats>,
    /// The SQLite file (its `-wal` beside it), if the store is one.
    sqlite_path: Option<PathBuf>,
}

use mamori_agent::metrics::{counter, gauge, set_gauge, set_total};

impl CollectorMetrics {
    /// Metrics read from `stats`; `sqlite_path` for `mamori_storage_bytes`.
    pub fn new(
        stats: Arc<IntakeStats>,
        sqlite_path: Option<PathBuf>,
    ) -> Result<Self, prometheus::Error> {
        use names::*;
        let r = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new(
                COLLECTOR_BUILD_INFO,
                "Build of the running collector (value 1).",
            ),
            &["version"],
        )?;
        r.register(Box::new(build.clone()))?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let last_seen = GaugeVec::new(
            Opts::new(
                AGENT_LAST_SEEN_TIMESTAMP_SECONDS,
                "When a batch from one of the site's agents was last acknowledged (Unix time); absent until then.",
            ),
            &["site"],
        )?;
        r.register(Box::new(last_seen.clone()))?;
        let learning = IntGaugeVec::new(
            Opts::new(
                LEARNING,
                "Online detection: 1 while the site learns its baseline, 0 once it detects.",
            ),
            &["site"],
        )?;
        r.register(Box::new(learning.clone()))?;
        let baseline_bytes = IntGaugeVec::new(
            Opts::new(
                BASELINE_BYTES,
                "Size of the baseline a site detects with (its JSON), bytes; 0 while it has none.",
            ),
            &["site"],
        )?;
        r.register(Box::new(baseline_bytes.clone()))?;
        let incidents_open = IntGaugeVec::new(
            Opts::new(
                INCIDENTS_OPEN,
                "Incidents open or acknowledged (not resolved), by severity.",
            ),
            &["severity"],
        )?;
        r.register(Box::new(incidents_open.clone()))?;
        let notification_queue = IntGaugeVec::new(
            Opts::new(
                NOTIFICATION_QUEUE,
                "Notifications waiting for delivery, by sink.",
            ),
            &["sink"],
        )?;
        r.register(Box::new(notification_queue.clone()))?;
        let notification_last_success = GaugeVec::new(
            Opts::new(
                NOTIFICATION_LAST_SUCCESS_TIMESTAMP_SECONDS,
                "When a sink last accepted a notification (Unix time); absent until then.",
            ),
            &["sink"],
        )?;
        r.register(Box::new(notification_last_success.clone()))?;
        Ok(CollectorMetrics {
            notification_queue,
            notification_last_success,
            notifications: counter(
                &r,
                NOTIFICATIONS_TOTAL,
                "Notifications delivered (each Alertmanager replica and each re-send counts), by sink.",
                &["sink"],
            )?,
            notification_failures: counter(
                &r,
                NOTIFICATION_FAILURES_TOTAL,
                "Failed delivery attempts, by sink and outcome: retried, or given up.",
                &["sink", "outcome"],
            )?,
            notifications_dropped: counter(
                &r,
                NOTIFICATIONS_DROPPED_TOTAL,
                "Notifications dropped because a sink's queue was full, by sink.",
                &["sink"],
            )?,
            notifier: None,
            incidents_open,
            api_refused: counter(
                &r,
                API_REFUSED_TOTAL,
                "HTTP API requests and connections refused, by reason: unauthorized (no valid token), forbidden (read-only token asking for a change), locked_out (429 after too many failed authentications), header_timeout, body_timeout, too_large, too_many_connections.",
                &["reason"],
            )?,
            api_lockouts: counter(
                &r,
                API_LOCKOUTS_TOTAL,
                "Source addresses locked out of the HTTP API for the rest of a minute after auth_failures_per_minute failed authentications.",
                &[],
            )?,
            api_auth_table_evictions: counter(
                &r,
                API_AUTH_TABLE_EVICTIONS_TOTAL,
                "Source addresses dropped from the full table of failed API authentications (max_tracked_addresses) before their minute was over.",
                &[],
            )?,
            api_accept_errors: counter(
                &r,
                API_ACCEPT_ERRORS_TOTAL,
                "Failed accepts on the API listener (out of file descriptors and the like); the listener backs off.",
                &[],
            )?,
            incidents_opened: counter(
                &r,
                INCIDENTS_OPENED_TOTAL,
                "Incidents opened by online detection.",
                &[],
            )?,
            alerts: counter(
                &r,
                ALERTS_TOTAL,
                "Alerts stored by online detection, by detector and severity.",
                &["detector", "severity"],
            )?,
            learning,
            baseline_bytes,
            baselines_stored: counter(
                &r,
                BASELINES_STORED_TOTAL,
                "Baselines stored (a site finished learning).",
                &[],
            )?,
            detection_skipped: counter(
                &r,
                DETECTION_BATCHES_SKIPPED_TOTAL,
                "Stored batches not seen by online detection because its queue was full.",
                &[],
            )?,
            events_ingested: counter(
                &r,
                EVENTS_INGESTED_TOTAL,
                "Events stored (new batches only), by event type and site.",
                &["type", "site"],
            )?,
            batches: counter(
                &r,
                BATCHES_TOTAL,
                "Batches acknowledged, by outcome: stored (new) or duplicate (stored before).",
                &["outcome"],
            )?,
            batches_out_of_order: counter(
                &r,
                BATCHES_OUT_OF_ORDER_TOTAL,
                "New batches below their agent's highest sequence (stored anyway).",
                &[],
            )?,
            intake_errors: counter(
                &r,
                INTAKE_ERRORS_TOTAL,
                "Connections and requests refused, by reason.",
                &["reason"],
            )?,
            connections: counter(
                &r,
                INTAKE_CONNECTIONS_TOTAL,
                "Intake TLS handshakes completed.",
                &[],
            )?,
            connections_open: gauge(
                &r,
                INTAKE_CONNECTIONS_OPEN,
                "Intake connections open and authenticated (TLS handshake done).",
            )?,
            handshakes_pending: gauge(
                &r,
                INTAKE_HANDSHAKES_PENDING,
                "Intake connections still in the TLS handshake (not yet authenticated).",
            )?,
            accept_errors: counter(
                &r,
                INTAKE_ACCEPT_ERRORS_TOTAL,
                "Failed accepts on the intake listener (out of file descriptors and the like); the listener backs off.",
                &[],
            )?,
            received_bytes: counter(
                &r,
                INTAKE_RECEIVED_BYTES_TOTAL,
                "Compressed batch bodies read, refused or not.",
                &[],
            )?,
            events_expired: counter(
                &r,
                EVENTS_EXPIRED_TOTAL,
                "Raw events deleted by retention.",
                &[],
            )?,
            events_quarantined: counter(
                &r,
                INTAKE_EVENTS_QUARANTINED_TOTAL,
                "Lines of stored batches that were not events, kept aside with their reason (GET /api/v1/quarantine); their batches were stored and acknowledged.",
                &[],
            )?,
            spool_changes: counter(
                &r,
                INTAKE_AGENT_SPOOL_CHANGES_TOTAL,
                "Batches from another spool than their agent's latest: the agent's numbering started again (spool lost or wiped, host reinstalled) or two agents share an identity.",
                &[],
            )?,
            sequence_reuses: counter(
                &r,
                INTAKE_AGENT_SEQUENCE_REUSES_TOTAL,
                "Batches under a number their agent's spool had used for other content (stored as well).",
                &[],
            )?,
            inflight_bytes: gauge(
                &r,
                INTAKE_INFLIGHT_BYTES,
                "Memory reserved by batches in progress (bodies, decompressed text and decoded events until detection has seen them); at most [intake] max_inflight_bytes.",
            )?,
            storage_bytes: gauge(
                &r,
                STORAGE_BYTES,
                "Size of the SQLite database file and its write-ahead log.",
            )?,
            last_seen,
            registry: r,
            stats,
            sqlite_path,
        })
    }

    /// Exports the notifiers' delivery counters too.
    pub fn with_notifier(mut self, notifier: Option<crate::notify::Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// Copies the counters into the registry and encodes the text format.
    pub fn render(&self) -> String {
        let s = self.stats.snapshot();
        for (site, st) in &s.sites {
            for (t, n) in EVENT_TYPES.iter().zip(st.events_stored_total) {
                set_total(&self.events_ingested, &[t, site], n);
            }
            self.learning
                .with_label_values(&[site])
                .set(i64::from(st.learning));
            set_gauge(
                &self.baseline_bytes.with_label_values(&[site]),
                st.baseline_bytes,
            );
            if st.last_seen_unix_ms > 0 {
                self.last_seen
                    .with_label_values(&[site])
                    .set(st.last_seen_unix_ms as f64 / 1000.0);
            }
        }
        set_total(&self.batches, &["stored"], s.batches_stored_total);
        set_total(&self.batches, &["duplicate"], s.batches_duplicate_total);
        set_total(
            &self.batches_out_of_order,
            &[],
            s.batches_out_of_order_total,
        );
        for r in RefusalReason::ALL {
            set_total(&self.intake_errors, &[r.as_str()], s.refused(r));
        }
        set_total(&self.connections, &[], s.connections_accepted_total);
        set_gauge(&self.connections_open, s.connections_open);
        set_gauge(&self.handshakes_pending, s.handshakes_pending);
        set_total(&self.accept_errors, &[], s.accept_errors_total);
        set_total(&self.received_bytes, &[], s.received_bytes_total);
        set_total(&self.events_expired, &[], s.events_expired_total);
        set_total(&self.events_quarantined, &[], s.events_quarantined_total);
        set_total(&self.spool_changes, &[], s.spool_changes_total);
        set_total(&self.sequence_reuses, &[], s.sequence_reuses_total);
        set_gauge(&self.inflight_bytes, s.inflight_bytes);
        for ((detector, severity), n) in self.stats.alerts() {
            set_total(&self.alerts, &[detector, severity], n);
        }
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        set_total(
            &self.baselines_stored,
            &[],
            load(&self.stats.baselines_stored),
        );
        set_total(
            &self.detection_skipped,
            &[],
            load(&self.stats.detection_batches_skipped),
        );
        set_total(
            &self.incidents_opened,
            &[],
            load(&self.stats.incidents_opened),
        );
        for (reason, n) in self.stats.api.refused() {
            set_total(&self.api_refused, &[reason], n);
        }
        set_total(&self.api_lockouts, &[], load(&self.stats.api.lockouts));
        set_total(
            &self.api_auth_table_evictions,
            &[],
            load(&self.stats.api.auth_table_evictions),
        );
        set_total(
            &self.api_accept_errors,
            &[],
            load(&self.stats.api.accept_errors),
        );
        if let Some(n) = &self.notifier {
            for s in n.stats().sinks {
                let sink = s.sink.as_str();
                set_total(&self.notifications, &[sink], s.sent_total);
                set_total(
                    &self.notification_failures,
                    &[sink, "retried"],
                    s.retries_total,
                );
                set_total(
                    &self.notification_failures,
                    &[sink, "given_up"],
                    s.given_up_total,
                );
                set_total(&self.notifications_dropped, &[sink], s.dropped_total);
                set_gauge(
                    &self.notification_queue.with_label_values(&[sink]),
                    s.queue_depth,
                );
                if s.last_success_unix_ms > 0 {
                    self.notification_last_success
                        .with_label_values(&[sink])
                        .set(s.last_success_unix_ms as f64 / 1000.0);
                }
            }
        }
        for (severity, n) in self.stats.open_incidents() {
            set_gauge(&self.incidents_open.with_label_values(&[severity]), n);
        }
        if let Some(path) = &self.sqlite_path {
            let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            set_gauge(
                &self.storage_bytes,
                size(path).saturating_add(size(std::path::Path::new(&wal))),
            );
        }
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        let mut text = String::from_utf8(buf).unwrap_or_default();
        latency_histogram(&mut text, &self.stats.alert_latency());
        text
    }
}

/// `mamori_alert_latency_seconds` in the text format. The histogram is kept in fixed
/// buckets by the detection task ([`IntakeStats::observe_alert_latency`]); the `prometheus`
/// crate's histogram cannot be set from counts, so it is written here, in the same format.
fn latency_histogram(out: &mut String, h: &crate::stats::LatencyBuckets) {
    use std::fmt::Write;
    let name = names::ALERT_LATENCY_SECONDS;
    let _ = writeln!(
        out,
        "# HELP {name} Wall time from a batch's arrival at the intake to its alerts and incidents being stored."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0u64;
    for (bound, n) in crate::stats::LATENCY_BUCKETS_SECONDS.iter().zip(h.counts) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_named_with_the_prefix_and_sites_come_from_the_allowlist() {
        let stats = Arc::new(IntakeStats::with_sites(["plant".to_string()]));
        stats.site("plant").unwrap().add_events(&[1, 2, 3]);
        stats.refuse(RefusalReason::Malformed);
        let m = CollectorMetrics::new(Arc::clone(&stats), None).unwrap();
        let text = m.render();
        assert!(text.contains(r#"mamori_events_ingested_total{site="plant",type="syslog"} 3"#));
        assert!(text.contains(r#"mamori_intake_errors_total{reason="malformed"} 1"#));
        assert!(!text.contains("mamori_agent_last_seen_timestamp_seconds{"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("mamori_"), "{line}");
        }
        // Rendering twice does not double the counters.
        assert!(m.render().contains(r#"type="flow"} 2"#));
    }
}
