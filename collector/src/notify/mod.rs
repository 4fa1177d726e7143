//! Telling responders about incidents: the collector's incident code hands each state change
//! of an incident to [`Notifier::notify`] as a [`Notice`], and the notifier delivers it to
//! every configured sink (`[notify]`, [`NotifySection`]):
//!
//! - [`alertmanager`]: Prometheus Alertmanager API v2; active notices are re-sent every
//!   `resend_interval_seconds` until resolved (Alertmanager expires alerts that are not);
//! - [`webhook`]: a JSON body signed with HMAC-SHA256 (`X-Mamori-Signature`);
//! - [`cef`]: syslog (RFC 5424, UDP or TCP) carrying ArcSight CEF, for a SIEM.
//!
//! This module owns the notices' delivery, not their content: what an incident is and when it
//! changes is decided by the incident code. `notify` never waits: each sink has its own bounded
//! queue (the oldest notice is dropped when full, counted and logged once) and its own task,
//! which retries with exponential backoff a bounded number of times. Every attempt, retry,
//! give-up and drop is counted in [`NotifySnapshot`] for `/metrics`.

pub mod alertmanager;
pub mod cef;
pub(crate) mod config;
pub(crate) mod http;
mod queue;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mamori_models::detect::Severity;
use serde::Serialize;
use tokio::task::JoinHandle;

pub use config::{
    AlertmanagerSection, DeliverySettings, Framing, NotifySection, SyslogSection, Transport,
    WebhookSection,
};
use queue::{Queue, SinkStats};

/// One incident's state to announce. Everything in it may come from a hostile network (an
/// asset's address, a detector's summary of what it saw): every sink escapes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notice {
    /// Stable id of what is announced (`plant-a/17`): later notices with the same key update
    /// or resolve it.
    pub key: String,
    pub incident_id: i64,
    /// `MamoriIncident` (CamelCase, an Alertmanager alert name).
    pub alertname: String,
    pub site: String,
    /// The asset (`ip` or `ip/unit`), absent for site-wide incidents.
    pub asset: Option<String>,
    /// Rises when the incident escalates (Alertmanager: the previous alert is ended).
    pub severity: Severity,
    /// Every detector that contributed an alert, sorted by name (`allowlist`, `cycle`): it
    /// grows with the incident, so Alertmanager gets it as an annotation, never a label.
    pub detectors: Vec<String>,
    /// What opened the incident (the first alert's kind, `new_modbus_path`): stable for the
    /// incident's life.
    pub kind: String,
    /// One sentence.
    pub summary: String,
    /// A few lines.
    pub description: String,
    pub runbook_url: Option<String>,
    /// The incident in the collector's API.
    pub generator_url: String,
    pub starts_at_unix_ms: u64,
    /// Set when the incident is resolved.
    pub ends_at_unix_ms: Option<u64>,
    /// Drill traffic: every sink marks it (`exercise="true"`) so routing can keep it apart.
    pub exercise: bool,
}

impl Notice {
    pub fn is_resolved(&self) -> bool {
        self.ends_at_unix_ms.is_some()
    }
}

/// What a notice says happened, as the webhook and CEF tell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The first notice of its key (or the first since it was resolved).
    Opened,
    /// A later notice of an active key.
    Updated,
    /// The notice has `ends_at_unix_ms`.
    Resolved,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Opened => "opened",
            Event::Updated => "updated",
            Event::Resolved => "resolved",
        }
    }
}

/// The sinks: a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sink {
    Alertmanager,
    Webhook,
    Syslog,
}

impl Sink {
    pub const ALL: [Sink; 3] = [Sink::Alertmanager, Sink::Webhook, Sink::Syslog];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Alertmanager => "alertmanager",
            Sink::Webhook => "webhook",
            Sink::Syslog => "syslog",
        }
    }
}

