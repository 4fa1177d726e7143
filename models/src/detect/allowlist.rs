//! The communication allowlist: which hosts talk, which client→server paths exist over which
//! transport and server port (from `flow` events), and for Modbus which unit ids, function
//! codes and address ranges each client uses on each server. Anything new is an alert weighted
//! by what it can do: a new write, diagnostics, programming or identification function ranks
//! above a new read.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::alert::{AlertBook, DetectorName, Raise, Severity, evidence};
use super::modbus::{FunctionClass, Table, accesses, event_severity};
use super::{Limits, Overflow, Scope};
use crate::event::{FlowEvent, ModbusEvent, Transport};
use crate::time::Timestamp;

/// A client→server path at the transport level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PathKey {
    pub client: IpAddr,
    pub server: IpAddr,
    pub transport: Transport,
    /// The server's port (the client's is ephemeral and not learned).
    pub port: u16,
}

/// A Modbus function used by a client on a server's unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FunctionKey {
    pub client: IpAddr,
    pub server: IpAddr,
    pub unit: u8,
    pub func: u8,
}

/// A device's data table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableKey {
    pub server: IpAddr,
    pub unit: u8,
    pub table: Table,
}

/// An inclusive address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRange {
    pub first: u16,
    pub last: u16,
}

impl AddressRange {
    pub(crate) fn widen(range: &mut Option<AddressRange>, first: u16, last: u16) {
        *range = Some(match *range {
            Some(r) => AddressRange {
                first: r.first.min(first),
                last: r.last.max(last),
            },
            None => AddressRange { first, last },
        });
    }

    fn contains(range: Option<AddressRange>, first: u16, last: u16) -> bool {
        range.is_some_and(|r| r.first <= first && last <= r.last)
    }
}

/// What was learned about one function on one path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionProfile {
    pub transactions: u64,
    /// Addresses read (successful transactions only: an exception means the address is not
    /// valid, and learning it would widen the range an attacker's sweep is judged against).
    pub read: Option<AddressRange>,
    pub write: Option<AddressRange>,
}

/// The learned allowlist.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AllowlistBaseline {
    /// Every host seen, with the events it appeared in.
    #[serde(with = "super::entries")]
    pub hosts: BTreeMap<IpAddr, u64>,
    /// Transport paths with their flow counts.
    #[serde(with = "super::entries")]
    pub paths: BTreeMap<PathKey, u64>,
    #[serde(with = "super::entries")]
    pub functions: BTreeMap<FunctionKey, FunctionProfile>,
    /// Addresses of each device table successfully accessed by any client: a write by a known
    /// writer to a point the HMI displays is an operator command, not a new capability.
    #[serde(with = "super::entries")]
    pub tables: BTreeMap<TableKey, AddressRange>,
}

/// Broadcast and multicast addresses are destinations, not hosts. An IPv4 address ending in
/// .255 is taken as a directed broadcast: ICS networks are almost always /24 or smaller.
pub(crate) fn is_group_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast() || v4.octets()[3] == 255,
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

impl AllowlistBaseline {
    fn learn_host(&mut self, ip: IpAddr, limits: &Limits, over: &mut Overflow) {
        if is_group_address(ip) {
            return;
        }
        if let Some(n) = self.hosts.get_mut(&ip) {
            *n += 1;
        } else if self.hosts.len() < limits.max_hosts {
            self.hosts.insert(ip, 1);
        } else {
            over.hosts += 1;
        }
    }

    pub(crate) fn learn_flow(&mut self, f: &FlowEvent, limits: &Limits, over: &mut Overflow) {
        self.learn_host(f.src_ip, limits, over);
        self.learn_host(f.dst_ip, limits, over);
        let key = path_of(f);
        if let Some(n) = self.paths.get_mut(&key) {
            *n += 1;
        } else if self.paths.len() < limits.max_paths {
            self.paths.insert(key, 1);
        } else {
            over.paths += 1;
        }
    }

