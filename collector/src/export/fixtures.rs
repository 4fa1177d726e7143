//! Hand-built incidents for the exports' tests. Times: the attack starts at
//! 2024-05-01T10:00:00Z (event time); the collector stores and opens a few seconds later.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

use mamori_models::Timestamp;
use mamori_models::detect::{Alert, DetectorName, Evidence, Severity};
use serde_json::json;

use crate::incident::{
    Asset, Criticality, DeviceIdentity, Incident, IncidentDetail, IncidentStatus, Role,
    StoredAlert, TimelineEntry,
};

/// 2024-05-01T10:00:00Z in Unix milliseconds.
pub const T0_MS: u64 = 1_714_557_600_000;

pub fn ts(offset_ms: u64) -> Timestamp {
    Timestamp::from_micros(((T0_MS + offset_ms) * 1000) as i64)
}

fn evidence(pairs: &[(&str, serde_json::Value)]) -> Evidence {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect::<BTreeMap<_, _>>()
}

#[allow(clippy::too_many_arguments)]
pub fn alert(
    id: i64,
    at_ms: u64,
    detector: DetectorName,
    kind: &str,
    severity: Severity,
    summary: &str,
    src: Option<&str>,
    dst: Option<&str>,
    asset: Option<&str>,
    subject: &str,
    ev: &[(&str, serde_json::Value)],
) -> StoredAlert {
    StoredAlert {
        id,
        site: "plant-north".into(),
        incident_id: Some(7),
        // Stored 2 s after it happened.
        received_unix_ms: T0_MS + at_ms + 2_000,
        accepted_audit_id: None,
        alert: Alert {
            ts: ts(at_ms),
            last_ts: ts(at_ms + 30_000),
            count: 3,
            detector,
            kind: kind.into(),
            severity,
            summary: summary.into(),
            src_ip: src.map(|s| s.parse().unwrap()),
            dst_ip: dst.map(|s| s.parse().unwrap()),
            asset: asset.map(Into::into),
            subject: subject.into(),
            score: severity.base_score(),
            evidence: evidence(ev),
            attack: Vec::new(),
        }
        .with_attack(),
    }
}

pub fn plc(ip: &str) -> Asset {
    Asset {
        site: "plant-north".into(),
        ip: ip.parse().unwrap(),
        roles: BTreeSet::from([Role::ModbusServer]),
        units: BTreeSet::from([1]),
        identity: Some(DeviceIdentity {
            vendor: Some("Schneider Electric".into()),
            product: Some("M340".into()),
            revision: Some("v3.20".into()),
        }),
        hostnames: BTreeSet::new(),
        first_seen: ts(0),
        last_seen: ts(60_000),
        criticality: Criticality::Critical,
        description: Some("Pump station PLC, reservoir 2".into()),
    }
}

pub fn hmi(ip: &str) -> Asset {
    Asset {
        site: "plant-north".into(),
        ip: ip.parse().unwrap(),
        roles: BTreeSet::from([Role::ModbusClient, Role::SyslogSender]),
        units: BTreeSet::from([1]),
        identity: None,
        hostnames: BTreeSet::from(["hmi-01".to_owned()]),
        first_seen: ts(0),
        last_seen: ts(60_000),
        criticality: Criticality::High,
        description: None,
    }
}

fn timeline(entries: &[(u64, &str, Option<&str>, &str)]) -> Vec<TimelineEntry> {
    entries
        .iter()
        .map(|(at, kind, actor, text)| TimelineEntry {
            at_unix_ms: T0_MS + at,
            kind: (*kind).into(),
            actor: actor.map(Into::into),
            text: (*text).into(),
        })
        .collect()
}

