//! "This is normal": an operator's verdict on an alert, folded into the baseline so that the
//! same finding is not raised again. Each family takes it in its own terms:
//!
//! - the **allowlist** gains the host, the path, the function and the addresses the alert's
//!   transaction used;
//! - a **process value**'s read (or written) range widens to the values the alert showed, and
//!   a jump widens the register's learned step and rate;
//! - a **syslog** template becomes one the host commonly logs, and a burst's count becomes the
//!   template's learned peak;
//! - a **traffic window**'s threshold rises above the score that fired;
//! - anything else is kept as an *accepted finding* (detector, kind, subject): later raises of
//!   it are observations (info) that say they were accepted, recorded but never paging.
//!   Nothing is silently dropped.
//!
//! A silent device is never normal: a device taken out of service is relearned or forgotten
//! instead ([`super::Scope`]). The answer, [`Accepted`], lists what changed, for the audit
//! trail.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Scope;
use super::alert::{Alert, DetectorName};
use super::allowlist::{
    AddressRange, AllowlistBaseline, FunctionKey, PathKey, TableKey, is_group_address,
};
use super::modbus::{Access, Table};
use super::values::{RegisterKey, ValueBaseline};
use super::window::{WindowBaseline, WindowSubject};
use crate::event::Transport;
use crate::templates::TemplateId;

/// Accepted findings a baseline keeps; beyond, acceptance is refused (relearn instead).
pub const MAX_ACCEPTED_FINDINGS: usize = 10_000;

/// What makes two alerts the same finding (the alert book's aggregation identity).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FindingKey {
    pub detector: DetectorName,
    pub kind: String,
    pub subject: String,
}

/// The hosts an accepted finding names, so that relearning a device forgets it too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingHosts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<IpAddr>,
}

/// Findings an operator accepted as normal that no detector's model can take in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedFindings {
    #[serde(with = "super::entries")]
    pub findings: BTreeMap<FindingKey, FindingHosts>,
}

impl AcceptedFindings {
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty()
    }

    fn key(alert: &Alert) -> FindingKey {
        FindingKey {
            detector: alert.detector,
            kind: alert.kind.clone(),
            subject: alert.subject.clone(),
        }
    }

    /// Whether `alert` is a finding accepted as normal.
    pub fn contains(&self, alert: &Alert) -> bool {
        !self.findings.is_empty() && self.findings.contains_key(&Self::key(alert))
    }

    /// Turns an accepted finding raised outside the detectors (the collector's inventory and
    /// intake) into an observation, as the detectors do with theirs; true when it did.
    pub fn demote(&self, alert: &mut Alert) -> bool {
        if !self.contains(alert) || alert.severity == super::Severity::Info {
            return false;
        }
        alert.severity = super::Severity::Info;
        alert.score = super::Severity::Info.base_score();
        alert
            .summary
            .push_str(" (Accepted as normal by an operator.)");
        alert
            .evidence
            .insert("accepted_as_normal".into(), Value::Bool(true));
        true
    }

    pub(crate) fn forget(&mut self, scope: &Scope) {
        match *scope {
            Scope::Asset(ip) => self
                .findings
                .retain(|_, h| h.src_ip != Some(ip) && h.dst_ip != Some(ip)),
            // The alert names the pair, not always the unit and function: the pair's findings
            // are relearned with the channel.
            Scope::Channel { client, server, .. } => self
                .findings
                .retain(|_, h| !(h.src_ip == Some(client) && h.dst_ip == Some(server))),
        }
    }

    pub(crate) fn merge(&mut self, other: AcceptedFindings) {
        self.findings.extend(other.findings);
    }
}

/// One change an acceptance made to the baseline (`what` names it in JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Change {
    /// A host the allowlist now knows.
    Host { ip: IpAddr },
    /// A transport path the allowlist now knows.
    Path {
        client: IpAddr,
        server: IpAddr,
        transport: Transport,
        port: u16,
    },
    /// A Modbus function a client may now use on a server's unit.
    Function {
        client: IpAddr,
        server: IpAddr,
        unit: u8,
        func: u8,
    },
    /// Addresses a client's function may now read or write.
    Addresses {
        client: IpAddr,
        server: IpAddr,
        unit: u8,
        func: u8,
        table: Table,
        write: bool,
        /// The learned range before (absent: none) and after.
        from: Option<AddressRange>,
        to: AddressRange,
    },
    /// A register's read range, before and after.
    ReadRange {
        server: IpAddr,
        unit: u8,
        table: Table,
        address: u16,
        from: [u16; 2],
        to: [u16; 2],
    },
    /// A holding register's written range, before (absent: never written) and after.
    WriteRange {
        server: IpAddr,
        unit: u8,
        address: u16,
        from: Option<[u16; 2]>,
        to: [u16; 2],
    },
    /// A register's learned largest step and fastest rate, before and after.
    Step {
        server: IpAddr,
        unit: u8,
        table: Table,
        address: u16,
        max_step: [u16; 2],
        max_rate_per_h: [u64; 2],
    },
    /// A syslog template the host now commonly logs (learned count before and after).
    SyslogTemplate {
        host: String,
        app: String,
        template_id: u64,
        template: String,
        learned_count: [u64; 2],
    },
    /// A syslog template's learned peak per window, before and after.
    SyslogPeak {
        host: String,
        app: String,
        template_id: u64,
        peak: [u64; 2],
    },
    /// A traffic window model's threshold, before and after.
    WindowThreshold { subject: String, from: f64, to: f64 },
    /// A finding whose later raises are observations.
    Finding {
        detector: DetectorName,
        kind: String,
        subject: String,
    },
}

