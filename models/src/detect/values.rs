//! Process values. A register is judged by what it is, inferred from what learning saw:
//!
//! - a **constant** (one value all along: a firmware revision, a configuration word);
//! - a **counter** (rises and only falls by wrapping or resetting: energy, operations);
//! - a **discrete** state (a few values that are not a run of neighbours: a mode, a breaker);
//! - a **set-point** (written by a master; judged on writes, read back like any register);
//! - a measured **analog** value (the rest), which drifts with load and weather.
//!
//! An analog's envelope is the learned range widened by a tolerance from its own variability
//! (its typical step between reads, a share of its width). While detecting, the envelope
//! follows a value that drifts past it, but never faster than the register explored its range
//! while learning, and never further than a bounded number of learned widths: an attacker
//! cannot walk the baseline faster than the process itself moves, nor without limit. A read
//! beyond the envelope is a **process deviation**: one low alert per device and hour
//! (`process_deviation`) that grows with the registers involved, never one alert per register.
//! A discrete register in a state never seen, or a constant that changes, is a deviation too.
//!
//! What stays high: a **write** far outside every value ever written or read there
//! (`setpoint_out_of_range`), and a **jump** between two reads that no learned rate explains
//! (`rate_of_change`). A write outside the written range but within the register's plausible
//! band is an observation (`setpoint_new_value`, info): operators do move set-points. A value a
//! master just wrote explains the reads that return it.
//!
//! Coils are left to the allowlist on purpose: a coil has two states and an operator command
//! legitimately flips it, so a "new state" there says nothing the function and address
//! checks do not say better.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::alert::{AlertBook, DetectorName, Raise, Severity, evidence};
use super::modbus::{Table, register_reads, register_writes};
use super::{Limits, Overflow, Scope};
use crate::event::ModbusEvent;
use crate::time::Timestamp;

/// One register of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RegisterKey {
    pub server: IpAddr,
    pub unit: u8,
    pub table: Table,
    pub address: u16,
}

/// Reads closer together than this (two clients polling at once) say nothing about rates.
const MIN_RATE_INTERVAL_US: u64 = 1_000;

const US_PER_H: f64 = 3.6e9;

/// |b − a| per hour between two reads, when they are far enough apart.
fn rate_per_h(t0: Timestamp, t1: Timestamp, a: u16, b: u16) -> Option<u64> {
    let dt = t1.micros_since(t0).filter(|&d| d >= MIN_RATE_INTERVAL_US)?;
    Some(u64::from(a.abs_diff(b)).saturating_mul(3_600_000_000) / dt)
}

/// Distinct values kept per register; a register with more is continuous.
pub const MAX_STATES: usize = 8;

/// What a register is, inferred from learning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterClass {
    /// Too few reads to say.
    Unknown,
    Constant,
    Counter,
    Discrete,
    Analog,
}

impl RegisterClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterClass::Unknown => "unknown",
            RegisterClass::Constant => "constant",
            RegisterClass::Counter => "counter",
            RegisterClass::Discrete => "discrete",
            RegisterClass::Analog => "analog",
        }
    }
}

/// What was learned about one register.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegisterProfile {
    pub reads: u64,
    pub read_min: u16,
    pub read_max: u16,
    /// Fastest change between two consecutive reads, in units per hour (per time, so that a
    /// gap in polling does not make a normal drift look like a jump).
    pub max_rate_per_h: u64,
    /// The distinct values read, while there are at most [`MAX_STATES`]; `None` beyond.
    pub states: Option<Vec<u16>>,
    pub writes: u64,
    pub write_min: u16,
    pub write_max: u16,
    /// Largest change between two consecutive reads, whatever the time between them.
    #[serde(default)]
    pub max_step: u16,
    /// Sum of the changes between consecutive reads (their mean is the register's noise).
    #[serde(default)]
    pub step_sum: u64,
    /// Consecutive read pairs that rose, and that fell.
    #[serde(default)]
    pub rises: u64,
    #[serde(default)]
    pub falls: u64,
    /// When the register was first and last read while learning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_read: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_read: Option<Timestamp>,
    #[serde(skip)]
    last: Option<(Timestamp, u16)>,
}

impl RegisterProfile {
    /// What the register is, given the reads needed to trust its states.
    pub fn class(&self, cfg: &ValueConfig) -> RegisterClass {
        if self.reads < cfg.min_reads {
            return RegisterClass::Unknown;
        }
        if self.read_min == self.read_max {
            return RegisterClass::Constant;
        }
        // A counter: it rose far more often than it fell, and it fell at most twice (wraps or
        // resets), over enough pairs.
        let pairs = self.rises + self.falls;
        if self.falls <= 2 && self.rises >= 5 && self.rises >= 4 * self.falls.max(1) && pairs > 0 {
            return RegisterClass::Counter;
        }
        if let Some(states) = &self.states
            && self.reads >= cfg.min_reads_for_states
        {
            // A run of three or more neighbouring values is a quantised measurement (or a tap
            // position) that happened to stay within a few counts, not a set of states.
            let run = usize::from(self.read_max - self.read_min) + 1 == states.len();
            if !(run && states.len() >= 3) {
                return RegisterClass::Discrete;
            }
        }
        RegisterClass::Analog
    }

    /// The typical change between two consecutive reads (at least 1).
    fn noise(&self) -> f64 {
        let pairs = (self.rises + self.falls).max(1);
        (self.step_sum as f64 / pairs as f64).max(1.0)
    }

    /// The mean time between two reads while learning, in hours (at least a millisecond).
    fn interval_h(&self) -> f64 {
        let span_h = self.span_h().unwrap_or(0.0);
        (span_h / self.reads.saturating_sub(1).max(1) as f64).max(1e-3 / 3600.0)
    }

    /// From the first to the last read while learning, in hours, when both are known.
    fn span_h(&self) -> Option<f64> {
        let (a, b) = (self.first_read?, self.last_read?);
        Some(b.micros_since(a).unwrap_or(0) as f64 / US_PER_H)
    }

