//! Grouping alerts into incidents, and an incident's lifecycle.
//!
//! An alert joins an incident of its site (open or acknowledged, same exercise flag) when
//! its first occurrence is within `group_window` of the newest alert that joined the
//! incident (repeats of an alert already in do not stretch the window, or a value that keeps
//! drifting would hold its incident open forever and swallow every later finding) and it concerns
//! the same device (its asset or destination is among the incident's assets), or comes from
//! one of the incident's actors (a host behind a novelty or protocol finding: the scanner,
//! the rogue writer). Otherwise it opens a new incident. Known clients (the HMI) are not
//! actors unless they do something new, so a set-point alarm on one PLC and a silent PLC
//! elsewhere stay two incidents even though the HMI talks to both.
//!
//! Observations (alerts of severity info) are stored but never filed: they open nothing.
//!
//! Severity is the highest alert severity, moved by the criticality the operator gave the
//! device: one step up for a critical device, one step up from medium for a high one, one
//! step down (not below low) for a low one.

use std::collections::BTreeSet;

use mamori_models::detect::{Alert, DetectorName, Severity};

use crate::incident::{Criticality, Incident, IncidentStatus, TimelineEntry};
use crate::inventory::asset_ip;
use crate::store::{AlertUpsert, IncidentQuery, Store, StoreError};

/// How alerts are grouped.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Event time an incident stays open to new alerts after its latest one.
    pub group_window_us: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            group_window_us: 30 * 60 * 1_000_000,
        }
    }
}

/// What filing an alert did to an incident.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub incident: Incident,
    pub what: ChangeKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Opened,
    /// A new alert joined, or a filed one grew.
    Updated,
    /// Its severity rose.
    Escalated,
    /// A resolved incident saw its alerts again.
    Reopened,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Opened => "opened",
            ChangeKind::Updated => "updated",
            ChangeKind::Escalated => "escalated",
            ChangeKind::Reopened => "reopened",
        }
    }
}

/// The device an alert is about, by address.
fn target(alert: &Alert) -> Option<String> {
    alert
        .asset
        .as_deref()
        .and_then(asset_ip)
        .or(alert.dst_ip)
        .or(alert.src_ip)
        .map(|ip| ip.to_string())
}

/// The host acting, when the finding is about what a source did that was never seen.
fn actor(alert: &Alert) -> Option<String> {
    match alert.detector {
        DetectorName::Allowlist | DetectorName::Protocol => alert.src_ip.map(|ip| ip.to_string()),
        _ => None,
    }
}

/// Every address an alert names: source, destination, its device, and the devices a new
/// host reached (`targets`, which grows as the alert folds repeats), so that an incident lists
/// every device a campaign touched and later findings on them join it.
fn addresses(alert: &Alert) -> BTreeSet<String> {
    let targets = alert
        .evidence
        .get("targets")
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str())
        .filter_map(|t| t.parse::<std::net::IpAddr>().ok())
        .map(|ip| ip.to_string());
    [alert.src_ip, alert.dst_ip]
        .into_iter()
        .flatten()
        .map(|ip| ip.to_string())
        .chain(target(alert))
        .chain(targets)
        .collect()
}

/// `severity` moved by `criticality`.
pub fn weigh(severity: Severity, criticality: Criticality) -> Severity {
    use Severity::*;
    let up = |s: Severity| match s {
        Info => Low,
        Low => Medium,
        Medium => High,
        High | Critical => Critical,
    };
    match criticality {
        Criticality::Critical => up(severity),
        Criticality::High if severity >= Medium => up(severity),
        Criticality::Low => match severity {
            Medium => Low,
            High => Medium,
            Critical => High,
            s => s,
        },
        _ => severity,
    }
}

fn entry(at: u64, kind: &str, text: String) -> TimelineEntry {
    TimelineEntry {
        at_unix_ms: at,
        kind: kind.to_owned(),
        actor: None,
        text,
    }
}

/// Timeline entries kept per incident; beyond, the oldest alert entries give way (the alerts
/// themselves stay in the alerts table).
const MAX_TIMELINE: usize = 500;

fn push_timeline(incident: &mut Incident, e: TimelineEntry) {
    if incident.timeline.len() >= MAX_TIMELINE
        && let Some(i) = incident.timeline.iter().position(|t| t.kind == "alert")
    {
        incident.timeline.remove(i);
    }
    incident.timeline.push(e);
}

