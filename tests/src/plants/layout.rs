//! Who is on a generated plant's network and what each device holds: the hosts with their
//! addresses and names, each PLC's units, register blocks and identification, and the
//! set-points the operator writes. Drawn once from the seed; everything else reads it.

use std::net::{IpAddr, Ipv4Addr};

use rand::Rng as _;
use rand::seq::SliceRandom;

use super::process::{Analog, Signal, Steps};
use super::{PlantSpec, RegisterMap, Rng, stream};

/// The data tables of the Modbus data model, with the function that reads each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Coils,
    DiscreteInputs,
    InputRegisters,
    HoldingRegisters,
}

impl Table {
    pub fn read_function(self) -> u8 {
        match self {
            Table::Coils => 1,
            Table::DiscreteInputs => 2,
            Table::HoldingRegisters => 3,
            Table::InputRegisters => 4,
        }
    }

    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coils | Table::DiscreteInputs)
    }
}

/// A block of consecutive points read in one request.
#[derive(Clone, Debug)]
pub struct Block {
    pub table: Table,
    pub address: u16,
    pub(crate) points: Vec<Signal>,
    /// The HMI's poll period, when the HMI polls this block.
    pub hmi_period_s: Option<u32>,
    /// Whether the historian polls it (every 10 s).
    pub historian: bool,
}

impl Block {
    pub fn quantity(&self) -> u16 {
        u16::try_from(self.points.len()).unwrap_or(u16::MAX)
    }
}

/// One unit (slave id) of a PLC or gateway.
#[derive(Clone, Debug)]
pub struct Unit {
    pub id: u8,
    pub blocks: Vec<Block>,
}

/// What a PLC answers to Read Device Identification (43/14, basic objects).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub vendor: String,
    pub product_code: String,
    pub revision: String,
}

#[derive(Clone, Debug)]
pub struct Plc {
    pub ip: IpAddr,
    pub name: String,
    pub units: Vec<Unit>,
    pub identity: Identity,
    /// Whether it logs over syslog (and runs a login service whose failures it logs).
    pub logs: bool,
}

/// A register the operator writes and the HMI reads back.
#[derive(Clone, Debug)]
pub struct Setpoint {
    pub plc: usize,
    pub unit: u8,
    pub address: u16,
    pub tag: String,
    /// Values the operator usually chooses.
    pub usual: Vec<u16>,
    /// The engineering range: any value inside it is a legitimate choice.
    pub range: (u16, u16),
    pub initial: u16,
}

/// The hosts of a plant.
#[derive(Clone, Debug)]
pub struct Layout {
    /// NTP and DNS server.
    pub infra: IpAddr,
    /// Where devices send syslog.
    pub log_server: IpAddr,
    pub hmi: IpAddr,
    pub historian: IpAddr,
    /// The engineering workstation, seen once in learning and once in detection.
    pub ews: IpAddr,
    pub switches: Vec<IpAddr>,
    pub plcs: Vec<Plc>,
    pub setpoints: Vec<Setpoint>,
    /// PLCs the engineering workstation visits (indexes).
    pub ews_targets: Vec<usize>,
    /// Never-seen hosts the incidents use: a scanner and a rogue client (on the plant's
    /// network), and an attacker outside it that only log messages name.
    pub scanner: IpAddr,
    pub rogue: IpAddr,
    pub outside_attacker: IpAddr,
    /// The directed broadcast address (NetBIOS name service).
    pub broadcast: IpAddr,
}

fn host(net: u8, last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, net, 0, last))
}

const VENDORS: [(&str, &str); 4] = [
    ("Acme Controls", "AC-5"),
    ("Nordwerk Automation", "NW-S7"),
    ("Kawa Systems", "KX-"),
    ("Meridian Grid", "MG-RTU"),
];

