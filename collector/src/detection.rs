//! Online detection, per site. The intake hands each stored batch to one detection task
//! through a bounded queue (never waiting: a full queue skips the batch for detection, counted,
//! and its events stay in the database). Each site first *learns* for
//! `[detection] learning_period_seconds` of event time from its first event, then its baseline
//! is stored in `baselines` and it *detects*; a restarted collector loads the latest baseline
//! of each site and detects at once. The API can switch a site either way at any time.
//!
//! After every batch the detectors' new and grown alerts are drained
//! ([`Detector::drain`]), stored by identity and filed into incidents ([`crate::incidents`])
//! in one transaction; incident changes then go to the responders (the `on_change` hook,
//! wired to [`crate::notify`]). The asset inventory ([`crate::inventory`]) is kept from every
//! event, in both modes; its changes are stored every `inventory_store_interval_seconds`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mamori_models::Event;
use mamori_models::Timestamp;
use mamori_models::detect::{
    AcceptError, Alert, BASELINE_VERSION, Baseline, DetectConfig, Detector, Learner, Scope,
    Severity,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::audit::{AuditAction, AuditEntry};
use crate::config::{DetectionSection, seconds};
use crate::incident::{Asset, Criticality};
use crate::incidents::{self, Change, Filing, Policy};
use crate::inventory::{Inventory, asset_ip};
use crate::stats::{self, IntakeStats};
use crate::store::{Store, StoreError, StoreHandle, transaction};

/// A stored batch on its way to detection.
#[derive(Debug)]
struct DetectBatch {
    site: String,
    events: Vec<Event>,
    /// When the intake received it (wall time, Unix ms): the start of alert latency.
    received_unix_ms: u64,
    /// Alerts the intake raised about the delivery itself (a restarted numbering).
    health: Vec<Alert>,
    /// The intake's memory budget held by these events, given back once they are seen.
    _reservation: crate::budget::Reservation,
}

/// Called with every incident change, after it is stored.
pub type OnChange = Arc<dyn Fn(&Change) + Send + Sync>;

/// The intake's side of the detection queue.
#[derive(Debug)]
pub(crate) struct DetectionQueue {
    tx: std::sync::Mutex<Option<mpsc::Sender<DetectBatch>>>,
    /// How long a stored batch waits for room before detection skips it.
    wait: Duration,
    stats: Arc<IntakeStats>,
    /// Whether a full queue has been logged (once per run; the counter has the rest).
    warned: AtomicBool,
}

impl DetectionQueue {
    /// Hands a stored batch's events to detection, waiting up to `queue_wait_seconds` for
    /// room: the batch is durable already, only its acknowledgement waits, so agents slow
    /// down to what detection keeps up with. Past the wait the batch is skipped by
    /// detection (counted, logged once; its events stay stored).
    pub(crate) async fn submit(
        &self,
        site: &str,
        events: Vec<Event>,
        received_unix_ms: u64,
        health: Vec<Alert>,
        reservation: crate::budget::Reservation,
    ) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(tx) = tx else { return };
        let batch = DetectBatch {
            site: site.to_owned(),
            events,
            received_unix_ms,
            health,
            _reservation: reservation,
        };
        if let Err(mpsc::error::SendTimeoutError::Timeout(_)) =
            tx.send_timeout(batch, self.wait).await
        {
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

    /// Closes the queue: the task detects what is queued, stores and ends.
    pub(crate) fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A site's mode, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Learning,
    Detecting,
}

/// What the API shows of a site's detection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SiteStatus {
    pub site: String,
    pub mode: Mode,
    /// Learning ends at the first event at or after this time (event time); absent until the
    /// site's first event, or when detecting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learning_until: Option<Timestamp>,
    /// Events learned so far (learning) or in the baseline (detecting).
    pub learned_events: u64,
    /// Events seen since the mode began.
    pub events: u64,
    /// Alerts of this site are exercise traffic until then (wall time, Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exercise_until_unix_ms: Option<u64>,
    /// A device or channel being learned again while the rest of the site detects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relearning: Option<RelearnStatus>,
}

/// What the API shows of a relearning in progress.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RelearnStatus {
    /// `asset 10.0.0.5` or `channel 10.0.0.10>10.0.0.2 unit 1 function 3`.
    pub scope: String,
    /// The relearning ends at the first event at or after this time (event time); absent
    /// until the site's next event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// Events of the scope learned so far.
    pub events: u64,
}

/// `asset 10.0.0.5`, `channel 10.0.0.10>10.0.0.2 unit 1 function 3`.
pub fn describe_scope(scope: &Scope) -> String {
    match *scope {
        Scope::Asset(ip) => format!("asset {ip}"),
        Scope::Channel {
            client,
            server,
            unit,
            func,
        } => format!("channel {client}>{server} unit {unit} function {func}"),
    }
}

/// Whether `alert` is about what `scope` covers (the devices it names).
fn in_scope(scope: &Scope, alert: &Alert) -> bool {
    match *scope {
        Scope::Asset(ip) => {
            alert.src_ip == Some(ip)
                || alert.dst_ip == Some(ip)
                || alert.asset.as_deref().and_then(asset_ip) == Some(ip)
        }
        Scope::Channel { client, server, .. } => {
            alert.src_ip == Some(client) && alert.dst_ip == Some(server)
        }
    }
}

