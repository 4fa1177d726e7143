//! Online detection, per site. The intake hands each stored batch to one detection task
//! through a bounded queue (never waiting: a full queue skips the batch for detection, counted,
//! and its events stay in the database). Each site first *learns* for
//! `[detection] learning_period_seconds` of event time from its first event, then its baseline
//! is stored in `baselines` and it *detects*; a restarted collector loads the latest baseline
//! of each site and detects at once. Alerts go to the `alerts` table and to
//! `mamori_alerts_total`.
//!
//! The models' [`Detector`] returns alerts only from `finish()`, so a detecting site is
//! *flushed* every `alert_flush_interval_seconds` (wall time) or `alert_flush_events` events:
//! its detector is finished (alerts stored) and a new one built from the same baseline. The
//! price: detector state (polling-cycle timing, traffic windows, the aggregation of repeats)
//! starts afresh at each flush, so a repeat across a flush is a second alert row, and a cycle
//! must be re-observed before it can be found missing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mamori_models::Event;
use mamori_models::Timestamp;
use mamori_models::detect::{Alert, BASELINE_VERSION, Baseline, DetectConfig, Detector, Learner};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{DetectionSection, seconds};
use crate::stats::{self, IntakeStats};
use crate::store::{StoreError, StoreHandle};

/// A stored batch on its way to detection.
#[derive(Debug)]
struct DetectBatch {
    site: String,
    events: Vec<Event>,
}

/// The intake's side of the detection queue.
#[derive(Debug)]
pub(crate) struct DetectionQueue {
    tx: std::sync::Mutex<Option<mpsc::Sender<DetectBatch>>>,
    stats: Arc<IntakeStats>,
    /// Whether a full queue has been logged (once per run; the counter has the rest).
    warned: AtomicBool,
}

impl DetectionQueue {
    /// Hands a stored batch's events to detection without waiting.
    pub(crate) fn submit(&self, site: &str, events: Vec<Event>) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(tx) = tx else { return };
        let batch = DetectBatch {
            site: site.to_owned(),
            events,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(batch) {
            stats::add(&self.stats.detection_batches_skipped, 1);
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    site,
                    "detection queue full: batch stored but not seen by the detectors \
                     (counted in mamori_detection_batches_skipped_total; logged once)"
                );
            }
        }
    }

    /// Closes the queue: the task detects what is queued, flushes and ends.
    pub(crate) fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// One site's mode.
#[derive(Debug)]
enum SiteState {
    /// Learning until an event at or after `until_ts` (event time).
    Learning {
        learner: Box<Learner>,
        until_ts: Timestamp,
    },
    /// Detecting; `pending` events observed since the last flush.
    Detecting {
        detector: Box<Detector>,
        pending: u64,
    },
}

/// What a step of detection produced, to be stored.
#[derive(Debug, Default)]
struct Output {
    /// (site, baseline JSON): sites that finished learning.
    baselines: Vec<(String, String)>,
    /// (site, alerts).
    alerts: Vec<(String, Vec<Alert>)>,
}

/// Every site's state; pure computation (no I/O), run off the async threads.
#[derive(Debug)]
struct Engine {
    config: DetectConfig,
    learning_period_us: i64,
    flush_events: u64,
    sites: BTreeMap<String, SiteState>,
    stats: Arc<IntakeStats>,
}

impl Engine {
    fn observe(&mut self, batch: DetectBatch, out: &mut Output) {
        let DetectBatch { site, mut events } = batch;
        // The detectors want event-time order; stable, so equal times keep the agent's order.
        events.sort_by_key(Event::ts);
        for event in &events {
            self.observe_one(&site, event, out);
        }
    }

    fn observe_one(&mut self, site: &str, event: &Event, out: &mut Output) {
        let ts = event.ts();
        let due = matches!(
            self.sites.get(site),
            Some(SiteState::Learning { until_ts, .. }) if ts >= *until_ts
        );
        if due && let Some(SiteState::Learning { learner, .. }) = self.sites.remove(site) {
            let baseline = learner.finish();
            match baseline.to_json() {
                Ok(json) => out.baselines.push((site.to_owned(), json)),
                Err(e) => tracing::error!(site, error = %e, "cannot encode the baseline"),
            }
            tracing::info!(
                site,
                events = baseline.learned.events,
                "learning period over: baseline learned, detecting"
            );
            match Detector::new(baseline, self.config.clone()) {
                Ok(d) => {
                    self.sites.insert(
                        site.to_owned(),
                        SiteState::Detecting {
                            detector: Box::new(d),
                            pending: 0,
                        },
                    );
                    if let Some(s) = self.stats.site(site) {
                        s.set_learning(false);
                    }
                }
                // Not expected (the configuration is the validated default): learn again.
                Err(e) => tracing::error!(site, error = %e, "cannot build a detector"),
            }
        }
        let state = self
            .sites
            .entry(site.to_owned())
            .or_insert_with(|| SiteState::Learning {
                learner: Box::new(Learner::new(self.config.clone()).with_site(site)),
                until_ts: ts.saturating_add_micros(self.learning_period_us),
            });
        match state {
            SiteState::Learning { learner, .. } => learner.observe(event),
            SiteState::Detecting { detector, pending } => {
                detector.observe(event);
                *pending += 1;
                if *pending >= self.flush_events {
                    flush(site, detector, pending, &self.config, out);
                }
            }
        }
    }

