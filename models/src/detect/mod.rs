//! Baseline-learned detectors. This module owns the learning and detection modes, the
//! versioned baseline file, relearning of one asset or channel, and the alert contract.
//!
//! A site first *learns*: a [`Learner`] observes events (from a period of traffic or a given
//! capture) and [`Learner::finish`] gives a [`Baseline`], which serialises to a versioned JSON
//! file and loads back identically. A [`Detector`] built from the baseline then *detects*:
//! it observes events and returns scored, aggregated [`Alert`]s with their evidence.
//!
//! The detectors, one module each: [`allowlist`] (hosts, paths, functions, addresses),
//! [`cycle`] (polling periods: missing, extra and flooding requests), [`values`] (process
//! values and set-points) and [`protocol`] (agent anomaly flags, exception bursts,
//! unanswered requests, scans). Everything is deterministic: sorted maps, event time only,
//! no randomness; the same events give byte-identical baselines and alerts.
//!
//! Events should be fed in timestamp order (the collector sorts them); small disorder only
//! costs precision.

pub mod accept;
pub mod alert;
pub mod allowlist;
pub mod attack;
pub mod cycle;
mod entries;
pub mod modbus;
pub mod protocol;
pub mod syslog;
pub mod values;
pub mod window;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use accept::{AcceptError, Accepted, AcceptedFindings, FindingKey};
pub use alert::{Alert, DetectorName, Evidence, Severity};
pub use allowlist::AllowlistBaseline;
pub use cycle::{CycleBaseline, CycleConfig};
pub use protocol::ProtocolBaseline;
pub use syslog::{SyslogBaseline, SyslogConfig};
pub use values::{ValueBaseline, ValueConfig};
pub use window::{WindowBaseline, WindowConfig, WindowModelKind};

use crate::event::Event;
use crate::time::Timestamp;

/// The baseline file's `format` field.
pub const BASELINE_FORMAT: &str = "mamori-baseline";
/// Bumped on any change to the baseline file that an older reader would misread.
pub const BASELINE_VERSION: u32 = 1;

/// Errors of the detection models.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("baseline is not valid JSON: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("not a Mamori baseline (format {0:?})")]
    Format(String),
    #[error("baseline version {found} is not supported (this build reads version {supported})")]
    Version { found: u32, supported: u32 },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Bounds on learned and tracked state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_hosts: usize,
    /// Transport paths (and per-path counters).
    pub max_paths: usize,
    /// (client, server, unit, function) entries, device tables and flag sets.
    pub max_functions: usize,
    /// Polling channels.
    pub max_channels: usize,
    /// Registers with learned values.
    pub max_registers: usize,
    /// Distinct alerts kept (repeats are folded and do not count).
    pub max_alerts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_hosts: 4096,
            max_paths: 65_536,
            max_functions: 65_536,
            max_channels: 65_536,
            max_registers: 262_144,
            max_alerts: 100_000,
        }
    }
}

/// What the limits refused: counted, so a truncated baseline says so.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overflow {
    pub hosts: u64,
    pub paths: u64,
    pub functions: u64,
    pub channels: u64,
    pub registers: u64,
}

impl Overflow {
    pub fn total(&self) -> u64 {
        self.hosts + self.paths + self.functions + self.channels + self.registers
    }
}

/// Detection configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    pub limits: Limits,
    /// Alerts below this severity are counted but not returned.
    pub min_severity: Severity,
    /// Repeats of an alert within this long after its last occurrence are folded into it.
    pub aggregate_window_us: i64,
    pub cycle: CycleConfig,
    pub values: ValueConfig,
    /// Traffic windows per channel and host.
    #[serde(default)]
    pub windows: WindowConfig,
    /// Syslog templates.
    #[serde(default)]
    pub syslog: SyslogConfig,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            limits: Limits::default(),
            min_severity: Severity::Low,
            aggregate_window_us: 600_000_000,
            cycle: CycleConfig::default(),
            values: ValueConfig::default(),
            windows: WindowConfig::default(),
            syslog: SyslogConfig::default(),
        }
    }
}

