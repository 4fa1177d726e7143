//! Incident exports for the sector and the authorities: a STIX 2.1 bundle ([`stix`]) for the
//! sector's information-sharing body and a human report in Markdown or HTML ([`report`]).
//!
//! Pure functions of an [`IncidentDetail`](crate::incident::IncidentDetail): no I/O, no clock
//! (the STIX export takes the export time as an argument), so that the same incident exports
//! byte-identically. Everything in an incident that came off the wire (host names, syslog
//! text, device identities, evidence) is hostile until escaped; the renderers escape every
//! string from data, not only the ones that look dangerous today.
//!
//! This module also owns what both exports say alike: the UTC time formats, the time to
//! detect and the service impact derived from the detectors and kinds of the alerts.

#[cfg(test)]
pub(crate) mod fixtures;
pub mod report;
pub mod stix;

use std::collections::BTreeSet;
use std::net::IpAddr;

use mamori_models::Timestamp;
use mamori_models::detect::{Alert, DetectorName};

use crate::incident::{Asset, Incident, IncidentDetail};

pub use stix::Producer;

/// The earliest and latest instants the RFC 3339 forms below can write with a four-digit
/// year (`0000-01-01T00:00:00Z`, `9999-12-31T23:59:59.999999Z`). STIX requires four digits.
const MIN_MICROS: i64 = -62_167_219_200_000_000;
const MAX_MICROS: i64 = 253_402_300_799_999_999;

fn clamped(ts: Timestamp) -> Timestamp {
    Timestamp::from_micros(ts.as_micros().clamp(MIN_MICROS, MAX_MICROS))
}

/// Wall-clock Unix milliseconds (the collector's times) as a [`Timestamp`].
pub(crate) fn from_unix_ms(unix_ms: u64) -> Timestamp {
    let ms = i64::try_from(unix_ms).unwrap_or(i64::MAX);
    clamped(Timestamp::from_micros(ms.saturating_mul(1000)))
}

/// Event time as Unix milliseconds (truncated toward the past, as STIX times are).
pub(crate) fn unix_ms_of(ts: Timestamp) -> i64 {
    ts.as_micros().div_euclid(1000)
}

/// The STIX timestamp form: RFC 3339, UTC, exactly millisecond precision
/// (`2024-05-01T10:22:03.123Z`). Sub-millisecond digits are truncated so that an earlier
/// instant never prints later than a later one.
pub(crate) fn stix_time(ts: Timestamp) -> String {
    let s = clamped(ts).to_string();
    // `YYYY-MM-DDTHH:MM:SS.mmm` is the first 23 bytes of the 27-byte form.
    match s.get(..23) {
        Some(head) => format!("{head}Z"),
        None => s,
    }
}

/// [`stix_time`] of a wall-clock Unix millisecond time.
pub(crate) fn stix_time_ms(unix_ms: u64) -> String {
    stix_time(from_unix_ms(unix_ms))
}

/// A time for people: `2024-05-01 10:22:03 UTC` (whole seconds).
pub(crate) fn utc(ts: Timestamp) -> String {
    let s = clamped(ts).to_string();
    match (s.get(..10), s.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => s,
    }
}

/// [`utc`] of a wall-clock Unix millisecond time.
pub(crate) fn utc_ms(unix_ms: u64) -> String {
    utc(from_unix_ms(unix_ms))
}

/// A duration for people: `850 ms`, `42 s`, `3 min 12 s`, `2 h 5 min`, `3 d 4 h`.
pub(crate) fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Milliseconds from the first occurrence (event time) to the collector opening the
/// incident (wall time); `None` when the event time is later (clocks disagree).
pub(crate) fn time_to_detect_ms(incident: &Incident) -> Option<u64> {
    let detected = i64::try_from(incident.detected_unix_ms).ok()?;
    u64::try_from(detected.checked_sub(unix_ms_of(incident.first_seen))?).ok()
}

/// The IP address of an asset name (`ip` or `ip/unit`).
pub(crate) fn asset_ip(asset: &str) -> Option<IpAddr> {
    let ip = asset.split_once('/').map_or(asset, |(ip, _unit)| ip);
    ip.parse().ok()
}

/// One affected asset: a name the incident's alerts give (`ip` or `ip/unit`) with its
/// inventory entry when the inventory knows its address.
#[derive(Clone, Debug)]
pub(crate) struct Affected<'a> {
    pub name: String,
    pub ip: Option<IpAddr>,
    pub inventory: Option<&'a Asset>,
}

/// The incident's assets by name, then inventory entries that no name matched (sorted as
/// they come: names in set order, entries in the detail's order).
pub(crate) fn affected_assets(detail: &IncidentDetail) -> Vec<Affected<'_>> {
    let mut out: Vec<Affected<'_>> = detail
        .incident
        .assets
        .iter()
        .map(|name| {
            let ip = asset_ip(name);
            Affected {
                name: name.clone(),
                ip,
                inventory: ip.and_then(|ip| detail.assets.iter().find(|a| a.ip == ip)),
            }
        })
        .collect();
    for a in &detail.assets {
        if !out.iter().any(|x| x.ip == Some(a.ip)) {
            out.push(Affected {
                name: a.ip.to_string(),
                ip: Some(a.ip),
                inventory: Some(a),
            });
        }
    }
    out
}

/// What an alert says about the service, worst first (the derived order is the severity of
/// the impact: `ProcessControl` is the worst).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Impact {
    /// Writes or set-points reached a controller: the integrity of process control.
    ProcessControl,
    /// Process values read off the devices left what was learned: the process itself.
    ProcessState,
    /// Expected polls went missing or requests went unanswered: availability.
    Availability,
    /// Discovery, new hosts or paths, scans: reconnaissance, no direct impact.
    Reconnaissance,
    /// Host logs, traffic volumes, the agent itself: no impact established.
    Unclassified,
}