    pub(crate) fn learn_modbus(&mut self, ev: &ModbusEvent, limits: &Limits, over: &mut Overflow) {
        self.learn_host(ev.src_ip, limits, over);
        self.learn_host(ev.dst_ip, limits, over);
        // The transaction proves the TCP path even when its connection outlives the learning
        // (its flow record comes at the end): known, with no completed flow counted.
        let path = PathKey {
            client: ev.src_ip,
            server: ev.dst_ip,
            transport: Transport::Tcp,
            port: ev.dst_port,
        };
        if !self.paths.contains_key(&path) {
            if self.paths.len() < limits.max_paths {
                self.paths.insert(path, 0);
            } else {
                over.paths += 1;
            }
        }
        let key = FunctionKey {
            client: ev.src_ip,
            server: ev.dst_ip,
            unit: ev.unit,
            func: ev.func,
        };
        let n = self.functions.len();
        let profile = match self.functions.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) if n < limits.max_functions => v.insert(FunctionProfile::default()),
            Entry::Vacant(_) => {
                over.functions += 1;
                return;
            }
        };
        profile.transactions += 1;
        if ev.exception_code.is_some() || ev.response.is_none() {
            return;
        }
        for a in accesses(ev).into_iter().flatten() {
            let range = if a.write {
                &mut profile.write
            } else {
                &mut profile.read
            };
            AddressRange::widen(range, a.first, a.last);
            let tk = TableKey {
                server: ev.dst_ip,
                unit: ev.unit,
                table: a.table,
            };
            let mut slot = self.tables.get(&tk).copied();
            if slot.is_none() && self.tables.len() >= limits.max_functions {
                over.functions += 1;
                continue;
            }
            AddressRange::widen(&mut slot, a.first, a.last);
            if let Some(r) = slot {
                self.tables.insert(tk, r);
            }
        }
    }

    pub(crate) fn forget(&mut self, scope: &Scope) {
        match *scope {
            Scope::Asset(ip) => {
                self.hosts.remove(&ip);
                self.paths.retain(|k, _| k.client != ip && k.server != ip);
                self.functions
                    .retain(|k, _| k.client != ip && k.server != ip);
                self.tables.retain(|k, _| k.server != ip);
            }
            Scope::Channel {
                client,
                server,
                unit,
                func,
            } => {
                self.functions.remove(&FunctionKey {
                    client,
                    server,
                    unit,
                    func,
                });
            }
        }
    }

    pub(crate) fn merge(&mut self, other: AllowlistBaseline) {
        for (k, v) in other.hosts {
            *self.hosts.entry(k).or_default() += v;
        }
        for (k, v) in other.paths {
            *self.paths.entry(k).or_default() += v;
        }
        for (k, v) in other.functions {
            let p = self.functions.entry(k).or_default();
            p.transactions += v.transactions;
            for (mine, theirs) in [(&mut p.read, v.read), (&mut p.write, v.write)] {
                if let Some(r) = theirs {
                    AddressRange::widen(mine, r.first, r.last);
                }
            }
        }
        for (k, r) in other.tables {
            let mut slot = self.tables.get(&k).copied();
            AddressRange::widen(&mut slot, r.first, r.last);
            if let Some(r) = slot {
                self.tables.insert(k, r);
            }
        }
    }

    fn knows_host(&self, ip: IpAddr) -> bool {
        is_group_address(ip) || self.hosts.contains_key(&ip)
    }

    /// Other servers on which `client` uses `func` on `unit` (its peer group for that
    /// function), up to a few for the evidence.
    fn peers_using(&self, client: IpAddr, unit: u8, func: u8) -> Vec<IpAddr> {
        self.functions
            .iter()
            .filter(|(k, _)| k.client == client && k.unit == unit && k.func == func)
            .map(|(k, _)| k.server)
            .take(8)
            .collect()
    }

    fn knows_modbus_path(&self, client: IpAddr, server: IpAddr) -> bool {
        let lo = FunctionKey {
            client,
            server,
            unit: 0,
            func: 0,
        };
        self.functions
            .range(lo..)
            .next()
            .is_some_and(|(k, _)| k.client == client && k.server == server)
    }
}