impl Change {
    /// The register a value change is about (its detector's live state must follow).
    pub(crate) fn register(&self) -> Option<RegisterKey> {
        match *self {
            Change::ReadRange {
                server,
                unit,
                table,
                address,
                ..
            }
            | Change::Step {
                server,
                unit,
                table,
                address,
                ..
            } => Some(RegisterKey {
                server,
                unit,
                table,
                address,
            }),
            Change::WriteRange {
                server,
                unit,
                address,
                ..
            } => Some(RegisterKey {
                server,
                unit,
                table: Table::HoldingRegisters,
                address,
            }),
            _ => None,
        }
    }
}

/// What an acceptance did: the finding, the changes to the baseline, and plain sentences
/// about what could not be taken in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Accepted {
    pub detector: DetectorName,
    pub kind: String,
    pub subject: String,
    pub changes: Vec<Change>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Why a finding could not be accepted as normal.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The finding is not a state a baseline can hold (a silent device).
    #[error("{kind} cannot be accepted as normal: {reason}")]
    NotAcceptable { kind: String, reason: &'static str },
    /// The alert does not carry what its acceptance needs (an alert from an older version).
    #[error("the {kind} alert does not carry {field}, which accepting it needs")]
    MissingEvidence { kind: String, field: &'static str },
    /// What the alert is about is not in the baseline any more (relearned or forgotten).
    #[error("{what} is not in the baseline; relearn it instead")]
    NotInBaseline { what: String },
    /// The baseline holds [`MAX_ACCEPTED_FINDINGS`] accepted findings already.
    #[error("the baseline holds {max} accepted findings already; relearn instead")]
    Full { max: usize },
}

fn missing(alert: &Alert, field: &'static str) -> AcceptError {
    AcceptError::MissingEvidence {
        kind: alert.kind.clone(),
        field,
    }
}

/// A field of the alert's evidence, typed.
fn field<T: serde::de::DeserializeOwned>(
    alert: &Alert,
    name: &'static str,
) -> Result<T, AcceptError> {
    alert
        .evidence
        .get(name)
        .and_then(|v| T::deserialize(v).ok())
        .ok_or_else(|| missing(alert, name))
}

fn ends(alert: &Alert) -> Result<(IpAddr, IpAddr), AcceptError> {
    Ok((
        alert.src_ip.ok_or_else(|| missing(alert, "src_ip"))?,
        alert.dst_ip.ok_or_else(|| missing(alert, "dst_ip"))?,
    ))
}

/// The unit of a Modbus alert's device (`asset` is `ip/unit`).
fn unit_of(alert: &Alert) -> Result<u8, AcceptError> {
    alert
        .asset
        .as_deref()
        .and_then(|a| a.rsplit_once('/'))
        .and_then(|(_, u)| u.parse().ok())
        .ok_or_else(|| missing(alert, "asset (ip/unit)"))
}

impl super::Baseline {
    /// Folds an operator's "this is normal" for `alert` into the baseline (see the module
    /// documentation), and says what changed. A detector built from the baseline afterwards
    /// raises nothing for the same event, or an observation for an accepted finding.
    pub fn accept(&mut self, alert: &Alert) -> Result<Accepted, AcceptError> {
        let mut done = Accepted {
            detector: alert.detector,
            kind: alert.kind.clone(),
            subject: alert.subject.clone(),
            changes: Vec::new(),
            notes: Vec::new(),
        };
        let kind = alert.kind.as_str();
        match (alert.detector, kind) {
            (DetectorName::PollingCycle, "missing_polls") => {
                return Err(AcceptError::NotAcceptable {
                    kind: alert.kind.clone(),
                    reason: "a device that went silent is not a state to learn; if it was \
                             taken out of service, relearn it so that its polls are forgotten",
                });
            }
            (
                DetectorName::Allowlist,
                "new_host"
                | "new_path"
                | "new_function"
                | "new_modbus_path"
                | "address_out_of_range",
            ) => allowlist(&mut self.allowlist, alert, &mut done)?,
            (
                DetectorName::ProcessValue,
                "process_deviation"
                | "rate_of_change"
                | "setpoint_out_of_range"
                | "setpoint_new_value",
            ) => values(&mut self.values, alert, &mut done)?,
            (
                DetectorName::Syslog,
                "new_syslog_template" | "rare_syslog_template" | "syslog_rate_burst",
            ) => syslog(&mut self.syslog, alert, &mut done)?,
            (DetectorName::TrafficWindow, "unusual_traffic_window") => {
                window(&mut self.windows, alert, &mut done)?
            }
            _ => finding(&mut self.accepted, alert, &mut done)?,
        }
        if done.changes.is_empty() && done.notes.is_empty() {
            done.notes
                .push("the baseline already takes this finding as normal: nothing changed".into());
        }
        Ok(done)
    }
}

fn allowlist(
    b: &mut AllowlistBaseline,
    alert: &Alert,
    out: &mut Accepted,
) -> Result<(), AcceptError> {
    let (client, server) = ends(alert)?;
    let path = |b: &mut AllowlistBaseline, out: &mut Accepted, transport: Transport, port| {
        let key = PathKey {
            client,
            server,
            transport,
            port,
        };
        if let std::collections::btree_map::Entry::Vacant(slot) = b.paths.entry(key) {
            slot.insert(0);
            out.changes.push(Change::Path {
                client,
                server,
                transport,
                port,
            });
        }
    };
    match alert.kind.as_str() {
        "new_host" => {
            for ip in [client, server] {
                if !is_group_address(ip) && !b.hosts.contains_key(&ip) {
                    b.hosts.insert(ip, 0);
                    out.changes.push(Change::Host { ip });
                }
            }
            // A flow names its transport; a Modbus transaction its unit and function.
            if let Ok(transport) = field::<Transport>(alert, "transport") {
                path(b, out, transport, field(alert, "dst_port")?);
            } else {
                modbus(b, alert, out, client, server)?;
                if let Ok(port) = field::<u16>(alert, "dst_port") {
                    path(b, out, Transport::Tcp, port);
                }
            }
        }
        "new_path" => path(
            b,
            out,
            field(alert, "transport")?,
            field(alert, "dst_port")?,
        ),
        "new_function" | "new_modbus_path" => {
            modbus(b, alert, out, client, server)?;
            if let Ok(port) = field::<u16>(alert, "dst_port") {
                path(b, out, Transport::Tcp, port);
            }
        }
        _ => {
            // address_out_of_range: the subject ends with whether it was a write.
            let write = match alert.subject.rsplit_once('/') {
                Some((_, "true")) => true,
                Some((_, "false")) => false,
                _ => return Err(missing(alert, "subject (…/write)")),
            };
            let access = Access {
                table: field(alert, "table")?,
                first: field(alert, "first")?,
                last: field(alert, "last")?,
                write,
            };
            let key = FunctionKey {
                client,
                server,
                unit: unit_of(alert)?,
                func: field(alert, "func")?,
            };
            if !b.functions.contains_key(&key) {
                return Err(AcceptError::NotInBaseline {
                    what: format!(
                        "function {} of {client} on {server} unit {}",
                        key.func, key.unit
                    ),
                });
            }
            addresses(b, key, access, out);
        }
    }
    Ok(())
}

/// The function of a Modbus alert and the addresses its transaction used.
fn modbus(
    b: &mut AllowlistBaseline,
    alert: &Alert,
    out: &mut Accepted,
    client: IpAddr,
    server: IpAddr,
) -> Result<(), AcceptError> {
    let key = FunctionKey {
        client,
        server,
        unit: field(alert, "unit")?,
        func: field(alert, "func")?,
    };
    if let std::collections::btree_map::Entry::Vacant(slot) = b.functions.entry(key) {
        slot.insert(Default::default());
        out.changes.push(Change::Function {
            client,
            server,
            unit: key.unit,
            func: key.func,
        });
    }
    match field::<Vec<Access>>(alert, "accesses") {
        Ok(accesses) => {
            for a in accesses {
                addresses(b, key, a, out);
            }
        }
        Err(_) => out.notes.push(
            "the alert does not list the addresses used (it is older than this version): \
             the next access will be raised as out of range, and can be accepted in turn"
                .into(),
        ),
    }
    Ok(())
}

fn addresses(b: &mut AllowlistBaseline, key: FunctionKey, a: Access, out: &mut Accepted) {
    let Some(profile) = b.functions.get_mut(&key) else {
        return;
    };
    let range = if a.write {
        &mut profile.write
    } else {
        &mut profile.read
    };
    let before = *range;
    AddressRange::widen(range, a.first, a.last);
    let tk = TableKey {
        server: key.server,
        unit: key.unit,
        table: a.table,
    };
    let mut table = b.tables.get(&tk).copied();
    AddressRange::widen(&mut table, a.first, a.last);
    if let Some(t) = table {
        b.tables.insert(tk, t);
    }
    if let Some(to) = *range
        && before != Some(to)
    {
        out.changes.push(Change::Addresses {
            client: key.client,
            server: key.server,
            unit: key.unit,
            func: key.func,
            table: a.table,
            write: a.write,
            from: before,
            to,
        });
    }
}

/// `hr40` → (holding registers, 40): a register as the values detector names it.
fn parse_register(name: &str) -> Option<(Table, u16)> {
    let table = match name.get(..2)? {
        "hr" => Table::HoldingRegisters,
        "ir" => Table::InputRegisters,
        _ => return None,
    };
    Some((table, name.get(2..)?.parse().ok()?))
}

fn values(v: &mut ValueBaseline, alert: &Alert, out: &mut Accepted) -> Result<(), AcceptError> {
    let server = alert.dst_ip.ok_or_else(|| missing(alert, "dst_ip"))?;
    let unit = unit_of(alert)?;
    let key = |table, address| RegisterKey {
        server,
        unit,
        table,
        address,
    };
    match alert.kind.as_str() {
        "process_deviation" => {
            // Every register the alert grew with, over the values it showed there.
            let mut seen: BTreeMap<(Table, u16), (u16, u16)> = BTreeMap::new();
            if let Ok(observed) = field::<BTreeMap<String, [u16; 2]>>(alert, "observed") {
                for (name, [lo, hi]) in observed {
                    if let Some(r) = parse_register(&name) {
                        seen.insert(r, (lo, hi));
                    }
                }
            }
            if seen.is_empty() {
                let value: u16 = field(alert, "value")?;
                seen.insert(
                    (field(alert, "table")?, field(alert, "address")?),
                    (value, value),
                );
            }
            let listed: Vec<String> = field(alert, "registers").unwrap_or_default();
            let unvalued: Vec<&String> = listed
                .iter()
                .filter(|n| parse_register(n).is_none_or(|r| !seen.contains_key(&r)))
                .collect();
            if !unvalued.is_empty() {
                out.notes.push(format!(
                    "no values recorded for {unvalued:?} (an alert older than this version): \
                     their next deviation will be raised, and can be accepted in turn"
                ));
            }
            for ((table, address), (lo, hi)) in seen {
                read_range(v, key(table, address), &[lo, hi], out)?;
            }
        }
        "rate_of_change" => {
            let k = key(field(alert, "table")?, field(alert, "address")?);
            let previous: u16 = field(alert, "previous")?;
            let value: u16 = field(alert, "value")?;
            let interval_s: f64 = field(alert, "interval_s")?;
            read_range(v, k, &[previous, value], out)?;
            let p = v.registers.get_mut(&k).ok_or_else(|| not_in(&k))?;
            let step = previous.abs_diff(value);
            // The rate over the interval the jump took (rounded up, so the same jump fits).
            let rate = if interval_s > 0.0 {
                (f64::from(step) * 3600.0 / interval_s)
                    .ceil()
                    .min(u64::MAX as f64) as u64
            } else {
                0
            };
            let (step0, rate0) = (p.max_step, p.max_rate_per_h);
            p.max_step = p.max_step.max(step);
            p.max_rate_per_h = p.max_rate_per_h.max(rate);
            if (step0, rate0) != (p.max_step, p.max_rate_per_h) {
                out.changes.push(Change::Step {
                    server,
                    unit,
                    table: k.table,
                    address: k.address,
                    max_step: [step0, p.max_step],
                    max_rate_per_h: [rate0, p.max_rate_per_h],
                });
            }
        }
        _ => {
            // A set-point: written, then read back as the register's value.
            let k = key(Table::HoldingRegisters, field(alert, "address")?);
            let value: u16 = field(alert, "value")?;
            let p = v.registers.get(&k).ok_or_else(|| not_in(&k))?;
            let from = (p.writes > 0).then_some([p.write_min, p.write_max]);
            v.accept_write(k, value);
            if let Some(p) = v.registers.get(&k)
                && from != Some([p.write_min, p.write_max])
            {
                out.changes.push(Change::WriteRange {
                    server,
                    unit,
                    address: k.address,
                    from,
                    to: [p.write_min, p.write_max],
                });
            }
            read_range(v, k, &[value], out)?;
        }
    }
    Ok(())
}

fn not_in(k: &RegisterKey) -> AcceptError {
    AcceptError::NotInBaseline {
        what: format!(
            "register {:?} {} of {} unit {}",
            k.table, k.address, k.server, k.unit
        ),
    }
}

fn read_range(
    v: &mut ValueBaseline,
    k: RegisterKey,
    values: &[u16],
    out: &mut Accepted,
) -> Result<(), AcceptError> {
    let p = v.registers.get(&k).ok_or_else(|| not_in(&k))?;
    let from = [p.read_min, p.read_max];
    let states = p.states.clone();
    for &x in values {
        v.accept_read(k, x);
    }
    if let Some(p) = v.registers.get(&k)
        && (from != [p.read_min, p.read_max] || states != p.states)
    {
        out.changes.push(Change::ReadRange {
            server: k.server,
            unit: k.unit,
            table: k.table,
            address: k.address,
            from,
            to: [p.read_min, p.read_max],
        });
    }
    Ok(())
}

fn syslog(
    s: &mut super::SyslogBaseline,
    alert: &Alert,
    out: &mut Accepted,
) -> Result<(), AcceptError> {
    let host: String = field(alert, "host")?;
    let app: String = field(alert, "app_name")?;
    let id = TemplateId(field(alert, "template_id")?);
    if alert.kind == "syslog_rate_burst" {
        let count: u64 = field(alert, "count_in_window")?;
        let (from, to) =
            s.accept_peak(&host, &app, id, count)
                .ok_or_else(|| AcceptError::NotInBaseline {
                    what: format!("template {} of {app} on {host}", id.0),
                })?;
        if from != to {
            out.changes.push(Change::SyslogPeak {
                host,
                app,
                template_id: id.0,
                peak: [from, to],
            });
        }
        return Ok(());
    }
    let message: Option<String> = field(alert, "message").ok();
    let (id, template, from, to) = s
        .accept_template(&host, &app, id, message.as_deref())
        .ok_or_else(|| missing(alert, "message"))?;
    if from != to {
        out.changes.push(Change::SyslogTemplate {
            host,
            app,
            template_id: id.0,
            template,
            learned_count: [from, to],
        });
    }
    Ok(())
}

/// `window:a>b` or `window:a`: the subject of a traffic window alert.
fn window_subject(subject: &str) -> Option<WindowSubject> {
    let key = subject.strip_prefix("window:")?;
    Some(match key.split_once('>') {
        Some((c, s)) => WindowSubject::Channel {
            client: c.parse().ok()?,
            server: s.parse().ok()?,
        },
        None => WindowSubject::Host(key.parse().ok()?),
    })
}

fn window(w: &mut WindowBaseline, alert: &Alert, out: &mut Accepted) -> Result<(), AcceptError> {
    let subject = window_subject(&alert.subject).ok_or_else(|| missing(alert, "subject"))?;
    let score: f64 = field(alert, "max_score").or_else(|_| field(alert, "score"))?;
    let m = w
        .models
        .get_mut(&subject)
        .ok_or_else(|| AcceptError::NotInBaseline {
            what: format!("the traffic model of {}", alert.subject),
        })?;
    // The score is rounded to 1/1000 in the evidence: clear it by more than that, in a value
    // that prints and parses back exactly.
    let to = ((score + 0.002) * 1000.0).ceil() / 1000.0;
    if to.is_finite() && to > m.threshold {
        out.changes.push(Change::WindowThreshold {
            subject: alert.subject.clone(),
            from: m.threshold,
            to,
        });
        m.threshold = to;
    }
    Ok(())
}

fn finding(a: &mut AcceptedFindings, alert: &Alert, out: &mut Accepted) -> Result<(), AcceptError> {
    let key = AcceptedFindings::key(alert);
    if !a.findings.contains_key(&key) && a.findings.len() >= MAX_ACCEPTED_FINDINGS {
        return Err(AcceptError::Full {
            max: MAX_ACCEPTED_FINDINGS,
        });
    }
    a.findings.insert(
        key,
        FindingHosts {
            src_ip: alert.src_ip,
            dst_ip: alert.dst_ip,
        },
    );
    out.changes.push(Change::Finding {
        detector: alert.detector,
        kind: alert.kind.clone(),
        subject: alert.subject.clone(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use serde_json::json;

    use super::*;
    use crate::detect::{Baseline, DetectConfig, Detector, Learner, Severity};
    use crate::event::Event;
    use crate::time::Timestamp;

    const HMI: &str = "10.0.0.2";
    const PLC: &str = "10.0.0.5";
    const ROGUE: &str = "10.0.0.66";

    fn ts(s: f64) -> Timestamp {
        Timestamp::from_micros((1_714_557_600.0 * 1e6 + s * 1e6) as i64)
    }

    fn modbus(t: f64, src: &str, func: u8, request: Value, response: Value) -> Event {
        let mut request = request;
        request["ts"] = json!(ts(t));
        let mut response = response;
        response["ts"] = json!(ts(t));
        serde_json::from_value(json!({
            "type": "modbus", "ts": ts(t), "src_ip": src, "src_port": 40000,
            "dst_ip": PLC, "dst_port": 502, "tid": 1, "unit": 1,
            "func": func, "func_name": format!("F{func}"),
            "request": request, "response": response,
            "exception": null, "exception_code": null, "latency_us": 500, "anomalies": []
        }))
        .unwrap()
    }

    /// `src` reads holding registers from `address` on.
    fn read(t: f64, src: &str, address: u16, values: &[u16]) -> Event {
        modbus(
            t,
            src,
            3,
            json!({ "len": 6, "address": address, "quantity": values.len() }),
            json!({ "len": 3 + 2 * values.len(), "values": values }),
        )
    }

    /// `src` writes one holding register (function 6).
    fn write(t: f64, src: &str, address: u16, v: u16) -> Event {
        let pdu = json!({ "len": 6, "address": address, "values": [v] });
        modbus(t, src, 6, pdu.clone(), pdu)
    }

    fn flow(t: f64, src: &str, dst: &str, port: u16) -> Event {
        serde_json::from_value(json!({
            "type": "flow", "ts": ts(t), "end_ts": ts(t), "transport": "tcp",
            "src_ip": src, "src_port": 40000, "dst_ip": dst, "dst_port": port,
            "orig_pkts": 3, "orig_bytes": 100, "resp_pkts": 3,
            "resp_bytes": 100, "state": "SF", "reason": "fin"
        }))
        .unwrap()
    }

    fn syslog(t: f64, facility: u8, severity: u8, text: &str) -> Event {
        serde_json::from_value(json!({
            "type": "syslog", "ts": ts(t), "received_ts": ts(t), "src_ip": "10.0.0.9",
            "format": "rfc5424", "priority": facility * 8 + severity, "facility": facility,
            "severity": severity, "hostname": "rtu-9", "app_name": "sshd", "msg": text
        }))
        .unwrap()
    }

    /// Every alert and observation.
    fn config() -> DetectConfig {
        DetectConfig {
            min_severity: Severity::Info,
            ..DetectConfig::default()
        }
    }

    fn learn(events: &[Event]) -> Baseline {
        let mut l = Learner::new(config());
        for e in events {
            l.observe(e);
        }
        l.finish()
    }

    fn detect(d: &mut Detector, events: &[Event]) -> Vec<Alert> {
        for e in events {
            d.observe(e);
        }
        // Findings on measured values wait for their device's coils: let them out.
        d.values.flush(None, &mut d.book);
        d.drain()
    }

    /// An hour of the HMI reading four registers every 2 s (values moving within 100–103),
    /// and its flows to the PLC.
    fn plant() -> Vec<Event> {
        let mut events = Vec::new();
        for i in 0..1800u16 {
            let t = f64::from(i) * 2.0;
            let v = 100 + i % 4;
            events.push(read(t, HMI, 0, &[v, v, 500, 7]));
            if i % 60 == 0 {
                events.push(flow(t, HMI, PLC, 502));
            }
        }
        events
    }

    /// Detects `event` on a detector of `baseline` (at 2 h, and again `again` s later after
    /// acceptance): the alerts before, the acceptance, the alerts after, on the live detector
    /// and on one built from the saved and reloaded baseline.
    fn accept_loop(
        baseline: Baseline,
        event: impl Fn(f64) -> Vec<Event>,
        pick: &str,
    ) -> (Alert, Accepted, Vec<Alert>, Vec<Alert>) {
        let mut d = Detector::new(baseline, config()).unwrap();
        let before = detect(&mut d, &event(7_200.0));
        let alert = before
            .iter()
            .find(|a| a.kind == pick)
            .unwrap_or_else(|| panic!("no {pick} in {before:#?}"))
            .clone();
        let accepted = d.accept(&alert).unwrap();
        let live = detect(&mut d, &event(7_202.0));
        let saved = Baseline::from_json(&d.baseline().to_json().unwrap()).unwrap();
        assert_eq!(
            &saved,
            d.baseline(),
            "the accepted baseline saves and loads"
        );
        let mut fresh = Detector::new(saved, config()).unwrap();
        let reloaded = detect(&mut fresh, &event(7_204.0));
        (alert, accepted, live, reloaded)
    }

    #[test]
    fn a_new_host_accepted_is_known_with_its_path_then_its_function() {
        let events = |t| {
            vec![
                flow(t, ROGUE, PLC, 502),
                read(t, ROGUE, 0, &[100, 100, 500, 7]),
            ]
        };
        let mut d = Detector::new(learn(&plant()), config()).unwrap();
        let before = detect(&mut d, &events(7_200.0));
        // The flow and the transaction are one finding (the host's Modbus stage), raised at
        // the transaction's severity; its evidence is the flow's, which names the path.
        let [alert] = &before[..] else {
            panic!("{before:#?}")
        };
        assert_eq!(
            (alert.kind.as_str(), alert.severity),
            ("new_host", Severity::High)
        );
        let accepted = d.accept(alert).unwrap();
        let changes: Vec<&str> = accepted
            .changes
            .iter()
            .map(|c| match c {
                Change::Host { .. } => "host",
                Change::Path { .. } => "path",
                _ => "other",
            })
            .collect();
        assert_eq!(changes, ["host", "path"], "{accepted:#?}");
        // Known now; its use of Modbus on the PLC is the next finding, accepted in turn.
        let after = detect(&mut d, &events(7_202.0));
        let [next] = &after[..] else {
            panic!("{after:#?}")
        };
        assert_eq!(next.kind, "new_modbus_path");
        d.accept(next).unwrap();
        assert!(detect(&mut d, &events(7_204.0)).is_empty());
    }

    #[test]
    fn a_new_function_accepted_is_allowed_with_its_addresses() {
        let (alert, accepted, live, reloaded) = accept_loop(
            learn(&plant()),
            |t| vec![write(t, HMI, 40, 12)],
            "new_function",
        );
        assert_eq!(alert.severity, Severity::High);
        let kinds: Vec<&str> = accepted
            .changes
            .iter()
            .map(|c| match c {
                Change::Function { .. } => "function",
                Change::Addresses { write: true, .. } => "write_addresses",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["function", "write_addresses"], "{accepted:#?}");
        assert!(live.is_empty(), "{live:#?}");
        assert!(reloaded.is_empty(), "{reloaded:#?}");
    }

    #[test]
    fn addresses_out_of_range_accepted_widen_the_learned_range() {
        let (_, accepted, live, reloaded) = accept_loop(
            learn(&plant()),
            |t| vec![read(t, HMI, 100, &[1, 2])],
            "address_out_of_range",
        );
        assert!(
            accepted.changes.iter().any(|c| matches!(
                c,
                Change::Addresses {
                    write: false,
                    to: AddressRange {
                        first: 0,
                        last: 101
                    },
                    ..
                }
            )),
            "{accepted:#?}"
        );
        assert!(live.is_empty(), "{live:#?}");
        assert!(reloaded.is_empty(), "{reloaded:#?}");
    }

    #[test]
    fn a_process_deviation_accepted_widens_every_register_it_showed() {
        // Two registers off their range in one device's deviation: both are taken in.
        let (alert, accepted, live, reloaded) = accept_loop(
            learn(&plant()),
            |t| {
                vec![
                    read(t, HMI, 0, &[160, 100, 500, 7]),
                    read(t + 1.0, HMI, 0, &[165, 100, 500, 20]),
                ]
            },
            "process_deviation",
        );
        assert_eq!(alert.severity, Severity::Low);
        let widened: Vec<(u16, [u16; 2])> = accepted
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::ReadRange { address, to, .. } => Some((*address, *to)),
                _ => None,
            })
            .collect();
        assert_eq!(widened, [(0, [100, 165]), (3, [7, 20])], "{accepted:#?}");
        assert!(live.is_empty(), "{live:#?}");
        assert!(reloaded.is_empty(), "{reloaded:#?}");
    }

    #[test]
    fn a_jump_accepted_widens_the_learned_step() {
        // A read right before the jump, so that the detector has a previous value.
        let (alert, accepted, live, _) = accept_loop(
            learn(&plant()),
            |t| {
                vec![
                    read(t - 1.0, HMI, 0, &[101, 100, 500, 7]),
                    read(t, HMI, 0, &[900, 100, 500, 7]),
                ]
            },
            "rate_of_change",
        );
        assert_eq!(alert.severity, Severity::High);
        assert!(
            accepted
                .changes
                .iter()
                .any(|c| matches!(c, Change::Step { address: 0, .. })),
            "{accepted:#?}"
        );
        assert!(live.iter().all(|a| a.kind != "rate_of_change"), "{live:#?}");
    }

    #[test]
    fn a_set_point_accepted_widens_what_is_written_and_read() {
        // A few writes of the set-point while learning, at no regular period.
        let mut events = plant();
        for t in [1.0, 500.0, 1_300.0, 2_900.0] {
            events.push(write(t, HMI, 2, 500));
        }
        events.sort_by_key(Event::ts);
        let (alert, accepted, live, reloaded) = accept_loop(
            learn(&events),
            |t| {
                vec![
                    write(t, HMI, 2, 9_000),
                    read(t + 0.5, HMI, 0, &[101, 100, 9_000, 7]),
                ]
            },
            "setpoint_out_of_range",
        );
        assert_eq!(alert.severity, Severity::High);
        assert!(
            accepted.changes.iter().any(|c| matches!(
                c,
                Change::WriteRange {
                    to: [500, 9_000],
                    ..
                }
            )),
            "{accepted:#?}"
        );
        assert!(live.is_empty(), "{live:#?}");
        assert!(reloaded.is_empty(), "{reloaded:#?}");
    }

    #[test]
    fn a_new_syslog_template_accepted_is_common_for_the_host() {
        let mut events = Vec::new();
        for i in 0..60 {
            events.push(syslog(
                f64::from(i) * 60.0,
                1,
                6,
                &format!("heartbeat ok uptime {} s", 1000 + i * 60),
            ));
        }
        let (alert, accepted, live, reloaded) = accept_loop(
            learn(&events),
            |t| {
                vec![syslog(
                    t,
                    4,
                    5,
                    "Accepted password for admin from 10.0.0.66 port 4242",
                )]
            },
            "new_syslog_template",
        );
        // A successful logon never seen is an observation; it can be accepted all the same.
        assert_eq!(alert.severity, Severity::Info, "{alert:#?}");
        assert!(
            accepted.changes.iter().any(|c| matches!(
                c,
                Change::SyslogTemplate {
                    learned_count: [0, 3],
                    ..
                }
            )),
            "{accepted:#?}"
        );
        assert!(live.is_empty(), "{live:#?}");
        assert!(reloaded.is_empty(), "{reloaded:#?}");
    }

    #[test]
    fn anything_else_accepted_is_raised_as_an_observation() {
        // A poll right after the last one: extra requests, a finding no model takes in.
        let (alert, accepted, live, reloaded) = accept_loop(
            learn(&plant()),
            |t| {
                vec![
                    read(t, HMI, 0, &[101, 101, 500, 7]),
                    read(t + 0.1, HMI, 0, &[101, 101, 500, 7]),
                ]
            },
            "extra_requests",
        );
        assert_eq!(alert.severity, Severity::Medium);
        assert!(
            matches!(accepted.changes[..], [Change::Finding { .. }]),
            "{accepted:#?}"
        );
        for after in [&live, &reloaded] {
            let extra: Vec<&Alert> = after
                .iter()
                .filter(|a| a.kind == "extra_requests")
                .collect();
            assert_eq!(extra.len(), 1, "{after:#?}");
            assert_eq!(extra[0].severity, Severity::Info);
            assert_eq!(extra[0].evidence["accepted_as_normal"], json!(true));
        }
    }

    #[test]
    fn a_silent_device_cannot_be_normal() {
        let alert = Alert {
            ts: ts(0.0),
            last_ts: ts(0.0),
            count: 1,
            detector: DetectorName::PollingCycle,
            kind: "missing_polls".into(),
            severity: Severity::High,
            summary: String::new(),
            src_ip: HMI.parse().ok(),
            dst_ip: PLC.parse().ok(),
            asset: Some(format!("{PLC}/1")),
            subject: format!("{HMI}>{PLC}/1"),
            score: 0.8,
            evidence: Default::default(),
            attack: Vec::new(),
        };
        let mut b = learn(&plant());
        let before = b.clone();
        let err = b.accept(&alert).unwrap_err();
        assert!(matches!(err, AcceptError::NotAcceptable { .. }), "{err}");
        assert!(err.to_string().contains("relearn"), "{err}");
        assert_eq!(b, before, "a refusal changes nothing");
    }

    #[test]
    fn a_traffic_window_accepted_raises_its_threshold_above_the_score() {
        let subject = WindowSubject::Channel {
            client: HMI.parse().unwrap(),
            server: PLC.parse().unwrap(),
        };
        let mut b = learn(&plant());
        b.windows.models.insert(
            subject,
            super::super::window::SubjectModel {
                windows: 60,
                mean: vec![0.0; 8],
                scale: vec![1.0; 8],
                model: super::super::window::ScoreModel::Gmm {
                    weights: vec![1.0],
                    means: vec![vec![0.0; 8]],
                    precisions: vec![vec![0.0; 64]],
                    log_dets: vec![0.0],
                },
                threshold: 20.0,
                train_quantile_score: 12.0,
            },
        );
        let alert: Alert = serde_json::from_value(json!({
            "type": "alert", "ts": ts(0.0), "last_ts": ts(60.0), "count": 2,
            "detector": "traffic_window", "kind": "unusual_traffic_window",
            "severity": "medium", "summary": "", "src_ip": HMI, "dst_ip": PLC,
            "subject": format!("window:{HMI}>{PLC}"), "score": 0.6,
            "evidence": { "score": 31.2, "max_score": 35.4567 }
        }))
        .unwrap();
        let accepted = b.accept(&alert).unwrap();
        let threshold = b.windows.models[&subject].threshold;
        assert!(threshold > 35.4567 && threshold < 35.47, "{threshold}");
        assert!(matches!(
            accepted.changes[..],
            [Change::WindowThreshold { from: 20.0, .. }]
        ));
    }

    #[test]
    fn baselines_without_accepted_findings_read_and_write_as_before() {
        let mut b = learn(&plant());
        let json = b.to_json().unwrap();
        assert!(!json.contains("\"accepted\""), "left out while empty");
        let alert: Alert = serde_json::from_value(json!({
            "type": "alert", "ts": ts(0.0), "last_ts": ts(0.0), "count": 1,
            "detector": "protocol", "kind": "exception_burst", "severity": "medium",
            "summary": "", "src_ip": ROGUE, "dst_ip": PLC, "subject": format!("{ROGUE}>{PLC}"),
            "score": 0.5, "evidence": {}
        }))
        .unwrap();
        b.accept(&alert).unwrap();
        let again = Baseline::from_json(&b.to_json().unwrap()).unwrap();
        assert!(again.accepted.contains(&alert));
        // Relearning the device forgets what was accepted about it.
        let mut relearned = again.clone();
        relearned.forget(&Scope::Asset(ROGUE.parse().unwrap()));
        assert!(!relearned.accepted.contains(&alert));
    }
}
