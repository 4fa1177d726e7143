//! Plants generated from a seed and a shape, for judging the detectors on traffic they were not
//! tuned on: an HMI polling 3–12 PLCs (some of them gateways with several units) over
//! persistent connections, a historian polling other registers every 10 s, an operator writing
//! set-points now and then, an engineering workstation that appears once per period, devices
//! logging over UDP syslog, and the NTP, DNS, NetBIOS and file-share chatter of the hosts.
//! Analog values wander (mean-reverting random walks, daily load curves, sensor noise, slow
//! trends), so that one learning hour does not show everything benign. Over the detection half
//! hour, labelled incidents are laid, each with its time span and the hosts involved.
//!
//! Events are written directly as [`mamori_models::Event`]s in simulated time, as the agent
//! would write them, so a plant of 1.5 h takes well under a second to generate. Everything
//! comes from the seed: the same spec gives the same events, byte for byte.
//!
//! The modules, in generation order: [`layout`] (hosts, devices, register maps), [`process`]
//! (what the registers read over time), [`incidents`] (the attacks and faults, planned first
//! because they change what the rest reads), [`traffic`] (the benign Modbus and network
//! traffic) and [`logs`] (syslog).

pub mod incidents;
pub mod layout;
mod logs;
mod modbus;
mod process;
mod traffic;

use std::net::IpAddr;

use mamori_models::{Event, Timestamp};
use rand::{Rng as _, SeedableRng};

use crate::events::{SEC, ts};
pub use incidents::{Incident, IncidentKind};
pub use layout::Layout;

/// Learning lasts one hour, as in the evaluation.
pub const LEARN_S: i64 = 3600;
/// Detection lasts the half hour after it.
pub const DETECT_S: i64 = 1800;
/// Midnight UTC, 6 May 2024 (a Monday): the day every plant runs on.
const DAY0_S: i64 = 1_714_953_600;

/// The two sets of plants. Nobody tunes a detector on a held-out plant (docs/evaluation.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlantSet {
    /// Plants engineers may study while improving the detectors.
    Tuning,
    /// Plants reserved for reporting.
    HeldOut,
}

impl PlantSet {
    pub fn as_str(self) -> &'static str {
        match self {
            PlantSet::Tuning => "tuning",
            PlantSet::HeldOut => "held-out",
        }
    }
}

/// How the registers of a device are laid out, by the kind of plant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterMap {
    /// Holding registers of measurements at 0, breaker coils, energy counters in input
    /// registers, set-points in holding registers at 200.
    Substation,
    /// Input registers of levels, flows and pressures, pump states as discrete inputs,
    /// set-points at 40, flow totalisers at 100.
    Waterworks,
    /// One wide holding block at 1000, coils, set-points at 2000, counters at 3000.
    Feeder,
}

/// What a plant looks like, apart from its seed.
#[derive(Clone, Debug)]
pub struct Shape {
    /// PLCs (3–12).
    pub plcs: usize,
    /// Units behind one PLC at most (a PLC with more than one is a serial gateway).
    pub max_units: u8,
    /// The HMI's poll periods, one drawn per polled block.
    pub poll_periods_s: &'static [u32],
    pub map: RegisterMap,
    /// Hour of the day (UTC) at which learning starts: the daily load curve moves with it.
    pub start_hour: f64,
    /// Second octet of the plant's 10.x.0.0/24 network.
    pub net: u8,
    /// Mean time between two operator set-point writes.
    pub operator_mean_interval_s: u32,
    /// How often the HMI reads each PLC's identification (43/14).
    pub identity_period_s: u32,
}

/// One plant of the evaluation.
#[derive(Clone, Debug)]
pub struct PlantSpec {
    pub name: &'static str,
    pub set: PlantSet,
    pub seed: u64,
    pub shape: Shape,
}

/// A generated plant: the learning hour, the detection half hour and its incidents.
#[derive(Debug)]
pub struct Plant {
    pub spec: PlantSpec,
    pub layout: Layout,
    /// Events of the learning hour, in time order.
    pub learning: Vec<Event>,
    /// Events of the detection half hour, in time order.
    pub detection: Vec<Event>,
    pub incidents: Vec<Incident>,
    pub learn_start: Timestamp,
    pub detect_start: Timestamp,
    pub detect_end: Timestamp,
}