fn path_of(f: &FlowEvent) -> PathKey {
    PathKey {
        client: f.src_ip,
        server: f.dst_ip,
        transport: f.transport,
        // ICMP "ports" are type and code; keep the type only, as the code varies.
        port: f.dst_port,
    }
}

/// What a server port offers, in the classes an intrusion moves through. A never-seen host
/// gets one alert per class it uses, so that each stage (Modbus to a controller, then SMB to
/// the HMI) is raised when it happens, while a port scan makes a handful of alerts rather than
/// one per port.
pub(crate) fn service_class(transport: Transport, port: u16) -> &'static str {
    match (transport, port) {
        (Transport::Icmp, _) => "icmp",
        (_, 502) => "modbus",
        (_, 20_000 | 2404 | 102 | 44_818 | 2222 | 47_808 | 4840 | 34_962..=34_964) => "ics",
        (_, 22 | 23 | 3389 | 5900..=5903 | 5985 | 5986) => "remote_access",
        (_, 139 | 445) => "file_share",
        (_, 135 | 593) => "rpc",
        (_, 80 | 443 | 8080 | 8443) => "web",
        (_, 21 | 69 | 989 | 990) => "file_transfer",
        (_, 53 | 137 | 138 | 5353 | 5355) => "name_service",
        (_, 123) => "time",
        (_, 67 | 68 | 546 | 547) => "dhcp",
        (_, 161 | 162) => "snmp",
        (_, 514 | 601 | 6514) => "syslog",
        _ => "other",
    }
}

/// Infrastructure chatter between hosts that are both known (name resolution, time, address
/// configuration): a new path of it is an observation, not an alert.
fn is_infrastructure(class: &str) -> bool {
    matches!(class, "name_service" | "time" | "dhcp")
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Udp => "udp",
        Transport::Icmp => "icmp",
    }
}

/// What the allowlist found new about a Modbus transaction, for the protocol detector's
/// scan counters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Novelty {
    pub new_function: bool,
    pub out_of_range: bool,
}

/// Checks flows and transactions against the allowlist.
#[derive(Debug)]
pub(crate) struct AllowlistDetector;