/// Where and when alerts are being filed.
#[derive(Clone, Copy)]
pub struct Filing<'a> {
    pub site: &'a str,
    /// The site is running a drill: its alerts are exercise traffic.
    pub exercise: bool,
    /// The operator's criticality of a device address.
    pub criticality: &'a dyn Fn(&str) -> Criticality,
    pub policy: Policy,
    /// Wall time now, Unix ms.
    pub now_ms: u64,
}

impl std::fmt::Debug for Filing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filing")
            .field("site", &self.site)
            .field("exercise", &self.exercise)
            .finish_non_exhaustive()
    }
}

/// Files one stored alert into an incident (in the caller's transaction).
pub fn file(
    store: &mut dyn Store,
    at: &Filing<'_>,
    upsert: AlertUpsert,
    alert: &Alert,
) -> Result<Option<Change>, StoreError> {
    // An observation (info: a benign-looking novelty) is stored and shown, never paging and
    // never opening or growing an incident (docs/detection.md).
    if alert.severity == Severity::Info {
        return Ok(None);
    }
    let Filing {
        site,
        exercise,
        criticality,
        policy,
        now_ms,
    } = *at;
    let weighed = weigh(
        alert.severity,
        target(alert).map_or(Criticality::default(), |t| criticality(&t)),
    );
    if let Some(id) = upsert.incident_id {
        // A filed alert grew.
        let Some(mut inc) = store.incident(id)? else {
            return Ok(None);
        };
        let mut what = ChangeKind::Updated;
        if inc.status == IncidentStatus::Resolved && alert.last_ts > inc.last_seen {
            inc.status = IncidentStatus::Open;
            push_timeline(
                &mut inc,
                entry(
                    now_ms,
                    "reopened",
                    format!("Seen again after resolution: {}", alert.summary),
                ),
            );
            what = ChangeKind::Reopened;
        }
        if raise(&mut inc, alert, weighed, now_ms) && what == ChangeKind::Updated {
            what = ChangeKind::Escalated;
        }
        inc.last_seen = inc.last_seen.max(alert.last_ts);
        // A grown alert may name more devices (a sweep reaching further).
        inc.assets.extend(addresses(alert));
        inc.techniques.extend(alert.attack.iter().cloned());
        store.save_incident(&inc)?;
        return Ok(Some(Change {
            incident: inc,
            what,
        }));
    }

    let candidates = store.incidents(&IncidentQuery {
        site: Some(site.to_owned()),
        statuses: vec![IncidentStatus::Open, IncidentStatus::Acknowledged],
        limit: 1000,
    })?;
    let t = target(alert);
    let a = actor(alert);
    let ts = alert.ts.as_micros();
    let joined = candidates
        .into_iter()
        .filter(|inc| {
            inc.exercise == exercise
                && ts
                    <= inc
                        .last_joined
                        .unwrap_or(inc.last_seen)
                        .as_micros()
                        .saturating_add(policy.group_window_us)
                && ts
                    >= inc
                        .first_seen
                        .as_micros()
                        .saturating_sub(policy.group_window_us)
                && (t.as_ref().is_some_and(|t| inc.assets.contains(t))
                    || a.as_ref().is_some_and(|a| inc.actors.contains(a))
                    || src_is_actor(alert, inc))
        })
        .max_by_key(|inc| (inc.last_seen, inc.id));

    let (mut inc, mut what) = match joined {
        Some(inc) => (inc, ChangeKind::Updated),
        None => {
            let inc = Incident {
                id: 0,
                site: site.to_owned(),
                asset: alert.asset.clone().or_else(|| t.clone()),
                title: alert.summary.clone(),
                kind: alert.kind.clone(),
                severity: weighed,
                status: IncidentStatus::Open,
                first_seen: alert.ts,
                last_seen: alert.last_ts,
                last_joined: Some(alert.ts),
                detected_unix_ms: now_ms,
                acknowledged_unix_ms: None,
                acknowledged_by: None,
                resolved_unix_ms: None,
                resolved_by: None,
                alert_count: 0,
                detectors: BTreeSet::new(),
                techniques: BTreeSet::new(),
                assets: BTreeSet::new(),
                actors: BTreeSet::new(),
                exercise,
                timeline: vec![entry(
                    now_ms,
                    "detected",
                    format!(
                        "Detected by the {} detector: {}",
                        alert.detector.as_str(),
                        alert.summary
                    ),
                )],
            };
            (inc, ChangeKind::Opened)
        }
    };
    let opened = what == ChangeKind::Opened;
    if !opened && raise(&mut inc, alert, weighed, now_ms) {
        what = ChangeKind::Escalated;
    }
    inc.alert_count += 1;
    inc.last_joined = Some(inc.last_joined.map_or(alert.ts, |t| t.max(alert.ts)));
    inc.first_seen = inc.first_seen.min(alert.ts);
    inc.last_seen = inc.last_seen.max(alert.last_ts);
    inc.detectors.insert(alert.detector.as_str().to_owned());
    inc.techniques.extend(alert.attack.iter().cloned());
    inc.assets.extend(addresses(alert));
    inc.actors.extend(a);
    if !opened {
        push_timeline(
            &mut inc,
            entry(
                now_ms,
                "alert",
                format!(
                    "{} ({}, {}): {}",
                    alert.kind,
                    alert.detector.as_str(),
                    alert.severity.as_str(),
                    alert.summary
                ),
            ),
        );
    }
    let id = store.save_incident(&inc)?;
    inc.id = id;
    store.attach_alert(upsert.id, id)?;
    Ok(Some(Change {
        incident: inc,
        what,
    }))
}

