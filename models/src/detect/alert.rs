//! The alert contract (one JSON object per line, `type: "alert"`) and the alert book that
//! aggregates repeats of the same kind on the same subject into one alert with a count.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::accept::FindingKey;
use crate::time::Timestamp;

/// How urgent an alert is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth recording, not worth a human's attention on its own.
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The base score of an alert of this severity (0–1).
    pub fn base_score(self) -> f64 {
        match self {
            Severity::Info => 0.1,
            Severity::Low => 0.3,
            Severity::Medium => 0.5,
            Severity::High => 0.8,
            Severity::Critical => 0.95,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Which detector raised an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorName {
    Allowlist,
    PollingCycle,
    ProcessValue,
    Protocol,
    Syslog,
    /// Per-window traffic features of a channel or host ([`super::window`]).
    TrafficWindow,
    /// The asset inventory (kept by the collector): a device's identity changed.
    Inventory,
    /// The collector's intake: what the delivery path itself shows (an agent's numbering
    /// started again under a new spool, a sequence number used twice).
    Intake,
}

impl DetectorName {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorName::Allowlist => "allowlist",
            DetectorName::PollingCycle => "polling_cycle",
            DetectorName::ProcessValue => "process_value",
            DetectorName::Protocol => "protocol",
            DetectorName::Syslog => "syslog",
            DetectorName::TrafficWindow => "traffic_window",
            DetectorName::Inventory => "inventory",
            DetectorName::Intake => "intake",
        }
    }
}

/// The values that made an alert fire and the baseline they were compared with.
pub type Evidence = BTreeMap<String, serde_json::Value>;

/// One alert. Repeats of the same `kind` on the same `subject` within the aggregation window
/// are folded into it: `count` grows, `last_ts` moves and `severity`/`score` keep the maximum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "alert")]
pub struct Alert {
    /// The first occurrence.
    pub ts: Timestamp,
    /// The last occurrence folded into this alert.
    pub last_ts: Timestamp,
    /// Occurrences folded into this alert.
    pub count: u64,
    pub detector: DetectorName,
    /// What was detected, `snake_case` (`new_host`, `missing_polls`, `setpoint_out_of_range`...).
    pub kind: String,
    pub severity: Severity,
    /// One plain sentence for an operator.
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<IpAddr>,
    /// The device concerned (`ip` or `ip/unit`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// What identifies "the same alert" for aggregation (detector-specific, stable).
    pub subject: String,
    /// 0–1, higher is more suspicious.
    pub score: f64,
    pub evidence: Evidence,
    /// The MITRE ATT&CK for ICS techniques the finding points at (ids, e.g. `T0855`; names in
    /// [`super::attack::CATALOGUE`]), from its detector, kind and evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attack: Vec<String>,
}

impl Alert {
    /// Sets [`Alert::attack`] from the detector, kind and evidence (for alerts made outside the
    /// detectors' book, which does it itself).
    pub fn with_attack(mut self) -> Alert {
        self.attack = super::attack::techniques_for(self.detector, &self.kind, &self.evidence)
            .iter()
            .map(|t| (*t).to_owned())
            .collect();
        self
    }
}

/// An alert being raised by a detector, before aggregation.
#[derive(Debug)]
pub(crate) struct Raise {
    pub ts: Timestamp,
    pub detector: DetectorName,
    pub kind: &'static str,
    pub severity: Severity,
    pub summary: String,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub asset: Option<String>,
    pub subject: String,
    pub score: f64,
    pub evidence: Evidence,
}