    fn width(&self) -> f64 {
        f64::from(self.read_max - self.read_min)
    }

    /// Slack around the learned range.
    fn margin(&self, cfg: &ValueConfig) -> f64 {
        (self.width() * cfg.envelope_margin_ratio)
            .max(cfg.noise_margin_factor * self.noise())
            .max(1.0)
    }

    /// How fast the register explored its range while learning, per hour: the speed at which
    /// the envelope may follow a drift. A register learned over a short time explored its
    /// range quickly, so it may drift quickly (the span is floored at a minute only so that
    /// two reads close together do not make it unbounded).
    fn drift_per_h(&self) -> f64 {
        self.width() / self.span_h().unwrap_or(1.0).max(1.0 / 60.0)
    }
}

/// Tuning of the process-value detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValueConfig {
    /// Reads needed before a register's envelope is trusted.
    pub min_reads: u64,
    /// Reads needed before a register with few values counts as discrete.
    pub min_reads_for_states: u64,
    /// Slack around the read envelope, as a share of its width (at least 1).
    pub envelope_margin_ratio: f64,
    /// Slack around the read envelope, in typical steps between reads (sensor noise).
    pub noise_margin_factor: f64,
    /// A step larger than this many times the largest learned step is abnormal.
    pub step_factor: f64,
    /// A jump must also be at least this share of the learned width to count.
    pub jump_min_width_ratio: f64,
    /// How fast the envelope may follow a drift, as a multiple of the speed at which the
    /// register explored its range while learning.
    pub drift_factor: f64,
    /// How far the envelope may follow a drift in all, in learned widths on either side.
    pub max_drift_widths: f64,
    /// A set-point write within the register's known values widened by this share of their
    /// span (or 10 % of their magnitude) is an observation; beyond, an alert.
    pub setpoint_band_ratio: f64,
    /// Process deviations of one device are gathered into one alert per this many seconds.
    pub deviation_period_s: u64,
}

impl Default for ValueConfig {
    fn default() -> Self {
        ValueConfig {
            min_reads: 10,
            min_reads_for_states: 30,
            envelope_margin_ratio: 0.1,
            noise_margin_factor: 3.0,
            step_factor: 2.0,
            jump_min_width_ratio: 0.25,
            drift_factor: 1.0,
            max_drift_widths: 2.0,
            setpoint_band_ratio: 0.5,
            deviation_period_s: 3600,
        }
    }
}

impl ValueConfig {
    pub(crate) fn problems(&self, out: &mut Vec<&'static str>) {
        let bad = |x: f64, min: f64| x.is_nan() || x < min;
        if bad(self.step_factor, 1.0) {
            out.push("values.step_factor must be at least 1");
        }
        if bad(self.envelope_margin_ratio, 0.0) {
            out.push("values.envelope_margin_ratio must not be negative");
        }
        if bad(self.noise_margin_factor, 0.0) {
            out.push("values.noise_margin_factor must not be negative");
        }
        if bad(self.jump_min_width_ratio, 0.0) {
            out.push("values.jump_min_width_ratio must not be negative");
        }
        if bad(self.drift_factor, 0.0) {
            out.push("values.drift_factor must not be negative");
        }
        if bad(self.max_drift_widths, 0.0) {
            out.push("values.max_drift_widths must not be negative");
        }
        if bad(self.setpoint_band_ratio, 0.0) {
            out.push("values.setpoint_band_ratio must not be negative");
        }
        if self.deviation_period_s == 0 {
            out.push("values.deviation_period_s must be at least 1");
        }
    }
}

/// The learned registers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueBaseline {
    #[serde(with = "super::entries")]
    pub registers: BTreeMap<RegisterKey, RegisterProfile>,
}

impl ValueBaseline {
    pub(crate) fn forget(&mut self, scope: &Scope) {
        match *scope {
            Scope::Asset(ip) => self.registers.retain(|k, _| k.server != ip),
            // A channel's registers may be shared with other channels: keep them.
            Scope::Channel { .. } => {}
        }
    }

    pub(crate) fn merge(&mut self, other: ValueBaseline) {
        self.registers.extend(other.registers);
    }

    /// Drops the learning-only state so that a saved and reloaded baseline compares equal.
    pub(crate) fn seal(&mut self) {
        for p in self.registers.values_mut() {
            p.last = None;
        }
    }

    /// Takes `v` into the read range of `key` (an operator's "this value is normal").
    pub fn accept_read(&mut self, key: RegisterKey, v: u16) -> bool {
        let Some(p) = self.registers.get_mut(&key) else {
            return false;
        };
        p.read_min = p.read_min.min(v);
        p.read_max = p.read_max.max(v);
        if let Some(states) = p.states.as_mut()
            && let Err(pos) = states.binary_search(&v)
        {
            if states.len() < MAX_STATES {
                states.insert(pos, v);
            } else {
                p.states = None;
            }
        }
        true
    }

    /// Takes `v` into the written range of `key` (an operator's "this set-point is normal").
    pub fn accept_write(&mut self, key: RegisterKey, v: u16) -> bool {
        let Some(p) = self.registers.get_mut(&key) else {
            return false;
        };
        if p.writes == 0 {
            (p.write_min, p.write_max) = (v, v);
        } else {
            p.write_min = p.write_min.min(v);
            p.write_max = p.write_max.max(v);
        }
        p.writes += 1;
        true
    }