/// Why marking an alert as normal failed.
#[derive(Debug, thiserror::Error)]
pub enum AcceptFailure {
    /// The site is unknown or not detecting.
    #[error("{0}")]
    Site(String),
    /// The baseline cannot take the finding in.
    #[error(transparent)]
    Refused(#[from] AcceptError),
    /// Applied to the running detector, but the baseline or the audit entry was not stored.
    #[error("applied to the running detector but not stored ({0}); it is lost at a restart")]
    Store(String),
    #[error("detection stopped")]
    Stopped,
}

/// A request from the API to the detection task.
#[derive(Debug)]
enum Control {
    SetMode(String, Mode, oneshot::Sender<Result<SiteStatus, String>>),
    Exercise(
        String,
        Option<u64>,
        oneshot::Sender<Result<SiteStatus, String>>,
    ),
    Annotate {
        site: String,
        ip: IpAddr,
        criticality: Option<Criticality>,
        description: Option<String>,
        reply: oneshot::Sender<Option<Asset>>,
    },
    /// An operator's "this is normal" for a stored alert.
    Accept {
        alert_id: i64,
        site: String,
        alert: Box<Alert>,
        who: String,
        reason: String,
        reply: oneshot::Sender<Result<AuditEntry, AcceptFailure>>,
    },
    Relearn {
        site: String,
        scope: Scope,
        /// Event time to learn for (None: the site's learning period).
        seconds: Option<f64>,
        reply: oneshot::Sender<Result<SiteStatus, String>>,
    },
}

/// The API's handle on detection: read the sites' modes, switch them, run drills, annotate
/// assets. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DetectionControl {
    tx: mpsc::Sender<Control>,
    status: Arc<Mutex<BTreeMap<String, SiteStatus>>>,
}

impl DetectionControl {
    /// Every configured site's status.
    pub fn status(&self) -> Vec<SiteStatus> {
        lock(&self.status).values().cloned().collect()
    }

    /// Switches `site` to `mode`. To detecting: the baseline is what was learned so far
    /// (an error if nothing was). To learning: a fresh baseline is learned for the learning
    /// period from the site's next event; detection stops meanwhile.
    pub async fn set_mode(&self, site: &str, mode: Mode) -> Result<SiteStatus, String> {
        let (reply, answer) = oneshot::channel();
        self.ask(Control::SetMode(site.to_owned(), mode, reply))
            .await?;
        answer.await.map_err(|_| "detection stopped".to_string())?
    }

    /// Marks `site`'s alerts as exercise traffic until `until_unix_ms` (None: ends it).
    pub async fn exercise(
        &self,
        site: &str,
        until_unix_ms: Option<u64>,
    ) -> Result<SiteStatus, String> {
        let (reply, answer) = oneshot::channel();
        self.ask(Control::Exercise(site.to_owned(), until_unix_ms, reply))
            .await?;
        answer.await.map_err(|_| "detection stopped".to_string())?
    }

    /// Sets an asset's criticality and description; None when the asset is unknown.
    pub async fn annotate(
        &self,
        site: &str,
        ip: IpAddr,
        criticality: Option<Criticality>,
        description: Option<String>,
    ) -> Result<Option<Asset>, String> {
        let (reply, answer) = oneshot::channel();
        self.ask(Control::Annotate {
            site: site.to_owned(),
            ip,
            criticality,
            description,
            reply,
        })
        .await?;
        answer.await.map_err(|_| "detection stopped".to_string())
    }

    /// Marks the stored alert `alert_id` of `site` as normal for `who`, because `reason`:
    /// the site's running detector and its stored baseline take the finding in, the alert is
    /// marked accepted, and the audit trail records it (the stored entry is returned).
    pub async fn accept(
        &self,
        site: &str,
        alert_id: i64,
        alert: Alert,
        who: &str,
        reason: &str,
    ) -> Result<AuditEntry, AcceptFailure> {
        let (reply, answer) = oneshot::channel();
        self.ask(Control::Accept {
            alert_id,
            site: site.to_owned(),
            alert: Box::new(alert),
            who: who.to_owned(),
            reason: reason.to_owned(),
            reply,
        })
        .await
        .map_err(|_| AcceptFailure::Stopped)?;
        answer.await.map_err(|_| AcceptFailure::Stopped)?
    }

    /// Learns `scope` of a detecting `site` again from its next event, for `seconds` of
    /// event time (default: the learning period), then replaces that part of its baseline;
    /// the rest of the site detects meanwhile, and alerts about the scope are observations.
    pub async fn relearn(
        &self,
        site: &str,
        scope: Scope,
        seconds: Option<f64>,
    ) -> Result<SiteStatus, String> {
        let (reply, answer) = oneshot::channel();
        self.ask(Control::Relearn {
            site: site.to_owned(),
            scope,
            seconds,
            reply,
        })
        .await?;
        answer.await.map_err(|_| "detection stopped".to_string())?
    }

    async fn ask(&self, c: Control) -> Result<(), String> {
        self.tx
            .send(c)
            .await
            .map_err(|_| "detection stopped".to_string())
    }
}

/// One site's mode.
#[derive(Debug)]
enum SiteState {
    /// Learning until an event at or after `until_ts` (set at the first event).
    Learning {
        learner: Box<Learner>,
        until_ts: Option<Timestamp>,
        events: u64,
    },
    Detecting {
        detector: Box<Detector>,
        events: u64,
    },
}

/// What a step of detection produced, to be stored.
#[derive(Debug, Default)]
struct Output {
    /// (site, baseline JSON): sites that finished learning.
    baselines: Vec<(String, String)>,
    /// Alerts marked as normal, to store with their baseline and audit entry.
    acceptances: Vec<Acceptance>,
    /// Sites with alerts to store and file.
    alerts: Vec<SiteAlerts>,
    /// Inventory entries to store.
    assets: Vec<Asset>,
    /// The earliest arrival of the batches behind these alerts (Unix ms).
    received_unix_ms: Option<u64>,
}

impl Output {
    fn is_empty(&self) -> bool {
        self.baselines.is_empty()
            && self.acceptances.is_empty()
            && self.alerts.is_empty()
            && self.assets.is_empty()
    }
}

/// An alert marked as normal: stored in one transaction (the new baseline, the audit entry,
/// the alert's mark, a note on its incident), then answered.
#[derive(Debug)]
struct Acceptance {
    entry: AuditEntry,
    baseline: String,
    reply: oneshot::Sender<Result<AuditEntry, AcceptFailure>>,
}

