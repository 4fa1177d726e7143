//! MITRE ATT&CK for ICS: the techniques an alert points at, so that a responder, a report and
//! a STIX bundle speak the sector's language ("T0855 Unauthorized Command Message", not
//! "new_function"). The catalogue holds the techniques Mamori's findings can show (ids and
//! names of the ICS matrix, <https://attack.mitre.org/matrices/ics/>); [`techniques_for`] maps
//! a finding to them from its detector, kind and evidence. A finding that shows no technique
//! honestly (a log message of no known family) gets none rather than a guess.

use super::alert::{DetectorName, Evidence};

/// One technique of the ICS matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Technique {
    /// `T0855`.
    pub id: &'static str,
    pub name: &'static str,
    /// The tactic Mamori sees it under (a technique may belong to several).
    pub tactic: &'static str,
}

impl Technique {
    /// Its page on attack.mitre.org.
    pub fn url(&self) -> String {
        format!("https://attack.mitre.org/techniques/{}/", self.id)
    }
}

macro_rules! catalogue {
    ($($id:literal, $name:literal, $tactic:literal;)*) => {
        /// Every technique Mamori's findings map to, by id.
        pub const CATALOGUE: &[Technique] = &[
            $(Technique { id: $id, name: $name, tactic: $tactic },)*
        ];
    };
}

catalogue! {
    "T0801", "Monitor Process State", "Collection";
    "T0802", "Automated Collection", "Collection";
    "T0806", "Brute Force I/O", "Impair Process Control";
    "T0812", "Default Credentials", "Lateral Movement";
    "T0814", "Denial of Service", "Inhibit Response Function";
    "T0816", "Device Restart/Shutdown", "Inhibit Response Function";
    "T0826", "Loss of Availability", "Impact";
    "T0831", "Manipulation of Control", "Impact";
    "T0836", "Modify Parameter", "Impair Process Control";
    "T0839", "Module Firmware", "Persistence";
    "T0843", "Program Download", "Lateral Movement";
    "T0845", "Program Upload", "Collection";
    "T0846", "Remote System Discovery", "Discovery";
    "T0848", "Rogue Master", "Initial Access";
    "T0855", "Unauthorized Command Message", "Impair Process Control";
    "T0858", "Change Operating Mode", "Execution";
    "T0859", "Valid Accounts", "Lateral Movement";
    "T0861", "Point & Tag Identification", "Collection";
    "T0866", "Exploitation of Remote Services", "Lateral Movement";
    "T0872", "Indicator Removal on Host", "Evasion";
    "T0886", "Remote Services", "Lateral Movement";
    "T0888", "Remote System Information Discovery", "Discovery";
}

/// The technique with this id, when catalogued.
pub fn technique(id: &str) -> Option<&'static Technique> {
    CATALOGUE.iter().find(|t| t.id == id)
}

/// Ports of remote services an attacker moves laterally with (SMB, RPC, RDP, SSH, Telnet,
/// VNC, WinRM).
const REMOTE_SERVICE_PORTS: [u64; 10] = [22, 23, 135, 139, 445, 3389, 5900, 5985, 5986, 593];

fn number(evidence: &Evidence, key: &str) -> Option<u64> {
    evidence.get(key).and_then(serde_json::Value::as_u64)
}

fn text<'a>(evidence: &'a Evidence, key: &str) -> Option<&'a str> {
    evidence.get(key).and_then(serde_json::Value::as_str)
}

/// The feature a traffic-window alert found most unusual (the first of its
/// `top_deviations`).
fn leading_feature(evidence: &Evidence) -> Option<&str> {
    evidence
        .get("top_deviations")?
        .as_array()?
        .first()?
        .get("feature")?
        .as_str()
}

/// What a Modbus function does, for the techniques of a finding about it.
fn modbus_function(func: u64, evidence: &Evidence) -> &'static [&'static str] {
    match func {
        // Writes of coils and registers, mask write, read/write multiple.
        5 | 6 | 15 | 16 | 22 | 23 => &["T0855", "T0836"],
        // Diagnostics (restart, listen-only mode), report server id.
        8 => &["T0816", "T0814"],
        17 => &["T0888"],
        // Read device identification (43/14), other encapsulated transports.
        43 => &["T0888"],
        // Schneider UMAS: program transfers and mode changes live there.
        90 => &["T0843", "T0858"],
        // File records: programs and recipes.
        20 => &["T0845"],
        21 => &["T0843"],
        1..=4 | 24 => &["T0801"],
        _ if text(evidence, "function_class") == Some("write") => &["T0855"],
        _ => &["T0888"],
    }
}