    fn slot<'a>(
        &'a mut self,
        key: RegisterKey,
        limits: &Limits,
        over: &mut Overflow,
    ) -> Option<&'a mut RegisterProfile> {
        if !self.registers.contains_key(&key) && self.registers.len() >= limits.max_registers {
            over.registers += 1;
            return None;
        }
        Some(
            self.registers
                .entry(key)
                .or_insert_with(|| RegisterProfile {
                    states: Some(Vec::new()),
                    ..RegisterProfile::default()
                }),
        )
    }

    pub(crate) fn learn(&mut self, ev: &ModbusEvent, limits: &Limits, over: &mut Overflow) {
        if let Some((table, first, values)) = register_reads(ev) {
            for (address, v) in addressed(first, values) {
                let key = RegisterKey {
                    server: ev.dst_ip,
                    unit: ev.unit,
                    table,
                    address,
                };
                let Some(p) = self.slot(key, limits, over) else {
                    continue;
                };
                learn_read(p, ev.ts, v);
            }
        }
        if let Some((first, values)) = register_writes(ev) {
            for (address, v) in addressed(first, values) {
                let key = RegisterKey {
                    server: ev.dst_ip,
                    unit: ev.unit,
                    table: Table::HoldingRegisters,
                    address,
                };
                let Some(p) = self.slot(key, limits, over) else {
                    continue;
                };
                if p.writes == 0 {
                    (p.write_min, p.write_max) = (v, v);
                } else {
                    p.write_min = p.write_min.min(v);
                    p.write_max = p.write_max.max(v);
                }
                p.writes += 1;
            }
        }
    }
}

/// `(address, value)` for the values of a request starting at `first`, stopping at the end
/// of the address space.
fn addressed(first: u16, values: &[u16]) -> impl Iterator<Item = (u16, u16)> + '_ {
    values.iter().enumerate().map_while(move |(i, &v)| {
        let address = u16::try_from(i).ok().and_then(|i| first.checked_add(i))?;
        Some((address, v))
    })
}

fn learn_read(p: &mut RegisterProfile, ts: Timestamp, v: u16) {
    if p.reads == 0 {
        (p.read_min, p.read_max) = (v, v);
    } else {
        p.read_min = p.read_min.min(v);
        p.read_max = p.read_max.max(v);
    }
    p.reads += 1;
    p.first_read = Some(p.first_read.map_or(ts, |t| t.min(ts)));
    p.last_read = Some(p.last_read.map_or(ts, |t| t.max(ts)));
    if let Some((t, last)) = p.last
        && ts
            .micros_since(t)
            .is_some_and(|d| d >= MIN_RATE_INTERVAL_US)
    {
        if let Some(r) = rate_per_h(t, ts, last, v) {
            p.max_rate_per_h = p.max_rate_per_h.max(r);
        }
        let step = last.abs_diff(v);
        p.max_step = p.max_step.max(step);
        p.step_sum = p.step_sum.saturating_add(u64::from(step));
        match v.cmp(&last) {
            std::cmp::Ordering::Greater => p.rises += 1,
            std::cmp::Ordering::Less => p.falls += 1,
            std::cmp::Ordering::Equal => {}
        }
    }
    p.last = Some((ts, v));
    if let Some(states) = p.states.as_mut()
        && let Err(pos) = states.binary_search(&v)
    {
        if states.len() < MAX_STATES {
            states.insert(pos, v);
        } else {
            p.states = None;
        }
    }
}

/// A new set-point within this share of the register's magnitude of its known values is
/// plausible: operators move set-points by tens of percent, attacks by far more.
const SETPOINT_MAGNITUDE_SHARE: f64 = 0.25;

/// A change of a device's discrete state (a coil, a status word) explains the jumps of its
/// measured values for this long: a pump staged off takes its motor current to zero.
const STATE_CHANGE_EXPLAINS_US: u64 = 60 * 1_000_000;

/// How long a finding on a measured value waits for its device's coils to be read: a state
/// change seen within this after the finding explains it too.
const STATE_CHANGE_GRACE_US: u64 = 10 * 1_000_000;

/// Findings held at once, at most (beyond, they are raised at once).
const MAX_PENDING: usize = 4096;

/// Coils and discrete inputs whose last state is remembered, at most.
const MAX_BITS: usize = 65_536;

/// A master's write that explains the reads returning its value for a while.
const WRITE_EXPLAINS_US: u64 = 15 * 60 * 1_000_000;

/// A register while detecting: its learned profile and how its envelope has followed.
#[derive(Debug)]
struct Tracked {
    profile: RegisterProfile,
    class: RegisterClass,
    /// The envelope's current low and high ends (analogs), and when each last moved.
    low: f64,
    high: f64,
    low_ts: Option<Timestamp>,
    high_ts: Option<Timestamp>,
    /// The last read while detecting.
    last: Option<(Timestamp, u16)>,
    /// The values masters wrote while detecting, with when (a few, newest last).
    written: Vec<(Timestamp, u16)>,
    /// States of a discrete register taken while detecting (written by a master).
    taken_states: Vec<u16>,
}

/// Values a register remembers as written while detecting.
const MAX_WRITTEN: usize = 4;

impl Tracked {
    fn new(profile: RegisterProfile, cfg: &ValueConfig) -> Self {
        let class = profile.class(cfg);
        let margin = profile.margin(cfg);
        Tracked {
            low: f64::from(profile.read_min) - margin,
            high: f64::from(profile.read_max) + margin,
            low_ts: None,
            high_ts: None,
            last: None,
            written: Vec::new(),
            taken_states: Vec::new(),
            class,
            profile,
        }
    }

    fn recently_written(&self, ts: Timestamp, v: u16) -> bool {
        self.written.iter().any(|&(t, w)| {
            w == v && (t >= ts || ts.micros_since(t).is_some_and(|d| d <= WRITE_EXPLAINS_US))
        })
    }

    fn note_write(&mut self, ts: Timestamp, v: u16) {
        if self.written.len() >= MAX_WRITTEN {
            self.written.remove(0);
        }
        self.written.push((ts, v));
    }

