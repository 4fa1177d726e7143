//! The physical processes behind the PLCs, stepped on a fixed tick so that a seed fixes the
//! whole trajectory: a water tank filled by a pump under level control, a substation feeder
//! with four breakers and load-following currents, and a pumping station that stages pumps to
//! hold a discharge pressure. Each model reads its set-points and commands from the PLC's data
//! model (what Modbus clients write) and writes its measurements back (what they read).
//!
//! The register maps are public constants: the HMI, the operator and the scenarios use them.

use std::f64::consts::TAU;

use serde::Serialize;

use crate::rng::Rng;

/// Coils, discrete inputs, holding and input registers per PLC.
pub const TABLE_SIZE: usize = 32;

/// The Modbus data model of one PLC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataModel {
    pub coils: Vec<bool>,
    pub discrete_inputs: Vec<bool>,
    pub holding: Vec<u16>,
    pub input: Vec<u16>,
}

impl Default for DataModel {
    fn default() -> Self {
        DataModel {
            coils: vec![false; TABLE_SIZE],
            discrete_inputs: vec![false; TABLE_SIZE],
            holding: vec![0; TABLE_SIZE],
            input: vec![0; TABLE_SIZE],
        }
    }
}

impl DataModel {
    pub fn coil(&self, a: u16) -> bool {
        self.coils.get(usize::from(a)).copied().unwrap_or(false)
    }
    pub fn set_coil(&mut self, a: u16, v: bool) {
        if let Some(c) = self.coils.get_mut(usize::from(a)) {
            *c = v;
        }
    }
    pub fn holding(&self, a: u16) -> u16 {
        self.holding.get(usize::from(a)).copied().unwrap_or(0)
    }
    pub fn set_holding(&mut self, a: u16, v: u16) {
        if let Some(c) = self.holding.get_mut(usize::from(a)) {
            *c = v;
        }
    }
    pub fn set_input(&mut self, a: u16, v: f64) {
        if let Some(c) = self.input.get_mut(usize::from(a)) {
            *c = to_u16(v);
        }
    }
    pub fn input(&self, a: u16) -> u16 {
        self.input.get(usize::from(a)).copied().unwrap_or(0)
    }
    pub fn set_discrete(&mut self, a: u16, v: bool) {
        if let Some(c) = self.discrete_inputs.get_mut(usize::from(a)) {
            *c = v;
        }
    }
}

fn to_u16(v: f64) -> u16 {
    // Saturating: a float-to-int `as` cast clamps and maps NaN to 0.
    v.round().clamp(0.0, f64::from(u16::MAX)) as u16
}

/// Register maps.
pub mod tank {
    /// Holding: level set-point, cm.
    pub const HR_LEVEL_SETPOINT: u16 = 0;
    /// Holding: controller hysteresis, cm.
    pub const HR_HYSTERESIS: u16 = 1;
    /// Holding: high-level alarm, cm.
    pub const HR_HIGH_ALARM: u16 = 2;
    /// Coil: pump running (the controller's output in auto).
    pub const CO_PUMP: u16 = 0;
    /// Coil: automatic level control.
    pub const CO_AUTO: u16 = 1;
    /// Coil: inlet valve open.
    pub const CO_INLET: u16 = 2;
    /// Input: level, cm.
    pub const IR_LEVEL: u16 = 0;
    /// Input: inflow, 0.1 l/s.
    pub const IR_INFLOW: u16 = 1;
    /// Input: outflow (demand), 0.1 l/s.
    pub const IR_OUTFLOW: u16 = 2;
    /// Input: pump motor current, 0.1 A.
    pub const IR_PUMP_CURRENT: u16 = 3;
    /// Discrete: high-level switch, low-level switch.
    pub const DI_HIGH: u16 = 0;
    pub const DI_LOW: u16 = 1;
    /// The set-points operators use.
    pub const OPERATOR_RANGE: (u16, u16) = (450, 650);
    pub const DEFAULT_SETPOINT: u16 = 550;
}

pub mod feeder {
    /// Coils 0..4: breaker of feeder n closed.
    pub const CO_BREAKER: u16 = 0;
    pub const FEEDERS: u16 = 4;
    /// Discrete 0..4: breaker status; 4: protection trip.
    pub const DI_TRIP: u16 = 4;
    /// Holding: overcurrent pickup, A.
    pub const HR_PICKUP: u16 = 0;
    /// Holding: bus voltage target, 10 V.
    pub const HR_VOLTAGE_TARGET: u16 = 1;
    /// Input 0..4: feeder currents, A; 4: bus voltage, 10 V; 5: frequency, mHz.
    pub const IR_CURRENT: u16 = 0;
    pub const IR_VOLTAGE: u16 = 4;
    pub const IR_FREQUENCY: u16 = 5;
    pub const DEFAULT_PICKUP: u16 = 400;
}