/// A device or channel of a detecting site being learned again.
#[derive(Debug)]
struct Relearning {
    scope: Scope,
    learner: Box<Learner>,
    period_us: i64,
    /// Set at the site's first event after the request.
    until_ts: Option<Timestamp>,
    events: u64,
}

#[derive(Debug)]
struct SiteAlerts {
    site: String,
    alerts: Vec<Alert>,
    exercise: bool,
    /// The operator's criticality of the addresses these alerts name (non-default only).
    criticality: BTreeMap<String, Criticality>,
}

/// Every site's state; pure computation (no I/O), run off the async threads.
#[derive(Debug)]
struct Engine {
    config: DetectConfig,
    learning_period_us: i64,
    sites: BTreeMap<String, SiteState>,
    inventory: Inventory,
    exercise_until: BTreeMap<String, u64>,
    /// At most one relearning per site.
    relearning: BTreeMap<String, Relearning>,
    stats: Arc<IntakeStats>,
    status: Arc<Mutex<BTreeMap<String, SiteStatus>>>,
}

impl Engine {
    fn observe(&mut self, batch: DetectBatch, now_ms: u64, out: &mut Output) {
        let DetectBatch {
            site,
            mut events,
            received_unix_ms,
            health,
            _reservation,
        } = batch;
        // The detectors want event-time order; stable, so equal times keep the agent's order.
        events.sort_by_key(Event::ts);
        let mut alerts = health;
        for event in &events {
            if let Some(a) = self.inventory.observe(&site, event) {
                alerts.push(a);
            }
            self.relearn_one(&site, event, now_ms, out);
            self.observe_one(&site, event, out);
        }
        alerts.extend(self.drain(&site));
        self.judge(&site, &mut alerts);
        if !alerts.is_empty() {
            out.received_unix_ms = Some(
                out.received_unix_ms
                    .map_or(received_unix_ms, |r| r.min(received_unix_ms)),
            );
        }
        self.file(&site, alerts, now_ms, out);
        self.publish(&site);
    }

    /// The alerts `site`'s detector has new or grown (none while it learns).
    fn drain(&mut self, site: &str) -> Vec<Alert> {
        match self.sites.get_mut(site) {
            Some(SiteState::Detecting { detector, .. }) => detector.drain(),
            _ => Vec::new(),
        }
    }

    /// What operators said of the site's findings: an accepted finding raised outside the
    /// detectors (inventory, intake) is an observation, as the detectors raise theirs; so is
    /// a finding about what is being relearned.
    fn judge(&self, site: &str, alerts: &mut [Alert]) {
        if let Some(SiteState::Detecting { detector, .. }) = self.sites.get(site) {
            for a in alerts.iter_mut() {
                detector.baseline().accepted.demote(a);
            }
        }
        if let Some(r) = self.relearning.get(site) {
            for a in alerts.iter_mut().filter(|a| in_scope(&r.scope, a)) {
                relearning_observation(a);
            }
        }
    }

    /// Learns `event` into `site`'s relearning when it is in scope; ends the relearning
    /// at its period's end.
    fn relearn_one(&mut self, site: &str, event: &Event, now_ms: u64, out: &mut Output) {
        let Some(r) = self.relearning.get_mut(site) else {
            return;
        };
        let ts = event.ts();
        let period = r.period_us;
        let until = *r
            .until_ts
            .get_or_insert_with(|| ts.saturating_add_micros(period));
        if ts >= until {
            self.finish_relearning(site, now_ms, out);
        } else if r.scope.matches(event) {
            r.learner.observe(event);
            r.events += 1;
        }
    }

    /// Replaces the relearned scope of `site`'s baseline by what was learned (nothing, for a
    /// device that fell silent: it is forgotten), stores the baseline and detects with it.
    fn finish_relearning(&mut self, site: &str, now_ms: u64, out: &mut Output) {
        let Some(r) = self.relearning.remove(site) else {
            return;
        };
        let Some(SiteState::Detecting { detector, .. }) = self.sites.get_mut(site) else {
            return;
        };
        // What the old detector still holds is stored before it goes.
        let mut alerts = detector.drain();
        for a in alerts.iter_mut().filter(|a| in_scope(&r.scope, a)) {
            relearning_observation(a);
        }
        let mut baseline = detector.baseline().clone();
        baseline.replace_scope(&r.scope, r.learner.finish());
        let scope = describe_scope(&r.scope);
        match Detector::new(baseline, self.config.clone()) {
            Ok(d) => {
                match d.baseline().to_json() {
                    Ok(json) => out.baselines.push((site.to_owned(), json)),
                    Err(e) => tracing::error!(site, error = %e, "cannot encode the baseline"),
                }
                **detector = d;
                tracing::info!(site, scope, events = r.events, "relearning over: detecting");
            }
            Err(e) => {
                tracing::error!(site, scope, error = %e, "relearning dropped: cannot build a detector");
            }
        }
        self.file(site, alerts, now_ms, out);
    }

    fn relearn(&mut self, site: &str, scope: Scope, period_us: i64) -> Result<SiteStatus, String> {
        if !lock(&self.status).contains_key(site) {
            return Err(format!("unknown site {site}"));
        }
        if !matches!(self.sites.get(site), Some(SiteState::Detecting { .. })) {
            return Err(format!(
                "site {site} is learning as a whole: relearn a device or channel once it detects"
            ));
        }
        if let Some(r) = self.relearning.get(site) {
            return Err(format!(
                "site {site} is relearning {} already: wait for it to end",
                describe_scope(&r.scope)
            ));
        }
        tracing::info!(
            site,
            scope = describe_scope(&scope),
            "relearning from the next event; the rest of the site detects"
        );
        self.relearning.insert(
            site.to_owned(),
            Relearning {
                scope,
                learner: Box::new(Learner::new(self.config.clone()).with_site(site)),
                period_us,
                until_ts: None,
                events: 0,
            },
        );
        self.publish(site);
        lock(&self.status)
            .get(site)
            .cloned()
            .ok_or_else(|| format!("unknown site {site}"))
    }