    /// Whether an analog read of `v` at `ts` stays within the envelope, moving the envelope
    /// when the value drifts past it no faster than the register's learned drift allows.
    ///
    /// The ends move at most at the drift rate since they last moved; a read may exceed an
    /// end by the register's noise without moving it further than that. So the envelope can
    /// never be walked faster than the drift rate, however the reads are spaced, and never
    /// past `max_drift_widths` learned widths.
    fn follows(&mut self, ts: Timestamp, v: u16, cfg: &ValueConfig) -> bool {
        let fv = f64::from(v);
        if (self.low..=self.high).contains(&fv) {
            return true;
        }
        let p = &self.profile;
        let noise = (cfg.noise_margin_factor * p.noise()).max(1.0);
        let rate = p.drift_per_h() * cfg.drift_factor;
        let reach = p.width().max(p.margin(cfg)) * cfg.max_drift_widths;
        let hard_high = f64::from(p.read_max) + p.margin(cfg) + reach;
        let hard_low = f64::from(p.read_min) - p.margin(cfg) - reach;
        // Until an end first moves, its drift is measured from the end of learning.
        let since_h = |moved: Option<Timestamp>| -> f64 {
            moved
                .or(p.last_read)
                .and_then(|t| ts.micros_since(t))
                .map_or(0.0, |d| d as f64 / US_PER_H)
        };
        // How far the value may have wandered in that time: a trend at the learned pace, or a
        // random walk of the learned step (which goes as the square root of the reads since).
        let interval_h = p.interval_h();
        let reach_in = |h: f64| -> f64 {
            let walk = cfg.noise_margin_factor * p.noise() * (h / interval_h).sqrt();
            (rate * h).max(walk)
        };
        if fv > self.high {
            let reachable = (self.high + reach_in(since_h(self.high_ts))).min(hard_high);
            let ok = fv <= reachable + noise;
            let to = fv.min(reachable);
            if to > self.high {
                self.high = to;
                self.high_ts = Some(ts);
            }
            ok
        } else {
            let reachable = (self.low - reach_in(since_h(self.low_ts))).max(hard_low);
            let ok = fv >= reachable - noise;
            let to = fv.max(reachable);
            if to < self.low {
                self.low = to;
                self.low_ts = Some(ts);
            }
            ok
        }
    }

    /// Widens the envelope (and a discrete register's states) to take a value a master
    /// wrote or that a change of the device's state explains.
    fn take(&mut self, v: u16) {
        let fv = f64::from(v);
        self.low = self.low.min(fv);
        self.high = self.high.max(fv);
        if !self.taken_states.contains(&v) && self.taken_states.len() < MAX_STATES {
            self.taken_states.push(v);
        }
    }
}

/// Checks values against the learned registers.
#[derive(Debug)]
pub(crate) struct ValueDetector {
    cfg: ValueConfig,
    registers: BTreeMap<RegisterKey, Tracked>,
    /// Last state of each coil and discrete input read while detecting.
    bits: BTreeMap<RegisterKey, bool>,
    /// When each device's discrete state last changed (a coil, an input, a discrete register).
    state_changed: BTreeMap<(IpAddr, u8), Timestamp>,
    /// Findings on measured values held for [`STATE_CHANGE_GRACE_US`], oldest first.
    pending: Vec<((IpAddr, u8), Raise)>,
}

