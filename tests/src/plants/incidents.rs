//! The labelled incidents of a generated plant, of the kinds an OT SOC cares about, laid over
//! the detection half hour in a seed-shuffled order with at least 45 s between them: each has
//! its time span and the hosts involved, which is what an alert must overlap and name to count
//! as catching it. Planned before the benign traffic, because some of them change what the
//! devices hold or answer ([`super::traffic::World`]); their own traffic is generated here.

use std::net::{IpAddr, Ipv4Addr};

use mamori_models::{Event, FlowEvent, Timestamp, Transport};
use rand::Rng as _;
use rand::seq::SliceRandom;

use super::layout::{Layout, Table};
use super::modbus::{
    Connection, Reply, bare_request, identity_request, identity_response, read_request,
    read_response, write_register,
};
use super::traffic::{Ports, Silence, World, identity_reads, latency_us};
use super::{Frame, PlantSpec, Rng, stream};
use crate::events::{LogSource, SEC, flow, ts};

/// What kind of incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IncidentKind {
    /// A never-seen host sweeps the subnet for port 502, then probes one PLC's registers.
    ReconSweep,
    /// A known client tries many function codes on a PLC.
    FunctionCodeScan,
    /// A known client enumerates unit ids behind a PLC or gateway.
    UnitIdScan,
    /// A never-seen host writes a set-point (an in-range value).
    UnauthorisedWrite,
    /// The host of the unauthorised write opens SMB sessions to the HMI.
    LateralMovement,
    /// The HMI writes a set-point far outside its engineering range.
    SetpointOutOfRange,
    /// A PLC stops answering, then drops off the network for minutes.
    DeviceSilent,
    /// A known client floods a PLC with requests.
    RequestFlood,
    /// A PLC's identification (43/14) answers with a new firmware revision.
    IdentityChange,
    /// A burst of failed logins in a device's syslog.
    FailedLoginBurst,
}

impl IncidentKind {
    /// The kind's name in the labels file (`snake_case`).
    pub fn id(self) -> &'static str {
        match self {
            IncidentKind::ReconSweep => "recon_sweep",
            IncidentKind::FunctionCodeScan => "function_code_scan",
            IncidentKind::UnitIdScan => "unit_id_scan",
            IncidentKind::UnauthorisedWrite => "unauthorised_write",
            IncidentKind::LateralMovement => "lateral_movement",
            IncidentKind::SetpointOutOfRange => "setpoint_out_of_range",
            IncidentKind::DeviceSilent => "device_silent",
            IncidentKind::RequestFlood => "request_flood",
            IncidentKind::IdentityChange => "identity_change",
            IncidentKind::FailedLoginBurst => "failed_login_burst",
        }
    }

    /// The kind as the reports name it.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::ReconSweep => "reconnaissance sweep",
            IncidentKind::FunctionCodeScan => "function-code scan",
            IncidentKind::UnitIdScan => "unit-id scan",
            IncidentKind::UnauthorisedWrite => "unauthorised write (new host)",
            IncidentKind::LateralMovement => "lateral movement (SMB to HMI)",
            IncidentKind::SetpointOutOfRange => "set-point far out of range (HMI)",
            IncidentKind::DeviceSilent => "device silent",
            IncidentKind::RequestFlood => "request flood",
            IncidentKind::IdentityChange => "firmware/identity change",
            IncidentKind::FailedLoginBurst => "failed-login burst (syslog)",
        }
    }
}

/// One labelled incident.
#[derive(Clone, Debug)]
pub struct Incident {
    pub kind: IncidentKind,
    /// What happened, with the addresses involved.
    pub summary: String,
    pub start: Timestamp,
    pub end: Timestamp,
    /// An alert must name one of these (source, destination or asset) to catch it: the
    /// attacker when it is a host never seen, else the device attacked or failing. The HMI and
    /// the historian are named only by the summary when they are merely the client: every
    /// poll names them, so an alert naming them says nothing about the incident.
    pub hosts: Vec<IpAddr>,
    /// Every host taking part (`hosts` first): an alert during the span whose asset is one of
    /// them is a consequence of the incident, neither a catch nor a false alert.
    pub involved: Vec<IpAddr>,
}