impl DetectConfig {
    /// Checks every field and reports every problem at once.
    pub fn validate(&self) -> Result<(), DetectError> {
        let mut problems = Vec::new();
        if self.aggregate_window_us < 0 {
            problems.push("aggregate_window_us must not be negative");
        }
        if !(0.0..=1.0).contains(&self.cycle.min_regular_ratio) {
            problems.push("cycle.min_regular_ratio must be within 0–1");
        }
        if !(0.0..1.0).contains(&self.cycle.early_ratio) {
            problems.push("cycle.early_ratio must be within 0–1");
        }
        if self.cycle.missing_periods == 0 {
            problems.push("cycle.missing_periods must be at least 1");
        }
        if self.cycle.min_intervals < 2 {
            problems.push("cycle.min_intervals must be at least 2");
        }
        self.values.problems(&mut problems);
        self.windows.problems(&mut problems);
        self.syslog.problems(&mut problems);
        if self.limits.max_alerts == 0 {
            problems.push("limits.max_alerts must be at least 1");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DetectError::Config(problems.join("; ")))
        }
    }
}

/// What to relearn without forgetting the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything involving this host (as client or server).
    Asset(IpAddr),
    /// One client's use of one function on one unit of one server.
    Channel {
        client: IpAddr,
        server: IpAddr,
        unit: u8,
        func: u8,
    },
}

impl Scope {
    /// Whether `event` belongs to this scope.
    pub fn matches(&self, event: &Event) -> bool {
        match (*self, event) {
            (Scope::Asset(ip), Event::Modbus(e)) => e.src_ip == ip || e.dst_ip == ip,
            (Scope::Asset(ip), Event::Flow(e)) => e.src_ip == ip || e.dst_ip == ip,
            (Scope::Asset(ip), Event::Syslog(e)) => e.src_ip == Some(ip),
            (
                Scope::Channel {
                    client,
                    server,
                    unit,
                    func,
                },
                Event::Modbus(e),
            ) => e.src_ip == client && e.dst_ip == server && e.unit == unit && e.func == func,
            (Scope::Channel { .. }, _) => false,
        }
    }
}

/// The period a baseline was learned over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedSpan {
    pub events: u64,
    pub first_ts: Option<Timestamp>,
    pub last_ts: Option<Timestamp>,
}

/// Everything learned about a site. Serialises to the versioned baseline file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Always [`BASELINE_FORMAT`].
    pub format: String,
    /// [`BASELINE_VERSION`] when written.
    pub version: u32,
    /// The site this baseline describes, when named.
    #[serde(default)]
    pub site: Option<String>,
    pub learned: LearnedSpan,
    pub overflow: Overflow,
    pub allowlist: AllowlistBaseline,
    pub cycles: CycleBaseline,
    pub values: ValueBaseline,
    pub protocol: ProtocolBaseline,
    /// Traffic-window models (absent in files written before them: nothing is scored).
    #[serde(default)]
    pub windows: WindowBaseline,
    /// Syslog templates and their rates.
    #[serde(default)]
    pub syslog: SyslogBaseline,
    /// Findings an operator accepted as normal that no model takes in ([`accept`]); left
    /// out of the file while empty, so a baseline without any reads in older versions.
    #[serde(default, skip_serializing_if = "AcceptedFindings::is_empty")]
    pub accepted: AcceptedFindings,
}

impl Baseline {
    /// The baseline file's text (compact JSON, one line, deterministic).
    pub fn to_json(&self) -> Result<String, DetectError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Reads a baseline file, checking its format and version.
    pub fn from_json(text: &str) -> Result<Baseline, DetectError> {
        // Check the header first, so that a future version says so instead of failing on
        // an unknown field.
        #[derive(Deserialize)]
        struct Header {
            format: String,
            version: u32,
        }
        let h: Header = serde_json::from_str(text)?;
        if h.format != BASELINE_FORMAT {
            return Err(DetectError::Format(h.format));
        }
        if h.version != BASELINE_VERSION {
            return Err(DetectError::Version {
                found: h.version,
                supported: BASELINE_VERSION,
            });
        }
        Ok(serde_json::from_str(text)?)
    }