    fn flush_all(&mut self, out: &mut Output) {
        for (site, state) in &mut self.sites {
            if let SiteState::Detecting { detector, pending } = state {
                flush(site, detector, pending, &self.config, out);
            }
        }
    }
}

/// Finishes `detector` (its alerts go to `out`) and replaces it with a fresh one built from
/// the same baseline.
fn flush(
    site: &str,
    detector: &mut Detector,
    pending: &mut u64,
    config: &DetectConfig,
    out: &mut Output,
) {
    if *pending == 0 {
        return;
    }
    let fresh = match Detector::new(detector.baseline().clone(), config.clone()) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(site, error = %e, "cannot rebuild the detector");
            return;
        }
    };
    let old = std::mem::replace(detector, fresh);
    *pending = 0;
    let (alerts, _summary) = old.finish();
    if !alerts.is_empty() {
        out.alerts.push((site.to_owned(), alerts));
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts detection: loads the latest baseline of every configured site (those sites detect
/// at once, the others learn from their first event), then runs the task.
pub(crate) async fn start(
    section: &DetectionSection,
    store: Arc<StoreHandle>,
    stats: Arc<IntakeStats>,
    sites: impl IntoIterator<Item = String>,
) -> Result<(DetectionQueue, JoinHandle<()>), StoreError> {
    let config = DetectConfig::default();
    let mut states = BTreeMap::new();
    let sites: Vec<String> = sites.into_iter().collect();
    for site in &sites {
        if let Some(s) = stats.site(site) {
            s.set_learning(true);
        }
    }
    for (site, json) in store.latest_baselines().await? {
        if !sites.contains(&site) {
            continue;
        }
        let detector = Baseline::from_json(&json)
            .map_err(|e| e.to_string())
            .and_then(|b| Detector::new(b, config.clone()).map_err(|e| e.to_string()));
        match detector {
            Ok(d) => {
                tracing::info!(site, "baseline loaded: detecting");
                if let Some(s) = stats.site(&site) {
                    s.set_learning(false);
                }
                states.insert(
                    site,
                    SiteState::Detecting {
                        detector: Box::new(d),
                        pending: 0,
                    },
                );
            }
            Err(error) => {
                tracing::warn!(
                    site,
                    error,
                    "stored baseline unusable: the site learns again"
                );
            }
        }
    }
    let engine = Engine {
        config,
        // Validated: (0, a year], so whole microseconds fit.
        learning_period_us: (section.learning_period_seconds * 1e6) as i64,
        flush_events: section.alert_flush_events,
        sites: states,
        stats: Arc::clone(&stats),
    };
    let capacity = usize::try_from(section.queue_batches).unwrap_or(64);
    let (tx, rx) = mpsc::channel(capacity);
    let interval = seconds(section.alert_flush_interval_seconds);
    let task = tokio::spawn(run(engine, rx, store, interval));
    let queue = DetectionQueue {
        tx: std::sync::Mutex::new(Some(tx)),
        stats,
        warned: AtomicBool::new(false),
    };
    Ok((queue, task))
}

/// Until the queue is closed and drained: detect each batch (off the async threads), flush on
/// the timer, store what comes out; at the end, one last flush.
async fn run(
    mut engine: Engine,
    mut rx: mpsc::Receiver<DetectBatch>,
    store: Arc<StoreHandle>,
    interval: Duration,
) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await;
    loop {
        let batch = tokio::select! {
            b = rx.recv() => match b {
                Some(b) => Some(b),
                None => break,
            },
            _ = timer.tick() => None,
        };
        let step = tokio::task::spawn_blocking(move || {
            let mut out = Output::default();
            match batch {
                Some(b) => engine.observe(b, &mut out),
                None => engine.flush_all(&mut out),
            }
            (engine, out)
        })
        .await;
        let out;
        (engine, out) = match step {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "detection step failed; detection stopped");
                return;
            }
        };
        persist(&store, &engine.stats, out).await;
    }
    let mut out = Output::default();
    engine.flush_all(&mut out);
    persist(&store, &engine.stats, out).await;
}