impl ValueDetector {
    pub(crate) fn new(base: &ValueBaseline, cfg: ValueConfig) -> Self {
        let registers = base
            .registers
            .iter()
            .map(|(k, p)| {
                let mut p = p.clone();
                p.last = None;
                (*k, Tracked::new(p, &cfg))
            })
            .collect();
        ValueDetector {
            cfg,
            registers,
            bits: BTreeMap::new(),
            state_changed: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    /// Raises the held findings whose grace has passed by `now` (all of them for `None`),
    /// except those a change of their device's state explains.
    pub(crate) fn flush(&mut self, now: Option<Timestamp>, book: &mut AlertBook) {
        let due = |ts: Timestamp| {
            now.is_none_or(|n| {
                n.micros_since(ts)
                    .is_some_and(|d| d >= STATE_CHANGE_GRACE_US)
            })
        };
        let mut keep = Vec::new();
        for (device, r) in std::mem::take(&mut self.pending) {
            if !due(r.ts) {
                keep.push((device, r));
                continue;
            }
            let changed = self.state_changed.get(&device).is_some_and(|&c| {
                c.micros_since(r.ts)
                    .is_some_and(|d| d <= STATE_CHANGE_GRACE_US)
                    || r.ts
                        .micros_since(c)
                        .is_some_and(|d| d <= STATE_CHANGE_EXPLAINS_US)
            });
            if !changed {
                book.raise(r);
            }
        }
        self.pending = keep;
    }

    /// Remembers coil and discrete-input states, and when a device's changed.
    fn track_bits(&mut self, ev: &ModbusEvent) {
        let Some((table, first, bits)) = bit_reads(ev) else {
            return;
        };
        let mut changed = false;
        for (i, &b) in bits.iter().enumerate() {
            let Some(address) = u16::try_from(i).ok().and_then(|i| first.checked_add(i)) else {
                break;
            };
            let key = RegisterKey {
                server: ev.dst_ip,
                unit: ev.unit,
                table,
                address,
            };
            let room = self.bits.len() < MAX_BITS;
            match self.bits.get_mut(&key) {
                Some(old) => {
                    changed |= *old != b;
                    *old = b;
                }
                None if room => {
                    self.bits.insert(key, b);
                }
                None => {}
            }
        }
        if changed {
            self.state_changed.insert((ev.dst_ip, ev.unit), ev.ts);
        }
    }

    pub(crate) fn observe(&mut self, ev: &ModbusEvent, book: &mut AlertBook) {
        self.track_bits(ev);
        if !self.pending.is_empty() {
            self.flush(Some(ev.ts), book);
        }
        if let Some((first, values)) = register_writes(ev) {
            self.check_writes(ev, first, values, book);
        }
        if let Some((table, first, values)) = register_reads(ev) {
            self.check_reads(ev, table, first, values, book);
        }
    }

    fn check_writes(&mut self, ev: &ModbusEvent, first: u16, values: &[u16], book: &mut AlertBook) {
        let last = first.saturating_add(u16::try_from(values.len()).unwrap_or(u16::MAX));
        let lo = RegisterKey {
            server: ev.dst_ip,
            unit: ev.unit,
            table: Table::HoldingRegisters,
            address: first,
        };
        let hi = RegisterKey {
            address: last,
            ..lo
        };
        let band_ratio = self.cfg.setpoint_band_ratio;
        let min_reads = self.cfg.min_reads;
        for (k, t) in self.registers.range_mut(lo..hi) {
            let Some(&v) = values.get(usize::from(k.address.saturating_sub(first))) else {
                continue;
            };
            t.note_write(ev.ts, v);
            t.take(v);
            let p = &t.profile;
            // Judge against what was written before; for a register never written, against
            // what was read (a set-point is usually read back by the HMI).
            let (min, max, basis) = if p.writes > 0 {
                (p.write_min, p.write_max, "written")
            } else if p.reads >= min_reads {
                (p.read_min, p.read_max, "read")
            } else {
                continue;
            };
            if (min..=max).contains(&v) {
                continue;
            }
            // The register's plausible band: every value written or read there, widened by
            // a share of its span or a tenth of its magnitude.
            let (known_min, known_max) = if p.reads > 0 {
                (min.min(p.read_min), max.max(p.read_max))
            } else {
                (min, max)
            };
            let tolerance = (f64::from(known_max - known_min) * band_ratio)
                .max(f64::from(known_max) * SETPOINT_MAGNITUDE_SHARE)
                .max(2.0);
            let fv = f64::from(v);
            let plausible =
                fv >= f64::from(known_min) - tolerance && fv <= f64::from(known_max) + tolerance;
            let width = f64::from(max - min).max(1.0);
            let excess = f64::from(if v > max { v - max } else { min - v });
            let (kind, severity, score, summary) = if plausible {
                (
                    "setpoint_new_value",
                    Severity::Info,
                    0.2,
                    format!(
                        "{} wrote {v} to register {} of {} unit {}: a new value, within the register's usual band ({known_min}–{known_max} ± {tolerance:.0}).",
                        ev.src_ip, k.address, ev.dst_ip, ev.unit
                    ),
                )
            } else {
                (
                    "setpoint_out_of_range",
                    Severity::High,
                    0.75 + 0.25 * (excess / width).min(1.0),
                    format!(
                        "{} wrote {v} to register {} of {} unit {}, outside every value ever {basis} there ({min}–{max}).",
                        ev.src_ip, k.address, ev.dst_ip, ev.unit
                    ),
                )
            };
            book.raise(Raise {
                ts: ev.ts,
                detector: DetectorName::ProcessValue,
                kind,
                severity,
                summary,
                src_ip: Some(ev.src_ip),
                dst_ip: Some(ev.dst_ip),
                asset: Some(format!("{}/{}", ev.dst_ip, ev.unit)),
                subject: format!("{}/{}/hr{}", ev.dst_ip, ev.unit, k.address),
                score,
                evidence: evidence([
                    ("address", json!(k.address)),
                    ("value", json!(v)),
                    ("func", json!(ev.func)),
                    ("baseline_basis", json!(basis)),
                    ("baseline_min", json!(min)),
                    ("baseline_max", json!(max)),
                    ("baseline_writes", json!(p.writes)),
                    ("plausible_min", json!(f64::from(known_min) - tolerance)),
                    ("plausible_max", json!(f64::from(known_max) + tolerance)),
                ]),
            });
        }
    }

    fn check_reads(
        &mut self,
        ev: &ModbusEvent,
        table: Table,
        first: u16,
        values: &[u16],
        book: &mut AlertBook,
    ) {
        let last = first.saturating_add(u16::try_from(values.len()).unwrap_or(u16::MAX));
        let lo = RegisterKey {
            server: ev.dst_ip,
            unit: ev.unit,
            table,
            address: first,
        };
        let hi = RegisterKey {
            address: last,
            ..lo
        };
        let cfg = &self.cfg;
        let mut found = Vec::new();
        // Looked up only when a register shows something (this is the per-read path).
        let changed = &self.state_changed;
        let mut explained: Option<bool> = None;
        let mut state_change = false;
        for (k, t) in self.registers.range_mut(lo..hi) {
            let Some(&v) = values.get(usize::from(k.address.saturating_sub(first))) else {
                continue;
            };
            let prev = t.last.replace((ev.ts, v));
            if t.class == RegisterClass::Discrete && prev.is_some_and(|(_, p)| p != v) {
                // A status word moved: it explains the measured values that follow it.
                state_change = true;
                explained = Some(true);
            }
            if t.recently_written(ev.ts, v) {
                continue;
            }
            let finding = match t.class {
                RegisterClass::Unknown | RegisterClass::Counter => None,
                RegisterClass::Discrete => {
                    let p = &t.profile;
                    // States that are neighbours (a tap changer's positions, a word counting
                    // slowly) may take the next one on either side.
                    let run = p
                        .states
                        .as_ref()
                        .is_some_and(|s| usize::from(p.read_max - p.read_min) + 1 == s.len());
                    let next = run
                        && v.saturating_add(1) >= p.read_min
                        && v <= p.read_max.saturating_add(1);
                    let known = next
                        || p.states
                            .as_ref()
                            .is_some_and(|s| s.binary_search(&v).is_ok())
                        || t.taken_states.contains(&v);
                    (!known).then(|| Deviation::State {
                        states: t.profile.states.clone().unwrap_or_default(),
                    })
                }
                // A constant is judged like a measured value of no width (a change of one
                // count, the high word of a counter carrying, is within its margin); having
                // no learned rate, its change is a deviation, not a jump.
                RegisterClass::Constant => {
                    (!t.follows(ev.ts, v, cfg)).then_some(Deviation::Envelope)
                }
                RegisterClass::Analog => jump(t, prev, ev.ts, v, cfg)
                    .or_else(|| (!t.follows(ev.ts, v, cfg)).then_some(Deviation::Envelope)),
            };
            let Some(finding) = finding else { continue };
            let explains = *explained
                .get_or_insert_with(|| state_explains(changed, ev.dst_ip, ev.unit, ev.ts));
            if explains && !matches!(finding, Deviation::State { .. }) {
                // The device changed state (a pump staged off): its values move with it.
                t.take(v);
                continue;
            }
            raise_read(&mut found, ev, table, k, t, v, finding, cfg);
        }
        // Held for a moment: the device's coils may be read just after its values, and a
        // state change they show explains what the values did.
        for r in found {
            if self.pending.len() < MAX_PENDING {
                self.pending.push(((ev.dst_ip, ev.unit), r));
            } else {
                book.raise(r);
            }
        }
        if state_change {
            self.state_changed.insert((ev.dst_ip, ev.unit), ev.ts);
        }
    }
}

/// Whether the device's discrete state changed shortly before `ts`.
fn state_explains(
    changed: &BTreeMap<(IpAddr, u8), Timestamp>,
    server: IpAddr,
    unit: u8,
    ts: Timestamp,
) -> bool {
    changed
        .get(&(server, unit))
        .and_then(|&t| ts.micros_since(t))
        .is_some_and(|d| d <= STATE_CHANGE_EXPLAINS_US)
}

/// Coils or discrete inputs read: (table, first address, states).
fn bit_reads(ev: &ModbusEvent) -> Option<(Table, u16, &[bool])> {
    if ev.exception_code.is_some() {
        return None;
    }
    let first = ev.request.as_ref()?.address?;
    let Some(crate::event::Values::Coils(bits)) = ev.response.as_ref()?.values.as_ref() else {
        return None;
    };
    match ev.func {
        1 => Some((Table::Coils, first, bits.as_slice())),
        2 => Some((Table::DiscreteInputs, first, bits.as_slice())),
        _ => None,
    }
}

/// What a read showed.
enum Deviation {
    /// Outside the (followed) envelope of an analog value.
    Envelope,
    /// A state never seen (discrete) or a change of a constant.
    State { states: Vec<u16> },
    /// A change between two reads that no learned rate explains.
    Jump {
        previous: u16,
        interval_s: f64,
        limit: f64,
    },
}

/// A jump of an analog value: larger than `step_factor` times what learning ever saw over
/// that time (and than the largest step at all), and a real share of its range.
fn jump(
    t: &Tracked,
    prev: Option<(Timestamp, u16)>,
    ts: Timestamp,
    v: u16,
    cfg: &ValueConfig,
) -> Option<Deviation> {
    let (pt, previous) = prev?;
    let dt_us = ts.micros_since(pt).filter(|&d| d >= MIN_RATE_INTERVAL_US)?;
    let p = &t.profile;
    let step = f64::from(previous.abs_diff(v));
    let by_rate = p.max_rate_per_h as f64 * dt_us as f64 / US_PER_H;
    let limit = cfg.step_factor * by_rate.max(f64::from(p.max_step)) + p.margin(cfg);
    (step > limit && step >= cfg.jump_min_width_ratio * p.width()).then_some(Deviation::Jump {
        previous,
        interval_s: dt_us as f64 / 1e6,
        limit,
    })
}

#[allow(clippy::too_many_arguments)]
fn raise_read(
    out: &mut Vec<Raise>,
    ev: &ModbusEvent,
    table: Table,
    k: &RegisterKey,
    t: &Tracked,
    v: u16,
    finding: Deviation,
    cfg: &ValueConfig,
) {
    let p = &t.profile;
    let asset = format!("{}/{}", ev.dst_ip, ev.unit);
    let register = format!("{}{}", table_letter(table), k.address);
    let mut raise = |kind, severity, summary, subject, score, ev2| {
        out.push(Raise {
            ts: ev.ts,
            detector: DetectorName::ProcessValue,
            kind,
            severity,
            summary,
            src_ip: Some(ev.src_ip),
            dst_ip: Some(ev.dst_ip),
            asset: Some(asset.clone()),
            subject,
            score,
            evidence: ev2,
        })
    };
    match finding {
        Deviation::Jump {
            previous,
            interval_s,
            limit,
        } => raise(
            "rate_of_change",
            Severity::High,
            format!(
                "Register {} of {} unit {} jumped from {previous} to {v} in {interval_s:.1} s, a change no learned rate explains (at most {limit:.0} over that time).",
                k.address, ev.dst_ip, ev.unit
            ),
            format!("{}/{}/{:?}{}", ev.dst_ip, ev.unit, table, k.address),
            0.8,
            evidence([
                ("table", json!(table)),
                ("address", json!(k.address)),
                ("register_class", json!(t.class.as_str())),
                ("previous", json!(previous)),
                ("value", json!(v)),
                ("interval_s", json!(interval_s)),
                ("baseline_max_rate_per_h", json!(p.max_rate_per_h)),
                ("baseline_max_step", json!(p.max_step)),
            ]),
        ),
        Deviation::Envelope | Deviation::State { .. } => {
            // One alert per device and period: the subject carries the period, and repeats
            // (other registers, later reads) fold into it, listing each register once.
            let period =
                (ev.ts.as_micros() / 1_000_000).div_euclid(cfg.deviation_period_s.max(1) as i64);
            let (what, extra) = match &finding {
                Deviation::State { states } => (
                    format!("reads {v}, a state never seen during learning"),
                    json!(states),
                ),
                _ => (
                    format!(
                        "reads {v}, outside the learned range {}–{} and beyond the drift it showed",
                        p.read_min, p.read_max
                    ),
                    json!([p.read_min, p.read_max]),
                ),
            };
            let width = p.width().max(1.0);
            let fv = f64::from(v);
            let excess = if fv > f64::from(p.read_max) {
                fv - f64::from(p.read_max)
            } else {
                (f64::from(p.read_min) - fv).max(0.0)
            };
            raise(
                "process_deviation",
                Severity::Low,
                format!(
                    "Process deviation on {} unit {}: register {} {what}.",
                    ev.dst_ip, ev.unit, k.address
                ),
                format!("{asset}/deviation/{period}"),
                0.3 + 0.3 * (excess / width).min(1.0),
                evidence([
                    ("registers", json!([register])),
                    ("table", json!(table)),
                    ("address", json!(k.address)),
                    ("register_class", json!(t.class.as_str())),
                    ("value", json!(v)),
                    ("baseline", extra),
                    // Per register, the lowest and highest value shown (widened by repeats).
                    ("observed", json!({ register.as_str(): [v, v] })),
                ]),
            );
        }
    }
}

/// `hr40`, `ir3`: the register as operators write it.
fn table_letter(table: Table) -> &'static str {
    match table {
        Table::Coils => "co",
        Table::DiscreteInputs => "di",
        Table::InputRegisters => "ir",
        Table::HoldingRegisters => "hr",
    }
}

impl ValueDetector {
    /// Takes `key`'s profile anew from `base` after an operator widened it: the envelope
    /// and class follow the accepted values at once; the last read and recent writes stay.
    pub(crate) fn refresh(&mut self, key: &RegisterKey, base: &ValueBaseline) {
        let Some(profile) = base.registers.get(key) else {
            return;
        };
        let mut fresh = Tracked::new(profile.clone(), &self.cfg);
        if let Some(old) = self.registers.remove(key) {
            fresh.last = old.last;
            fresh.written = old.written;
        }
        self.registers.insert(*key, fresh);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use std::borrow::Cow;

    use super::*;
    use crate::detect::Alert;
    use crate::event::{ModbusPdu, Values};

    const HMI: [u8; 4] = [10, 0, 0, 2];
    const PLC: [u8; 4] = [10, 0, 0, 5];

    fn ts(s: f64) -> Timestamp {
        Timestamp::from_micros((1_714_557_600.0 * 1e6 + s * 1e6) as i64)
    }

    fn event(t: f64, func: u8, request: ModbusPdu, response: Option<ModbusPdu>) -> ModbusEvent {
        ModbusEvent {
            ts: ts(t),
            src_ip: IpAddr::from(HMI),
            src_port: 50_000,
            dst_ip: IpAddr::from(PLC),
            dst_port: 502,
            tid: 1,
            unit: 1,
            func,
            func_name: Cow::Borrowed("READ_HOLDING_REGISTERS"),
            request: Some(request),
            response,
            exception: None,
            exception_code: None,
            latency_us: Some(1_000),
            anomalies: Vec::new(),
        }
    }

    /// The HMI reads with function `func` from `address` on and gets `values`.
    fn read_with(t: f64, func: u8, address: u16, values: Values) -> ModbusEvent {
        let req = ModbusPdu {
            ts: ts(t),
            address: Some(address),
            quantity: Some(values.len() as u16),
            ..ModbusPdu::default()
        };
        let resp = ModbusPdu {
            ts: ts(t),
            values: Some(values),
            ..ModbusPdu::default()
        };
        event(t, func, req, Some(resp))
    }

    /// The HMI reads holding registers from `address` on.
    fn read(t: f64, address: u16, values: &[u16]) -> ModbusEvent {
        read_with(t, 3, address, Values::Registers(values.to_vec()))
    }

    /// The HMI writes one holding register (function 6).
    fn write(t: f64, address: u16, v: u16) -> ModbusEvent {
        let req = ModbusPdu {
            ts: ts(t),
            address: Some(address),
            values: Some(Values::Registers(vec![v])),
            ..ModbusPdu::default()
        };
        event(t, 6, req.clone(), Some(req))
    }

    /// A deterministic generator (xorshift), so that the tests need no dependency.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % 10_000) as f64 / 10_000.0 - 0.5
        }
    }

