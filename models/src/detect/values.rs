//! Process values. Per register (server, unit, table, address) learning keeps the range of
//! values read, the largest change between consecutive reads, the discrete states when there
//! are few, and the range of values written. Detection flags set-point writes outside what
//! was ever written (or, for a register never written, outside what was ever read), and read
//! values outside the learned envelope, jumping faster than ever, or in a state never seen.
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

/// |b − a| per hour between two reads, when they are far enough apart.
fn rate_per_h(t0: Timestamp, t1: Timestamp, a: u16, b: u16) -> Option<u64> {
    let dt = t1.micros_since(t0).filter(|&d| d >= MIN_RATE_INTERVAL_US)?;
    Some(u64::from(a.abs_diff(b)).saturating_mul(3_600_000_000) / dt)
}

/// Distinct values kept per register; a register with more is continuous.
pub const MAX_STATES: usize = 8;

/// What was learned about one register.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(skip)]
    last: Option<(Timestamp, u16)>,
}

/// Tuning of the process-value detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueConfig {
    /// Reads needed before a register's envelope is trusted.
    pub min_reads: u64,
    /// Reads needed before a register with few values counts as discrete.
    pub min_reads_for_states: u64,
    /// Slack around the read envelope, as a share of its width (at least 1).
    pub envelope_margin_ratio: f64,
    /// A step larger than this many times the largest learned step is abnormal.
    pub step_factor: f64,
}

impl Default for ValueConfig {
    fn default() -> Self {
        ValueConfig {
            min_reads: 10,
            min_reads_for_states: 30,
            envelope_margin_ratio: 0.1,
            step_factor: 2.0,
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
            for (i, &v) in values.iter().enumerate() {
                let Some(address) = u16::try_from(i).ok().and_then(|i| first.checked_add(i)) else {
                    break;
                };
                let key = RegisterKey {
                    server: ev.dst_ip,
                    unit: ev.unit,
                    table,
                    address,
                };
                let Some(p) = self.slot(key, limits, over) else {
                    continue;
                };
                if p.reads == 0 {
                    p.read_min = v;
                    p.read_max = v;
                } else {
                    p.read_min = p.read_min.min(v);
                    p.read_max = p.read_max.max(v);
                }
                p.reads += 1;
                if let Some((t, last)) = p.last
                    && let Some(r) = rate_per_h(t, ev.ts, last, v)
                {
                    p.max_rate_per_h = p.max_rate_per_h.max(r);
                }
                p.last = Some((ev.ts, v));
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
        }
        if let Some((first, values)) = register_writes(ev) {
            for (i, &v) in values.iter().enumerate() {
                let Some(address) = u16::try_from(i).ok().and_then(|i| first.checked_add(i)) else {
                    break;
                };
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
                    p.write_min = v;
                    p.write_max = v;
                } else {
                    p.write_min = p.write_min.min(v);
                    p.write_max = p.write_max.max(v);
                }
                p.writes += 1;
            }
        }
    }
}

/// Checks values against the learned registers.
#[derive(Debug)]
pub(crate) struct ValueDetector {
    cfg: ValueConfig,
    /// The learned profiles with the last value read during detection in `last`.
    registers: BTreeMap<RegisterKey, RegisterProfile>,
}

impl ValueDetector {
    pub(crate) fn new(base: &ValueBaseline, cfg: ValueConfig) -> Self {
        let registers = base
            .registers
            .iter()
            .map(|(k, p)| {
                let mut p = p.clone();
                p.last = None;
                (*k, p)
            })
            .collect();
        ValueDetector { cfg, registers }
    }

    pub(crate) fn observe(&mut self, ev: &ModbusEvent, book: &mut AlertBook) {
        if let Some((first, values)) = register_writes(ev) {
            self.check_writes(ev, first, values, book);
        }
        if let Some((table, first, values)) = register_reads(ev) {
            self.check_reads(ev, table, first, values, book);
        }
    }