/// The techniques a syslog message's family points at (from its template or text), if any.
fn syslog_family(evidence: &Evidence) -> &'static [&'static str] {
    let t = text(evidence, "template")
        .or_else(|| text(evidence, "message"))
        .unwrap_or("")
        .to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&["default password", "default credential"]) {
        &["T0812"]
    } else if has(&[
        "login",
        "logon",
        "log in",
        "password",
        "authentic",
        "auth fail",
        "invalid user",
        "access denied",
    ]) {
        &["T0859"]
    } else if has(&["firmware", "upgrade", "bootloader"]) {
        &["T0839"]
    } else if has(&["download", "program", "logic", "project"]) {
        &["T0843"]
    } else if has(&[
        "reboot",
        "restart",
        "shutdown",
        "power cycle",
        "cold start",
        "warm start",
    ]) {
        &["T0816"]
    } else if has(&["log cleared", "audit log", "logging disabled"]) {
        &["T0872"]
    } else if has(&["mode change", "run mode", "stop mode", "program mode"]) {
        &["T0858"]
    } else {
        &[]
    }
}

/// The techniques of a finding: its detector and kind, refined by its evidence where the kind
/// alone does not say (which function, which port, which feature).
pub fn techniques_for(
    detector: DetectorName,
    kind: &str,
    evidence: &Evidence,
) -> &'static [&'static str] {
    use DetectorName as D;
    let port = number(evidence, "dst_port");
    let remote_service = port.is_some_and(|p| REMOTE_SERVICE_PORTS.contains(&p));
    let modbus = port == Some(502) || text(evidence, "service") == Some("modbus");
    match (detector, kind) {
        (D::Allowlist, "new_host") if modbus => &["T0848"],
        (D::Allowlist, "new_host" | "new_path") if remote_service => &["T0886"],
        (D::Allowlist, "new_host" | "new_path") => &["T0846"],
        (D::Allowlist, "new_modbus_path") => &["T0848"],
        (D::Allowlist, "new_function") => {
            number(evidence, "func").map_or(&["T0855"][..], |f| modbus_function(f, evidence))
        }
        (D::Allowlist, "address_out_of_range") => {
            if text(evidence, "access") == Some("write") {
                &["T0855", "T0836"]
            } else {
                &["T0861"]
            }
        }
        // A unit-id scan lists the devices behind one address: which systems exist.
        (D::Protocol, "unit_scan") => &["T0846"],
        // A function-code scan learns what one known device implements, not which devices exist.
        (D::Protocol, "function_scan") => &["T0888"],
        // Probing addresses outside the learned ranges finds the device's points (its memory
        // locations) and so its register map.
        (D::Protocol, "address_scan" | "address_sweep") => &["T0861", "T0888"],
        (D::Protocol, "exception_burst") => &["T0888"],
        (D::Protocol, "unanswered_requests") => &["T0814"],
        (D::Protocol, "agent_anomaly") => &["T0866"],
        (D::Protocol, _) => &["T0846"],
        (D::PollingCycle, "missing_polls") => &["T0826", "T0814"],
        (D::PollingCycle, "request_flood") => &["T0814", "T0806"],
        (D::PollingCycle, "extra_requests") => &["T0802"],
        (D::PollingCycle, _) => &["T0814"],
        (D::ProcessValue, "setpoint_out_of_range" | "setpoint_new_value") => &["T0836", "T0855"],
        (D::ProcessValue, _) => &["T0831"],
        (D::TrafficWindow, _) => match leading_feature(evidence) {
            Some("write_share") => &["T0855"],
            Some("functions" | "addresses") => &["T0846"],
            Some("exceptions") => &["T0888"],
            _ => &["T0814"],
        },
        (D::Syslog, _) => syslog_family(evidence),
        (D::Inventory, _) => &["T0839"],
        (D::Intake, _) => &["T0872"],
        (D::Allowlist, _) => &["T0846"],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    fn ev(pairs: &[(&str, serde_json::Value)]) -> Evidence {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn every_mapped_id_is_catalogued_and_ids_are_unique() {
        let ids: std::collections::BTreeSet<_> = CATALOGUE.iter().map(|t| t.id).collect();
        assert_eq!(ids.len(), CATALOGUE.len());
        for d in [
            DetectorName::Allowlist,
            DetectorName::PollingCycle,
            DetectorName::ProcessValue,
            DetectorName::Protocol,
            DetectorName::Syslog,
            DetectorName::TrafficWindow,
            DetectorName::Inventory,
            DetectorName::Intake,
        ] {
            for kind in [
                "new_host",
                "new_function",
                "missing_polls",
                "x",
                "function_scan",
                "unit_scan",
                "address_scan",
                "address_sweep",
            ] {
                for e in [
                    ev(&[]),
                    ev(&[("func", json!(16))]),
                    ev(&[("dst_port", json!(445))]),
                    ev(&[("template", json!("Failed password for <*>"))]),
                ] {
                    for id in techniques_for(d, kind, &e) {
                        assert!(technique(id).is_some(), "{id} not catalogued");
                    }
                }
            }
        }
    }

    #[test]
    fn findings_name_what_the_issue_names() {
        let write = ev(&[("func", json!(6))]);
        assert_eq!(
            techniques_for(DetectorName::Allowlist, "new_function", &write)[0],
            "T0855"
        );
        assert_eq!(
            techniques_for(DetectorName::Protocol, "function_scan", &ev(&[]))[0],
            "T0888"
        );
        assert_eq!(
            techniques_for(DetectorName::PollingCycle, "request_flood", &ev(&[]))[0],
            "T0814"
        );
        // Lateral movement over SMB by a new host, and a new host speaking Modbus.
        let smb = ev(&[("dst_port", json!(445))]);
        assert_eq!(
            techniques_for(DetectorName::Allowlist, "new_host", &smb),
            ["T0886"]
        );
        let modbus = ev(&[("dst_port", json!(502))]);
        assert_eq!(
            techniques_for(DetectorName::Allowlist, "new_host", &modbus),
            ["T0848"]
        );
        // A log message of no known family carries none.
        let plain = ev(&[("template", json!("fan speed <*> rpm"))]);
        assert!(techniques_for(DetectorName::Syslog, "new_syslog_template", &plain).is_empty());
        assert_eq!(
            technique("T0855").unwrap().url(),
            "https://attack.mitre.org/techniques/T0855/"
        );
    }

    /// Reconnaissance alerts: a unit-id scan looks for devices, the others map one device. The
    /// evidence the detector attaches (the units, functions or addresses tried) changes nothing.
    #[test]
    fn reconnaissance_alerts_name_discovery_of_systems_or_of_a_system() {
        let names = |kind: &str, e: &Evidence| -> Vec<&str> {
            techniques_for(DetectorName::Protocol, kind, e)
                .iter()
                .map(|id| technique(id).unwrap().name)
                .collect()
        };
        let units = ev(&[("units", json!([2, 3, 4, 5, 6])), ("func", json!(3))]);
        assert_eq!(names("unit_scan", &units), ["Remote System Discovery"]);
        let funcs = ev(&[("functions", json!([0, 1, 2, 3])), ("dst_port", json!(502))]);
        assert_eq!(
            names("function_scan", &funcs),
            ["Remote System Information Discovery"]
        );
        for kind in ["address_scan", "address_sweep"] {
            let addresses = ev(&[("distinct_addresses", json!(16))]);
            assert_eq!(
                names(kind, &addresses),
                [
                    "Point & Tag Identification",
                    "Remote System Information Discovery"
                ],
                "{kind}"
            );
        }
        // Both under the Discovery tactic, beside the other reconnaissance findings.
        for kind in ["unit_scan", "function_scan"] {
            for id in techniques_for(DetectorName::Protocol, kind, &ev(&[])) {
                assert_eq!(technique(id).unwrap().tactic, "Discovery", "{kind}");
            }
        }
    }
}