/// What the incidents do, in the detail their traffic and effects need.
#[derive(Clone, Debug)]
pub(crate) enum Attack {
    Recon {
        t: i64,
        plc: usize,
    },
    FunctionScan {
        t: i64,
        client: IpAddr,
        plc: usize,
    },
    UnitScan {
        t: i64,
        client: IpAddr,
        plc: usize,
    },
    RogueWrite {
        t: i64,
        setpoint: usize,
        value: u16,
    },
    Lateral {
        t: i64,
    },
    SetpointOutOfRange {
        t: i64,
        setpoint: usize,
        value: u16,
        restore: i64,
    },
    Silent {
        plc: usize,
        silence: Silence,
    },
    Flood {
        t: i64,
        client: IpAddr,
        plc: usize,
    },
    IdentityChange {
        plc: usize,
        /// When the new firmware took over (just before the HMI's next read of it).
        from: i64,
    },
    FailedLogins {
        t: i64,
        device: IpAddr,
        count: u32,
    },
}

/// The incidents and the benign events whose time depends on them.
#[derive(Debug)]
pub struct Plan {
    pub incidents: Vec<Incident>,
    pub(crate) attacks: Vec<Attack>,
    /// The engineering workstation's visits: one in learning, one in detection.
    pub ews_visits: Vec<i64>,
}

/// The slots the detection half hour is cut into, in shuffled order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot {
    Recon,
    FunctionScan,
    UnitScan,
    WriteThenLateral,
    OutOfRange,
    Silent,
    Flood,
    Identity,
    Logins,
    EwsVisit,
}

/// Least time between two slots: a traffic window (60 s) and some.
const MIN_GAP_S: i64 = 45;
/// A device goes unanswered this long before its connections drop.
const UNANSWERED_S: i64 = 20;
/// Requests per second of the flood, and its length.
const FLOOD_PER_S: i64 = 250;
const FLOOD_S: i64 = 12;
/// Unit ids the unit scan tries.
const UNIT_SCAN_IDS: u8 = 32;

/// The longest a slot can take (s), which the spacing plans for.
fn max_len_s(slot: Slot, spec: &PlantSpec) -> i64 {
    match slot {
        Slot::Recon => 20,
        Slot::FunctionScan => 8,
        Slot::UnitScan => i64::from(UNIT_SCAN_IDS) + 3,
        Slot::WriteThenLateral => 240 + 30,
        Slot::OutOfRange => 125,
        Slot::Silent => UNANSWERED_S + 190,
        Slot::Flood => FLOOD_S + 2,
        // The PLCs' identification reads are spread evenly over the period.
        Slot::Identity => {
            i64::from(spec.shape.identity_period_s)
                / i64::try_from(spec.shape.plcs.max(1)).unwrap_or(1)
                + 10
        }
        Slot::Logins => 65,
        Slot::EwsVisit => 35,
    }
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> Option<T> {
    items.choose(rng).copied()
}

pub(crate) fn plan(spec: &PlantSpec, layout: &Layout, frame: &Frame) -> Plan {
    let mut rng = stream(spec.seed, "incidents");
    let mut slots = vec![
        Slot::Recon,
        Slot::FunctionScan,
        Slot::UnitScan,
        Slot::WriteThenLateral,
        Slot::OutOfRange,
        Slot::Silent,
        Slot::Flood,
        Slot::Identity,
        Slot::Logins,
        Slot::EwsVisit,
    ];
    slots.shuffle(&mut rng);
    let plcs: Vec<usize> = (0..layout.plcs.len()).collect();
    let identity = identity_reads(spec, frame, layout.plcs.len());
    let mut p = Planner {
        layout,
        plan: Plan {
            incidents: Vec::new(),
            attacks: Vec::new(),
            ews_visits: vec![frame.learn_start + rng.gen_range(600..3000) * SEC],
        },
        silent: None,
    };
    let end_margin = 60 * SEC;
    let mut cursor = frame.detect_start + 30 * SEC;
    for (i, &slot) in slots.iter().enumerate() {
        let rest = slots.get(i..).unwrap_or_default();
        let need: i64 = rest.iter().map(|&s| max_len_s(s, spec) * SEC).sum();
        let left = i64::try_from(rest.len()).unwrap_or(1);
        // Time to spare beyond the longest the remaining slots can take and their least gaps;
        // one gap takes at most twice its share of it, and never more than all of it.
        let slack = (frame.end - end_margin - cursor - need - left * MIN_GAP_S * SEC).max(0);
        let gap = MIN_GAP_S * SEC + rng.gen_range(0..=(2 * slack / left).min(slack));
        let start = cursor + gap;
        cursor = match slot {
            Slot::Recon => p.recon(&mut rng, start, &plcs),
            Slot::FunctionScan => p.function_scan(&mut rng, start, &plcs),
            Slot::UnitScan => p.unit_scan(&mut rng, start),
            Slot::WriteThenLateral => p.write_then_lateral(&mut rng, start),
            Slot::OutOfRange => p.out_of_range(&mut rng, start),
            Slot::Silent => p.silent(&mut rng, start, &plcs),
            Slot::Flood => p.flood(&mut rng, start, &plcs),
            Slot::Identity => p.identity(&mut rng, start, &identity),
            Slot::Logins => p.logins(&mut rng, start),
            Slot::EwsVisit => {
                p.plan.ews_visits.push(start + 5 * SEC);
                start + 5 * SEC + 8 * SEC * i64::try_from(layout.ews_targets.len()).unwrap_or(3)
            }
        };
    }
    p.plan.incidents.sort_by_key(|i| (i.start, i.kind));
    p.plan
}

struct Planner<'a> {
    layout: &'a Layout,
    plan: Plan,
    /// The PLC that goes silent, and when.
    silent: Option<(usize, Silence)>,
}

