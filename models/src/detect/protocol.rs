//! Protocol anomalies: the agent's anomaly flags that a path did not show during learning,
//! bursts of exception responses (an address sweep answers with ILLEGAL DATA ADDRESS),
//! requests left unanswered (a device that stopped answering), and function-code, unit-id and
//! address scans (many new functions, units or out-of-range addresses from one client in a
//! minute).
//!
//! Their ATT&CK for ICS techniques come from [`super::attack::techniques_for`], like every
//! alert's: the evidence here holds only what the traffic showed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::alert::{AlertBook, DetectorName, Raise, Severity, evidence};
use super::allowlist::Novelty;
use super::modbus::address_quantity;
use super::{Limits, Overflow, Scope};
use crate::event::{Anomaly, ModbusEvent};
use crate::time::Timestamp;

/// Exceptions are counted per path in windows of this length.
pub const EXCEPTION_WINDOW_US: i64 = 10_000_000;
/// Unanswered requests and scans are counted in windows of this length.
pub const SCAN_WINDOW_US: i64 = 60_000_000;
/// Distinct addresses remembered per window.
const MAX_WINDOW_ADDRESSES: usize = 64;
/// New functions in one window that make a function-code scan.
const FUNCTION_SCAN_MIN: u32 = 3;
/// Out-of-range start addresses in one window that make an address scan.
const ADDRESS_SCAN_MIN: usize = 16;
/// Unit ids never seen on a server, addressed by one client in one window, that make a unit-id
/// scan. A gateway's legitimate new unit comes alone; a scanner walks the id space.
const UNIT_SCAN_MIN: u32 = 5;

/// A set of unit ids (or 8-bit codes) as a 256-bit mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ByteSet([u128; 2]);

impl ByteSet {
    fn insert(&mut self, b: u8) {
        let word = usize::from(b >> 7);
        if let Some(w) = self.0.get_mut(word) {
            *w |= 1u128 << (b & 0x7F);
        }
    }

    fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|&b| {
            self.0
                .get(usize::from(b >> 7))
                .is_some_and(|w| w >> (b & 0x7F) & 1 == 1)
        })
    }
}

type Pair = (IpAddr, IpAddr);

/// The learned protocol behaviour.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtocolBaseline {
    /// Agent anomaly flags seen on each client→server path during learning.
    pub anomalies: BTreeSet<(IpAddr, IpAddr, Anomaly)>,
    /// Most exceptions seen on a path in one exception window.
    #[serde(with = "super::entries")]
    pub peak_exceptions: BTreeMap<Pair, u32>,
    /// Most unanswered requests seen by a server in one scan window.
    #[serde(with = "super::entries")]
    pub peak_unanswered: BTreeMap<IpAddr, u32>,
    /// Unit ids each server was addressed on during learning (absent in baselines written
    /// before unit-id scans were detected: every unit is then new).
    #[serde(default, with = "super::entries")]
    pub units: BTreeMap<IpAddr, BTreeSet<u8>>,
}

impl ProtocolBaseline {
    pub(crate) fn forget(&mut self, scope: &Scope) {
        match *scope {
            Scope::Asset(ip) => {
                self.anomalies.retain(|(c, s, _)| *c != ip && *s != ip);
                self.peak_exceptions
                    .retain(|(c, s), _| *c != ip && *s != ip);
                self.peak_unanswered.remove(&ip);
                self.units.remove(&ip);
            }
            Scope::Channel { .. } => {}
        }
    }

    pub(crate) fn merge(&mut self, other: ProtocolBaseline) {
        self.anomalies.extend(other.anomalies);
        for (k, v) in other.peak_exceptions {
            let e = self.peak_exceptions.entry(k).or_default();
            *e = (*e).max(v);
        }
        for (k, v) in other.peak_unanswered {
            let e = self.peak_unanswered.entry(k).or_default();
            *e = (*e).max(v);
        }
        for (k, v) in other.units {
            self.units.entry(k).or_default().extend(v);
        }
    }

    fn knows_unit(&self, server: IpAddr, unit: u8) -> bool {
        self.units.get(&server).is_some_and(|u| u.contains(&unit))
    }
}

/// A count in tumbling windows of event time.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    id: i64,
    count: u32,
    peak: u32,
}