impl Layout {
    pub fn new(spec: &PlantSpec) -> Layout {
        let net = spec.shape.net;
        let mut rng = stream(spec.seed, "layout");
        let mut plcs = Vec::new();
        let mut setpoints = Vec::new();
        for i in 0..spec.shape.plcs {
            let last = 21 + u8::try_from(i).unwrap_or(0);
            let units = if spec.shape.max_units > 1 && rng.gen_bool(0.35) {
                rng.gen_range(2..=spec.shape.max_units)
            } else {
                1
            };
            let mut plc_units = Vec::new();
            for id in 1..=units {
                plc_units.push(unit(spec, &mut rng, i, id, &mut setpoints));
            }
            let (vendor, code) = VENDORS
                .get(rng.gen_range(0..VENDORS.len()))
                .copied()
                .unwrap_or_default();
            plcs.push(Plc {
                ip: host(net, last),
                name: format!("plc-{:02}", i + 1),
                units: plc_units,
                identity: Identity {
                    vendor: vendor.to_owned(),
                    product_code: format!("{code}{}", rng.gen_range(10..99)),
                    revision: format!("v{}.{}.{}", rng.gen_range(1..4), rng.gen_range(0..9), 0),
                },
                logs: rng.gen_bool(0.8),
            });
        }
        // At least one PLC logs: the failed-login incident needs one.
        if let Some(p) = plcs.first_mut() {
            p.logs = true;
        }
        let mut order: Vec<usize> = (0..plcs.len()).collect();
        order.shuffle(&mut rng);
        let ews_targets = order.into_iter().take(rng.gen_range(1..=3usize)).collect();
        // Outsiders take free addresses above the devices.
        let mut free: Vec<u8> = (100..=199).collect();
        free.shuffle(&mut rng);
        Layout {
            infra: host(net, 2),
            log_server: host(net, 5),
            hmi: host(net, 10),
            historian: host(net, 11),
            ews: host(net, 12),
            switches: vec![host(net, 250), host(net, 251)],
            plcs,
            setpoints,
            ews_targets,
            scanner: host(net, free.first().copied().unwrap_or(100)),
            rogue: host(net, free.get(1).copied().unwrap_or(101)),
            outside_attacker: IpAddr::V4(Ipv4Addr::new(
                172,
                16,
                rng.gen_range(1..=254),
                rng.gen_range(1..=254),
            )),
            broadcast: host(net, 255),
        }
    }

    /// Every address of the plant's own hosts (not the incidents' outsiders).
    pub fn hosts(&self) -> Vec<IpAddr> {
        let mut hosts = vec![
            self.infra,
            self.log_server,
            self.hmi,
            self.historian,
            self.ews,
        ];
        hosts.extend(&self.switches);
        hosts.extend(self.plcs.iter().map(|p| p.ip));
        hosts
    }

    /// Hostname of an address of the plant, as its syslog messages name it.
    pub fn hostname(&self, ip: IpAddr) -> String {
        if ip == self.hmi {
            return "hmi-1".into();
        }
        if ip == self.historian {
            return "hist-1".into();
        }
        if ip == self.ews {
            return "ews-1".into();
        }
        if let Some(p) = self.plcs.iter().find(|p| p.ip == ip) {
            return p.name.clone();
        }
        if let Some(i) = self.switches.iter().position(|&s| s == ip) {
            return format!("sw-{}", i + 1);
        }
        ip.to_string()
    }

    pub fn setpoint_block(&self, sp: &Setpoint) -> Option<&Block> {
        self.plcs
            .get(sp.plc)?
            .units
            .iter()
            .find(|u| u.id == sp.unit)?
            .blocks
            .iter()
            .find(|b| {
                b.table == Table::HoldingRegisters
                    && b.address <= sp.address
                    && sp.address < b.address.saturating_add(b.quantity())
            })
    }
}

/// The role of a block, which decides what its points are.
#[derive(Clone, Copy)]
enum Role {
    Measurements,
    Status,
    Counters,
    Setpoints,
}

/// (role, table, address) of each block, by register map.
fn blocks_of(map: RegisterMap) -> [(Role, Table, u16); 4] {
    match map {
        RegisterMap::Substation => [
            (Role::Measurements, Table::HoldingRegisters, 0),
            (Role::Status, Table::Coils, 0),
            (Role::Counters, Table::InputRegisters, 100),
            (Role::Setpoints, Table::HoldingRegisters, 200),
        ],
        RegisterMap::Waterworks => [
            (Role::Measurements, Table::InputRegisters, 0),
            (Role::Status, Table::DiscreteInputs, 0),
            (Role::Counters, Table::InputRegisters, 100),
            (Role::Setpoints, Table::HoldingRegisters, 40),
        ],
        RegisterMap::Feeder => [
            (Role::Measurements, Table::HoldingRegisters, 1000),
            (Role::Status, Table::Coils, 0),
            (Role::Counters, Table::InputRegisters, 3000),
            (Role::Setpoints, Table::HoldingRegisters, 2000),
        ],
    }
}

fn unit(
    spec: &PlantSpec,
    rng: &mut Rng,
    plc: usize,
    id: u8,
    setpoints: &mut Vec<Setpoint>,
) -> Unit {
    let periods = spec.shape.poll_periods_s;
    let period = |rng: &mut Rng| periods.get(rng.gen_range(0..periods.len().max(1))).copied();
    let mut blocks = Vec::new();
    for (role, table, address) in blocks_of(spec.shape.map) {
        let (points, hmi_period_s, historian) = match role {
            Role::Measurements => (
                measurements(spec.shape.map, rng),
                period(rng),
                rng.gen_bool(0.5),
            ),
            Role::Status => {
                let n = rng.gen_range(8..=16);
                let points = (0..n).map(|_| Signal::Steps(Steps::bits(rng))).collect();
                (points, period(rng), false)
            }
            Role::Counters => (counters(rng), Some(5), true),
            Role::Setpoints => {
                let points = setpoint_points(spec.shape.map, rng, plc, id, address, setpoints);
                (points, Some(5), false)
            }
        };
        blocks.push(Block {
            table,
            address,
            points,
            hmi_period_s,
            historian,
        });
    }
    Unit { id, blocks }
}