/// Modbus function codes that change a device's state (5, 6, 15, 16: write coil(s) or
/// register(s); 22: mask write; 23: read/write multiple registers).
const MODBUS_WRITE_FUNCTIONS: [u64; 6] = [5, 6, 15, 16, 22, 23];

fn is_write(alert: &Alert) -> bool {
    alert
        .evidence
        .get("function_class")
        .and_then(|v| v.as_str())
        .is_some_and(|c| c == "write")
        || alert
            .evidence
            .get("func")
            .and_then(|v| v.as_u64())
            .is_some_and(|f| MODBUS_WRITE_FUNCTIONS.contains(&f))
}

/// The impact an alert points at, from its detector, its kind and (for Modbus) whether the
/// function it concerns writes.
pub fn impact_of(alert: &Alert) -> Impact {
    match (alert.detector, alert.kind.as_str()) {
        (_, "setpoint_out_of_range") => Impact::ProcessControl,
        (_, "missing_polls" | "unanswered_requests" | "request_flood") => Impact::Availability,
        (DetectorName::ProcessValue, _) => Impact::ProcessState,
        (DetectorName::Allowlist | DetectorName::PollingCycle | DetectorName::Protocol, _)
            if is_write(alert) =>
        {
            Impact::ProcessControl
        }
        (
            _,
            "new_host"
            | "new_path"
            | "new_modbus_path"
            | "new_function"
            | "address_out_of_range"
            | "function_scan"
            | "unit_scan"
            | "address_scan"
            | "address_sweep"
            | "exception_burst"
            | "extra_requests",
        ) => Impact::Reconnaissance,
        _ => Impact::Unclassified,
    }
}

/// The impacts of an incident's alerts, worst first.
pub fn impacts(detail: &IncidentDetail) -> BTreeSet<Impact> {
    detail.alerts.iter().map(|a| impact_of(&a.alert)).collect()
}

/// One plain paragraph on the service impact, for the report and the STIX incident.
pub fn service_impact(detail: &IncidentDetail) -> String {
    let impacts = impacts(detail);
    if impacts.is_empty() {
        return "No detections are attached to this incident: no impact established.".into();
    }
    let mut out: Vec<&str> = Vec::new();
    for i in &impacts {
        out.push(match i {
            Impact::ProcessControl => {
                "Integrity of process control: writes or set-points reached field devices \
                 outside what was learned; the controlled process may have been changed."
            }
            Impact::ProcessState => {
                "Process state: values read from field devices left their learned range; \
                 the physical process may be disturbed."
            }
            Impact::Availability => {
                "Availability: expected polls went missing or requests went unanswered; \
                 monitoring or control of the affected devices may be interrupted."
            }
            Impact::Reconnaissance => {
                if impacts.len() == 1 {
                    "Reconnaissance: new hosts, paths or scans were seen; no direct impact on \
                     the service was observed."
                } else {
                    "Reconnaissance: new hosts, paths or scans were seen."
                }
            }
            Impact::Unclassified => {
                "Other anomalies (host logs, traffic volumes) were seen; no impact on the \
                 service is established from them."
            }
        });
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use mamori_models::detect::Severity;

    #[test]
    fn stix_time_is_millisecond_precision_with_z() {
        let t = Timestamp::from_secs_nanos(1_352_718_246, 593_402_000);
        assert_eq!(stix_time(t), "2012-11-12T11:04:06.593Z");
        assert_eq!(
            stix_time(Timestamp::from_micros(-1)),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(stix_time_ms(0), "1970-01-01T00:00:00.000Z");
        // Out of the four-digit range: clamped, still the STIX form.
        assert_eq!(stix_time_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            stix_time(Timestamp::from_micros(i64::MIN)),
            "0000-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn human_times_and_durations() {
        assert_eq!(utc_ms(1_714_558_923_456), "2024-05-01 10:22:03 UTC");
        assert_eq!(human_duration(850), "850 ms");
        assert_eq!(human_duration(42_000), "42 s");
        assert_eq!(human_duration(192_000), "3 min 12 s");
        assert_eq!(human_duration(7_500_000), "2 h 5 min");
        assert_eq!(human_duration(273_600_000), "3 d 4 h");
    }

    /// A scan is reconnaissance, whichever id space it walks, unless its probes write.
    #[test]
    fn scans_are_reconnaissance_unless_they_write() {
        let scan = |kind: &str, func: u64| {
            let stored = fixtures::alert(
                1,
                0,
                DetectorName::Protocol,
                kind,
                Severity::High,
                "a scan",
                Some("10.0.0.66"),
                Some("10.0.0.21"),
                Some("10.0.0.21"),
                "10.0.0.66>10.0.0.21",
                &[("func", serde_json::json!(func))],
            );
            impact_of(&stored.alert)
        };
        for kind in [
            "function_scan",
            "unit_scan",
            "address_scan",
            "address_sweep",
        ] {
            assert_eq!(scan(kind, 3), Impact::Reconnaissance, "{kind}");
        }
        assert_eq!(scan("unit_scan", 6), Impact::ProcessControl);
    }

    #[test]
    fn asset_names_with_and_without_unit() {
        assert_eq!(asset_ip("10.0.0.5/1"), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(asset_ip("fd00::5"), Some("fd00::5".parse().unwrap()));
        assert_eq!(asset_ip("fd00::5/255"), Some("fd00::5".parse().unwrap()));
        assert_eq!(asset_ip("site-wide"), None);
    }
}