impl Window {
    /// Counts one at `ts`; true when this starts a new window.
    fn hit(&mut self, ts: Timestamp, len_us: i64) -> bool {
        let id = ts.as_micros().div_euclid(len_us);
        let fresh = id > self.id || self.count == 0;
        if id > self.id {
            self.id = id;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.peak = self.peak.max(self.count);
        fresh
    }
}

fn is_unanswered(ev: &ModbusEvent) -> bool {
    ev.anomalies.contains(&Anomaly::UnansweredRequest)
        || (ev.request.is_some() && ev.response.is_none())
}

/// Flags that are the business of another check (broadcast: the allowlist; unanswered: the
/// unanswered counter) or about the capture rather than the traffic.
fn flag_severity(a: Anomaly) -> Option<Severity> {
    match a {
        Anomaly::Broadcast | Anomaly::UnansweredRequest => None,
        Anomaly::StreamGap | Anomaly::Resynchronised => Some(Severity::Info),
        Anomaly::DuplicateTransactionId | Anomaly::UnsolicitedResponse | Anomaly::PendingLimit => {
            Some(Severity::Low)
        }
        Anomaly::Truncated
        | Anomaly::InvalidUtf8
        | Anomaly::Malformed
        | Anomaly::MissingPriority
        | Anomaly::InvalidTimestamp => None,
        _ => Some(Severity::Medium),
    }
}

fn flag_name(a: Anomaly) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[derive(Debug, Default)]
pub(crate) struct ProtocolLearner {
    base: ProtocolBaseline,
    exceptions: BTreeMap<Pair, Window>,
    unanswered: BTreeMap<IpAddr, Window>,
}

impl ProtocolLearner {
    pub(crate) fn observe(&mut self, ev: &ModbusEvent, limits: &Limits, over: &mut Overflow) {
        if ev.request.is_some() {
            if let Some(units) = self.base.units.get_mut(&ev.dst_ip) {
                units.insert(ev.unit);
            } else if self.base.units.len() < limits.max_hosts {
                self.base.units.insert(ev.dst_ip, BTreeSet::from([ev.unit]));
            } else {
                over.hosts += 1;
            }
        }
        for &a in &ev.anomalies {
            if self.base.anomalies.len() < limits.max_functions {
                self.base.anomalies.insert((ev.src_ip, ev.dst_ip, a));
            } else {
                over.functions += 1;
            }
        }
        if ev.exception_code.is_some() {
            let pair = (ev.src_ip, ev.dst_ip);
            if self.exceptions.len() < limits.max_paths || self.exceptions.contains_key(&pair) {
                self.exceptions
                    .entry(pair)
                    .or_default()
                    .hit(ev.ts, EXCEPTION_WINDOW_US);
            } else {
                over.paths += 1;
            }
        }
        if is_unanswered(ev) {
            if self.unanswered.len() < limits.max_hosts || self.unanswered.contains_key(&ev.dst_ip)
            {
                self.unanswered
                    .entry(ev.dst_ip)
                    .or_default()
                    .hit(ev.ts, SCAN_WINDOW_US);
            } else {
                over.hosts += 1;
            }
        }
    }

    pub(crate) fn finish(self) -> ProtocolBaseline {
        let mut base = self.base;
        base.peak_exceptions = self
            .exceptions
            .into_iter()
            .map(|(k, w)| (k, w.peak))
            .collect();
        base.peak_unanswered = self
            .unanswered
            .into_iter()
            .map(|(k, w)| (k, w.peak))
            .collect();
        base
    }
}

#[derive(Debug, Default)]
struct PathState {
    exceptions: Window,
    illegal_address: u32,
    codes: BTreeMap<u8, u32>,
    addresses: BTreeSet<u16>,
    exception_alerted: bool,
    scan: Window,
    new_functions: u128,
    illegal_functions: u128,
    function_scan_alerted: bool,
    out_of_range: BTreeSet<u16>,
    address_scan_alerted: bool,
    unit_scan: Window,
    new_units: ByteSet,
    unit_scan_alerted: bool,
}

/// Checks transactions for protocol anomalies.
#[derive(Debug)]
pub(crate) struct ProtocolDetector {
    max_tracked: usize,
    pub(crate) overflow: u64,
    paths: BTreeMap<Pair, PathState>,
    servers: BTreeMap<IpAddr, (Window, bool)>,
}

impl ProtocolDetector {
    pub(crate) fn new(max_tracked: usize) -> Self {
        ProtocolDetector {
            max_tracked,
            overflow: 0,
            paths: BTreeMap::new(),
            servers: BTreeMap::new(),
        }
    }