    /// Forgets everything within `scope`.
    pub fn forget(&mut self, scope: &Scope) {
        self.allowlist.forget(scope);
        self.cycles.forget(scope);
        self.values.forget(scope);
        self.protocol.forget(scope);
        self.windows.forget(scope);
        self.syslog.forget(scope);
        self.accepted.forget(scope);
    }

    /// Relearns `scope` from `events` (only the events within it are used), keeping the rest
    /// of the baseline as it was.
    pub fn relearn<'a>(
        &mut self,
        scope: &Scope,
        events: impl IntoIterator<Item = &'a Event>,
        config: &DetectConfig,
    ) {
        let mut learner = Learner::new(config.clone());
        for e in events.into_iter().filter(|e| scope.matches(e)) {
            learner.observe(e);
        }
        self.replace_scope(scope, learner.finish());
    }

    /// Replaces what this baseline knows within `scope` by `fresh`, a baseline learned from
    /// the scope's events only (a site relearning one device while it detects the rest).
    pub fn replace_scope(&mut self, scope: &Scope, fresh: Baseline) {
        self.forget(scope);
        self.allowlist.merge(fresh.allowlist);
        self.cycles.merge(fresh.cycles);
        self.values.merge(fresh.values);
        self.protocol.merge(fresh.protocol);
        self.windows.merge(fresh.windows);
        self.syslog.merge(fresh.syslog);
        self.accepted.merge(fresh.accepted);
        self.learned.events += fresh.learned.events;
        self.learned.first_ts = min_opt(self.learned.first_ts, fresh.learned.first_ts);
        self.learned.last_ts = self.learned.last_ts.max(fresh.learned.last_ts);
    }
}

fn min_opt(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Learning mode: observes events and builds a [`Baseline`].
#[derive(Debug)]
pub struct Learner {
    config: DetectConfig,
    site: Option<String>,
    learned: LearnedSpan,
    overflow: Overflow,
    allowlist: AllowlistBaseline,
    cycles: cycle::CycleLearner,
    values: ValueBaseline,
    protocol: protocol::ProtocolLearner,
    windows: window::WindowLearner,
    syslog: syslog::SyslogLearner,
}

impl Learner {
    pub fn new(config: DetectConfig) -> Self {
        Learner {
            windows: window::WindowLearner::new(&config.windows),
            syslog: syslog::SyslogLearner::new(&config.syslog),
            config,
            site: None,
            learned: LearnedSpan::default(),
            overflow: Overflow::default(),
            allowlist: AllowlistBaseline::default(),
            cycles: cycle::CycleLearner::default(),
            values: ValueBaseline::default(),
            protocol: protocol::ProtocolLearner::default(),
        }
    }

    /// Names the site the baseline describes.
    /// Events observed so far.
    pub fn events(&self) -> u64 {
        self.learned.events
    }

    pub fn with_site(mut self, site: impl Into<String>) -> Self {
        self.site = Some(site.into());
        self
    }

    pub fn observe(&mut self, event: &Event) {
        let ts = event.ts();
        self.learned.events += 1;
        self.learned.first_ts = min_opt(self.learned.first_ts, Some(ts));
        self.learned.last_ts = self.learned.last_ts.max(Some(ts));
        let limits = &self.config.limits;
        match event {
            Event::Modbus(e) => {
                self.allowlist.learn_modbus(e, limits, &mut self.overflow);
                self.cycles.observe(e, limits, &mut self.overflow);
                self.values.learn(e, limits, &mut self.overflow);
                self.protocol.observe(e, limits, &mut self.overflow);
                self.windows.modbus(e);
            }
            Event::Flow(f) => {
                self.allowlist.learn_flow(f, limits, &mut self.overflow);
                self.windows.flow(f);
            }
            Event::Syslog(s) => {
                self.windows.other(ts);
                self.syslog.observe(s, &mut self.overflow);
            }
        }
    }

    pub fn finish(self) -> Baseline {
        let mut values = self.values;
        values.seal();
        let mut overflow = self.overflow;
        let windows = self.windows.finish(&mut overflow);
        let syslog = self.syslog.finish(&mut overflow);
        Baseline {
            format: BASELINE_FORMAT.to_owned(),
            version: BASELINE_VERSION,
            site: self.site,
            learned: self.learned,
            overflow,
            allowlist: self.allowlist,
            cycles: self.cycles.finish(&self.config.cycle),
            values,
            protocol: self.protocol.finish(),
            windows,
            syslog,
            accepted: AcceptedFindings::default(),
        }
    }
}

/// Counts of what a detection run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectSummary {
    pub events: u64,
    /// Alerts returned, by severity.
    pub by_severity: BTreeMap<Severity, u64>,
    /// Alerts returned, by detector.
    pub by_detector: BTreeMap<DetectorName, u64>,
    /// Alerts below the minimum severity, not returned.
    pub below_min_severity: u64,
    /// Distinct alerts lost to `limits.max_alerts`.
    pub dropped_alerts: u64,
    /// Keys the detectors could not track (state limits).
    pub untracked: u64,
    /// Traffic windows scored against a learned model.
    pub windows_scored: u64,
    /// Plain sentences about what could not be modelled or scored.
    pub notes: Vec<String>,
}