    fn learn(events: &[ModbusEvent]) -> ValueBaseline {
        let mut b = ValueBaseline::default();
        let mut over = Overflow::default();
        for e in events {
            b.learn(e, &Limits::default(), &mut over);
        }
        b.seal();
        b
    }

    fn detect(b: &ValueBaseline, events: &[ModbusEvent]) -> Vec<Alert> {
        let mut d = ValueDetector::new(b, ValueConfig::default());
        let mut book = AlertBook::new(600_000_000, 1000);
        for e in events {
            d.observe(e, &mut book);
        }
        d.flush(None, &mut book);
        book.into_sorted()
    }

    /// One hour of learning then half an hour of detection, read every 2 s: a load that
    /// keeps climbing at the pace it climbed while learning (register 0, the whole time past
    /// its learned range), a random walk (1), a mode register with three states (2), an
    /// energy counter (3), a constant (4).
    fn plant(detect_extra: impl Fn(f64, &mut [u16; 5])) -> (Vec<ModbusEvent>, Vec<ModbusEvent>) {
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let (mut learning, mut detection) = (Vec::new(), Vec::new());
        let mut walk = 5_000.0_f64;
        for i in 0..2_700 {
            let t = f64::from(i) * 2.0;
            walk += 3.0 * noise.next();
            let mut v = [
                (1_000.0 + t / 36.0 + 4.0 * noise.next()) as u16, // +100 per hour
                walk as u16,
                [0, 2, 7][(i / 300) as usize % 3],
                (i * 3) as u16,
                1_234,
            ];
            if t >= 3_600.0 {
                detect_extra(t, &mut v);
                detection.push(read(t, 0, &v));
            } else {
                learning.push(read(t, 0, &v));
            }
        }
        (learning, detection)
    }

