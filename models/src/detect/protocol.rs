//! Protocol anomalies: the agent's anomaly flags that a path did not show during learning,
//! bursts of exception responses (an address sweep answers with ILLEGAL DATA ADDRESS),
//! requests left unanswered (a device that stopped answering), and function-code and
//! address scans (many new functions or out-of-range addresses from one client in a
//! minute).

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
}

impl ProtocolBaseline {
    pub(crate) fn forget(&mut self, scope: &Scope) {
        match *scope {
            Scope::Asset(ip) => {
                self.anomalies.retain(|(c, s, _)| *c != ip && *s != ip);
                self.peak_exceptions
                    .retain(|(c, s), _| *c != ip && *s != ip);
                self.peak_unanswered.remove(&ip);
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