/// A rogue host writes a set-point to a PLC; the HMI's polls go missing. Acknowledged.
pub fn ordinary() -> IncidentDetail {
    let alerts = vec![
        alert(
            101,
            0,
            DetectorName::Allowlist,
            "new_host",
            Severity::High,
            "Host 10.0.0.66, never seen during learning, sent Modbus Write Multiple Registers from 10.0.0.66 to 10.0.0.5 unit 1.",
            Some("10.0.0.66"),
            Some("10.0.0.5"),
            Some("10.0.0.5/1"),
            "10.0.0.66",
            &[
                ("unit", json!(1)),
                ("func", json!(16)),
                ("func_name", json!("Write Multiple Registers")),
                ("function_class", json!("write")),
                ("exception", json!(null)),
            ],
        ),
        alert(
            102,
            1_000,
            DetectorName::ProcessValue,
            "setpoint_out_of_range",
            Severity::Critical,
            "10.0.0.66 wrote 9000 to holding register 40 of 10.0.0.5 unit 1, outside the learned 100–400.",
            Some("10.0.0.66"),
            Some("10.0.0.5"),
            Some("10.0.0.5/1"),
            "10.0.0.5/1/hr/40",
            &[
                ("address", json!(40)),
                ("value", json!(9000)),
                ("func", json!(16)),
                ("baseline_min", json!(100)),
                ("baseline_max", json!(400)),
            ],
        ),
        alert(
            103,
            20_000,
            DetectorName::PollingCycle,
            "missing_polls",
            Severity::Medium,
            "10.0.0.2 stopped polling 10.0.0.5 unit 1 (3 cycles missed).",
            Some("10.0.0.2"),
            Some("10.0.0.5"),
            Some("10.0.0.5/1"),
            "10.0.0.2>10.0.0.5/1/3",
            &[("missed_cycles", json!(3)), ("period_s", json!(1.0))],
        ),
    ];
    let techniques = alerts
        .iter()
        .flat_map(|a| a.alert.attack.iter().cloned())
        .collect();
    IncidentDetail {
        incident: Incident {
            techniques,
            actors: Default::default(),
            kind: "new_host".into(),
            last_joined: None,
            id: 7,
            site: "plant-north".into(),
            asset: Some("10.0.0.5/1".into()),
            title: "10.0.0.66 wrote 9000 to holding register 40 of 10.0.0.5 unit 1, outside the learned 100–400.".into(),
            severity: Severity::Critical,
            status: IncidentStatus::Acknowledged,
            first_seen: ts(0),
            last_seen: ts(50_000),
            detected_unix_ms: T0_MS + 4_000,
            acknowledged_unix_ms: Some(T0_MS + 600_000),
            acknowledged_by: Some("oncall-anna".into()),
            resolved_unix_ms: None,
            resolved_by: None,
            alert_count: 3,
            detectors: BTreeSet::from([
                "allowlist".to_owned(),
                "polling_cycle".to_owned(),
                "process_value".to_owned(),
            ]),
            assets: BTreeSet::from([
                "10.0.0.2".to_owned(),
                "10.0.0.5/1".to_owned(),
                "10.0.0.66".to_owned(),
            ]),
            exercise: false,
            timeline: timeline(&[
                (4_000, "detected", None, "Opened from alert 101."),
                (5_000, "alert", None, "Alert 102 (critical) joined."),
                (6_000, "escalated", None, "Severity raised to critical."),
                (
                    600_000,
                    "acknowledged",
                    Some("oncall-anna"),
                    "Taken by oncall-anna.",
                ),
            ]),
        },
        alerts,
        assets: vec![hmi("10.0.0.2"), plc("10.0.0.5")],
    }
}

/// The same attack on an IPv6 network.
pub fn ipv6() -> IncidentDetail {
    let mut d = ordinary();
    d.incident.id = 8;
    d.incident.asset = Some("fd00::5/1".into());
    d.incident.assets = BTreeSet::from([
        "fd00::2".to_owned(),
        "fd00::5/1".to_owned(),
        "fd00::66".to_owned(),
    ]);
    d.incident.title = "Host fd00::66, never seen during learning, wrote to fd00::5.".into();
    for sa in &mut d.alerts {
        let a = &mut sa.alert;
        let v6 = |ip: std::net::IpAddr| -> std::net::IpAddr {
            let s = ip.to_string();
            let last = s.rsplit('.').next().unwrap();
            format!("fd00::{last}").parse().unwrap()
        };
        a.src_ip = a.src_ip.map(v6);
        a.dst_ip = a.dst_ip.map(v6);
        a.asset = Some("fd00::5/1".into());
        if a.kind == "new_host" {
            a.subject = "fd00::66".into();
        }
    }
    d.assets = vec![hmi("fd00::2"), plc("fd00::5")];
    d
}

