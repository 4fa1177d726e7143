//! What a register reads over time. Analog points combine a daily load curve (learning sees
//! only one hour of the day), a mean-reverting random walk with a time constant of tens of
//! minutes (so one hour does not show its whole range), a slow trend and sensor noise; counters
//! grow; discrete points change state now and then; set-points hold what was last written.
//! Paths are drawn once per point from the seed and read at any time of the run.

use rand::Rng as _;

use super::{DETECT_S, LEARN_S, Rng, normal};
use crate::events::SEC;

/// Step of the stored random-walk path; values in between are interpolated.
const WALK_STEP_S: i64 = 10;
const RUN_S: i64 = LEARN_S + DETECT_S;

/// When a point is read: µs since the run began, and the hour of the day.
#[derive(Clone, Copy, Debug)]
pub(crate) struct At {
    pub offset_us: i64,
    pub hour: f64,
}

#[derive(Clone, Debug)]
pub(crate) enum Signal {
    Analog(Analog),
    /// One word of a 32-bit counter growing at `per_s`.
    Counter {
        per_s: f64,
        offset: f64,
        high_word: bool,
    },
    Steps(Steps),
    Constant(u16),
    /// The set-point of this index in the layout: what was last written.
    Setpoint(usize),
}

impl Signal {
    /// The raw value at `at`; `setpoint` gives a set-point's current value.
    pub fn value(&self, at: At, setpoint: impl Fn(usize) -> u16, noise: &mut Rng) -> u16 {
        match self {
            Signal::Analog(a) => a.value(at, noise),
            Signal::Counter {
                per_s,
                offset,
                high_word,
            } => {
                let total = (offset + per_s * at.offset_us as f64 / SEC as f64) as u64;
                let word = if *high_word { total >> 16 } else { total };
                u16::try_from(word & 0xFFFF).unwrap_or(0)
            }
            Signal::Steps(s) => s.value(at.offset_us),
            Signal::Constant(v) => *v,
            Signal::Setpoint(i) => setpoint(*i),
        }
    }
}

/// A continuous measurement.
#[derive(Clone, Debug)]
pub(crate) struct Analog {
    base: f64,
    /// Added times the daily curve (0–1).
    daily: f64,
    /// Whether the daily curve is the outdoor temperature's rather than the load's.
    ambient_curve: bool,
    trend_per_h: f64,
    noise_sd: f64,
    walk: Vec<f32>,
}

/// The share of the daily peak load at `hour`: low at night, a morning ramp, a midday plateau
/// and the evening peak.
fn load_curve(hour: f64) -> f64 {
    let bump = |centre: f64, width: f64| {
        let d = (hour - centre).rem_euclid(24.0);
        let d = d.min(24.0 - d);
        (-(d / width).powi(2)).exp()
    };
    (0.15 + 0.45 * bump(9.0, 2.5) + 0.2 * bump(13.0, 3.0) + 0.55 * bump(19.0, 2.2)).min(1.0)
}

/// Outdoor temperature's share of its daily swing: coolest before dawn, warmest mid-afternoon.
fn ambient_curve(hour: f64) -> f64 {
    0.5 - 0.5 * (std::f64::consts::TAU * (hour - 3.0) / 24.0).cos()
}

/// A mean-reverting walk (Ornstein–Uhlenbeck) of stationary deviation `sd` and time constant
/// `tau_s`, sampled every [`WALK_STEP_S`] over the whole run.
fn walk(rng: &mut Rng, sd: f64, tau_s: f64) -> Vec<f32> {
    let a = (-(WALK_STEP_S as f64) / tau_s).exp();
    let kick = sd * (1.0 - a * a).sqrt();
    let mut x = sd * normal(rng);
    let n = usize::try_from(RUN_S / WALK_STEP_S + 2).unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(x as f32);
        x = a * x + kick * normal(rng);
    }
    out
}

impl Analog {
    fn new(rng: &mut Rng, base: f64, daily: f64, walk_sd: f64, tau_s: f64, noise_sd: f64) -> Self {
        Analog {
            base,
            daily,
            ambient_curve: false,
            trend_per_h: 0.0,
            noise_sd,
            walk: walk(rng, walk_sd, tau_s),
        }
    }

    /// A phase voltage around `kv` (10 V units), sagging a little at peak load.
    pub fn voltage(rng: &mut Rng, kv: f64) -> Self {
        let tau = rng.gen_range(900.0..2400.0);
        Analog::new(rng, kv, -kv * 0.004, kv * 0.0015, tau, 2.0)
    }

    /// A load-following measurement (current, power, flow): `mean` at mid curve, swinging by
    /// `swing` over the day.
    pub fn load(rng: &mut Rng, mean: f64, swing: f64) -> Self {
        let tau = rng.gen_range(1200.0..3600.0);
        let walk_sd = mean * rng.gen_range(0.03..0.08);
        Analog::new(
            rng,
            mean - 0.5 * swing,
            swing,
            walk_sd,
            tau,
            (mean * 0.004).max(1.0),
        )
    }