/// Detection mode: observes events against a [`Baseline`] and collects alerts.
#[derive(Debug)]
pub struct Detector {
    config: DetectConfig,
    baseline: Baseline,
    book: alert::AlertBook,
    cycles: cycle::CycleDetector,
    values: values::ValueDetector,
    protocol: protocol::ProtocolDetector,
    windows: window::WindowDetector,
    syslog: syslog::SyslogDetector,
    events: u64,
    last_ts: Option<Timestamp>,
}

impl Detector {
    pub fn new(baseline: Baseline, config: DetectConfig) -> Result<Self, DetectError> {
        config.validate()?;
        let mut book = alert::AlertBook::new(config.aggregate_window_us, config.limits.max_alerts);
        for key in baseline.accepted.findings.keys() {
            book.accept(key.clone());
        }
        Ok(Detector {
            book,
            cycles: cycle::CycleDetector::new(&baseline.cycles, config.cycle.clone()),
            values: values::ValueDetector::new(&baseline.values, config.values.clone()),
            protocol: protocol::ProtocolDetector::new(config.limits.max_paths),
            windows: window::WindowDetector::new(&baseline.windows, &config.windows),
            syslog: syslog::SyslogDetector::new(&baseline.syslog, &config.syslog),
            baseline,
            config,
            events: 0,
            last_ts: None,
        })
    }

    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    /// An operator's "this is normal" for `alert` ([`Baseline::accept`]), applied to this
    /// detector's baseline and live state: the same event raises nothing afterwards (or an
    /// observation, for a finding kept as accepted). The alert's aggregation ends, so a
    /// later repeat is judged afresh instead of growing the alert that was accepted.
    pub fn accept(&mut self, alert: &Alert) -> Result<Accepted, AcceptError> {
        // Template ids are the miner's: the baseline takes the miner this detector has been
        // running (the learned one plus what it mined since), so the alert's id means the same.
        if alert.detector == DetectorName::Syslog
            && let Some(app) = alert.evidence.get("app_name").and_then(|v| v.as_str())
            && let Some(miner) = self.syslog.miner(app)
        {
            self.baseline
                .syslog
                .miners
                .insert(app.to_owned(), miner.clone());
        }
        let accepted = self.baseline.accept(alert)?;
        for change in &accepted.changes {
            if let Some(key) = change.register() {
                self.values.refresh(&key, &self.baseline.values);
            }
            if let accept::Change::Finding {
                detector,
                kind,
                subject,
            } = change
            {
                self.book.accept(FindingKey {
                    detector: *detector,
                    kind: kind.clone(),
                    subject: subject.clone(),
                });
            }
        }
        self.book.close(&alert.kind, &alert.subject);
        Ok(accepted)
    }