pub mod pumps {
    /// Coils 0..3: pump n running; 3: automatic staging.
    pub const CO_PUMP: u16 = 0;
    pub const CO_AUTO: u16 = 3;
    pub const PUMPS: u16 = 3;
    /// Holding: discharge pressure set-point, kPa.
    pub const HR_PRESSURE_SETPOINT: u16 = 0;
    /// Holding: most pumps allowed to run.
    pub const HR_MAX_PUMPS: u16 = 1;
    /// Input: discharge pressure kPa; flow l/s; 2..5 motor currents 0.1 A.
    pub const IR_PRESSURE: u16 = 0;
    pub const IR_FLOW: u16 = 1;
    pub const IR_CURRENT: u16 = 2;
    pub const OPERATOR_RANGE: (u16, u16) = (380, 460);
    pub const DEFAULT_SETPOINT: u16 = 420;
}

/// Which process a PLC runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    WaterTank,
    Feeder,
    PumpStation,
}

/// A process model and its state.
#[derive(Clone, Debug)]
pub enum Process {
    Tank {
        t: f64,
        level: f64,
    },
    Feeder {
        t: f64,
    },
    Pumps {
        t: f64,
        pressure: f64,
        low_for: f64,
        high_for: f64,
    },
}

impl Process {
    /// The model and the data model it starts from.
    pub fn new(kind: ProcessKind) -> (Process, DataModel) {
        let mut d = DataModel::default();
        let p = match kind {
            ProcessKind::WaterTank => {
                d.set_holding(tank::HR_LEVEL_SETPOINT, tank::DEFAULT_SETPOINT);
                d.set_holding(tank::HR_HYSTERESIS, 30);
                d.set_holding(tank::HR_HIGH_ALARM, 900);
                d.set_coil(tank::CO_AUTO, true);
                d.set_coil(tank::CO_INLET, true);
                Process::Tank {
                    t: 0.0,
                    level: f64::from(tank::DEFAULT_SETPOINT),
                }
            }
            ProcessKind::Feeder => {
                for f in 0..feeder::FEEDERS {
                    d.set_coil(feeder::CO_BREAKER + f, true);
                }
                d.set_holding(feeder::HR_PICKUP, feeder::DEFAULT_PICKUP);
                d.set_holding(feeder::HR_VOLTAGE_TARGET, 1100);
                Process::Feeder { t: 0.0 }
            }
            ProcessKind::PumpStation => {
                d.set_holding(pumps::HR_PRESSURE_SETPOINT, pumps::DEFAULT_SETPOINT);
                d.set_holding(pumps::HR_MAX_PUMPS, pumps::PUMPS);
                d.set_coil(pumps::CO_AUTO, true);
                d.set_coil(pumps::CO_PUMP, true);
                d.set_coil(pumps::CO_PUMP + 1, true);
                d.set_coil(pumps::CO_PUMP + 2, true);
                Process::Pumps {
                    t: 0.0,
                    pressure: f64::from(pumps::DEFAULT_SETPOINT),
                    low_for: 0.0,
                    high_for: 0.0,
                }
            }
        };
        let mut p = p;
        // One step so that the measurements are filled before the first poll.
        p.step(&mut d, 0.0, &mut Rng::new(0));
        (p, d)
    }