    #[test]
    fn registers_are_classified_by_what_they_do() {
        let (learning, _) = plant(|_, _| {});
        let b = learn(&learning);
        let cfg = ValueConfig::default();
        let class = |a: u16| {
            b.registers[&RegisterKey {
                server: IpAddr::from(PLC),
                unit: 1,
                table: Table::HoldingRegisters,
                address: a,
            }]
                .class(&cfg)
        };
        assert_eq!(class(0), RegisterClass::Analog);
        assert_eq!(class(1), RegisterClass::Analog);
        assert_eq!(class(2), RegisterClass::Discrete);
        assert_eq!(class(3), RegisterClass::Counter);
        assert_eq!(class(4), RegisterClass::Constant);
    }

    #[test]
    fn drift_at_the_learned_pace_raises_nothing() {
        let (learning, detection) = plant(|_, _| {});
        let alerts = detect(&learn(&learning), &detection);
        assert!(alerts.is_empty(), "{alerts:#?}");
    }

    #[test]
    fn deviations_of_one_device_make_one_low_alert_listing_the_registers() {
        // After 10 minutes the load leaves far above its range (but slowly: no jump), and
        // the mode register shows a state never seen.
        let (learning, detection) = plant(|t, v| {
            if t >= 4_200.0 {
                v[0] = v[0].saturating_add(((t - 4_200.0) * 2.0) as u16);
                v[2] = 5;
            }
        });
        let alerts = detect(&learn(&learning), &detection);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(a.kind, "process_deviation");
        assert_eq!(a.severity, Severity::Low);
        assert!(a.count > 1);
        let mut registers: Vec<&str> = a.evidence["registers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r.as_str())
            .collect();
        registers.sort_unstable();
        assert_eq!(registers, ["hr0", "hr2"]);
        assert_eq!(a.asset.as_deref(), Some("10.0.0.5/1"));
    }

    #[test]
    fn a_jump_no_learned_rate_explains_is_high() {
        let (learning, detection) = plant(|t, v| {
            if t >= 4_000.0 {
                v[1] = v[1].saturating_add(400);
            }
        });
        let alerts = detect(&learn(&learning), &detection);
        let jump: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == "rate_of_change")
            .collect();
        assert_eq!(jump.len(), 1, "{alerts:#?}");
        assert_eq!(jump[0].severity, Severity::High);
        assert_eq!(jump[0].ts, ts(4_000.0));
    }