impl Planner<'_> {
    /// Records an incident; returns its end (µs).
    fn incident(
        &mut self,
        kind: IncidentKind,
        (start, end): (i64, i64),
        hosts: Vec<IpAddr>,
        also: &[IpAddr],
        summary: String,
        attack: Attack,
    ) -> i64 {
        let mut involved = hosts.clone();
        involved.extend(also.iter().filter(|h| !hosts.contains(h)));
        self.plan.incidents.push(Incident {
            kind,
            summary,
            start: ts(start),
            end: ts(end),
            hosts,
            involved,
        });
        self.plan.attacks.push(attack);
        end
    }

    fn plc_ip(&self, plc: usize) -> IpAddr {
        self.layout
            .plcs
            .get(plc)
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip)
    }

    /// HMI or historian: a compromised known client.
    fn known_client(&self, rng: &mut Rng) -> IpAddr {
        if rng.gen_bool(0.5) {
            self.layout.hmi
        } else {
            self.layout.historian
        }
    }

    /// PLCs other than the one that goes silent.
    fn up(&self, plcs: &[usize]) -> Vec<usize> {
        let down = self.silent.map(|(p, _)| p);
        let up: Vec<usize> = plcs.iter().copied().filter(|&p| Some(p) != down).collect();
        if up.is_empty() { plcs.to_vec() } else { up }
    }

    fn recon(&mut self, rng: &mut Rng, t: i64, plcs: &[usize]) -> i64 {
        let plc = pick(rng, &self.up(plcs)).unwrap_or(0);
        let scanner = self.layout.scanner;
        // 254 SYNs 20 ms apart, then 20 reads 250 ms apart and an identification read.
        let end = t + 254 * 20_000 + 500_000 + 21 * 250_000 + SEC;
        let summary = format!(
            "{scanner} sweeps the subnet for port 502, then probes {}'s registers",
            self.plc_ip(plc)
        );
        // The sweep reaches every host of the subnet: a reset or a refused connection in the
        // traffic of any of them is the sweep's doing.
        let probed = self.plc_ip(plc);
        let mut reached = vec![probed];
        reached.extend(self.layout.hosts().into_iter().filter(|&h| h != probed));
        self.incident(
            IncidentKind::ReconSweep,
            (t, end),
            vec![scanner],
            &reached,
            summary,
            Attack::Recon { t, plc },
        )
    }

    fn function_scan(&mut self, rng: &mut Rng, t: i64, plcs: &[usize]) -> i64 {
        let plc = pick(rng, &self.up(plcs)).unwrap_or(0);
        let client = self.known_client(rng);
        let end = t + i64::try_from(SCAN_FUNCTIONS.len()).unwrap_or(0) * 600_000 + SEC;
        let summary = format!(
            "{client} tries {} function codes on {}",
            SCAN_FUNCTIONS.len(),
            self.plc_ip(plc)
        );
        self.incident(
            IncidentKind::FunctionCodeScan,
            (t, end),
            vec![self.plc_ip(plc)],
            &[client],
            summary,
            Attack::FunctionScan { t, client, plc },
        )
    }

    fn unit_scan(&mut self, rng: &mut Rng, t: i64) -> i64 {
        // The device with the most units (a gateway when there is one).
        let down = self.silent.map(|(p, _)| p);
        let plc = (0..self.layout.plcs.len())
            .filter(|&p| Some(p) != down)
            .max_by_key(|&p| self.layout.plcs.get(p).map_or(0, |x| x.units.len()))
            .unwrap_or(0);
        let client = self.known_client(rng);
        let end = t + i64::from(UNIT_SCAN_IDS) * SEC + 2 * SEC;
        let summary = format!(
            "{client} enumerates unit ids 1–{UNIT_SCAN_IDS} on {}",
            self.plc_ip(plc)
        );
        self.incident(
            IncidentKind::UnitIdScan,
            (t, end),
            vec![self.plc_ip(plc)],
            &[client],
            summary,
            Attack::UnitScan { t, client, plc },
        )
    }

    fn write_then_lateral(&mut self, rng: &mut Rng, t: i64) -> i64 {
        let rogue = self.layout.rogue;
        let Some(setpoint) = (0..self.layout.setpoints.len())
            .collect::<Vec<_>>()
            .choose(rng)
            .copied()
        else {
            return t;
        };
        let layout = self.layout;
        let Some(sp) = layout.setpoints.get(setpoint) else {
            return t;
        };
        let plc_ip = self.plc_ip(sp.plc);
        let value = pick(rng, &sp.usual).unwrap_or(sp.initial);
        let summary = format!(
            "{rogue}, never seen, writes {value} to {} ({plc_ip} register {})",
            sp.tag, sp.address
        );
        self.incident(
            IncidentKind::UnauthorisedWrite,
            (t, t + 3 * SEC),
            vec![rogue],
            &[plc_ip],
            summary,
            Attack::RogueWrite {
                t: t + SEC,
                setpoint,
                value,
            },
        );
        let tl = t + rng.gen_range(120..=240) * SEC;
        let hmi = self.layout.hmi;
        let summary = format!(
            "{rogue} (flagged for Modbus minutes before) opens SMB sessions to the HMI {hmi}"
        );
        self.incident(
            IncidentKind::LateralMovement,
            (tl, tl + 25 * SEC),
            vec![rogue],
            &[hmi],
            summary,
            Attack::Lateral { t: tl },
        )
    }

    fn out_of_range(&mut self, rng: &mut Rng, t: i64) -> i64 {
        let Some(setpoint) = (0..self.layout.setpoints.len())
            .collect::<Vec<_>>()
            .choose(rng)
            .copied()
        else {
            return t;
        };
        let layout = self.layout;
        let Some(sp) = layout.setpoints.get(setpoint) else {
            return t;
        };
        let width = sp.range.1.saturating_sub(sp.range.0).max(1);
        let value = sp
            .range
            .1
            .saturating_add(width.saturating_mul(rng.gen_range(3..6)));
        let restore = t + rng.gen_range(60..=120) * SEC;
        let hmi = self.layout.hmi;
        let plc_ip = self.plc_ip(sp.plc);
        let summary = format!(
            "the HMI writes {value} to {} ({plc_ip} register {}; range {}–{}) until the operator restores it",
            sp.tag, sp.address, sp.range.0, sp.range.1
        );
        self.incident(
            IncidentKind::SetpointOutOfRange,
            (t, restore + SEC),
            vec![plc_ip],
            &[hmi],
            summary,
            Attack::SetpointOutOfRange {
                t,
                setpoint,
                value,
                restore,
            },
        )
    }

    fn silent(&mut self, rng: &mut Rng, t: i64, plcs: &[usize]) -> i64 {
        let plc = pick(rng, plcs).unwrap_or(0);
        let silence = Silence {
            unanswered_from: t,
            down_from: t + UNANSWERED_S * SEC,
            back: t + UNANSWERED_S * SEC + rng.gen_range(120..=190) * SEC,
        };
        self.silent = Some((plc, silence));
        let summary = format!(
            "{} stops answering, then drops off the network for {} s",
            self.plc_ip(plc),
            (silence.back - silence.down_from) / SEC
        );
        // Its clients' polls go unanswered and their reconnections fail: their traffic changes.
        let clients = [self.layout.hmi, self.layout.historian];
        self.incident(
            IncidentKind::DeviceSilent,
            (t, silence.back),
            vec![self.plc_ip(plc)],
            &clients,
            summary,
            Attack::Silent { plc, silence },
        )
    }

    fn flood(&mut self, rng: &mut Rng, t: i64, plcs: &[usize]) -> i64 {
        let plc = pick(rng, &self.up(plcs)).unwrap_or(0);
        let client = self.known_client(rng);
        let summary = format!(
            "{client} floods {} with {FLOOD_PER_S} requests a second for {FLOOD_S} s",
            self.plc_ip(plc)
        );
        self.incident(
            IncidentKind::RequestFlood,
            (t, t + (FLOOD_S + 1) * SEC),
            vec![self.plc_ip(plc)],
            &[client],
            summary,
            Attack::Flood { t, client, plc },
        )
    }

    fn identity(&mut self, rng: &mut Rng, t: i64, reads: &[Vec<i64>]) -> i64 {
        // The PLC the HMI reads next: its answer is the first to show the new firmware.
        let down = self.silent.map(|(p, _)| p);
        let next = reads
            .iter()
            .enumerate()
            .filter(|&(p, _)| Some(p) != down)
            .filter_map(|(p, times)| {
                let i = times.partition_point(|&r| r < t + 5 * SEC);
                Some((*times.get(i)?, i, p))
            })
            .min();
        let Some((read, i, plc)) = next else { return t };
        let previous = i
            .checked_sub(1)
            .and_then(|k| reads.get(plc)?.get(k).copied())
            .unwrap_or(t);
        let from = (read - rng.gen_range(10..=60) * SEC).max(previous + SEC);
        let summary = format!(
            "{} answers device identification with a new firmware revision",
            self.plc_ip(plc)
        );
        self.incident(
            IncidentKind::IdentityChange,
            (read, read + 5 * SEC),
            vec![self.plc_ip(plc)],
            &[],
            summary,
            Attack::IdentityChange { plc, from },
        )
    }

    fn logins(&mut self, rng: &mut Rng, t: i64) -> i64 {
        let mut devices: Vec<IpAddr> = self
            .layout
            .plcs
            .iter()
            .filter(|p| p.logs)
            .map(|p| p.ip)
            .collect();
        devices.push(self.layout.hmi);
        let device = pick(rng, &devices).unwrap_or(self.layout.hmi);
        let count = rng.gen_range(30..=40);
        let attacker = self.layout.outside_attacker;
        let summary = format!("{count} failed logins on {device} from {attacker} within a minute");
        self.incident(
            IncidentKind::FailedLoginBurst,
            (t, t + i64::from(count) * 1_500_000 + SEC),
            vec![device],
            &[attacker],
            summary,
            Attack::FailedLogins { t, device, count },
        )
    }
}