impl AllowlistDetector {
    /// `learned_until`: the last event time of the learning. A flow that began by then and
    /// ended after it was open while the site learned (an HMI's connection that stays up for
    /// days, a syslog stream that never idles): it is part of the normal traffic even though
    /// its record, written when it ended, came too late for the learner. (A flow that both
    /// began and ended inside the learned span, but was never learned, is judged as usual: a
    /// baseline may be learned from other captures of other times.)
    pub(crate) fn flow(
        base: &AllowlistBaseline,
        learned_until: Option<Timestamp>,
        f: &FlowEvent,
        book: &mut AlertBook,
    ) {
        if learned_until.is_some_and(|until| f.ts <= until && until <= f.end_ts) {
            return;
        }
        let src_known = base.knows_host(f.src_ip);
        let dst_known = base.knows_host(f.dst_ip);
        let group_dst = is_group_address(f.dst_ip);
        let t = transport_name(f.transport);
        let ev = evidence([
            ("transport", json!(t)),
            ("src_port", json!(f.src_port)),
            ("dst_port", json!(f.dst_port)),
            ("state", json!(f.state)),
            ("orig_bytes", json!(f.orig_bytes)),
            ("resp_bytes", json!(f.resp_bytes)),
            ("service", json!(f.service)),
            (
                "service_class",
                json!(service_class(f.transport, f.dst_port)),
            ),
        ]);
        let class = service_class(f.transport, f.dst_port);
        if !src_known || !dst_known {
            // One alert per never-seen host and service class: a new stage (SMB after
            // Modbus) is raised on its own, when it happens.
            let (host, subject) = if !src_known {
                (f.src_ip, format!("{}/{class}", f.src_ip))
            } else {
                (f.dst_ip, format!("dst_of:{}/{class}", f.src_ip))
            };
            // A host that only announces itself to a broadcast or multicast group (DHCP,
            // NetBIOS, mDNS) cannot reach a controller by doing so: recorded, not raised. The
            // first unicast conversation raises the same alert (same subject) to medium.
            let severity = if group_dst && !src_known {
                Severity::Info
            } else if group_dst {
                Severity::Low
            } else {
                Severity::Medium
            };
            let mut ev = ev;
            let reached = if src_known { f.src_ip } else { f.dst_ip };
            ev.insert("targets".into(), json!([reached.to_string()]));
            book.raise(Raise {
                ts: f.ts,
                detector: DetectorName::Allowlist,
                kind: "new_host",
                severity,
                summary: format!(
                    "Host {host} was never seen during learning and talks {t} from {} to {} port {}.",
                    f.src_ip, f.dst_ip, f.dst_port
                ),
                src_ip: Some(f.src_ip),
                dst_ip: Some(f.dst_ip),
                asset: Some(host.to_string()),
                subject,
                score: severity.base_score(),
                evidence: ev,
            });
            return;
        }
        let key = path_of(f);
        if base.paths.contains_key(&key) {
            return;
        }
        // Known hosts announcing to a group, or resolving names and setting clocks with each
        // other: background chatter, recorded but not raised.
        let severity = if group_dst || is_infrastructure(class) {
            Severity::Info
        } else {
            Severity::Medium
        };
        let mut ev = ev;
        let known: Vec<String> = base
            .paths
            .keys()
            .filter(|k| k.client == f.src_ip && k.server == f.dst_ip)
            .map(|k| format!("{}/{}", transport_name(k.transport), k.port))
            .take(8)
            .collect();
        ev.insert("baseline_services_on_pair".into(), json!(known));
        book.raise(Raise {
            ts: f.ts,
            detector: DetectorName::Allowlist,
            kind: "new_path",
            severity,
            summary: format!(
                "{} opened a {t} connection to {} port {}, a path never seen during learning.",
                f.src_ip, f.dst_ip, f.dst_port
            ),
            src_ip: Some(f.src_ip),
            dst_ip: Some(f.dst_ip),
            asset: Some(f.dst_ip.to_string()),
            // Per service class, so that a new stage between two known hosts (SMB after name
            // lookups) is raised on its own.
            subject: format!("{}>{}/{class}", f.src_ip, f.dst_ip),
            score: severity.base_score(),
            evidence: ev,
        });
    }