/// Builds evidence maps tersely: `evidence([("func", json!(5))])`.
pub(crate) fn evidence<const N: usize>(pairs: [(&str, serde_json::Value); N]) -> Evidence {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Scores are rounded so that they print the same everywhere.
pub(crate) fn round_score(s: f64) -> f64 {
    if s.is_finite() {
        (s.clamp(0.0, 1.0) * 1000.0).round() / 1000.0
    } else {
        1.0
    }
}

/// Evidence lists that a repeat adds to instead of being dropped: a process deviation grows
/// with the registers involved, a new host's alert with the devices it reached.
pub const MERGED_LISTS: [&str; 2] = ["registers", "targets"];
/// Evidence maps of `name: [min, max]` that a repeat widens: the values a process deviation
/// showed per register, so that an operator's "this is normal" can take them all in.
const MERGED_RANGES: [&str; 1] = ["observed"];
/// Evidence numbers that keep the highest of the repeats: the worst traffic window's score,
/// which a threshold raised by an operator must clear.
const MERGED_MAXIMA: [&str; 1] = ["max_score"];
/// Entries kept in a merged list or map.
const MAX_MERGED: usize = 64;

fn merge_lists(into: &mut Evidence, from: &Evidence) {
    for key in MERGED_LISTS {
        let (Some(serde_json::Value::Array(new)), Some(serde_json::Value::Array(have))) =
            (from.get(key), into.get_mut(key))
        else {
            continue;
        };
        for v in new {
            if have.len() >= MAX_MERGED {
                break;
            }
            if !have.contains(v) {
                have.push(v.clone());
            }
        }
    }
    for key in MERGED_RANGES {
        let (Some(serde_json::Value::Object(new)), Some(serde_json::Value::Object(have))) =
            (from.get(key), into.get_mut(key))
        else {
            continue;
        };
        for (name, range) in new {
            let bounds = |v: &serde_json::Value| -> Option<(u64, u64)> {
                Some((v.get(0)?.as_u64()?, v.get(1)?.as_u64()?))
            };
            let Some((lo, hi)) = bounds(range) else {
                continue;
            };
            let full = have.len() >= MAX_MERGED;
            match have.get_mut(name) {
                Some(slot) => {
                    if let Some((a, b)) = bounds(slot) {
                        *slot = serde_json::json!([a.min(lo), b.max(hi)]);
                    }
                }
                None if !full => {
                    have.insert(name.clone(), serde_json::json!([lo, hi]));
                }
                None => {}
            }
        }
    }
    for key in MERGED_MAXIMA {
        let (Some(new), Some(have)) = (
            from.get(key).and_then(serde_json::Value::as_f64),
            into.get(key).and_then(serde_json::Value::as_f64),
        ) else {
            continue;
        };
        if new > have {
            into.insert(key.to_owned(), serde_json::json!(new));
        }
    }
}

/// Collects alerts and folds repeats. Bounded: beyond `max_alerts` distinct alerts held, new
/// ones are counted in `dropped` and lost. Offline, everything is taken at the end
/// ([`AlertBook::into_sorted`]); online, [`AlertBook::drain`] hands out what is new or has
/// grown since the last drain and lets go of alerts whose aggregation window has closed, so
/// the book holds only alerts that can still grow.
#[derive(Debug)]
pub(crate) struct AlertBook {
    /// Alerts held, by raise order (the order ties keep).
    alerts: BTreeMap<u64, Alert>,
    /// (kind, subject) → the alert still open for aggregation.
    open: BTreeMap<(&'static str, String), u64>,
    /// Alerts new or grown since the last drain.
    changed: BTreeSet<u64>,
    next: u64,
    window_us: i64,
    max_alerts: usize,
    pub dropped: u64,
    /// Findings an operator accepted as normal ([`super::accept`]): raised as observations.
    accepted: BTreeSet<FindingKey>,
}

impl AlertBook {
    pub fn new(window_us: i64, max_alerts: usize) -> Self {
        AlertBook {
            alerts: BTreeMap::new(),
            open: BTreeMap::new(),
            changed: BTreeSet::new(),
            next: 0,
            window_us,
            max_alerts,
            dropped: 0,
            accepted: BTreeSet::new(),
        }
    }

    /// Raises later occurrences of `key` as observations (an operator's "this is normal").
    pub fn accept(&mut self, key: FindingKey) {
        self.accepted.insert(key);
    }

    /// Ends the aggregation of the open alert of `kind` on `subject`: a later raise starts a
    /// new alert, judged as things are then (after an operator's "this is normal", a repeat
    /// must not grow the alert that was accepted).
    pub fn close(&mut self, kind: &str, subject: &str) {
        self.open.retain(|(k, s), _| !(*k == kind && s == subject));
    }

    /// An accepted finding is still raised, as an observation that says why: never dropped.
    fn demote(&self, mut r: Raise) -> Raise {
        if self.accepted.is_empty() {
            return r;
        }
        let key = FindingKey {
            detector: r.detector,
            kind: r.kind.to_owned(),
            subject: r.subject.clone(),
        };
        if self.accepted.contains(&key) && r.severity > Severity::Info {
            r.severity = Severity::Info;
            r.score = Severity::Info.base_score();
            r.summary.push_str(" (Accepted as normal by an operator.)");
            r.evidence
                .insert("accepted_as_normal".into(), serde_json::json!(true));
        }
        r
    }

    pub fn raise(&mut self, r: Raise) {
        let r = self.demote(r);
        let key = (r.kind, r.subject);
        if let Some(&id) = self.open.get(&key)
            && let Some(a) = self.alerts.get_mut(&id)
            && r.ts.as_micros().saturating_sub(a.last_ts.as_micros()) <= self.window_us
        {
            a.count += 1;
            a.last_ts = a.last_ts.max(r.ts);
            if r.severity > a.severity {
                a.severity = r.severity;
                a.summary = r.summary;
            }
            a.score = a.score.max(round_score(r.score));
            merge_lists(&mut a.evidence, &r.evidence);
            self.changed.insert(id);
            return;
        }
        if self.alerts.len() >= self.max_alerts {
            self.dropped += 1;
            return;
        }
        let id = self.next;
        self.next += 1;
        let (kind, subject) = key;
        self.open.insert((kind, subject.clone()), id);
        self.changed.insert(id);
        let attack = super::attack::techniques_for(r.detector, kind, &r.evidence)
            .iter()
            .map(|t| (*t).to_owned())
            .collect();
        self.alerts.insert(
            id,
            Alert {
                ts: r.ts,
                last_ts: r.ts,
                count: 1,
                detector: r.detector,
                kind: kind.to_owned(),
                severity: r.severity,
                summary: r.summary,
                src_ip: r.src_ip,
                dst_ip: r.dst_ip,
                asset: r.asset,
                subject,
                score: round_score(r.score),
                evidence: r.evidence,
                attack,
            },
        );
    }

    /// The alerts new or grown since the last drain (copies, in order of first occurrence),
    /// then forgets the alerts that can no longer grow: those whose last occurrence is more
    /// than the aggregation window before `now` (event time). A later repeat of a forgotten
    /// alert starts a new one, as it would offline.
    pub fn drain(&mut self, now: Timestamp) -> Vec<Alert> {
        let mut out: Vec<Alert> = std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|id| self.alerts.get(&id).cloned())
            .collect();
        out.sort_by_key(|a| a.ts);
        let window_us = self.window_us;
        let closed = |a: &Alert| now.as_micros().saturating_sub(a.last_ts.as_micros()) > window_us;
        self.alerts.retain(|_, a| !closed(a));
        let alerts = &self.alerts;
        self.open.retain(|_, id| alerts.contains_key(id));
        out
    }

    /// Every alert held, in order of first occurrence (ties in raise order).
    pub fn into_sorted(self) -> Vec<Alert> {
        let mut alerts: Vec<Alert> = self.alerts.into_values().collect();
        // Stable: equal timestamps keep the order they were raised in, which is deterministic.
        alerts.sort_by_key(|a| a.ts);
        alerts
    }
}