/// A finding about a source the incident already names as an actor.
fn src_is_actor(alert: &Alert, inc: &Incident) -> bool {
    alert
        .src_ip
        .is_some_and(|ip| inc.actors.contains(&ip.to_string()))
}

/// Raises the incident's severity (and title) to `weighed` when higher; true if it rose.
fn raise(inc: &mut Incident, alert: &Alert, weighed: Severity, now_ms: u64) -> bool {
    if weighed <= inc.severity {
        return false;
    }
    let before = inc.severity;
    inc.severity = weighed;
    inc.title = alert.summary.clone();
    push_timeline(
        inc,
        entry(
            now_ms,
            "escalated",
            format!(
                "Severity {} -> {}: {}",
                before.as_str(),
                weighed.as_str(),
                alert.summary
            ),
        ),
    );
    true
}

/// A responder's action on an incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Acknowledge,
    Resolve,
    Reopen,
    Note,
}

/// Applies a responder's action (who, when, an optional note); `Err` with a reason when the
/// transition is not allowed.
pub fn act(
    inc: &mut Incident,
    action: &Action,
    who: &str,
    note: Option<&str>,
    now_ms: u64,
) -> Result<(), &'static str> {
    let note = note.map(|n| n.chars().take(4000).collect::<String>());
    let (kind, text) = match action {
        Action::Acknowledge => {
            if inc.status != IncidentStatus::Open {
                return Err("only an open incident can be acknowledged");
            }
            inc.status = IncidentStatus::Acknowledged;
            inc.acknowledged_unix_ms = Some(now_ms);
            inc.acknowledged_by = Some(who.to_owned());
            ("acknowledged", format!("Acknowledged by {who}"))
        }
        Action::Resolve => {
            if inc.status == IncidentStatus::Resolved {
                return Err("the incident is resolved already");
            }
            inc.status = IncidentStatus::Resolved;
            inc.resolved_unix_ms = Some(now_ms);
            inc.resolved_by = Some(who.to_owned());
            ("resolved", format!("Resolved by {who}"))
        }
        Action::Reopen => {
            if inc.status != IncidentStatus::Resolved {
                return Err("only a resolved incident can be reopened");
            }
            inc.status = IncidentStatus::Open;
            inc.resolved_unix_ms = None;
            inc.resolved_by = None;
            ("reopened", format!("Reopened by {who}"))
        }
        Action::Note => {
            if note.as_deref().is_none_or(str::is_empty) {
                return Err("a note needs text");
            }
            ("note", format!("Note by {who}"))
        }
    };
    let text = match note {
        Some(n) if !n.is_empty() => format!("{text}: {n}"),
        _ => text,
    };
    push_timeline(
        inc,
        TimelineEntry {
            at_unix_ms: now_ms,
            kind: kind.to_owned(),
            actor: Some(who.to_owned()),
            text,
        },
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{AlertQuery, transaction};
    use mamori_models::Timestamp;

    fn alert(sec: i64, detector: DetectorName, kind: &str, src: &str, dst: &str) -> Alert {
        let ts = Timestamp::from_micros(1_700_000_000_000_000 + sec * 1_000_000);
        Alert {
            ts,
            last_ts: ts,
            count: 1,
            detector,
            kind: kind.into(),
            severity: Severity::Medium,
            summary: format!("{kind} {src} -> {dst}"),
            src_ip: Some(src.parse().unwrap()),
            dst_ip: Some(dst.parse().unwrap()),
            asset: Some(format!("{dst}/1")),
            subject: format!("{src}>{dst}"),
            score: 0.5,
            evidence: Default::default(),
            attack: Vec::new(),
        }
    }

    fn file_all(store: &mut SqliteStore, alerts: &[Alert]) -> Vec<Change> {
        transaction(store, |s| {
            let mut out = Vec::new();
            for a in alerts {
                let up = s.upsert_alert("plant", a, 1)?;
                let crit = |ip: &str| {
                    if ip == "10.0.0.23" {
                        Criticality::Critical
                    } else {
                        Criticality::Medium
                    }
                };
                let at = Filing {
                    site: "plant",
                    exercise: false,
                    criticality: &crit,
                    policy: Policy::default(),
                    now_ms: 1000,
                };
                out.extend(file(s, &at, up, a)?);
            }
            Ok(out)
        })
        .unwrap()
    }

    #[test]
    fn a_scanner_is_one_incident_and_unrelated_devices_are_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let changes = file_all(
            &mut store,
            &[
                alert(
                    0,
                    DetectorName::Allowlist,
                    "new_host",
                    "10.0.0.66",
                    "10.0.0.21",
                ),
                alert(
                    5,
                    DetectorName::Protocol,
                    "function_scan",
                    "10.0.0.66",
                    "10.0.0.22",
                ),
                // The HMI's set-point on another PLC: not the scanner's incident.
                alert(
                    6,
                    DetectorName::ProcessValue,
                    "setpoint_out_of_range",
                    "10.0.0.10",
                    "10.0.0.23",
                ),
                // Later finding on the same PLC joins its incident.
                alert(
                    60,
                    DetectorName::PollingCycle,
                    "missing_polls",
                    "10.0.0.10",
                    "10.0.0.23",
                ),
                // Hours later: a new incident.
                alert(
                    7200,
                    DetectorName::Allowlist,
                    "new_host",
                    "10.0.0.66",
                    "10.0.0.21",
                ),
            ],
        );
        let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.what).collect();
        assert_eq!(
            kinds,
            [
                ChangeKind::Opened,
                ChangeKind::Updated,
                ChangeKind::Opened,
                ChangeKind::Updated,
                ChangeKind::Opened
            ]
        );
        let ids: Vec<i64> = changes.iter().map(|c| c.incident.id).collect();
        assert_eq!(ids[0], ids[1]);
        assert_eq!(ids[2], ids[3]);
        assert!(ids[0] != ids[2] && ids[4] != ids[0]);
        // The critical PLC raised medium to high.
        assert_eq!(changes[2].incident.severity, Severity::High);
        let scan = store.incident(ids[0]).unwrap().unwrap();
        assert_eq!(scan.alert_count, 2);
        assert!(scan.actors.contains("10.0.0.66"));
        let filed = store
            .alerts(&AlertQuery {
                incident_id: Some(ids[0]),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(filed.len(), 2);
    }

    #[test]
    fn a_sweep_is_one_incident_listing_every_device_it_reached() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let mut sweep = alert(
            0,
            DetectorName::Allowlist,
            "new_host",
            "10.0.0.66",
            "10.0.0.21",
        );
        sweep.subject = "10.0.0.66/modbus".into();
        sweep
            .evidence
            .insert("targets".into(), serde_json::json!(["10.0.0.21"]));
        let first = file_all(&mut store, std::slice::from_ref(&sweep));
        // The same alert grown: the sweep reached two more PLCs.
        sweep.count = 3;
        sweep.last_ts = Timestamp::from_micros(sweep.ts.as_micros() + 20_000_000);
        sweep.evidence.insert(
            "targets".into(),
            serde_json::json!(["10.0.0.21", "10.0.0.22", "10.0.0.23"]),
        );
        let grown = file_all(&mut store, std::slice::from_ref(&sweep));
        // A finding on the third PLC naming no source (its traffic window, an observation of
        // the process), and an informational observation that must open nothing.
        let mut window = alert(
            30,
            DetectorName::TrafficWindow,
            "unusual_traffic_window",
            "10.0.0.10",
            "10.0.0.23",
        );
        window.src_ip = None;
        let mut observation = alert(
            40,
            DetectorName::Allowlist,
            "new_path",
            "10.0.0.10",
            "10.0.0.99",
        );
        observation.severity = Severity::Info;
        let later = file_all(&mut store, &[window, observation]);
        assert_eq!(first[0].what, ChangeKind::Opened);
        assert_eq!(grown[0].incident.id, first[0].incident.id);
        assert_eq!(later.len(), 1, "the observation opened nothing: {later:?}");
        assert_eq!(later[0].incident.id, first[0].incident.id);
        let inc = store.incident(first[0].incident.id).unwrap().unwrap();
        for plc in ["10.0.0.21", "10.0.0.22", "10.0.0.23"] {
            assert!(inc.assets.contains(plc), "{plc} in {:?}", inc.assets);
        }
        assert_eq!(inc.alert_count, 2);
    }

    #[test]
    fn a_growing_alert_updates_its_incident_and_reopens_a_resolved_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let mut a = alert(
            0,
            DetectorName::Allowlist,
            "new_host",
            "10.0.0.66",
            "10.0.0.21",
        );
        let first = file_all(&mut store, std::slice::from_ref(&a));
        let mut inc = first[0].incident.clone();
        act(
            &mut inc,
            &Action::Resolve,
            "alice",
            Some("scanner removed"),
            2000,
        )
        .unwrap();
        store.save_incident(&inc).unwrap();
        a.count = 5;
        a.last_ts = a.last_ts.saturating_add_micros(10_000_000);
        a.severity = Severity::High;
        let again = file_all(&mut store, &[a]);
        assert_eq!(again[0].what, ChangeKind::Reopened);
        assert_eq!(again[0].incident.id, inc.id);
        assert_eq!(again[0].incident.status, IncidentStatus::Open);
        assert_eq!(again[0].incident.severity, Severity::High);
        assert_eq!(again[0].incident.alert_count, 1);
    }

    #[test]
    fn repeats_of_one_alert_do_not_hold_its_incident_open_to_new_findings() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let mut drift = alert(
            0,
            DetectorName::ProcessValue,
            "process_deviation",
            "10.0.0.10",
            "10.0.0.21",
        );
        let first = file_all(&mut store, std::slice::from_ref(&drift));
        // The drifting value keeps repeating for two hours: one alert, growing.
        drift.count = 700;
        drift.last_ts = drift.last_ts.saturating_add_micros(7_200_000_000);
        let grown = file_all(&mut store, &[drift]);
        assert_eq!(grown[0].incident.id, first[0].incident.id);
        assert_eq!(grown[0].incident.kind, "process_deviation");
        // A new finding on the same PLC two hours later is a new incident.
        let later = file_all(
            &mut store,
            &[alert(
                7_200,
                DetectorName::PollingCycle,
                "missing_polls",
                "10.0.0.10",
                "10.0.0.21",
            )],
        );
        assert_eq!(later[0].what, ChangeKind::Opened);
        assert_ne!(later[0].incident.id, first[0].incident.id);
    }

    #[test]
    fn lifecycle_rules() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let a = alert(
            0,
            DetectorName::Allowlist,
            "new_host",
            "10.0.0.66",
            "10.0.0.21",
        );
        let mut inc = file_all(&mut store, &[a]).remove(0).incident;
        assert!(act(&mut inc, &Action::Reopen, "bob", None, 1).is_err());
        assert!(act(&mut inc, &Action::Note, "bob", None, 1).is_err());
        act(&mut inc, &Action::Acknowledge, "bob", None, 2).unwrap();
        assert!(act(&mut inc, &Action::Acknowledge, "bob", None, 3).is_err());
        act(
            &mut inc,
            &Action::Note,
            "bob",
            Some("isolating the port"),
            4,
        )
        .unwrap();
        act(&mut inc, &Action::Resolve, "bob", None, 5).unwrap();
        assert_eq!(inc.acknowledged_by.as_deref(), Some("bob"));
        assert_eq!(inc.resolved_unix_ms, Some(5));
        let kinds: Vec<&str> = inc.timeline.iter().map(|t| t.kind.as_str()).collect();
        assert_eq!(kinds, ["detected", "acknowledged", "note", "resolved"]);
    }

    #[test]
    fn criticality_moves_severity() {
        assert_eq!(
            weigh(Severity::Medium, Criticality::Critical),
            Severity::High
        );
        assert_eq!(weigh(Severity::Low, Criticality::High), Severity::Low);
        assert_eq!(weigh(Severity::Medium, Criticality::High), Severity::High);
        assert_eq!(weigh(Severity::High, Criticality::Low), Severity::Medium);
        assert_eq!(
            weigh(Severity::Critical, Criticality::Critical),
            Severity::Critical
        );
    }
}