/// The time frame of a plant, in µs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    pub learn_start: i64,
    pub detect_start: i64,
    pub end: i64,
}

impl Frame {
    fn of(shape: &Shape) -> Frame {
        let learn_start = DAY0_S * SEC + (shape.start_hour * 3600.0 * SEC as f64) as i64;
        let detect_start = learn_start + LEARN_S * SEC;
        Frame {
            learn_start,
            detect_start,
            end: detect_start + DETECT_S * SEC,
        }
    }

    /// The segments (capture files) the events are split into: learning, then detection.
    pub fn segments(&self) -> [(i64, i64); 2] {
        [
            (self.learn_start, self.detect_start),
            (self.detect_start, self.end),
        ]
    }
}

pub(crate) type Rng = rand_xoshiro::Xoshiro256PlusPlus;

/// An independent random stream for one part of the generator, so that adding draws to one
/// part does not move everything else.
pub(crate) fn stream(seed: u64, label: &str) -> Rng {
    // FNV-1a of the label.
    let h = label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Rng::seed_from_u64(seed ^ h)
}

/// A standard normal draw (Box–Muller).
pub(crate) fn normal(rng: &mut Rng) -> f64 {
    let u1: f64 = rng.r#gen::<f64>().max(1e-12);
    let u2: f64 = rng.r#gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An exponential interval with mean `mean_s` seconds, in µs (at least 1 s).
pub(crate) fn exponential_us(rng: &mut Rng, mean_s: f64) -> i64 {
    let u: f64 = rng.r#gen::<f64>().max(1e-12);
    ((-u.ln() * mean_s).max(1.0) * SEC as f64) as i64
}

/// Generates a plant. Deterministic: the same spec gives the same plant.
pub fn generate(spec: &PlantSpec) -> Plant {
    let frame = Frame::of(&spec.shape);
    let layout = Layout::new(spec);
    let plan = incidents::plan(spec, &layout, &frame);
    let world = traffic::World::new(spec, &layout, &frame, &plan);
    let mut events = traffic::benign(spec, &layout, &frame, &world, &plan);
    events.extend(logs::benign(spec, &layout, &frame, &world, &plan));
    events.extend(incidents::events(spec, &layout, &world, &plan));
    let syslog_flows = logs::udp_flows(&events, &layout, &frame);
    events.extend(syslog_flows);
    // The captures begin and end at the frame's edges: what jitter pushed past them is lost.
    events.retain(|e| (frame.learn_start..frame.end).contains(&e.ts().as_micros()));
    // Stable, as the collector's sort: equal timestamps keep generation order. The cached key
    // sorts (time, index) pairs and then moves each event into place once, rather than moving
    // the large events at every merge (the most of a plant's generation time otherwise).
    events.sort_by_cached_key(|e| e.ts());
    let split = events.partition_point(|e| e.ts().as_micros() < frame.detect_start);
    let detection = events.split_off(split);
    Plant {
        spec: spec.clone(),
        layout,
        learning: events,
        detection,
        incidents: plan.incidents,
        learn_start: ts(frame.learn_start),
        detect_start: ts(frame.detect_start),
        detect_end: ts(frame.end),
    }
}

impl Plant {
    /// Every host that appears in the learning hour (as sender or receiver).
    pub fn learned_hosts(&self) -> std::collections::BTreeSet<IpAddr> {
        let mut hosts = std::collections::BTreeSet::new();
        for e in &self.learning {
            match e {
                Event::Modbus(m) => {
                    hosts.insert(m.src_ip);
                    hosts.insert(m.dst_ip);
                }
                Event::Flow(f) => {
                    hosts.insert(f.src_ip);
                    hosts.insert(f.dst_ip);
                }
                Event::Syslog(s) => hosts.extend(s.src_ip),
            }
        }
        hosts
    }
}