/// The function codes of the function-code scan.
const SCAN_FUNCTIONS: [u8; 10] = [7, 8, 11, 12, 17, 20, 24, 43, 90, 100];

/// The incidents' own traffic.
pub(crate) fn events(spec: &PlantSpec, layout: &Layout, world: &World, plan: &Plan) -> Vec<Event> {
    let mut rng = stream(spec.seed, "incident-traffic");
    let mut ports = Ports::new(&mut rng);
    let mut out = Vec::new();
    let mut g = Gen {
        layout,
        world,
        rng: &mut rng,
        ports: &mut ports,
        out: &mut out,
    };
    for a in &plan.attacks {
        match *a {
            Attack::Recon { t, plc } => g.recon(t, plc),
            Attack::FunctionScan { t, client, plc } => g.function_scan(t, client, plc),
            Attack::UnitScan { t, client, plc } => g.unit_scan(t, client, plc),
            Attack::RogueWrite { t, setpoint, value } => g.rogue_write(t, setpoint, value),
            Attack::Lateral { t } => g.lateral(t),
            Attack::SetpointOutOfRange {
                t,
                setpoint,
                value,
                restore,
            } => g.out_of_range(t, setpoint, value, restore),
            Attack::Flood { t, client, plc } => g.flood(t, client, plc),
            Attack::FailedLogins { t, device, count } => g.logins(t, device, count),
            // Applied to the benign traffic by the world: what the devices answer changes.
            Attack::Silent { .. } | Attack::IdentityChange { .. } => {}
        }
    }
    out
}