    /// Grid frequency in centihertz: tight around 50 Hz.
    pub fn frequency(rng: &mut Rng) -> Self {
        Analog::new(rng, 5000.0, 0.0, 3.0, 120.0, 1.0)
    }

    /// A winding or oil temperature in tenths of a degree, creeping slowly up or down.
    pub fn temperature(rng: &mut Rng) -> Self {
        let base = rng.gen_range(350.0..700.0);
        let mut a = Analog::new(rng, base, 20.0, 4.0, 1800.0, 1.0);
        a.trend_per_h = rng.gen_range(-4.0..14.0);
        a
    }

    /// A tank level or line pressure: a wide, slow walk.
    pub fn level(rng: &mut Rng) -> Self {
        let base = rng.gen_range(300.0..800.0);
        let sd = rng.gen_range(40.0..120.0);
        let tau = rng.gen_range(900.0..2700.0);
        Analog::new(rng, base, 0.0, sd, tau, 2.0)
    }

    /// Outdoor temperature in tenths of a degree.
    pub fn ambient(rng: &mut Rng) -> Self {
        let base = rng.gen_range(50.0..200.0);
        let mut a = Analog::new(rng, base, 80.0, 5.0, 3600.0, 1.0);
        a.ambient_curve = true;
        a
    }

    fn value(&self, at: At, noise: &mut Rng) -> u16 {
        let curve = if self.ambient_curve {
            ambient_curve(at.hour)
        } else {
            load_curve(at.hour)
        };
        let pos = at.offset_us as f64 / (WALK_STEP_S * SEC) as f64;
        let i = pos.floor().max(0.0) as usize;
        let frac = pos - pos.floor();
        let w0 = f64::from(self.walk.get(i).copied().unwrap_or(0.0));
        let w1 = f64::from(self.walk.get(i + 1).copied().unwrap_or(0.0));
        let v = self.base
            + self.daily * curve
            + w0
            + (w1 - w0) * frac
            + self.trend_per_h * at.offset_us as f64 / (3600 * SEC) as f64
            + self.noise_sd * normal(noise);
        v.round().clamp(0.0, f64::from(u16::MAX)) as u16
    }
}

/// A discrete point: a value that changes at given times.
#[derive(Clone, Debug)]
pub(crate) struct Steps {
    initial: u16,
    /// (µs since the run began, new value), in time order.
    changes: Vec<(i64, u16)>,
}

impl Steps {
    fn value(&self, offset_us: i64) -> u16 {
        let n = self.changes.partition_point(|&(t, _)| t <= offset_us);
        n.checked_sub(1)
            .and_then(|i| self.changes.get(i))
            .map_or(self.initial, |&(_, v)| v)
    }

    /// Changes at exponential intervals of mean `mean_s`, each to `next(current)`.
    fn draw(
        rng: &mut Rng,
        initial: u16,
        mean_s: f64,
        mut next: impl FnMut(&mut Rng, u16) -> u16,
    ) -> Self {
        let mut changes = Vec::new();
        if mean_s.is_finite() && mean_s > 0.0 {
            let mut t = super::exponential_us(rng, mean_s);
            let mut v = initial;
            while t < RUN_S * SEC {
                v = next(rng, v);
                changes.push((t, v));
                t += super::exponential_us(rng, mean_s);
            }
        }
        Steps { initial, changes }
    }

    /// One of `values`, changing at `rate_per_s` on average (0: never).
    pub fn few(rng: &mut Rng, values: &[u16], rate_per_s: f64) -> Self {
        let pick = |rng: &mut Rng| {
            values
                .get(rng.gen_range(0..values.len().max(1)))
                .copied()
                .unwrap_or(0)
        };
        let initial = pick(rng);
        let mean_s = if rate_per_s > 0.0 {
            1.0 / rate_per_s
        } else {
            f64::INFINITY
        };
        Steps::draw(rng, initial, mean_s, |rng, v| {
            let others: Vec<u16> = values.iter().copied().filter(|&x| x != v).collect();
            others
                .get(rng.gen_range(0..others.len().max(1)))
                .copied()
                .unwrap_or(v)
        })
    }

    /// A coil or discrete input: most hold still, some (pumps, fans) cycle on and off.
    pub fn bits(rng: &mut Rng) -> Self {
        let initial = u16::from(rng.gen_bool(0.5));
        let mean_s = if rng.gen_bool(0.3) {
            rng.gen_range(900.0..3600.0)
        } else {
            f64::INFINITY
        };
        Steps::draw(rng, initial, mean_s, |_, v| 1 - v.min(1))
    }

    /// A transformer tap position (1–17), one step at a time every ten minutes or so: a few
    /// positions in an hour, and the next half hour may reach one never seen.
    pub fn tap_changer(rng: &mut Rng) -> Self {
        let initial = rng.gen_range(5..=12);
        let mean_s = rng.gen_range(480.0..1500.0);
        Steps::draw(rng, initial, mean_s, |rng, v| {
            if rng.gen_bool(0.5) {
                (v + 1).min(17)
            } else {
                v.saturating_sub(1).max(1)
            }
        })
    }
}