    #[test]
    fn an_attacker_cannot_walk_the_envelope_faster_than_the_process() {
        // A slow push, five times the learned pace, on the walking register.
        let (learning, detection) = plant(|t, v| {
            v[1] = v[1].saturating_add(((t - 3_600.0) / 36.0 * 5.0 * 3.0) as u16);
        });
        let b = learn(&learning);
        let alerts = detect(&b, &detection);
        assert!(
            alerts.iter().any(|a| a.kind == "process_deviation"),
            "{alerts:#?}"
        );
        assert!(alerts.iter().all(|a| a.severity <= Severity::Low));
    }

    #[test]
    fn set_points_new_but_plausible_are_observations_far_ones_alerts() {
        let mut learning = Vec::new();
        for i in 0..1_800 {
            let t = f64::from(i) * 2.0;
            let sp = if i < 900 { 500 } else { 520 };
            if i == 900 {
                learning.push(write(t, 10, 520));
            }
            learning.push(read(t, 10, &[sp]));
        }
        let b = learn(&learning);
        let detection = vec![
            write(3_700.0, 10, 540),
            read(3_702.0, 10, &[540]),
            read(3_704.0, 10, &[540]),
            write(3_800.0, 10, 9_000),
        ];
        let alerts = detect(&b, &detection);
        let kinds: Vec<(&str, Severity)> = alerts
            .iter()
            .map(|a| (a.kind.as_str(), a.severity))
            .collect();
        assert_eq!(
            kinds,
            [
                ("setpoint_new_value", Severity::Info),
                ("setpoint_out_of_range", Severity::High)
            ],
            "the read-back of a written value is explained: {alerts:#?}"
        );
    }

    /// The HMI reads coils from `address` on.
    fn read_coils(t: f64, address: u16, bits: &[bool]) -> ModbusEvent {
        read_with(t, 1, address, Values::Coils(bits.to_vec()))
    }

    #[test]
    fn a_pump_staged_off_explains_its_current_falling_to_zero() {
        let mut noise = Noise(7);
        let current = |n: &mut Noise| (310.0 + 6.0 * n.next()) as u16;
        let mut learning = Vec::new();
        for i in 0..1_800 {
            let t = f64::from(i) * 2.0;
            learning.push(read_coils(t, 0, &[true]));
            learning.push(read(t + 0.5, 4, &[current(&mut noise)]));
        }
        let b = learn(&learning);
        let staged = vec![
            read_coils(3_600.0, 0, &[true]),
            read(3_600.5, 4, &[current(&mut noise)]),
            read_coils(3_602.0, 0, &[false]),
            read(3_602.5, 4, &[0]),
            read(3_604.5, 4, &[0]),
        ];
        assert!(detect(&b, &staged).is_empty(), "{:#?}", detect(&b, &staged));
        // The current read before the coils that show the pump off: explained all the same.
        let read_first = vec![
            read_coils(3_600.0, 0, &[true]),
            read(3_600.5, 4, &[current(&mut noise)]),
            read(3_602.5, 4, &[0]),
            read_coils(3_604.0, 0, &[false]),
            read(3_604.5, 4, &[0]),
            read(3_620.5, 4, &[0]),
        ];
        assert!(
            detect(&b, &read_first).is_empty(),
            "{:#?}",
            detect(&b, &read_first)
        );
        // The same fall with the pump still running: a jump.
        let unexplained = vec![
            read_coils(3_600.0, 0, &[true]),
            read(3_600.5, 4, &[current(&mut noise)]),
            read_coils(3_602.0, 0, &[true]),
            read(3_602.5, 4, &[0]),
        ];
        let alerts = detect(&b, &unexplained);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        assert_eq!(alerts[0].kind, "rate_of_change");
    }

    #[test]
    fn operators_acceptance_widens_the_baseline() {
        let (learning, _) = plant(|_, _| {});
        let mut b = learn(&learning);
        let key = RegisterKey {
            server: IpAddr::from(PLC),
            unit: 1,
            table: Table::HoldingRegisters,
            address: 2,
        };
        let d =
            |b: &ValueBaseline| detect(b, &[read(3_700.0, 0, &[1_100, 5_000, 5, 9_000, 1_234])]);
        assert_eq!(d(&b).len(), 1);
        assert!(b.accept_read(key, 5));
        assert!(d(&b).is_empty());
    }
}
