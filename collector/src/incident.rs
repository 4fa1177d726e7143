//! Incidents, the asset inventory and what the API, the exports and the notifiers share
//! about them. These are plain data: the store keeps them, [`crate::incidents`] decides how
//! alerts group into incidents, [`crate::export`] renders them for the authorities and the
//! sector, and [`crate::notify`] tells the responders.

use std::collections::BTreeSet;
use std::net::IpAddr;

use mamori_models::Timestamp;
use mamori_models::detect::{Alert, Severity};
use serde::{Deserialize, Serialize};

/// Where an incident is in its handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Detected, nobody has taken it yet.
    Open,
    /// A responder has taken it.
    Acknowledged,
    /// Closed by a responder (or by the collector after a quiet period, when configured).
    Resolved,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Acknowledged => "acknowledged",
            IncidentStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<IncidentStatus> {
        match s {
            "open" => Some(IncidentStatus::Open),
            "acknowledged" => Some(IncidentStatus::Acknowledged),
            "resolved" => Some(IncidentStatus::Resolved),
            _ => None,
        }
    }
}

/// How much an asset matters to the service, assigned by the operator.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Criticality {
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Medium => "medium",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Criticality> {
        match s {
            "low" => Some(Criticality::Low),
            "medium" => Some(Criticality::Medium),
            "high" => Some(Criticality::High),
            "critical" => Some(Criticality::Critical),
            _ => None,
        }
    }
}

/// One entry of an incident's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When it happened (wall time at the collector, Unix milliseconds).
    pub at_unix_ms: u64,
    /// `detected`, `alert`, `escalated`, `acknowledged`, `resolved`, `reopened`, `note`.
    pub kind: String,
    /// Who did it (a token's name), absent for the collector itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// One plain sentence.
    pub text: String,
}

/// An incident: alerts on one asset (or one site-wide subject) close together in time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub site: String,
    /// The asset it is about (`ip` or `ip/unit`), or absent for site-wide findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// One plain sentence: the most severe alert's summary.
    pub title: String,
    /// What opened it: the first alert's kind (`new_host`, `missing_polls`...). Stable for
    /// the incident's life, so responders' tools can key on it.
    #[serde(default)]
    pub kind: String,
    /// From the alerts' severities, raised by the asset's criticality.
    pub severity: Severity,
    pub status: IncidentStatus,
    /// Event time of the first alert's first occurrence.
    pub first_seen: Timestamp,
    /// Event time of the latest occurrence of any of its alerts.
    pub last_seen: Timestamp,
    /// Event time of the newest alert that joined it (not of repeats of those already in):
    /// new alerts join while they come within the grouping window of this. Absent in
    /// incidents stored before it existed (`last_seen` stands in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_joined: Option<Timestamp>,
    /// When the collector opened it (wall time, Unix ms): `detected - first_seen` is the
    /// time to detect when the events are live.
    pub detected_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// Distinct alerts grouped in it.
    pub alert_count: u64,
    /// The detectors that contributed (`allowlist`, `cycle`...), sorted.
    pub detectors: BTreeSet<String>,
    /// The ATT&CK for ICS techniques its alerts point at (ids, sorted; names in
    /// `mamori_models::detect::attack`).
    #[serde(default)]
    pub techniques: BTreeSet<String>,
    /// Every address its alerts name (source and destination devices), sorted.
    pub assets: BTreeSet<String>,
    /// The sources that acted: hosts behind novelty and protocol findings (a scanner, a
    /// rogue writer). Further findings from them join this incident.
    #[serde(default)]
    pub actors: BTreeSet<String>,
    /// Exercise traffic (a drill): routed apart, never a real incident.
    #[serde(default)]
    pub exercise: bool,
    pub timeline: Vec<TimelineEntry>,
}

/// An alert as stored: the models' alert plus where it is filed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    pub id: i64,
    pub site: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<i64>,
    /// When the collector stored it first (wall time, Unix ms).
    pub received_unix_ms: u64,
    pub alert: Alert,
    /// The audit entry of the operator who marked it as normal (`GET /api/v1/audit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_audit_id: Option<i64>,
}

/// What a host does on the network, as seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    ModbusClient,
    ModbusServer,
    SyslogSender,
    /// Only seen in flows of other protocols.
    Host,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ModbusClient => "modbus_client",
            Role::ModbusServer => "modbus_server",
            Role::SyslogSender => "syslog_sender",
            Role::Host => "host",
        }
    }
}

/// Device identification (Modbus function 43/14).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// One host of the inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Asset {
    pub site: String,
    pub ip: IpAddr,
    pub roles: BTreeSet<Role>,
    /// Modbus unit ids it answered (servers) or addressed (clients).
    pub units: BTreeSet<u8>,
    /// From 43/14 responses, the latest seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<DeviceIdentity>,
    /// Syslog host names it sent under.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub hostnames: BTreeSet<String>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub criticality: Criticality,
    /// Free text from the operator (what it is, where it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An incident with what an export or a report needs around it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentDetail {
    pub incident: Incident,
    /// Its alerts, in order of first occurrence.
    pub alerts: Vec<StoredAlert>,
    /// The inventory entries of the assets it names (those known).
    pub assets: Vec<Asset>,
}