/// How long a write waits for room in the storage queue (shared with the intake) before it
/// is given up.
const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// Retries a store call while the storage queue is full (the intake has priority: it gets
/// `503` and its agents retry; detection waits its turn).
async fn patiently<T, F, Fut>(mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let end = tokio::time::Instant::now() + STORE_PATIENCE;
    loop {
        match call().await {
            Err(StoreError::Busy) if tokio::time::Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

async fn persist(store: &StoreHandle, stats: &IntakeStats, out: Output) {
    for (site, json) in out.baselines {
        let created = unix_ms();
        match patiently(|| store.store_baseline(&site, created, BASELINE_VERSION, json.clone()))
            .await
        {
            Ok(()) => stats::add(&stats.baselines_stored, 1),
            Err(e) => tracing::error!(
                site,
                error = %e,
                "cannot store the baseline: the site detects now but learns again after a restart"
            ),
        }
    }
    for (site, alerts) in out.alerts {
        let mut counts: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
        for a in &alerts {
            *counts
                .entry((a.detector.as_str(), a.severity.as_str()))
                .or_default() += 1;
        }
        let n = alerts.len();
        match patiently(|| store.store_alerts(&site, alerts.clone())).await {
            Ok(()) => {
                for ((detector, severity), k) in counts {
                    stats.add_alerts(detector, severity, k);
                }
                tracing::info!(site, alerts = n, "alerts stored");
            }
            Err(e) => tracing::error!(site, alerts = n, error = %e, "cannot store alerts; lost"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn write(second: u32, src: &str) -> Event {
        let ts = format!(
            "2024-01-01T00:{:02}:{:02}.000000Z",
            second / 60,
            second % 60
        );
        serde_json::from_value(serde_json::json!({
            "type": "modbus", "ts": ts, "src_ip": src, "src_port": 40000,
            "dst_ip": "10.0.0.2", "dst_port": 502, "tid": 1, "unit": 1,
            "func": 6, "func_name": "WRITE_SINGLE_REGISTER",
            "request": { "ts": ts, "len": 6, "address": 0, "values": [1] },
            "response": { "ts": ts, "len": 6, "address": 0, "values": [1] },
            "exception": null, "exception_code": null, "latency_us": 500, "anomalies": []
        }))
        .unwrap()
    }

    fn engine(flush_events: u64) -> Engine {
        let stats = Arc::new(IntakeStats::with_sites(["plant".to_string()]));
        stats.site("plant").unwrap().set_learning(true);
        Engine {
            config: DetectConfig::default(),
            learning_period_us: 10_000_000,
            flush_events,
            sites: BTreeMap::new(),
            stats,
        }
    }

    #[test]
    fn learning_ends_in_event_time_and_the_event_count_flushes_alerts() {
        let mut e = engine(2);
        let mut out = Output::default();
        // Out of order within the batch: sorted first, so 9 s is still learning.
        let batch = DetectBatch {
            site: "plant".into(),
            events: vec![write(9, "10.0.0.1"), write(0, "10.0.0.1")],
        };
        e.observe(batch, &mut out);
        assert!(out.baselines.is_empty());
        assert!(e.stats.site("plant").unwrap().learning());
        // 10 s after the first event: learning ends, this event is detected.
        let batch = DetectBatch {
            site: "plant".into(),
            events: vec![write(10, "10.0.0.1"), write(11, "10.0.0.99")],
        };
        e.observe(batch, &mut out);
        assert_eq!(out.baselines.len(), 1);
        assert!(!e.stats.site("plant").unwrap().learning());
        let Baseline { learned, .. } = Baseline::from_json(&out.baselines[0].1).unwrap();
        assert_eq!(learned.events, 2);
        // Two detected events: flushed, with the new host's alert.
        assert_eq!(out.alerts.len(), 1);
        assert!(
            out.alerts[0]
                .1
                .iter()
                .any(|a| a.src_ip.map(|ip| ip.to_string()) == Some("10.0.0.99".into()))
        );
        // Nothing pending: a timer flush has nothing to store.
        let mut more = Output::default();
        e.flush_all(&mut more);
        assert!(more.alerts.is_empty());
    }
}