/// One sink's counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkSnapshot {
    pub sink: Sink,
    /// Messages a receiver accepted (an alert posted to two Alertmanagers counts twice; a
    /// re-send of active alerts counts each alert again).
    pub sent_total: u64,
    /// Attempts that failed (connect, TLS, timeout, non-2xx answer, write error).
    pub failed_attempts_total: u64,
    /// Attempts after a message's first.
    pub retries_total: u64,
    /// Messages abandoned: attempts spent, refused by the receiver (4xx), or still queued
    /// when the shutdown grace ended.
    pub given_up_total: u64,
    /// Messages pushed out of a full queue (the oldest go first).
    pub dropped_total: u64,
    /// Messages waiting now.
    pub queue_depth: u64,
    /// Last accepted message, Unix ms; 0: never.
    pub last_success_unix_ms: u64,
}

/// Every configured sink's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifySnapshot {
    /// One per configured sink, in [`Sink::ALL`] order.
    pub sinks: Vec<SinkSnapshot>,
    /// Keys announced and not yet resolved.
    pub active_notices: u64,
    /// Active keys forgotten because more than [`MAX_ACTIVE_NOTICES`] were active.
    pub active_evicted_total: u64,
}

impl NotifySnapshot {
    /// The counters of `sink`, if configured.
    pub fn sink(&self, sink: Sink) -> Option<&SinkSnapshot> {
        self.sinks.iter().find(|s| s.sink == sink)
    }
}

/// Why the notifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The section does not validate (each problem as `key: reason`).
    #[error("invalid [notify] configuration: {0}")]
    Invalid(String),
    #[error("TLS client: {0}")]
    Tls(String),
    #[error("the notifier must be started inside a tokio runtime")]
    NoRuntime,
}

/// Bound on the keys tracked as active (open or updated, not resolved). Beyond it the oldest
/// is forgotten (counted): a later notice of it reads as `opened`, and Alertmanager stops
/// getting it re-sent.
pub const MAX_ACTIVE_NOTICES: usize = 10_000;

/// A notice on its way, with what happened and when it was handed over.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) event: Event,
    pub(crate) notice: Notice,
    /// When `notify` was called (Unix ms): CEF `rt`.
    pub(crate) at_unix_ms: u64,
}

/// Keys announced and not resolved, oldest first by sequence.
#[derive(Debug, Default)]
struct ActiveKeys {
    seq: u64,
    keys: HashMap<String, u64>,
}

impl ActiveKeys {
    /// The event a notice makes; `true` as second value when a key had to be forgotten.
    fn classify(&mut self, notice: &Notice) -> (Event, bool) {
        if notice.is_resolved() {
            self.keys.remove(&notice.key);
            return (Event::Resolved, false);
        }
        self.seq = self.seq.wrapping_add(1);
        if let Some(seq) = self.keys.get_mut(&notice.key) {
            *seq = self.seq;
            return (Event::Updated, false);
        }
        self.keys.insert(notice.key.clone(), self.seq);
        let evicted = self.keys.len() > MAX_ACTIVE_NOTICES;
        if evicted
            && let Some(oldest) = self
                .keys
                .iter()
                .min_by_key(|(_, s)| **s)
                .map(|(k, _)| k.clone())
        {
            self.keys.remove(&oldest);
        }
        (Event::Opened, evicted)
    }
}

/// One running sink.
#[derive(Debug)]
pub(crate) struct SinkHandle {
    stats: Arc<SinkStats>,
    input: Arc<Queue<Arc<Delivery>>>,
    /// Alertmanager's per-URL queues (counted in its depth, drained at the end).
    posts: Vec<Arc<Queue<alertmanager::Job>>>,
}

impl SinkHandle {
    fn depth(&self) -> u64 {
        let posts: usize = self.posts.iter().map(|q| q.len()).sum();
        u64::try_from(self.input.len().saturating_add(posts)).unwrap_or(u64::MAX)
    }
}