    pub(crate) fn observe(
        &mut self,
        base: &ProtocolBaseline,
        ev: &ModbusEvent,
        novelty: Novelty,
        book: &mut AlertBook,
    ) {
        let pair = (ev.src_ip, ev.dst_ip);
        // Built only when an alert is raised: this is the per-event path.
        let asset = || format!("{}/{}", ev.dst_ip, ev.unit);
        for &a in &ev.anomalies {
            let Some(severity) = flag_severity(a) else {
                continue;
            };
            if base.anomalies.contains(&(ev.src_ip, ev.dst_ip, a)) {
                continue;
            }
            let name = flag_name(a);
            book.raise(Raise {
                ts: ev.ts,
                detector: DetectorName::Protocol,
                kind: "agent_anomaly",
                severity,
                summary: format!(
                    "Modbus traffic from {} to {} is malformed or out of protocol ({name}), which this path never showed during learning.",
                    ev.src_ip, ev.dst_ip
                ),
                src_ip: Some(ev.src_ip),
                dst_ip: Some(ev.dst_ip),
                asset: Some(asset()),
                subject: format!("{}>{}/{name}", ev.src_ip, ev.dst_ip),
                score: severity.base_score(),
                evidence: evidence([
                    ("anomaly", json!(name)),
                    ("func", json!(ev.func)),
                    ("unit", json!(ev.unit)),
                ]),
            });
        }

        if is_unanswered(ev) {
            self.unanswered(base, ev, book);
        }

        if !self.paths.contains_key(&pair) && self.paths.len() >= self.max_tracked {
            self.overflow += 1;
            return;
        }
        let st = self.paths.entry(pair).or_default();
        let (address, _) = address_quantity(ev);

        if let Some(code) = ev.exception_code {
            if st.exceptions.hit(ev.ts, EXCEPTION_WINDOW_US) {
                st.illegal_address = 0;
                st.codes.clear();
                st.addresses.clear();
                st.exception_alerted = false;
            }
            *st.codes.entry(code).or_default() += 1;
            if code == 2 {
                st.illegal_address += 1;
            }
            if st.addresses.len() < MAX_WINDOW_ADDRESSES {
                st.addresses.insert(address);
            }
            let peak = base.peak_exceptions.get(&pair).copied().unwrap_or(0);
            let limit = peak.saturating_mul(2).max(peak.saturating_add(5));
            if st.exceptions.count > limit && !st.exception_alerted {
                st.exception_alerted = true;
                let sweep =
                    st.illegal_address * 2 >= st.exceptions.count && st.addresses.len() >= 5;
                let (kind, severity, what) = if sweep {
                    (
                        "address_sweep",
                        Severity::High,
                        "mostly ILLEGAL DATA ADDRESS over many addresses: an address sweep",
                    )
                } else {
                    ("exception_burst", Severity::Medium, "a burst of exceptions")
                };
                book.raise(Raise {
                    ts: ev.ts,
                    detector: DetectorName::Protocol,
                    kind,
                    severity,
                    summary: format!(
                        "{} got {} exception responses from {} within {} s, {what} (at most {peak} per window during learning).",
                        ev.src_ip,
                        st.exceptions.count,
                        ev.dst_ip,
                        EXCEPTION_WINDOW_US / 1_000_000
                    ),
                    src_ip: Some(ev.src_ip),
                    dst_ip: Some(ev.dst_ip),
                    asset: Some(asset()),
                    subject: format!("{}>{}", ev.src_ip, ev.dst_ip),
                    score: severity.base_score(),
                    evidence: evidence([
                        ("exceptions", json!(st.exceptions.count)),
                        ("exception_codes", json!(st.codes)),
                        ("distinct_addresses", json!(st.addresses.len())),
                        ("address_min", json!(st.addresses.first())),
                        ("address_max", json!(st.addresses.last())),
                        ("baseline_peak_exceptions", json!(peak)),
                    ]),
                });
            }
        }

        // Unit-id scan: one client addressing many units the server never had. Only requests
        // count (a lone response is the server speaking); answered or not, each probe does.
        if ev.request.is_some() && !base.knows_unit(ev.dst_ip, ev.unit) {
            if st.unit_scan.hit(ev.ts, SCAN_WINDOW_US) {
                st.new_units = ByteSet::default();
                st.unit_scan_alerted = false;
            }
            st.new_units.insert(ev.unit);
            let n = st.new_units.len();
            if n >= UNIT_SCAN_MIN && !st.unit_scan_alerted {
                st.unit_scan_alerted = true;
                let units: Vec<u8> = st.new_units.iter().collect();
                let known: Vec<u8> = base
                    .units
                    .get(&ev.dst_ip)
                    .map(|u| u.iter().copied().take(32).collect())
                    .unwrap_or_default();
                book.raise(Raise {
                    ts: ev.ts,
                    detector: DetectorName::Protocol,
                    kind: "unit_scan",
                    severity: Severity::High,
                    summary: format!(
                        "{} addressed {n} unit ids on {} within a minute that were never used there: a unit-id scan for the devices behind it.",
                        ev.src_ip, ev.dst_ip
                    ),
                    src_ip: Some(ev.src_ip),
                    dst_ip: Some(ev.dst_ip),
                    asset: Some(ev.dst_ip.to_string()),
                    subject: format!("{}>{}", ev.src_ip, ev.dst_ip),
                    score: 0.85,
                    evidence: evidence([
                        ("units", json!(units)),
                        ("distinct_units", json!(n)),
                        ("func", json!(ev.func)),
                        ("baseline_units", json!(known)),
                    ]),
                });
            }
        }

        let illegal_function = ev.exception_code == Some(1);
        if !(novelty.new_function || novelty.out_of_range || illegal_function) {
            return;
        }
        if st.scan.hit(ev.ts, SCAN_WINDOW_US) {
            st.new_functions = 0;
            st.illegal_functions = 0;
            st.out_of_range.clear();
            st.function_scan_alerted = false;
            st.address_scan_alerted = false;
        }
        let bit = 1u128.checked_shl(u32::from(ev.func)).unwrap_or(0);
        if novelty.new_function {
            st.new_functions |= bit;
        }
        if illegal_function {
            st.illegal_functions |= bit;
        }
        let funcs = (st.new_functions | st.illegal_functions).count_ones();
        if funcs >= FUNCTION_SCAN_MIN && !st.function_scan_alerted {
            st.function_scan_alerted = true;
            let list: Vec<u32> = (0..128u32)
                .filter(|i| (st.new_functions | st.illegal_functions) >> i & 1 == 1)
                .collect();
            book.raise(Raise {
                ts: ev.ts,
                detector: DetectorName::Protocol,
                kind: "function_scan",
                severity: Severity::High,
                summary: format!(
                    "{} tried {funcs} function codes on {} within a minute that it never used there: a function-code scan.",
                    ev.src_ip, ev.dst_ip
                ),
                src_ip: Some(ev.src_ip),
                dst_ip: Some(ev.dst_ip),
                asset: Some(asset()),
                subject: format!("{}>{}", ev.src_ip, ev.dst_ip),
                score: 0.85,
                evidence: evidence([
                    ("functions", json!(list)),
                    ("illegal_function_exceptions", json!(st.illegal_functions.count_ones())),
                ]),
            });
        }
        if novelty.out_of_range {
            if st.out_of_range.len() < MAX_WINDOW_ADDRESSES {
                st.out_of_range.insert(address);
            }
            if st.out_of_range.len() >= ADDRESS_SCAN_MIN && !st.address_scan_alerted {
                st.address_scan_alerted = true;
                book.raise(Raise {
                    ts: ev.ts,
                    detector: DetectorName::Protocol,
                    kind: "address_scan",
                    severity: Severity::Medium,
                    summary: format!(
                        "{} accessed {} different addresses outside the learned ranges on {} within a minute: an address scan.",
                        ev.src_ip,
                        st.out_of_range.len(),
                        ev.dst_ip
                    ),
                    src_ip: Some(ev.src_ip),
                    dst_ip: Some(ev.dst_ip),
                    asset: Some(asset()),
                    subject: format!("{}>{}", ev.src_ip, ev.dst_ip),
                    score: 0.6,
                    evidence: evidence([
                        ("distinct_addresses", json!(st.out_of_range.len())),
                        ("address_min", json!(st.out_of_range.first())),
                        ("address_max", json!(st.out_of_range.last())),
                    ]),
                });
            }
        }
    }