    pub fn observe(&mut self, event: &Event) {
        self.events += 1;
        let ts = event.ts();
        self.last_ts = self.last_ts.max(Some(ts));
        self.cycles.tick(ts, &mut self.book);
        self.windows
            .tick(&self.baseline.windows, ts, &mut self.book);
        match event {
            Event::Modbus(e) => {
                self.windows.modbus(e);
                let novelty = allowlist::AllowlistDetector::modbus(
                    &self.baseline.allowlist,
                    e,
                    &mut self.book,
                );
                self.cycles.observe(e, &mut self.book);
                self.values.observe(e, &mut self.book);
                self.protocol
                    .observe(&self.baseline.protocol, e, novelty, &mut self.book);
            }
            Event::Flow(f) => {
                allowlist::AllowlistDetector::flow(
                    &self.baseline.allowlist,
                    self.baseline.learned.last_ts,
                    f,
                    &mut self.book,
                );
                self.windows.flow(f);
            }
            Event::Syslog(s) => self
                .syslog
                .observe(&self.baseline.syslog, s, &mut self.book),
        }
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let w = &self.baseline.windows;
        if !w.skipped.is_empty() {
            notes.push(format!(
                "traffic windows: {} channels or hosts had too few complete windows during learning (fewer than {}) and are not modelled",
                w.skipped.len(),
                self.config.windows.min_windows
            ));
        }
        if self.windows.unmodelled > 0 {
            notes.push(format!(
                "traffic windows: {} windows of channels or hosts without a model were not scored",
                self.windows.unmodelled
            ));
        }
        if self.windows.refit_failed > 0 {
            notes.push(format!(
                "traffic windows: {} one-class SVM models could not be refitted and are not scored",
                self.windows.refit_failed
            ));
        }
        notes
    }

    /// Online detection: the alerts at or above the minimum severity that are new, or have
    /// grown (count, last occurrence, severity), since the last call, in order of first
    /// occurrence. An alert keeps its identity (`detector`, `kind`, `subject`, `ts`) while it
    /// grows, so a consumer can update what it stored. Alerts whose aggregation window has
    /// closed by the latest event time are let go, so a long-running detector stays bounded;
    /// [`Detector::finish`] then returns only the alerts still held.
    pub fn drain(&mut self) -> Vec<Alert> {
        let Some(now) = self.last_ts else {
            return Vec::new();
        };
        let min = self.config.min_severity;
        let mut alerts = self.book.drain(now);
        alerts.retain(|a| a.severity >= min);
        alerts
    }

    /// Ends detection: raises what became due by the last event's time, and returns the
    /// alerts at or above the minimum severity, in order of first occurrence.
    pub fn finish(mut self) -> (Vec<Alert>, DetectSummary) {
        if let Some(ts) = self.last_ts {
            self.cycles.tick(ts, &mut self.book);
        }
        self.syslog.finish(&self.baseline.syslog, &mut self.book);
        self.values.flush(None, &mut self.book);
        let notes = self.notes();
        let dropped = self.book.dropped;
        let all = self.book.into_sorted();
        let mut summary = DetectSummary {
            events: self.events,
            dropped_alerts: dropped,
            untracked: self.protocol.overflow + self.windows.overflow() + self.syslog.overflow,
            windows_scored: self.windows.scored,
            notes,
            ..DetectSummary::default()
        };
        let alerts: Vec<Alert> = all
            .into_iter()
            .filter(|a| {
                if a.severity < self.config.min_severity {
                    summary.below_min_severity += 1;
                    false
                } else {
                    *summary.by_severity.entry(a.severity).or_default() += 1;
                    *summary.by_detector.entry(a.detector).or_default() += 1;
                    true
                }
            })
            .collect();
        (alerts, summary)
    }
}