#[derive(Debug)]
struct Inner {
    sinks: Vec<SinkHandle>,
    active: Mutex<ActiveKeys>,
    active_evicted: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Delivers notices to the configured sinks. Cheap to clone (one shared state).
#[derive(Clone, Debug)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl Notifier {
    /// Validates `section`, reads its secret and CA files and spawns one task per sink (and
    /// per Alertmanager URL). Must be called inside a tokio runtime.
    pub fn start(section: &NotifySection) -> Result<Notifier, NotifyError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NotifyError::NoRuntime)?;
        let mut problems = Vec::new();
        section.validate(&mut problems);
        if !problems.is_empty() {
            let list: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.reason))
                .collect();
            return Err(NotifyError::Invalid(list.join("; ")));
        }
        // Build everything first, so a failure leaves no task behind.
        let am = section
            .alertmanager
            .as_ref()
            .map(alertmanager::Runner::build)
            .transpose()?;
        let hook = section
            .webhook
            .as_ref()
            .map(webhook::Runner::build)
            .transpose()?;
        let syslog = section
            .syslog
            .as_ref()
            .map(cef::Runner::build)
            .transpose()?;

        let mut sinks = Vec::new();
        let mut tasks = Vec::new();
        if let Some(am) = am {
            let (handle, spawned) = am.spawn(&runtime);
            sinks.push(handle);
            tasks.extend(spawned);
        }
        if let Some(hook) = hook {
            let (handle, task) = hook.spawn(&runtime);
            sinks.push(handle);
            tasks.push(task);
        }
        if let Some(syslog) = syslog {
            let (handle, task) = syslog.spawn(&runtime);
            sinks.push(handle);
            tasks.push(task);
        }
        let names: Vec<&str> = sinks.iter().map(|s| s.stats.sink.as_str()).collect();
        tracing::info!(sinks = ?names, "notifier started");
        Ok(Notifier {
            inner: Arc::new(Inner {
                sinks,
                active: Mutex::new(ActiveKeys::default()),
                active_evicted: AtomicU64::new(0),
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// Hands `notice` to every sink. Never waits: a full queue drops its oldest entry.
    pub fn notify(&self, notice: Notice) {
        let (event, evicted) = {
            let mut active = self.inner.active.lock().unwrap_or_else(|e| e.into_inner());
            active.classify(&notice)
        };
        if evicted && self.inner.active_evicted.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                max = MAX_ACTIVE_NOTICES,
                "too many active notices: forgetting the oldest (counted; logged once)"
            );
        }
        let delivery = Arc::new(Delivery {
            event,
            notice,
            at_unix_ms: unix_ms_now(),
        });
        for sink in &self.inner.sinks {
            if sink.input.is_closed() {
                sink.stats.gave_up(1);
                tracing::debug!(
                    sink = sink.stats.sink.as_str(),
                    "notice after shutdown: not sent"
                );
                continue;
            }
            if sink.input.push(delivery.clone()).is_some() {
                sink.stats.overflowed(1);
            }
        }
    }

    /// Every sink's counters.
    pub fn stats(&self) -> NotifySnapshot {
        let active = self
            .inner
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .len();
        NotifySnapshot {
            sinks: self
                .inner
                .sinks
                .iter()
                .map(|s| s.stats.snapshot(s.depth()))
                .collect(),
            active_notices: u64::try_from(active).unwrap_or(u64::MAX),
            active_evicted_total: self.inner.active_evicted.load(Ordering::Relaxed),
        }
    }

    /// Stops taking notices and delivers what is queued within `grace`; then the tasks are
    /// stopped and whatever was left is counted as given up. Alertmanager is not told that
    /// active notices ended: a restart does not resolve incidents.
    pub async fn shutdown(self, grace: Duration) {
        for sink in &self.inner.sinks {
            sink.input.close();
        }
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = tokio::time::Instant::now() + grace;
        let mut aborted = 0usize;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                aborted += 1;
            }
        }
        for sink in &self.inner.sinks {
            let mut left = u64::try_from(sink.input.drain().len()).unwrap_or(u64::MAX);
            for q in &sink.posts {
                q.close();
                left = left.saturating_add(q.drain().iter().map(alertmanager::Job::alerts).sum());
            }
            left = left.saturating_add(sink.stats.take_in_flight());
            if left > 0 {
                sink.stats.gave_up(left);
                tracing::warn!(
                    sink = sink.stats.sink.as_str(),
                    messages = left,
                    "shutdown grace over: notices not delivered"
                );
            }
        }
        if aborted > 0 {
            tracing::debug!(tasks = aborted, "notifier tasks stopped at the deadline");
        }
    }
}