    fn unanswered(&mut self, base: &ProtocolBaseline, ev: &ModbusEvent, book: &mut AlertBook) {
        if !self.servers.contains_key(&ev.dst_ip) && self.servers.len() >= self.max_tracked {
            self.overflow += 1;
            return;
        }
        let (w, alerted) = self.servers.entry(ev.dst_ip).or_default();
        if w.hit(ev.ts, SCAN_WINDOW_US) {
            *alerted = false;
        }
        let peak = base.peak_unanswered.get(&ev.dst_ip).copied().unwrap_or(0);
        let limit = peak.saturating_mul(2).max(peak.saturating_add(3));
        if w.count > limit && !*alerted {
            *alerted = true;
            book.raise(Raise {
                ts: ev.ts,
                detector: DetectorName::Protocol,
                kind: "unanswered_requests",
                severity: Severity::High,
                summary: format!(
                    "{} left {} Modbus requests unanswered within a minute (at most {peak} during learning): the device or its link may be down.",
                    ev.dst_ip, w.count
                ),
                src_ip: Some(ev.src_ip),
                dst_ip: Some(ev.dst_ip),
                asset: Some(ev.dst_ip.to_string()),
                subject: ev.dst_ip.to_string(),
                score: 0.8,
                evidence: evidence([
                    ("unanswered", json!(w.count)),
                    ("baseline_peak_unanswered", json!(peak)),
                ]),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::borrow::Cow;

    use super::*;
    use crate::detect::{Alert, Baseline, DetectConfig, Detector, Learner};
    use crate::event::{Event, ModbusPdu};

    const HMI: &str = "10.0.0.10";
    const PLC: &str = "10.0.0.21";
    const SCANNER: &str = "10.0.0.66";

    /// A transaction at `ms` milliseconds: a request of `func` to `unit`, answered normally,
    /// with exception `exception`, or not at all (`answered` false).
    fn tx(src: &str, unit: u8, func: u8, ms: i64, answered: bool, exception: Option<u8>) -> Event {
        let ts = Timestamp::from_micros(1_700_000_000_000_000 + ms * 1000);
        let request = ModbusPdu {
            ts,
            len: 6,
            address: Some(0),
            quantity: Some(1),
            ..ModbusPdu::default()
        };
        let response = answered.then(|| ModbusPdu {
            ts,
            len: if exception.is_some() { 3 } else { 5 },
            ..ModbusPdu::default()
        });
        Event::Modbus(ModbusEvent {
            ts,
            src_ip: src.parse().unwrap(),
            src_port: 40000,
            dst_ip: PLC.parse().unwrap(),
            dst_port: 502,
            tid: 1,
            unit,
            func,
            func_name: Cow::Borrowed("x"),
            request: Some(request),
            response,
            exception: exception.map(|_| Cow::Borrowed("x")),
            exception_code: exception,
            latency_us: answered.then_some(500),
            anomalies: if answered {
                Vec::new()
            } else {
                vec![Anomaly::UnansweredRequest]
            },
        })
    }

    /// The HMI polls units `units` of the PLC with function 3 for ten minutes.
    fn learned(units: &[u8]) -> Baseline {
        let mut l = Learner::new(DetectConfig::default());
        for i in 0..600 {
            for &u in units {
                l.observe(&tx(HMI, u, 3, i * 1000, true, None));
            }
        }
        l.finish()
    }

    fn detect(base: Baseline, events: &[Event]) -> Vec<Alert> {
        let mut d = Detector::new(base, DetectConfig::default()).unwrap();
        events.iter().for_each(|e| d.observe(e));
        d.finish().0
    }

    fn of_kind<'a>(alerts: &'a [Alert], kind: &str) -> Vec<&'a Alert> {
        alerts.iter().filter(|a| a.kind == kind).collect()
    }

    const LATER_MS: i64 = 700_000;

    #[test]
    fn a_unit_id_scan_raises_one_remote_system_discovery_alert() {
        for (answered, exception) in [(true, Some(0x0B)), (false, None), (true, None)] {
            let scan: Vec<Event> = (0..=255u8)
                .map(|u| {
                    let (answered, exception) = if u == 1 {
                        (true, None)
                    } else {
                        (answered, exception)
                    };
                    tx(
                        SCANNER,
                        u,
                        3,
                        LATER_MS + i64::from(u) * 20,
                        answered,
                        exception,
                    )
                })
                .collect();
            let alerts = detect(learned(&[1]), &scan);
            let scans = of_kind(&alerts, "unit_scan");
            assert_eq!(scans.len(), 1, "{alerts:#?}");
            let a = scans[0];
            assert_eq!(a.severity, Severity::High);
            assert_eq!(a.attack, ["T0846"], "Remote System Discovery");
            assert_eq!(a.evidence["distinct_units"], json!(UNIT_SCAN_MIN));
            // The learned unit is no part of the scan's evidence.
            assert_eq!(a.evidence["units"], json!([0, 2, 3, 4, 5]));
            assert_eq!(a.evidence["baseline_units"], json!([1]));
        }
    }

    #[test]
    fn polling_the_units_of_a_gateway_and_one_new_unit_are_no_scan() {
        let units: Vec<u8> = (1..=12).collect();
        let base = learned(&units);
        let mut later: Vec<Event> = units
            .iter()
            .map(|&u| tx(HMI, u, 3, LATER_MS + i64::from(u), true, None))
            .collect();
        // A device commissioned behind the gateway: new units, but fewer than a scan's.
        for u in 13..13 + UNIT_SCAN_MIN as u8 - 1 {
            later.push(tx(HMI, u, 3, LATER_MS + 100 + i64::from(u), true, None));
        }
        let alerts = detect(base, &later);
        assert!(of_kind(&alerts, "unit_scan").is_empty(), "{alerts:#?}");
    }

    #[test]
    fn new_units_spread_over_minutes_are_no_scan() {
        let later: Vec<Event> = (2..40u8)
            .map(|u| tx(HMI, u, 3, LATER_MS + i64::from(u) * 61_000, true, None))
            .collect();
        let alerts = detect(learned(&[1]), &later);
        assert!(of_kind(&alerts, "unit_scan").is_empty(), "{alerts:#?}");
    }

    #[test]
    fn a_function_code_scan_raises_one_remote_system_information_discovery_alert() {
        // Codes 0..=127 on the learned unit; the PLC implements 3 and answers the rest with
        // ILLEGAL FUNCTION.
        let scan: Vec<Event> = (0..=127u8)
            .map(|f| {
                let exception = (f != 3).then_some(1);
                tx(SCANNER, 1, f, LATER_MS + i64::from(f) * 20, true, exception)
            })
            .collect();
        let alerts = detect(learned(&[1]), &scan);
        let scans = of_kind(&alerts, "function_scan");
        assert_eq!(scans.len(), 1, "{alerts:#?}");
        assert_eq!(
            scans[0].attack,
            ["T0888"],
            "Remote System Information Discovery"
        );
        // One unit only: no unit-id scan.
        assert!(of_kind(&alerts, "unit_scan").is_empty(), "{alerts:#?}");
    }

    #[test]
    fn units_are_learned_forgotten_and_read_from_older_baselines() {
        let base = learned(&[1, 7]);
        let plc: IpAddr = PLC.parse().unwrap();
        assert_eq!(base.protocol.units[&plc], BTreeSet::from([1, 7]));
        let json = base.to_json().unwrap();
        assert_eq!(Baseline::from_json(&json).unwrap(), base);
        // A baseline written before units were learned: every unit is new, nothing fails.
        let older = json.replace(&format!(",\"units\":[[\"{PLC}\",[1,7]]]"), "");
        assert_ne!(older, json, "the units entry was found and removed");
        let old = Baseline::from_json(&older).unwrap();
        assert!(old.protocol.units.is_empty());
        let mut forgot = base.clone();
        forgot.forget(&Scope::Asset(plc));
        assert!(forgot.protocol.units.is_empty());
    }

    #[test]
    fn byte_set_holds_all_256_values() {
        let mut s = ByteSet::default();
        for b in [0u8, 1, 127, 128, 255, 255] {
            s.insert(b);
        }
        assert_eq!(s.len(), 5);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 1, 127, 128, 255]);
    }
}