    /// Applies an operator's "this is normal" to `site`'s detector; what is to be stored
    /// goes to `out`, answered once stored.
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &mut self,
        site: &str,
        alert_id: i64,
        alert: &Alert,
        who: String,
        reason: String,
        now_ms: u64,
        out: &mut Output,
        reply: oneshot::Sender<Result<AuditEntry, AcceptFailure>>,
    ) {
        let Some(SiteState::Detecting { detector, .. }) = self.sites.get_mut(site) else {
            let why = if lock(&self.status).contains_key(site) {
                format!(
                    "site {site} is learning: its findings can be marked normal once it detects"
                )
            } else {
                format!("unknown site {site}")
            };
            let _ = reply.send(Err(AcceptFailure::Site(why)));
            return;
        };
        let accepted = match detector.accept(alert) {
            Ok(a) => a,
            Err(e) => {
                let _ = reply.send(Err(AcceptFailure::Refused(e)));
                return;
            }
        };
        let baseline = match detector.baseline().to_json() {
            Ok(json) => json,
            Err(e) => {
                let _ = reply.send(Err(AcceptFailure::Store(e.to_string())));
                return;
            }
        };
        tracing::info!(
            site,
            alert = alert_id,
            by = who,
            detector = alert.detector.as_str(),
            kind = alert.kind,
            changes = accepted.changes.len(),
            "alert marked as normal: the baseline takes it in"
        );
        out.acceptances.push(Acceptance {
            entry: AuditEntry {
                id: 0,
                site: site.to_owned(),
                action: AuditAction::Normal,
                alert_id: Some(alert_id),
                detector: alert.detector.as_str().to_owned(),
                kind: alert.kind.clone(),
                subject: alert.subject.clone(),
                who,
                unix_ms: now_ms,
                reason,
                changes: serde_json::to_value(&accepted).unwrap_or_default(),
            },
            baseline,
            reply,
        });
    }

    /// Hands `alerts` of `site` to the store, with the drill marking and the operator's
    /// criticality of the addresses they name.
    fn file(&self, site: &str, alerts: Vec<Alert>, now_ms: u64, out: &mut Output) {
        if alerts.is_empty() {
            return;
        }
        let criticality = alerts
            .iter()
            .flat_map(|a| {
                [a.src_ip, a.dst_ip, a.asset.as_deref().and_then(asset_ip)]
                    .into_iter()
                    .flatten()
            })
            .filter_map(|ip| {
                let c = self.inventory.get(site, &ip)?.criticality;
                (c != Criticality::default()).then(|| (ip.to_string(), c))
            })
            .collect();
        out.alerts.push(SiteAlerts {
            exercise: self.exercising(site, now_ms),
            site: site.to_owned(),
            alerts,
            criticality,
        });
    }

    fn exercising(&self, site: &str, now_ms: u64) -> bool {
        self.exercise_until.get(site).is_some_and(|&u| now_ms < u)
    }

    fn observe_one(&mut self, site: &str, event: &Event, out: &mut Output) {
        let ts = event.ts();
        let due = matches!(
            self.sites.get(site),
            Some(SiteState::Learning { until_ts: Some(until), .. }) if ts >= *until
        );
        if due && let Err(error) = self.finish_learning(site, out) {
            tracing::warn!(site, error, "learning goes on");
        }
        let period = self.learning_period_us;
        let state = self
            .sites
            .entry(site.to_owned())
            .or_insert_with(|| SiteState::Learning {
                learner: Box::new(Learner::new(self.config.clone()).with_site(site)),
                until_ts: None,
                events: 0,
            });
        match state {
            SiteState::Learning {
                learner,
                until_ts,
                events,
            } => {
                until_ts.get_or_insert_with(|| ts.saturating_add_micros(period));
                learner.observe(event);
                *events += 1;
            }
            SiteState::Detecting { detector, events } => {
                detector.observe(event);
                *events += 1;
            }
        }
    }

    /// Ends `site`'s learning: its baseline goes to `out`, and it detects. Err when there is
    /// nothing learned.
    fn finish_learning(&mut self, site: &str, out: &mut Output) -> Result<(), String> {
        let Some(SiteState::Learning {
            learner, events, ..
        }) = self.sites.remove(site)
        else {
            return Err(format!("site {site} is not learning"));
        };
        if events == 0 {
            self.sites.insert(
                site.to_owned(),
                SiteState::Learning {
                    learner,
                    until_ts: None,
                    events,
                },
            );
            return Err(format!(
                "site {site} has learned nothing yet: no events since learning began"
            ));
        }
        let baseline = learner.finish();
        match baseline.to_json() {
            Ok(json) => out.baselines.push((site.to_owned(), json)),
            Err(e) => tracing::error!(site, error = %e, "cannot encode the baseline"),
        }
        tracing::info!(
            site,
            events = baseline.learned.events,
            "learning over: baseline learned, detecting"
        );
        let detector = Detector::new(baseline, self.config.clone()).map_err(|e| {
            tracing::error!(site, error = %e, "cannot build a detector");
            e.to_string()
        })?;
        self.sites.insert(
            site.to_owned(),
            SiteState::Detecting {
                detector: Box::new(detector),
                events: 0,
            },
        );
        Ok(())
    }

    fn set_mode(
        &mut self,
        site: &str,
        mode: Mode,
        now_ms: u64,
        out: &mut Output,
    ) -> Result<SiteStatus, String> {
        if !lock(&self.status).contains_key(site) {
            return Err(format!("unknown site {site}"));
        }
        match (mode, self.sites.get(site)) {
            (Mode::Detecting, Some(SiteState::Detecting { .. })) => {}
            (Mode::Detecting, _) => self.finish_learning(site, out)?,
            (Mode::Learning, _) => {
                // Alerts raised so far are stored before the detector goes.
                let alerts = self.drain(site);
                self.file(site, alerts, now_ms, out);
                tracing::info!(site, "learning again, from the next event");
                self.relearning.remove(site);
                if let Some(st) = self.stats.site(site) {
                    st.set_baseline_bytes(0);
                }
                self.sites.insert(
                    site.to_owned(),
                    SiteState::Learning {
                        learner: Box::new(Learner::new(self.config.clone()).with_site(site)),
                        until_ts: None,
                        events: 0,
                    },
                );
            }
        }
        self.publish(site);
        lock(&self.status)
            .get(site)
            .cloned()
            .ok_or_else(|| format!("unknown site {site}"))
    }

    /// Copies a site's state to the shared status (for the API and the metrics).
    fn publish(&self, site: &str) {
        let mut status = lock(&self.status);
        let Some(s) = status.get_mut(site) else {
            return;
        };
        match self.sites.get(site) {
            None => {}
            Some(SiteState::Learning {
                learner,
                until_ts,
                events,
            }) => {
                s.mode = Mode::Learning;
                s.learning_until = *until_ts;
                s.learned_events = learner.events();
                s.events = *events;
            }
            Some(SiteState::Detecting { detector, events }) => {
                s.mode = Mode::Detecting;
                s.learning_until = None;
                s.learned_events = detector.baseline().learned.events;
                s.events = *events;
            }
        }
        s.exercise_until_unix_ms = self.exercise_until.get(site).copied();
        s.relearning = self.relearning.get(site).map(|r| RelearnStatus {
            scope: describe_scope(&r.scope),
            until: r.until_ts,
            events: r.events,
        });
        if let Some(st) = self.stats.site(site) {
            st.set_learning(s.mode == Mode::Learning);
        }
    }

    /// Drains every detecting site (at shutdown).
    fn drain_all(&mut self, now_ms: u64, out: &mut Output) {
        let sites: Vec<String> = self.sites.keys().cloned().collect();
        for site in sites {
            let alerts = self.drain(&site);
            self.file(&site, alerts, now_ms, out);
        }
        out.assets.extend(self.inventory.take_changed());
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts detection: loads the latest baseline of every configured site (those sites detect
/// at once, the others learn from their first event) and the inventory, then runs the task.
pub(crate) async fn start(
    section: &DetectionSection,
    store: Arc<StoreHandle>,
    stats: Arc<IntakeStats>,
    sites: impl IntoIterator<Item = String>,
    on_change: Option<OnChange>,
) -> Result<(DetectionQueue, DetectionControl, JoinHandle<()>), StoreError> {
    // Observations (info) are stored and shown, never filed into incidents.
    let config = DetectConfig {
        min_severity: Severity::Info,
        ..DetectConfig::default()
    };
    let mut states = BTreeMap::new();
    let sites: Vec<String> = sites.into_iter().collect();
    let status: BTreeMap<String, SiteStatus> = sites
        .iter()
        .map(|s| {
            (
                s.clone(),
                SiteStatus {
                    site: s.clone(),
                    mode: Mode::Learning,
                    learning_until: None,
                    learned_events: 0,
                    events: 0,
                    exercise_until_unix_ms: None,
                    relearning: None,
                },
            )
        })
        .collect();
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
                    s.set_baseline_bytes(json.len() as u64);
                }
                states.insert(
                    site,
                    SiteState::Detecting {
                        detector: Box::new(d),
                        events: 0,
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
    let mut inventory =
        Inventory::new(usize::try_from(section.max_assets_per_site).unwrap_or(10_000));
    inventory.load(store.call(|s| s.assets(None)).await?);
    // Incidents still open from before a restart count in the gauge from the start.
    stats.set_open_incidents(&store.call(|s| s.open_incident_counts()).await?);
    let engine = Engine {
        config,
        // Validated: (0, a year], so whole microseconds fit.
        learning_period_us: (section.learning_period_seconds * 1e6) as i64,
        sites: states,
        inventory,
        exercise_until: BTreeMap::new(),
        relearning: BTreeMap::new(),
        stats: Arc::clone(&stats),
        status: Arc::new(Mutex::new(status)),
    };
    for site in &sites {
        engine.publish(site);
    }
    let (control_tx, control_rx) = mpsc::channel(16);
    let control = DetectionControl {
        tx: control_tx,
        status: Arc::clone(&engine.status),
    };
    let capacity = usize::try_from(section.queue_batches).unwrap_or(64);
    let (tx, rx) = mpsc::channel(capacity);
    let context = Context {
        store,
        stats: Arc::clone(&stats),
        on_change,
        policy: Policy {
            group_window_us: (section.incident_window_seconds * 1e6) as i64,
        },
    };
    let interval = seconds(section.inventory_store_interval_seconds);
    // Storing runs beside detecting: the engine goes on with the next batch while the last
    // one's alerts wait their turn in the storage queue (shared with the intake).
    let (out_tx, out_rx) = mpsc::channel(64);
    let persister = tokio::spawn(persist_all(context, out_rx));
    let task = tokio::spawn(async move {
        run(engine, rx, control_rx, out_tx, interval).await;
        if let Err(e) = persister.await {
            tracing::error!(error = %e, "storing detections failed");
        }
    });
    let queue = DetectionQueue {
        tx: std::sync::Mutex::new(Some(tx)),
        wait: seconds(section.queue_wait_seconds),
        stats,
        warned: AtomicBool::new(false),
    };
    Ok((queue, control, task))
}

/// What storing the output needs.
struct Context {
    store: Arc<StoreHandle>,
    stats: Arc<IntakeStats>,
    on_change: Option<OnChange>,
    policy: Policy,
}

/// What a step works on.
enum Step {
    Batch(DetectBatch),
    Control(Control),
    /// Store the inventory's changes.
    Tick,
}

/// Until the queue is closed and drained: detect each batch (off the async threads), answer
/// the API, store the inventory on the timer, store what comes out; at the end, drain all.
async fn run(
    mut engine: Engine,
    mut rx: mpsc::Receiver<DetectBatch>,
    mut control: mpsc::Receiver<Control>,
    persist: mpsc::Sender<(Output, u64)>,
    interval: Duration,
) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await;
    loop {
        let step = tokio::select! {
            biased;
            c = control.recv(), if !control.is_closed() => match c {
                Some(c) => Step::Control(c),
                None => continue,
            },
            b = rx.recv() => match b {
                Some(b) => Step::Batch(b),
                None => break,
            },
            _ = timer.tick() => Step::Tick,
        };
        let now = unix_ms();
        let mut out = Output::default();
        match step {
            Step::Batch(b) => {
                let done = tokio::task::spawn_blocking(move || {
                    let mut out = Output::default();
                    engine.observe(b, now, &mut out);
                    (engine, out)
                })
                .await;
                match done {
                    Ok((e, o)) => {
                        engine = e;
                        out = o;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "detection step failed; detection stopped");
                        return;
                    }
                }
            }
            Step::Tick => out.assets = engine.inventory.take_changed(),
            Step::Control(c) => match c {
                Control::SetMode(site, mode, reply) => {
                    let _ = reply.send(engine.set_mode(&site, mode, now, &mut out));
                }
                Control::Exercise(site, until, reply) => {
                    let known = lock(&engine.status).contains_key(&site);
                    if known {
                        match until {
                            Some(u) => engine.exercise_until.insert(site.clone(), u),
                            None => engine.exercise_until.remove(&site),
                        };
                        engine.publish(&site);
                        tracing::info!(site, until_unix_ms = ?until, "exercise mode set");
                    }
                    let status = lock(&engine.status).get(&site).cloned();
                    let _ = reply.send(status.ok_or_else(|| format!("unknown site {site}")));
                }
                Control::Annotate {
                    site,
                    ip,
                    criticality,
                    description,
                    reply,
                } => {
                    let asset = engine
                        .inventory
                        .annotate(&site, ip, criticality, description);
                    out.assets = engine.inventory.take_changed();
                    let _ = reply.send(asset);
                }
                Control::Accept {
                    alert_id,
                    site,
                    alert,
                    who,
                    reason,
                    reply,
                } => engine.accept(&site, alert_id, &alert, who, reason, now, &mut out, reply),
                Control::Relearn {
                    site,
                    scope,
                    seconds,
                    reply,
                } => {
                    let period = seconds.map_or(engine.learning_period_us, |s| (s * 1e6) as i64);
                    let _ = reply.send(engine.relearn(&site, scope, period));
                }
            },
        }
        if out.is_empty() {
            continue;
        }
        if persist.send((out, now)).await.is_err() {
            tracing::error!("the detection store task is gone; detection stopped");
            return;
        }
    }
    let mut out = Output::default();
    let now = unix_ms();
    engine.drain_all(now, &mut out);
    let _ = persist.send((out, now)).await;
}

/// Stores what detection produced, in order, until detection ends.
async fn persist_all(cx: Context, mut rx: mpsc::Receiver<(Output, u64)>) {
    while let Some((out, now)) = rx.recv().await {
        persist(&cx, out, now).await;
    }
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
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// What one store transaction did.
#[derive(Debug, Default)]
struct Filed {
    changes: Vec<Change>,
    /// New alerts by (detector, severity).
    new_alerts: BTreeMap<(&'static str, &'static str), u64>,
    /// Open and acknowledged incidents by severity, after this step (when it filed alerts).
    open: Option<BTreeMap<Severity, u64>>,
    opened: u64,
}

async fn persist(cx: &Context, out: Output, now_ms: u64) {
    let stats = &cx.stats;
    for (site, json) in out.baselines {
        match patiently(|| {
            cx.store
                .store_baseline(&site, now_ms, BASELINE_VERSION, json.clone())
        })
        .await
        {
            Ok(()) => {
                stats::add(&stats.baselines_stored, 1);
                if let Some(s) = stats.site(&site) {
                    s.set_baseline_bytes(json.len() as u64);
                }
            }
            Err(e) => tracing::error!(
                site,
                error = %e,
                "cannot store the baseline: the site detects now but learns again after a restart"
            ),
        }
    }
    for a in out.acceptances {
        let answer = store_acceptance(cx, a.entry, a.baseline, now_ms).await;
        let _ = a.reply.send(answer);
    }
    if out.alerts.is_empty() && out.assets.is_empty() {
        return;
    }
    let n: usize = out.alerts.iter().map(|s| s.alerts.len()).sum();
    let work = Arc::new((out.alerts, out.assets, cx.policy));
    let filed = patiently(|| {
        let work = Arc::clone(&work);
        cx.store.call(move |s| {
            transaction(s, |s| {
                let (alerts, assets, policy) = &*work;
                file_all(s, alerts, assets, *policy, now_ms)
            })
        })
    })
    .await;
    match filed {
        Ok(filed) => {
            for ((detector, severity), k) in &filed.new_alerts {
                stats.add_alerts(detector, severity, *k);
            }
            if let Some(open) = &filed.open {
                stats.set_open_incidents(open);
            }
            stats::add(&stats.incidents_opened, filed.opened);
            if let Some(received) = out.received_unix_ms {
                stats.observe_alert_latency(unix_ms().saturating_sub(received));
            }
            if let Some(hook) = &cx.on_change {
                for c in &filed.changes {
                    hook(c);
                }
            }
            for c in filed
                .changes
                .iter()
                .filter(|c| c.what != incidents::ChangeKind::Updated)
            {
                tracing::info!(
                    site = c.incident.site,
                    incident = c.incident.id,
                    severity = c.incident.severity.as_str(),
                    change = c.what.as_str(),
                    "{}",
                    c.incident.title
                );
            }
        }
        Err(e) => {
            tracing::error!(alerts = n, error = %e, "cannot store alerts and incidents; lost")
        }
    }
}

/// Stores an acceptance in one transaction: the baseline that took the finding in, the
/// audit entry, the alert's mark, and a note on the alert's incident (its timeline tells
/// who found the finding normal and why).
async fn store_acceptance(
    cx: &Context,
    entry: AuditEntry,
    baseline: String,
    now_ms: u64,
) -> Result<AuditEntry, AcceptFailure> {
    let bytes = baseline.len() as u64;
    let work = Arc::new((entry, baseline));
    let stored = patiently(|| {
        let work = Arc::clone(&work);
        cx.store.call(move |s| {
            transaction(s, |s| {
                let (entry, baseline) = &*work;
                s.store_baseline(&entry.site, now_ms, BASELINE_VERSION, baseline)?;
                let mut entry = entry.clone();
                entry.id = s.record_audit(&entry)?;
                let mut noted = None;
                if let Some(alert_id) = entry.alert_id {
                    s.mark_alert_accepted(alert_id, entry.id)?;
                    let incident = s.alert(alert_id)?.and_then(|a| a.incident_id);
                    if let Some(mut inc) = incident.map(|id| s.incident(id)).transpose()?.flatten()
                    {
                        let note = format!(
                            "Alert {alert_id} ({} {}) marked as normal: {} (audit entry {})",
                            entry.detector, entry.kind, entry.reason, entry.id
                        );
                        if incidents::act(
                            &mut inc,
                            &incidents::Action::Note,
                            &entry.who,
                            Some(&note),
                            now_ms,
                        )
                        .is_ok()
                        {
                            s.save_incident(&inc)?;
                            noted = Some(inc);
                        }
                    }
                }
                Ok((entry, noted))
            })
        })
    })
    .await;
    match stored {
        Ok((entry, noted)) => {
            stats::add(&cx.stats.baselines_stored, 1);
            if let Some(s) = cx.stats.site(&entry.site) {
                s.set_baseline_bytes(bytes);
            }
            if let (Some(hook), Some(incident)) = (&cx.on_change, noted) {
                hook(&Change {
                    incident,
                    what: incidents::ChangeKind::Updated,
                });
            }
            Ok(entry)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store an alert marked as normal");
            Err(AcceptFailure::Store(e.to_string()))
        }
    }
}

/// A finding about a device or channel being relearned: recorded, not paging.
fn relearning_observation(a: &mut Alert) {
    if a.severity > Severity::Info {
        a.severity = Severity::Info;
        a.score = Severity::Info.base_score();
        a.summary
            .push_str(" (Raised while the device is being relearned.)");
        a.evidence
            .insert("relearning".into(), serde_json::Value::Bool(true));
    }
}

fn file_all(
    s: &mut dyn Store,
    alerts: &[SiteAlerts],
    assets: &[Asset],
    policy: Policy,
    now_ms: u64,
) -> Result<Filed, StoreError> {
    let mut filed = Filed::default();
    for a in assets {
        s.save_asset(a)?;
    }
    for batch in alerts {
        let crit = |ip: &str| batch.criticality.get(ip).copied().unwrap_or_default();
        let at = Filing {
            site: &batch.site,
            exercise: batch.exercise,
            criticality: &crit,
            policy,
            now_ms,
        };
        for alert in &batch.alerts {
            let up = s.upsert_alert(&batch.site, alert, now_ms)?;
            if up.new {
                *filed
                    .new_alerts
                    .entry((alert.detector.as_str(), alert.severity.as_str()))
                    .or_default() += 1;
            }
            if let Some(c) = incidents::file(s, &at, up, alert)? {
                if c.what == incidents::ChangeKind::Opened {
                    filed.opened += 1;
                }
                // One change per incident per step: the latest state, the strongest kind.
                match filed
                    .changes
                    .iter_mut()
                    .find(|x| x.incident.id == c.incident.id)
                {
                    Some(x) => {
                        let what = if x.what == incidents::ChangeKind::Updated {
                            c.what
                        } else {
                            x.what
                        };
                        *x = Change { what, ..c };
                    }
                    None => filed.changes.push(c),
                }
            }
        }
    }
    if !alerts.is_empty() {
        filed.open = Some(s.open_incident_counts()?);
    }
    Ok(filed)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    fn engine() -> Engine {
        let stats = Arc::new(IntakeStats::with_sites(["plant".to_string()]));
        let status = BTreeMap::from([(
            "plant".to_string(),
            SiteStatus {
                site: "plant".into(),
                mode: Mode::Learning,
                learning_until: None,
                learned_events: 0,
                events: 0,
                exercise_until_unix_ms: None,
                relearning: None,
            },
        )]);
        Engine {
            config: DetectConfig::default(),
            learning_period_us: 10_000_000,
            sites: BTreeMap::new(),
            inventory: Inventory::new(100),
            exercise_until: BTreeMap::new(),
            relearning: BTreeMap::new(),
            stats,
            status: Arc::new(Mutex::new(status)),
        }
    }

    fn batch(events: Vec<Event>) -> DetectBatch {
        DetectBatch {
            site: "plant".into(),
            events,
            received_unix_ms: 1,
            health: Vec::new(),
            _reservation: crate::budget::Reservation::empty(),
        }
    }

    #[test]
    fn learning_ends_in_event_time_and_alerts_come_with_the_batch() {
        let mut e = engine();
        let mut out = Output::default();
        // Out of order within the batch: sorted first, so 9 s is still learning.
        e.observe(
            batch(vec![write(9, "10.0.0.1"), write(0, "10.0.0.1")]),
            5,
            &mut out,
        );
        assert!(out.baselines.is_empty());
        assert!(e.stats.site("plant").unwrap().learning());
        assert_eq!(e.status.lock().unwrap()["plant"].learned_events, 2);
        // 10 s after the first event: learning ends, this event is detected.
        let mut out = Output::default();
        e.observe(
            batch(vec![write(10, "10.0.0.1"), write(11, "10.0.0.99")]),
            5,
            &mut out,
        );
        assert_eq!(out.baselines.len(), 1);
        assert!(!e.stats.site("plant").unwrap().learning());
        let Baseline { learned, .. } = Baseline::from_json(&out.baselines[0].1).unwrap();
        assert_eq!(learned.events, 2);
        // The new host's alert comes out with this batch, not at some later flush.
        assert_eq!(out.alerts.len(), 1);
        assert!(
            out.alerts[0]
                .alerts
                .iter()
                .any(|a| a.src_ip.map(|ip| ip.to_string()) == Some("10.0.0.99".into()))
        );
        assert_eq!(out.received_unix_ms, Some(1));
        // The inventory saw both hosts.
        assert_eq!(e.inventory.counts()["plant"], 3);
    }

    #[test]
    fn the_api_switches_modes_and_marks_exercises() {
        let mut e = engine();
        let mut out = Output::default();
        // Nothing learned yet: cannot detect.
        assert!(e.set_mode("plant", Mode::Detecting, 5, &mut out).is_err());
        assert!(
            e.set_mode("elsewhere", Mode::Learning, 5, &mut out)
                .is_err()
        );
        e.observe(batch(vec![write(0, "10.0.0.1")]), 5, &mut out);
        let s = e.set_mode("plant", Mode::Detecting, 5, &mut out).unwrap();
        assert_eq!(s.mode, Mode::Detecting);
        assert_eq!(out.baselines.len(), 1);
        e.exercise_until.insert("plant".into(), 100);
        let mut out = Output::default();
        e.observe(batch(vec![write(1, "10.0.0.66")]), 50, &mut out);
        assert!(out.alerts[0].exercise);
        let mut out = Output::default();
        e.observe(batch(vec![write(2, "10.0.0.67")]), 150, &mut out);
        assert!(!out.alerts[0].exercise);
        let s = e.set_mode("plant", Mode::Learning, 5, &mut out).unwrap();
        assert_eq!(s.mode, Mode::Learning);
        assert_eq!(s.learned_events, 0);
    }

    #[test]
    fn a_device_relearned_is_observed_meanwhile_and_known_after() {
        let mut e = engine();
        let mut out = Output::default();
        e.observe(batch(vec![write(0, "10.0.0.1")]), 5, &mut out);
        e.set_mode("plant", Mode::Detecting, 5, &mut out).unwrap();
        let rogue: IpAddr = "10.0.0.66".parse().unwrap();
        let s = e.relearn("plant", Scope::Asset(rogue), 5_000_000).unwrap();
        assert_eq!(s.relearning.unwrap().scope, "asset 10.0.0.66");
        assert!(e.relearn("plant", Scope::Asset(rogue), 1_000_000).is_err());
        // Meanwhile the device's findings are observations.
        let mut out = Output::default();
        e.observe(batch(vec![write(1, "10.0.0.66")]), 5, &mut out);
        let alerts = &out.alerts[0].alerts;
        assert!(!alerts.is_empty());
        assert!(alerts.iter().all(|a| a.severity == Severity::Info
            && a.evidence.get("relearning") == Some(&serde_json::Value::Bool(true))));
        // At the end the baseline is stored, and what the device did is known.
        let mut out = Output::default();
        e.observe(batch(vec![write(7, "10.0.0.1")]), 5, &mut out);
        assert_eq!(out.baselines.len(), 1);
        assert!(e.status.lock().unwrap()["plant"].relearning.is_none());
        let mut out = Output::default();
        e.observe(batch(vec![write(8, "10.0.0.66")]), 5, &mut out);
        assert!(out.alerts.is_empty(), "{:#?}", out.alerts);
    }

    #[test]
    fn an_alert_marked_normal_waits_for_its_storage_and_a_learning_site_refuses() {
        let mut e = engine();
        let mut out = Output::default();
        e.observe(batch(vec![write(0, "10.0.0.1")]), 5, &mut out);
        let (reply, mut answer) = oneshot::channel();
        let mut out = Output::default();
        let alert = Alert {
            ts: Timestamp::from_micros(0),
            last_ts: Timestamp::from_micros(0),
            count: 1,
            detector: mamori_models::detect::DetectorName::PollingCycle,
            kind: "extra_requests".into(),
            severity: Severity::Medium,
            summary: String::new(),
            src_ip: None,
            dst_ip: None,
            asset: None,
            subject: "s".into(),
            score: 0.5,
            evidence: Default::default(),
            attack: Vec::new(),
        };
        e.accept(
            "plant",
            1,
            &alert,
            "alice".into(),
            "why".into(),
            5,
            &mut out,
            reply,
        );
        assert!(matches!(answer.try_recv(), Ok(Err(AcceptFailure::Site(_)))));
        e.set_mode("plant", Mode::Detecting, 5, &mut out).unwrap();
        let (reply, mut answer) = oneshot::channel();
        let mut out = Output::default();
        e.accept(
            "plant",
            1,
            &alert,
            "alice".into(),
            "why".into(),
            5,
            &mut out,
            reply,
        );
        assert!(answer.try_recv().is_err(), "answered once stored");
        let [a] = &out.acceptances[..] else {
            panic!("{out:#?}")
        };
        assert_eq!(
            (a.entry.who.as_str(), a.entry.reason.as_str()),
            ("alice", "why")
        );
        assert!(
            Baseline::from_json(&a.baseline)
                .unwrap()
                .accepted
                .contains(&alert)
        );
    }
}