/// Wall time, Unix milliseconds.
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 in UTC with microseconds (Alertmanager, RFC 5424).
pub(crate) fn rfc3339(unix_ms: u64) -> String {
    let micros = i64::try_from(unix_ms)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    mamori_models::Timestamp::from_micros(micros).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn notice(key: &str) -> Notice {
        Notice {
            key: key.into(),
            incident_id: 17,
            alertname: "MamoriIncident".into(),
            site: "plant-a".into(),
            asset: Some("10.0.0.5/1".into()),
            severity: Severity::High,
            detectors: vec!["allowlist".into()],
            kind: "new_modbus_path".into(),
            summary: "New Modbus path 10.0.0.9 -> 10.0.0.5 unit 1".into(),
            description: "A client never seen in learning wrote holding registers.".into(),
            runbook_url: Some("https://wiki.example/runbooks/new-path".into()),
            generator_url: "http://collector:8080/v1/incidents/17".into(),
            starts_at_unix_ms: 1_700_000_000_123,
            ends_at_unix_ms: None,
            exercise: false,
        }
    }

    #[test]
    fn events_follow_the_keys_life() {
        let mut active = ActiveKeys::default();
        let n = notice("plant-a/17");
        assert_eq!(active.classify(&n).0, Event::Opened);
        assert_eq!(active.classify(&n).0, Event::Updated);
        let resolved = Notice {
            ends_at_unix_ms: Some(1_700_000_100_000),
            ..n.clone()
        };
        assert_eq!(active.classify(&resolved).0, Event::Resolved);
        assert!(active.keys.is_empty());
        assert_eq!(active.classify(&n).0, Event::Opened);
    }

    #[test]
    fn active_keys_are_bounded_and_the_oldest_goes() {
        let mut active = ActiveKeys::default();
        for i in 0..MAX_ACTIVE_NOTICES {
            assert_eq!(
                active.classify(&notice(&format!("k{i}"))),
                (Event::Opened, false)
            );
        }
        // Touch k0 so k1 is now the oldest.
        assert_eq!(active.classify(&notice("k0")).0, Event::Updated);
        assert_eq!(active.classify(&notice("new")), (Event::Opened, true));
        assert_eq!(active.keys.len(), MAX_ACTIVE_NOTICES);
        assert!(!active.keys.contains_key("k1"));
        assert!(active.keys.contains_key("k0"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123000Z");
    }

    #[tokio::test]
    async fn start_refuses_an_invalid_section_and_needs_no_sink() {
        let section: NotifySection =
            toml::from_str("[webhook]\nurl = \"gopher://x\"\nsecret_file = \"/nonexistent\"\n")
                .unwrap();
        let err = Notifier::start(&section).unwrap_err().to_string();
        assert!(err.contains("notify.webhook.url"), "{err}");
        assert!(err.contains("notify.webhook.secret_file"), "{err}");
        let none = Notifier::start(&NotifySection::default()).unwrap();
        none.notify(notice("k"));
        assert_eq!(none.stats().active_notices, 1);
        none.shutdown(Duration::from_millis(10)).await;
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        assert!(matches!(
            Notifier::start(&NotifySection::default()),
            Err(NotifyError::NoRuntime)
        ));
    }
}