    /// Advances the process by `dt` seconds.
    pub fn step(&mut self, d: &mut DataModel, dt: f64, rng: &mut Rng) {
        match self {
            Process::Tank { t, level } => {
                *t += dt;
                let sp = f64::from(d.holding(tank::HR_LEVEL_SETPOINT));
                let hyst = f64::from(d.holding(tank::HR_HYSTERESIS));
                if d.coil(tank::CO_AUTO) {
                    if *level < sp - hyst {
                        d.set_coil(tank::CO_PUMP, true);
                    } else if *level > sp + hyst {
                        d.set_coil(tank::CO_PUMP, false);
                    }
                }
                let pump = d.coil(tank::CO_PUMP) && d.coil(tank::CO_INLET);
                let inflow = if pump { 16.0 + rng.noise(0.2) } else { 0.0 };
                let outflow = (8.0 + 3.0 * (TAU * *t / 600.0).sin() + rng.noise(0.3)).max(0.0);
                // A small tank: a net litre per second moves the level 0.15 cm/s, so that a
                // fill or drain cycle takes about a minute.
                *level = (*level + (inflow - outflow) * 0.15 * dt).clamp(0.0, 1000.0);
                d.set_input(tank::IR_LEVEL, *level + rng.noise(0.5));
                d.set_input(tank::IR_INFLOW, inflow * 10.0);
                d.set_input(tank::IR_OUTFLOW, outflow * 10.0);
                let current = if pump { 420.0 + rng.noise(4.0) } else { 0.0 };
                d.set_input(tank::IR_PUMP_CURRENT, current);
                let high = f64::from(d.holding(tank::HR_HIGH_ALARM));
                d.set_discrete(tank::DI_HIGH, *level >= high);
                d.set_discrete(tank::DI_LOW, *level < 100.0);
            }
            Process::Feeder { t } => {
                *t += dt;
                const BASE_A: [f64; 4] = [120.0, 180.0, 90.0, 150.0];
                let load = 1.0 + 0.15 * (TAU * *t / 900.0).sin();
                let pickup = f64::from(d.holding(feeder::HR_PICKUP));
                let mut total = 0.0;
                for (f, base) in (0..feeder::FEEDERS).zip(BASE_A) {
                    let closed = d.coil(feeder::CO_BREAKER + f);
                    let amps = if closed {
                        (base * load * (1.0 + rng.noise(0.02))).max(0.0)
                    } else {
                        0.0
                    };
                    if closed && amps > pickup {
                        // Overcurrent protection opens the breaker and latches the trip.
                        d.set_coil(feeder::CO_BREAKER + f, false);
                        d.set_discrete(feeder::DI_TRIP, true);
                    }
                    total += amps;
                    d.set_input(feeder::IR_CURRENT + f, amps);
                    d.set_discrete(f, d.coil(feeder::CO_BREAKER + f));
                }
                let target = f64::from(d.holding(feeder::HR_VOLTAGE_TARGET));
                d.set_input(feeder::IR_VOLTAGE, target - total / 200.0 + rng.noise(0.8));
                d.set_input(feeder::IR_FREQUENCY, 50_000.0 + rng.noise(8.0));
            }
            Process::Pumps {
                t,
                pressure,
                low_for,
                high_for,
            } => {
                *t += dt;
                let sp = f64::from(d.holding(pumps::HR_PRESSURE_SETPOINT));
                let max = d.holding(pumps::HR_MAX_PUMPS).min(pumps::PUMPS);
                let running = (0..pumps::PUMPS)
                    .filter(|p| d.coil(pumps::CO_PUMP + p))
                    .count() as u16;
                if d.coil(pumps::CO_AUTO) {
                    *low_for = if *pressure < sp - 25.0 {
                        *low_for + dt
                    } else {
                        0.0
                    };
                    *high_for = if *pressure > sp + 25.0 {
                        *high_for + dt
                    } else {
                        0.0
                    };
                    if *low_for >= 3.0 && running < max {
                        d.set_coil(pumps::CO_PUMP + running, true);
                        *low_for = 0.0;
                    } else if *high_for >= 3.0 && running > 1 {
                        d.set_coil(pumps::CO_PUMP + running - 1, false);
                        *high_for = 0.0;
                    }
                }
                let n = (0..pumps::PUMPS)
                    .filter(|p| d.coil(pumps::CO_PUMP + p))
                    .count() as f64;
                let demand = (60.0 + 20.0 * (TAU * *t / 1200.0).sin() + rng.noise(1.5)).max(0.0);
                let equilibrium = (200.0 + 110.0 * n - 1.5 * demand).max(0.0);
                // First-order lag, 5 s time constant.
                *pressure += (equilibrium - *pressure) * (dt / 5.0).min(1.0);
                d.set_input(pumps::IR_PRESSURE, *pressure + rng.noise(1.0));
                d.set_input(pumps::IR_FLOW, demand.min(45.0 * n));
                for p in 0..pumps::PUMPS {
                    let amps = if d.coil(pumps::CO_PUMP + p) {
                        310.0 + rng.noise(3.0)
                    } else {
                        0.0
                    };
                    d.set_input(pumps::IR_CURRENT + p, amps);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn run(kind: ProcessKind, seed: u64, secs: usize) -> DataModel {
        let (mut p, mut d) = Process::new(kind);
        let mut rng = Rng::new(seed);
        for _ in 0..secs * 10 {
            p.step(&mut d, 0.1, &mut rng);
        }
        d
    }

    #[test]
    fn the_same_seed_gives_the_same_trajectory() {
        for kind in [
            ProcessKind::WaterTank,
            ProcessKind::Feeder,
            ProcessKind::PumpStation,
        ] {
            assert_eq!(run(kind, 3, 120), run(kind, 3, 120));
        }
    }

    #[test]
    fn the_tank_level_stays_around_its_setpoint() {
        let (mut p, mut d) = Process::new(ProcessKind::WaterTank);
        let mut rng = Rng::new(9);
        let mut pump_changes = 0;
        let mut last = d.coil(tank::CO_PUMP);
        for _ in 0..6000 {
            p.step(&mut d, 0.1, &mut rng);
            let level = d.input(tank::IR_LEVEL);
            assert!((450..=650).contains(&level), "level {level}");
            if d.coil(tank::CO_PUMP) != last {
                pump_changes += 1;
                last = !last;
            }
        }
        assert!(pump_changes >= 4, "the pump cycles ({pump_changes})");
    }

    #[test]
    fn a_low_pickup_trips_the_feeder() {
        let (mut p, mut d) = Process::new(ProcessKind::Feeder);
        let mut rng = Rng::new(1);
        p.step(&mut d, 0.1, &mut rng);
        assert!(d.input(feeder::IR_CURRENT + 1) > 100);
        d.set_holding(feeder::HR_PICKUP, 100);
        p.step(&mut d, 0.1, &mut rng);
        assert!(!d.coil(feeder::CO_BREAKER + 1));
        assert!(d.discrete_inputs[usize::from(feeder::DI_TRIP)]);
    }

    #[test]
    fn the_pump_station_holds_its_pressure() {
        let d = run(ProcessKind::PumpStation, 5, 600);
        let p = d.input(pumps::IR_PRESSURE);
        assert!((300..=520).contains(&p), "pressure {p}");
    }
}