struct Gen<'a> {
    layout: &'a Layout,
    world: &'a World,
    rng: &'a mut Rng,
    ports: &'a mut Ports,
    out: &'a mut Vec<Event>,
}

impl Gen<'_> {
    fn tcp(
        &mut self,
        (t, end): (i64, i64),
        src: IpAddr,
        dst: (IpAddr, u16),
        state: &'static str,
        bytes: (u64, u64),
    ) {
        let service = match dst.1 {
            502 if state == "SF" => Some("modbus".into()),
            445 => Some("smb".into()),
            _ => None,
        };
        let answered = state != "S0" && state != "REJ";
        self.out.push(Event::Flow(FlowEvent {
            service,
            orig_pkts: 3 + bytes.0 / 1000,
            orig_bytes: bytes.0,
            resp_pkts: if answered {
                2 + bytes.1 / 1000
            } else {
                u64::from(state == "REJ")
            },
            resp_bytes: bytes.1,
            ..flow(
                Transport::Tcp,
                (t, end),
                (src, self.ports.next()),
                dst,
                state,
                if state == "S0" { "idle" } else { "fin" },
            )
        }));
    }

    fn modbus_flow(&mut self, conn: &Connection, (t, end): (i64, i64)) {
        self.out.push(Event::Flow(FlowEvent {
            service: Some("modbus".into()),
            orig_pkts: conn.requests + 3,
            orig_bytes: conn.orig_bytes,
            resp_pkts: conn.requests + 2,
            resp_bytes: conn.resp_bytes,
            ..flow(
                Transport::Tcp,
                (t, end),
                (conn.client, conn.port),
                (conn.server, 502),
                "SF",
                "fin",
            )
        }));
    }

    fn recon(&mut self, t: i64, plc: usize) {
        let l = self.layout;
        let scanner = l.scanner;
        let Some(p) = l.plcs.get(plc) else { return };
        let IpAddr::V4(v4) = p.ip else { return };
        let [a, b, c, _] = v4.octets();
        let mut known: Vec<IpAddr> = vec![l.infra, l.log_server, l.hmi, l.historian];
        known.extend(&l.switches);
        for x in 1..=254u8 {
            let dst = IpAddr::V4(Ipv4Addr::new(a, b, c, x));
            let at = t + i64::from(x - 1) * 20_000;
            if dst == scanner {
                continue;
            }
            let state = if l.plcs.iter().any(|q| q.ip == dst) {
                "RSTO"
            } else if known.contains(&dst) {
                "REJ"
            } else {
                "S0"
            };
            self.tcp((at, at + 1_000), scanner, (dst, 502), state, (0, 0));
        }
        let start = t + 254 * 20_000 + 500_000;
        let mut conn = Connection::new(scanner, self.ports.next(), p.ip);
        let unit = p.units.first();
        for k in 0..20u16 {
            let r = start + i64::from(k) * 250_000;
            let address = k * 100;
            let at = r + latency_us(self.rng);
            let block = unit.and_then(|u| {
                u.blocks
                    .iter()
                    .position(|b| b.table == Table::HoldingRegisters && b.address == address)
            });
            let reply = match (unit, block) {
                (Some(u), Some(bi)) => self
                    .world
                    .read_block(l, plc, u.id, bi, at, self.rng)
                    .map(|mut v| {
                        v.truncate(10);
                        v.resize(10, 0);
                        Reply::At(at, read_response(Table::HoldingRegisters, v))
                    })
                    .unwrap_or(Reply::Exception(at, 2)),
                _ => Reply::Exception(at, 2),
            };
            let id = unit.map_or(1, |u| u.id);
            self.out
                .push(conn.transact(id, 3, read_request(r, address, 10), reply));
        }
        let r = start + 20 * 250_000;
        if let Some(id) = self.world.identity(l, plc, r) {
            let reply = Reply::At(r + 5_000, identity_response(id));
            let unit = unit.map_or(1, |u| u.id);
            self.out
                .push(conn.transact(unit, 43, identity_request(r), reply));
        }
        self.modbus_flow(&conn, (start - 2_000, r + 300_000));
    }

    fn function_scan(&mut self, t: i64, client: IpAddr, plc: usize) {
        let l = self.layout;
        let Some(p) = l.plcs.get(plc) else { return };
        let unit = p.units.first().map_or(1, |u| u.id);
        let mut conn = Connection::new(client, self.ports.next(), p.ip);
        let mut last = t;
        for (k, &func) in SCAN_FUNCTIONS.iter().enumerate() {
            let r = t + 200_000 + i64::try_from(k).unwrap_or(0) * 600_000;
            let at = r + latency_us(self.rng);
            let ev = match func {
                // Return Query Data: the device echoes it.
                8 => {
                    let request = mamori_models::ModbusPdu {
                        sub_function: Some(0),
                        sub_function_name: Some("RETURN_QUERY_DATA".into()),
                        data_hex: Some("a537".into()),
                        ..bare_request(r, 6)
                    };
                    let reply = Reply::At(
                        at,
                        mamori_models::ModbusPdu {
                            ts: request.ts,
                            ..request.clone()
                        },
                    );
                    conn.transact(unit, func, request, reply)
                }
                43 => match self.world.identity(l, plc, r) {
                    Some(id) => conn.transact(
                        unit,
                        func,
                        identity_request(r),
                        Reply::At(at, identity_response(id)),
                    ),
                    None => conn.transact(unit, func, identity_request(r), Reply::Exception(at, 1)),
                },
                _ => conn.transact(unit, func, bare_request(r, 2), Reply::Exception(at, 1)),
            };
            self.out.push(ev);
            last = at;
        }
        self.modbus_flow(&conn, (t, last + 200_000));
    }

    fn unit_scan(&mut self, t: i64, client: IpAddr, plc: usize) {
        let l = self.layout;
        let Some(p) = l.plcs.get(plc) else { return };
        let gateway = p.units.len() > 1;
        let mut conn = Connection::new(client, self.ports.next(), p.ip);
        let mut last = t;
        for id in 1..=UNIT_SCAN_IDS {
            let r = t + 300_000 + i64::from(id - 1) * SEC;
            let at = r + latency_us(self.rng);
            let reply = match p.units.iter().find(|u| u.id == id) {
                Some(u) => {
                    let bi = u
                        .blocks
                        .iter()
                        .position(|b| !b.table.is_bits())
                        .unwrap_or(0);
                    let table = u
                        .blocks
                        .get(bi)
                        .map_or(Table::HoldingRegisters, |b| b.table);
                    match self.world.read_block(l, plc, id, bi, at, self.rng) {
                        Some(mut v) => {
                            v.truncate(1);
                            Reply::At(at, read_response(table, v))
                        }
                        None => Reply::Exception(at, 2),
                    }
                }
                // A gateway gives up on a missing serial device after its timeout.
                None if gateway => Reply::Exception(r + 500_000, 11),
                None => Reply::Unanswered,
            };
            let address = p
                .units
                .iter()
                .find(|u| u.id == id)
                .and_then(|u| u.blocks.iter().find(|b| !b.table.is_bits()))
                .map_or((0, 3), |b| (b.address, b.table.read_function()));
            self.out
                .push(conn.transact(id, address.1, read_request(r, address.0, 1), reply));
            last = r + 600_000;
        }
        self.modbus_flow(&conn, (t, last));
    }

    fn rogue_write(&mut self, t: i64, setpoint: usize, value: u16) {
        let l = self.layout;
        let Some(sp) = l.setpoints.get(setpoint) else {
            return;
        };
        let Some(p) = l.plcs.get(sp.plc) else { return };
        let rogue = l.rogue;
        let mut conn = Connection::new(rogue, self.ports.next(), p.ip);
        let at = t + latency_us(self.rng);
        self.out.push(conn.transact(
            sp.unit,
            6,
            write_register(t, sp.address, value),
            Reply::At(at, write_register(at, sp.address, value)),
        ));
        self.modbus_flow(&conn, (t - 200_000, at + 300_000));
    }

    fn lateral(&mut self, t: i64) {
        let (rogue, hmi) = (self.layout.rogue, self.layout.hmi);
        // An SMB session, a service-control call, then a file copied and run.
        self.tcp((t, t + 2 * SEC), rogue, (hmi, 445), "SF", (4_200, 3_100));
        self.tcp(
            (t + 3 * SEC, t + 4 * SEC),
            rogue,
            (hmi, 135),
            "SF",
            (1_800, 1_200),
        );
        let kb = self.rng.gen_range(150..400);
        self.tcp(
            (t + 6 * SEC, t + 20 * SEC),
            rogue,
            (hmi, 445),
            "SF",
            (kb * 1024, 9_000),
        );
    }

    fn out_of_range(&mut self, t: i64, setpoint: usize, value: u16, restore: i64) {
        let l = self.layout;
        let Some(sp) = l.setpoints.get(setpoint) else {
            return;
        };
        let Some(p) = l.plcs.get(sp.plc) else { return };
        // Sent on the HMI's own connection: same port as its polls is not needed for the
        // detectors, which key on addresses, so a fresh port keeps this self-contained.
        let mut conn = Connection::new(l.hmi, self.ports.next(), p.ip);
        let restored = self.world.setpoint(setpoint, restore);
        for (at, v) in [(t, value), (restore, restored)] {
            let back = at + latency_us(self.rng);
            self.out.push(conn.transact(
                sp.unit,
                6,
                write_register(at, sp.address, v),
                Reply::At(back, write_register(back, sp.address, v)),
            ));
        }
    }

    fn flood(&mut self, t: i64, client: IpAddr, plc: usize) {
        let l = self.layout;
        let Some(p) = l.plcs.get(plc) else { return };
        let Some(u) = p.units.first() else { return };
        let Some((bi, b)) = u
            .blocks
            .iter()
            .enumerate()
            .find(|(_, b)| !b.table.is_bits())
        else {
            return;
        };
        let mut conn = Connection::new(client, self.ports.next(), p.ip);
        let step = SEC / FLOOD_PER_S;
        for k in 0..FLOOD_PER_S * FLOOD_S {
            let r = t + k * step;
            let at = r + 1_500;
            let Some(values) = self.world.read_block(l, plc, u.id, bi, at, self.rng) else {
                continue;
            };
            self.out.push(conn.transact(
                u.id,
                b.table.read_function(),
                read_request(r, b.address, b.quantity()),
                Reply::At(at, read_response(b.table, values)),
            ));
        }
        self.modbus_flow(&conn, (t - 1_000, t + FLOOD_S * SEC + 5_000));
    }

    fn logins(&mut self, t: i64, device: IpAddr, count: u32) {
        let hostname = self.layout.hostname(device);
        let attacker = self.layout.outside_attacker;
        let source = LogSource {
            hostname: &hostname,
            ip: device,
            app: "sshd",
            procid: Some("2231"),
            facility: 10,
            severity: 5,
        };
        let users = ["root", "admin", "operator", "engineer", "guest"];
        let mut port = self.rng.gen_range(40_000..60_000);
        for k in 0..count {
            let user = users
                .get(usize::try_from(k).unwrap_or(0) % users.len())
                .copied()
                .unwrap_or("root");
            port += self.rng.gen_range(1..5);
            let at = t + i64::from(k) * 1_500_000 + self.rng.gen_range(0..300_000);
            self.out.push(source.message(
                at,
                format!("Failed password for {user} from {attacker} port {port} ssh2"),
            ));
        }
    }
}