/// A drill, resolved: the exercise's "attacker" must never reach anyone's blocklist
/// unmarked.
pub fn exercise() -> IncidentDetail {
    let mut d = ordinary();
    d.incident.id = 9;
    d.incident.exercise = true;
    d.incident.status = IncidentStatus::Resolved;
    d.incident.resolved_unix_ms = Some(T0_MS + 3_600_000);
    d.incident.resolved_by = Some("oncall-anna".into());
    d.incident.timeline.extend(timeline(&[(
        3_600_000,
        "resolved",
        Some("oncall-anna"),
        "Drill over.",
    )]));
    d
}

/// A site-wide finding: a syslog burst from nowhere in particular, no asset, open.
pub fn no_assets() -> IncidentDetail {
    let alerts = vec![alert(
        201,
        0,
        DetectorName::Syslog,
        "syslog_rate_burst",
        Severity::Medium,
        "Syslog messages arrived at 40 times the learned rate.",
        None,
        None,
        None,
        "syslog:site",
        &[
            ("rate_per_s", json!(400.0)),
            ("baseline_rate_per_s", json!(10.0)),
        ],
    )];
    let techniques = alerts
        .iter()
        .flat_map(|a| a.alert.attack.iter().cloned())
        .collect();
    IncidentDetail {
        incident: Incident {
            techniques,
            actors: Default::default(),
            kind: "new_host".into(),
            last_joined: None,
            id: 10,
            site: "plant-north".into(),
            asset: None,
            title: "Syslog messages arrived at 40 times the learned rate.".into(),
            severity: Severity::Medium,
            status: IncidentStatus::Open,
            first_seen: ts(0),
            last_seen: ts(30_000),
            detected_unix_ms: T0_MS + 3_000,
            acknowledged_unix_ms: None,
            acknowledged_by: None,
            resolved_unix_ms: None,
            resolved_by: None,
            alert_count: 1,
            detectors: BTreeSet::from(["syslog".to_owned()]),
            assets: BTreeSet::new(),
            exercise: false,
            timeline: Vec::new(),
        },
        alerts,
        assets: Vec::new(),
    }
}

/// Data a hostile network could have put everywhere a string comes from the wire.
pub const PAYLOAD: &str = "<script>alert('x')</script>\"&|pipe\nnew line";

pub fn hostile() -> IncidentDetail {
    let mut d = ordinary();
    d.incident.title = format!("Title {PAYLOAD}");
    d.incident.site = format!("site {PAYLOAD}");
    d.incident.timeline[0].text = format!("timeline {PAYLOAD}");
    d.incident.timeline[3].actor = Some(format!("actor {PAYLOAD}"));
    d.incident.acknowledged_by = Some(format!("ack {PAYLOAD}"));
    d.alerts[0].alert.summary = format!("summary {PAYLOAD}");
    d.alerts[0].alert.kind = format!("kind {PAYLOAD}");
    d.alerts[0]
        .alert
        .evidence
        .insert(format!("key {PAYLOAD}"), json!(format!("value {PAYLOAD}")));
    d.assets[0].hostnames.insert(format!("host {PAYLOAD}"));
    d.assets[1].description = Some(format!("desc {PAYLOAD}"));
    d.assets[1].identity = Some(DeviceIdentity {
        vendor: Some(format!("vendor {PAYLOAD}")),
        product: Some(format!("product {PAYLOAD}")),
        revision: Some(format!("rev {PAYLOAD}")),
    });
    d
}