    fn check_writes(&self, ev: &ModbusEvent, first: u16, values: &[u16], book: &mut AlertBook) {
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
        for (k, p) in self.registers.range(lo..hi) {
            let Some(&v) = values.get(usize::from(k.address.saturating_sub(first))) else {
                continue;
            };
            // Judge against what was written before; for a register never written, against
            // what was read (a set-point is usually read back by the HMI).
            let (min, max, basis) = if p.writes > 0 {
                (p.write_min, p.write_max, "written")
            } else if p.reads >= self.cfg.min_reads {
                (p.read_min, p.read_max, "read")
            } else {
                continue;
            };
            if (min..=max).contains(&v) {
                continue;
            }
            let width = f64::from(max - min).max(1.0);
            let excess = f64::from(if v > max { v - max } else { min - v });
            let score = 0.75 + 0.25 * (excess / width).min(1.0);
            book.raise(Raise {
                ts: ev.ts,
                detector: DetectorName::ProcessValue,
                kind: "setpoint_out_of_range",
                severity: Severity::High,
                summary: format!(
                    "{} wrote {v} to register {} of {} unit {}, outside every value ever {basis} there ({min}–{max}).",
                    ev.src_ip, k.address, ev.dst_ip, ev.unit
                ),
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
        for (k, p) in self.registers.range_mut(lo..hi) {
            let Some(&v) = values.get(usize::from(k.address.saturating_sub(first))) else {
                continue;
            };
            let prev = p.last.replace((ev.ts, v));
            if p.reads < self.cfg.min_reads {
                continue;
            }
            // Built only when an alert is raised: this is the per-register path.
            let subject = || format!("{}/{}/{:?}{}", ev.dst_ip, ev.unit, table, k.address);
            let raise = |book: &mut AlertBook, kind, severity: Severity, summary, score, ev2| {
                book.raise(Raise {
                    ts: ev.ts,
                    detector: DetectorName::ProcessValue,
                    kind,
                    severity,
                    summary,
                    src_ip: Some(ev.src_ip),
                    dst_ip: Some(ev.dst_ip),
                    asset: Some(format!("{}/{}", ev.dst_ip, ev.unit)),
                    subject: subject(),
                    score,
                    evidence: ev2,
                })
            };
            if let Some(states) = p.states.as_ref()
                && p.reads >= self.cfg.min_reads_for_states
            {
                if states.binary_search(&v).is_err() {
                    raise(
                        book,
                        "new_state",
                        Severity::Medium,
                        format!(
                            "Register {} of {} unit {} reads {v}, a state never seen during learning.",
                            k.address, ev.dst_ip, ev.unit
                        ),
                        0.6,
                        evidence([
                            ("table", json!(table)),
                            ("address", json!(k.address)),
                            ("value", json!(v)),
                            ("baseline_states", json!(states)),
                        ]),
                    );
                }
                continue;
            }
            let width = f64::from(p.read_max - p.read_min);
            let margin = (width * self.cfg.envelope_margin_ratio).max(1.0);
            let fv = f64::from(v);
            if fv > f64::from(p.read_max) + margin || fv < f64::from(p.read_min) - margin {
                let excess = if fv > f64::from(p.read_max) {
                    fv - f64::from(p.read_max)
                } else {
                    f64::from(p.read_min) - fv
                };
                raise(
                    book,
                    "value_out_of_envelope",
                    Severity::Medium,
                    format!(
                        "Register {} of {} unit {} reads {v}, outside the learned range {}–{}.",
                        k.address, ev.dst_ip, ev.unit, p.read_min, p.read_max
                    ),
                    0.5 + 0.4 * (excess / width.max(1.0)).min(1.0),
                    evidence([
                        ("table", json!(table)),
                        ("address", json!(k.address)),
                        ("value", json!(v)),
                        ("baseline_min", json!(p.read_min)),
                        ("baseline_max", json!(p.read_max)),
                    ]),
                );
                continue;
            }
            if let Some((t, prev)) = prev
                && let Some(dt_us) = ev.ts.micros_since(t).filter(|&d| d >= MIN_RATE_INTERVAL_US)
            {
                let step = f64::from(prev.abs_diff(v));
                let hours = dt_us as f64 / 3.6e9;
                let limit = p.max_rate_per_h as f64 * self.cfg.step_factor * hours + margin;
                if step > limit {
                    raise(
                        book,
                        "rate_of_change",
                        Severity::Low,
                        format!(
                            "Register {} of {} unit {} jumped from {prev} to {v} in {:.1} s, faster than ever during learning ({} per hour at most).",
                            k.address,
                            ev.dst_ip,
                            ev.unit,
                            dt_us as f64 / 1e6,
                            p.max_rate_per_h
                        ),
                        0.4,
                        evidence([
                            ("table", json!(table)),
                            ("address", json!(k.address)),
                            ("previous", json!(prev)),
                            ("value", json!(v)),
                            ("interval_s", json!(dt_us as f64 / 1e6)),
                            ("baseline_max_rate_per_h", json!(p.max_rate_per_h)),
                        ]),
                    );
                }
            }
        }
    }
}