fn measurements(map: RegisterMap, rng: &mut Rng) -> Vec<Signal> {
    let mut points = Vec::new();
    match map {
        RegisterMap::Substation | RegisterMap::Feeder => {
            let kv = rng.gen_range(10_800.0..11_200.0);
            for _ in 0..3 {
                points.push(Signal::Analog(Analog::voltage(rng, kv)));
            }
            let amps = rng.gen_range(120.0..320.0);
            for _ in 0..3 {
                points.push(Signal::Analog(Analog::load(rng, amps, amps * 1.2)));
            }
            let kw = rng.gen_range(1500.0..4000.0);
            points.push(Signal::Analog(Analog::load(rng, kw, kw * 1.5)));
            points.push(Signal::Analog(Analog::load(rng, kw / 3.0, kw / 2.0)));
            points.push(Signal::Analog(Analog::frequency(rng)));
            points.push(Signal::Analog(Analog::temperature(rng)));
            points.push(Signal::Steps(Steps::tap_changer(rng)));
            points.push(Signal::Steps(Steps::few(rng, &[1, 2], 0.0)));
            points.push(Signal::Constant(rng.gen_range(1..=12) * 100));
            if map == RegisterMap::Feeder {
                for _ in 0..rng.gen_range(4..=8) {
                    let a = rng.gen_range(50.0..300.0);
                    points.push(Signal::Analog(Analog::load(rng, a, a)));
                }
                points.push(Signal::Steps(Steps::few(rng, &[0, 1, 2], 1.0 / 2400.0)));
            }
        }
        RegisterMap::Waterworks => {
            for _ in 0..rng.gen_range(2..=4) {
                points.push(Signal::Analog(Analog::level(rng)));
            }
            let flow = rng.gen_range(200.0..900.0);
            points.push(Signal::Analog(Analog::load(rng, flow, flow)));
            points.push(Signal::Analog(Analog::level(rng)));
            points.push(Signal::Analog(Analog::temperature(rng)));
            points.push(Signal::Steps(Steps::few(rng, &[0, 1, 2, 3], 1.0 / 1800.0)));
            points.push(Signal::Constant(rng.gen_range(1..=50)));
            points.push(Signal::Constant(0));
        }
    }
    points
}

fn counters(rng: &mut Rng) -> Vec<Signal> {
    let mut points = Vec::new();
    for _ in 0..rng.gen_range(1..=2) {
        let per_s = rng.gen_range(0.2..6.0);
        let offset = rng.gen_range(0.0..4.0e9);
        points.push(Signal::Counter {
            per_s,
            offset,
            high_word: true,
        });
        points.push(Signal::Counter {
            per_s,
            offset,
            high_word: false,
        });
    }
    // Operations counter of a breaker: changes on the rare operation.
    points.push(Signal::Constant(rng.gen_range(10..900)));
    points.push(Signal::Analog(Analog::ambient(rng)));
    points
}

fn setpoint_points(
    map: RegisterMap,
    rng: &mut Rng,
    plc: usize,
    unit: u8,
    address: u16,
    setpoints: &mut Vec<Setpoint>,
) -> Vec<Signal> {
    let mut points = Vec::new();
    // Not every device has an operator set-point.
    let count = if rng.gen_bool(0.6) {
        rng.gen_range(1..=2)
    } else {
        0
    };
    for k in 0..count {
        let (tag, centre, step, half) = match map {
            RegisterMap::Substation | RegisterMap::Feeder if k == 0 => ("VOLT_TARGET", 110, 1, 5),
            RegisterMap::Substation | RegisterMap::Feeder => ("LOAD_LIMIT", 400, 25, 200),
            RegisterMap::Waterworks if k == 0 => ("LEVEL_SP", 60, 5, 30),
            RegisterMap::Waterworks => ("PRESSURE_SP", 45, 1, 10),
        };
        let centre = centre + step * rng.gen_range(-2..=2);
        let usual: Vec<u16> = (-1..=1)
            .map(|d| u16::try_from(centre + d * step).unwrap_or(0))
            .collect();
        let range = (
            u16::try_from(centre - half).unwrap_or(0),
            u16::try_from(centre + half).unwrap_or(0),
        );
        let index = setpoints.len();
        setpoints.push(Setpoint {
            plc,
            unit,
            address: address + u16::try_from(points.len()).unwrap_or(0),
            tag: format!("{tag}_{}", plc + 1),
            initial: usual.get(1).copied().unwrap_or(range.0),
            usual,
            range,
        });
        points.push(Signal::Setpoint(index));
    }
    // Configuration constants and a mode word next to the set-points.
    points.push(Signal::Constant(rng.gen_range(1..=3)));
    points.push(Signal::Constant(rng.gen_range(100..=500)));
    points.push(Signal::Steps(Steps::few(rng, &[1, 2], 1.0 / 5400.0)));
    points
}