    pub(crate) fn modbus(
        base: &AllowlistBaseline,
        ev: &ModbusEvent,
        book: &mut AlertBook,
    ) -> Novelty {
        let mut novelty = Novelty::default();
        let class = FunctionClass::of(ev.func);
        let fsev = event_severity(ev);
        // Built only when an alert is raised: this is the per-event path.
        let asset = || format!("{}/{}", ev.dst_ip, ev.unit);
        let base_ev = || {
            evidence([
                ("unit", json!(ev.unit)),
                ("func", json!(ev.func)),
                ("func_name", json!(ev.func_name)),
                ("function_class", json!(class.as_str())),
                ("exception", json!(ev.exception)),
                // What an operator's "this is normal" needs to allow the same transaction.
                ("dst_port", json!(ev.dst_port)),
                (
                    "accesses",
                    json!(accesses(ev).into_iter().flatten().collect::<Vec<_>>()),
                ),
            ])
        };
        let src_known = base.knows_host(ev.src_ip);
        let dst_known = base.knows_host(ev.dst_ip);
        if !src_known || !dst_known {
            novelty.new_function = true;
            let host = if src_known { ev.dst_ip } else { ev.src_ip };
            let reached = if src_known { ev.src_ip } else { ev.dst_ip };
            let severity = fsev.max(Severity::High);
            book.raise(Raise {
                ts: ev.ts,
                detector: DetectorName::Allowlist,
                kind: "new_host",
                severity,
                summary: format!(
                    "Host {host}, never seen during learning, sent Modbus {} from {} to {} unit {}.",
                    ev.func_name, ev.src_ip, ev.dst_ip, ev.unit
                ),
                src_ip: Some(ev.src_ip),
                dst_ip: Some(ev.dst_ip),
                asset: Some(asset()),
                // The same subject as the host's flows on this port (see `flow`).
                subject: if src_known {
                    format!("dst_of:{}/{}", ev.src_ip, service_class(Transport::Tcp, ev.dst_port))
                } else {
                    format!("{host}/{}", service_class(Transport::Tcp, ev.dst_port))
                },
                score: severity.base_score(),
                evidence: {
                    let mut e = base_ev();
                    e.insert("targets".into(), json!([reached.to_string()]));
                    e
                },
            });
            return novelty;
        }
        let key = FunctionKey {
            client: ev.src_ip,
            server: ev.dst_ip,
            unit: ev.unit,
            func: ev.func,
        };
        let Some(profile) = base.functions.get(&key) else {
            novelty.new_function = true;
            let path_known = base.knows_modbus_path(ev.src_ip, ev.dst_ip);
            let peers = base.peers_using(ev.src_ip, ev.unit, ev.func);
            // The same client already uses this function on other devices of its group
            // (an MTU operating one more RTU of the same kind): recorded, not raised.
            let severity = if path_known && !peers.is_empty() && ev.unit != 0 {
                Severity::Info
            } else if path_known {
                fsev
            } else {
                // A client that never spoke Modbus to this device is a new path to a
                // controller, whatever it reads.
                fsev.max(Severity::Medium)
            };
            let mut e = base_ev();
            e.insert("client_uses_function_on".into(), json!(peers));
            let known: Vec<String> = base
                .functions
                .keys()
                .filter(|k| k.client == ev.src_ip && k.server == ev.dst_ip)
                .map(|k| format!("unit {} func {}", k.unit, k.func))
                .take(16)
                .collect();
            e.insert("baseline_functions_on_path".into(), json!(known));
            let (kind, summary) = if path_known {
                (
                    "new_function",
                    format!(
                        "{} sent {} ({}) to {} unit {}, a function it never used there during learning.",
                        ev.src_ip,
                        ev.func_name,
                        class.as_str(),
                        ev.dst_ip,
                        ev.unit
                    ),
                )
            } else {
                (
                    "new_modbus_path",
                    format!(
                        "{} started talking Modbus ({}) to {} unit {}, which it never did during learning.",
                        ev.src_ip, ev.func_name, ev.dst_ip, ev.unit
                    ),
                )
            };
            book.raise(Raise {
                ts: ev.ts,
                detector: DetectorName::Allowlist,
                kind,
                severity,
                summary,
                src_ip: Some(ev.src_ip),
                dst_ip: Some(ev.dst_ip),
                asset: Some(asset()),
                subject: if path_known {
                    format!("{}>{}/{}/{}", ev.src_ip, ev.dst_ip, ev.unit, ev.func)
                } else {
                    format!("{}>{}", ev.src_ip, ev.dst_ip)
                },
                score: severity.base_score(),
                evidence: e,
            });
            return novelty;
        };
        for a in accesses(ev).into_iter().flatten() {
            let learned = if a.write { profile.write } else { profile.read };
            if AddressRange::contains(learned, a.first, a.last) {
                continue;
            }
            novelty.out_of_range = true;
            let table = base
                .tables
                .get(&TableKey {
                    server: ev.dst_ip,
                    unit: ev.unit,
                    table: a.table,
                })
                .copied();
            let in_table = AddressRange::contains(table, a.first, a.last);
            let severity = match (a.write, in_table) {
                // A known point of the device: an operator command or a wider read.
                (_, true) => Severity::Info,
                (false, false) => Severity::Low,
                (true, false) => Severity::High,
            };
            let what = if a.write { "wrote" } else { "read" };
            book.raise(Raise {
                ts: ev.ts,
                detector: DetectorName::Allowlist,
                kind: "address_out_of_range",
                severity,
                summary: format!(
                    "{} {what} {:?} addresses {}–{} on {} unit {}, outside the range learned for {}.",
                    ev.src_ip, a.table, a.first, a.last, ev.dst_ip, ev.unit, ev.func_name
                ),
                src_ip: Some(ev.src_ip),
                dst_ip: Some(ev.dst_ip),
                asset: Some(asset()),
                subject: format!(
                    "{}>{}/{}/{}/{}",
                    ev.src_ip, ev.dst_ip, ev.unit, ev.func, a.write
                ),
                score: severity.base_score(),
                evidence: evidence([
                    ("func", json!(ev.func)),
                    ("table", json!(a.table)),
                    ("first", json!(a.first)),
                    ("last", json!(a.last)),
                    ("baseline_range", json!(learned)),
                    ("baseline_table_range", json!(table)),
                ]),
            });
        }
        novelty
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use std::borrow::Cow;

    use super::*;
    use crate::detect::Alert;

    fn flow(t_s: i64, src: [u8; 4], dst: [u8; 4], transport: Transport, port: u16) -> FlowEvent {
        let ts = Timestamp::from_micros((1_714_557_600 + t_s) * 1_000_000);
        FlowEvent {
            ts,
            end_ts: ts,
            transport,
            src_ip: src.into(),
            src_port: 50_000,
            dst_ip: dst.into(),
            dst_port: port,
            service: None,
            orig_pkts: 3,
            orig_bytes: 100,
            resp_pkts: 3,
            resp_bytes: 100,
            state: Cow::Borrowed("SF"),
            reason: Cow::Borrowed("fin"),
            anomalies: Vec::new(),
        }
    }

    const HMI: [u8; 4] = [10, 0, 0, 2];
    const PLC: [u8; 4] = [10, 0, 0, 5];
    const HISTORIAN: [u8; 4] = [10, 0, 0, 3];
    const ROGUE: [u8; 4] = [10, 0, 0, 66];

    fn run(flows: &[FlowEvent]) -> Vec<Alert> {
        let mut base = AllowlistBaseline::default();
        let mut over = Overflow::default();
        for t in 0..10 {
            base.learn_flow(
                &flow(t, HMI, PLC, Transport::Tcp, 502),
                &Limits::default(),
                &mut over,
            );
            base.learn_flow(
                &flow(t, HISTORIAN, HMI, Transport::Tcp, 1433),
                &Limits::default(),
                &mut over,
            );
        }
        let mut book = AlertBook::new(600_000_000, 100);
        for f in flows {
            AllowlistDetector::flow(&base, None, f, &mut book);
        }
        book.into_sorted()
    }

    #[test]
    fn each_new_stage_of_a_new_host_is_its_own_alert() {
        let alerts = run(&[
            flow(100, ROGUE, PLC, Transport::Tcp, 502),
            flow(110, ROGUE, [10, 0, 0, 6], Transport::Tcp, 502),
            // Minutes later, SMB to the HMI: lateral movement.
            flow(400, ROGUE, HMI, Transport::Tcp, 445),
            flow(401, ROGUE, HMI, Transport::Tcp, 445),
        ]);
        let seen: Vec<(i64, &str, u64)> = alerts
            .iter()
            .map(|a| {
                (
                    a.ts.as_micros() / 1_000_000 - 1_714_557_600,
                    a.subject.as_str(),
                    a.count,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (100, "10.0.0.66/modbus", 2),
                (400, "10.0.0.66/file_share", 2)
            ]
        );
        assert!(alerts.iter().all(|a| a.severity == Severity::Medium));
    }

    #[test]
    fn name_and_time_chatter_between_known_hosts_is_an_observation() {
        let alerts = run(&[
            flow(100, HISTORIAN, HMI, Transport::Udp, 137),
            flow(100, HMI, HISTORIAN, Transport::Udp, 123),
            flow(100, HISTORIAN, PLC, Transport::Tcp, 502),
        ]);
        let seen: Vec<(&str, Severity)> = alerts
            .iter()
            .map(|a| (a.kind.as_str(), a.severity))
            .collect();
        assert_eq!(
            seen,
            [
                ("new_path", Severity::Info),
                ("new_path", Severity::Info),
                ("new_path", Severity::Medium)
            ]
        );
    }
}
