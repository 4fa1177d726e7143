//! Traffic windows: what each channel (client→server pair) and each host does per window of
//! event time (requests, exceptions, bytes, distinct functions and addresses, write share, new
//! connections, resets), learned as a density over the baseline period and scored once per
//! window, so that floods, sweeps and scans that no single event gives away still stand out.
//!
//! Model: a Gaussian mixture (fitted with `linfa-clustering`, components chosen by BIC) over
//! standardised features; the score of a window is its negative log-likelihood and the threshold
//! comes from the training windows' own scores (their 99th percentile plus ln 1000 nats, i.e. a
//! thousand times less likely than the least likely percent of normal windows), so no site needs
//! tuning. A one-class SVM (`linfa-svm`) can be chosen instead ([`WindowModelKind`]); the
//! scenario tests compare both and the mixture measured better, hence the default.
//!
//! The fitted parameters are stored in the baseline rounded to 12 significant digits (they read
//! back bit for bit), the SVM's standardised training windows (bounded) from which it is refitted
//! deterministically. Count features enter as `ln(1 + x)`; each feature is standardised with its
//! learned mean and standard deviation, the deviation floored so that a feature that never varied
//! does not make every change infinite. Only windows wholly inside the event stream are learned
//! or scored (the first and the last are partial), and only windows in which the subject had
//! traffic: a silent device is the polling-cycle detector's business.

use std::collections::BTreeMap;
use std::net::IpAddr;

use linfa::prelude::*;
use linfa_clustering::GaussianMixtureModel;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::alert::{AlertBook, DetectorName, Raise, Severity, evidence};
use super::modbus::FunctionClass;
use super::{Overflow, Scope};
use crate::event::{FlowEvent, ModbusEvent};
use crate::time::Timestamp;

/// Bumped when the stored model changes meaning.
pub const WINDOW_MODEL_VERSION: u32 = 1;
/// The features, in vector order.
pub const FEATURES: [&str; D] = [
    "requests",
    "exceptions",
    "bytes",
    "functions",
    "addresses",
    "write_share",
    "new_connections",
    "resets",
];
const D: usize = 8;
/// Index of the one feature that is a ratio, not a count.
const WRITE_SHARE: usize = 5;
/// Standard-deviation floors in standardised units: a quarter of e-fold for counts
/// (`ln(1+x)`), 5 points for the write share.
const LOG_FLOOR: f64 = 0.25;
const SHARE_FLOOR: f64 = 0.05;
/// Added to every mixture component's covariance (standardised units): a feature that never
/// varied still has a finite density, and one exception where none was ever seen is unusual
/// but not impossible.
const REG_COVARIANCE: f64 = 0.5;
/// Most mixture components tried.
const MAX_COMPONENTS: usize = 3;
/// Quantile of training scores the threshold starts from.
const TRAIN_QUANTILE: f64 = 0.99;
/// Margin above it for the mixture: ln 1000 nats.
const GMM_MARGIN: f64 = 6.907_755_278_982_137;
/// One-class SVM: share of training windows allowed outside, and the Gaussian kernel width
/// (times the number of features).
const SVM_NU: f64 = 0.05;
/// Training windows kept for the SVM's refit (thinned evenly beyond).
const SVM_MAX_ROWS: usize = 512;
/// Distinct addresses are counted in a 1024-bit map (address mod 1024): exact below 1024.
const ADDRESS_BITS: usize = 1024;
/// Features named in an alert's evidence.
const TOP_FEATURES: usize = 3;

/// Which density model the windows use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowModelKind {
    #[default]
    Gmm,
    OneClassSvm,
}

/// Traffic-window configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// The window length (event time).
    pub window_us: i64,
    /// Fewer complete training windows than this: the subject is not modelled.
    pub min_windows: usize,
    /// Training windows kept per subject (thinned evenly beyond).
    pub max_windows: usize,
    /// Channels plus hosts modelled; more are counted in the baseline's overflow.
    pub max_subjects: usize,
    pub model: WindowModelKind,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            window_us: 60_000_000,
            min_windows: 30,
            max_windows: 4096,
            max_subjects: 1024,
            model: WindowModelKind::Gmm,
        }
    }
}

impl WindowConfig {
    pub(crate) fn problems(&self, out: &mut Vec<&'static str>) {
        if self.window_us < 1_000_000 {
            out.push("windows.window_us must be at least 1 s");
        }
        if self.min_windows < 2 {
            out.push("windows.min_windows must be at least 2");
        }
        if self.max_windows < self.min_windows.max(2) {
            out.push("windows.max_windows must be at least windows.min_windows");
        }
    }
}

/// What a window model describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSubject {
    Channel { client: IpAddr, server: IpAddr },
    Host(IpAddr),
}

impl WindowSubject {
    fn involves(&self, ip: IpAddr) -> bool {
        match *self {
            WindowSubject::Channel { client, server } => client == ip || server == ip,
            WindowSubject::Host(h) => h == ip,
        }
    }

    fn describe(&self) -> String {
        match self {
            WindowSubject::Channel { client, server } => {
                format!("traffic from {client} to {server}")
            }
            WindowSubject::Host(h) => format!("the traffic of {h}"),
        }
    }

    fn key(&self) -> String {
        match self {
            WindowSubject::Channel { client, server } => format!("{client}>{server}"),
            WindowSubject::Host(h) => h.to_string(),
        }
    }
}

/// The fitted scorer of one subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ScoreModel {
    /// Gaussian mixture: per component its weight, mean, precision matrix (row-major) and the
    /// log-determinant of the precision.
    Gmm {
        weights: Vec<f64>,
        means: Vec<Vec<f64>>,
        precisions: Vec<Vec<f64>>,
        log_dets: Vec<f64>,
    },
    /// One-class SVM, refitted from these standardised windows when detection starts.
    OneClassSvm {
        nu: f64,
        kernel_eps: f64,
        rows: Vec<Vec<f64>>,
    },
}

/// The learned model of one channel or host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectModel {
    /// Complete windows learned from.
    pub windows: u64,
    /// Mean and scale (floored standard deviation) of each transformed feature.
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub model: ScoreModel,
    /// Scores above this are unusual.
    pub threshold: f64,
    /// The training scores' quantile the threshold was derived from.
    pub train_quantile_score: f64,
}

/// Everything learned about traffic windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowBaseline {
    /// [`WINDOW_MODEL_VERSION`] when written; a different version is ignored (not scored).
    pub model_version: u32,
    pub window_us: i64,
    /// Feature names in vector order.
    pub features: Vec<String>,
    #[serde(with = "super::entries")]
    pub models: BTreeMap<WindowSubject, SubjectModel>,
    /// Subjects not modelled, with the complete windows they had (too few, or the fit failed).
    #[serde(with = "super::entries")]
    pub skipped: BTreeMap<WindowSubject, u64>,
}

impl Default for WindowBaseline {
    fn default() -> Self {
        WindowBaseline {
            model_version: WINDOW_MODEL_VERSION,
            window_us: WindowConfig::default().window_us,
            features: FEATURES.iter().map(|s| (*s).to_owned()).collect(),
            models: BTreeMap::new(),
            skipped: BTreeMap::new(),
        }
    }
}

impl WindowBaseline {
    pub(crate) fn forget(&mut self, scope: &Scope) {
        if let Scope::Asset(ip) = *scope {
            self.models.retain(|s, _| !s.involves(ip));
            self.skipped.retain(|s, _| !s.involves(ip));
        }
    }

    pub(crate) fn merge(&mut self, other: WindowBaseline) {
        if other.window_us != self.window_us || other.model_version != self.model_version {
            return;
        }
        for (k, v) in other.models {
            self.skipped.remove(&k);
            self.models.insert(k, v);
        }
        for (k, v) in other.skipped {
            if !self.models.contains_key(&k) {
                self.skipped.insert(k, v);
            }
        }
    }
}

/// One subject's counts in the open window.
#[derive(Clone, Debug)]
struct Acc {
    requests: u32,
    exceptions: u32,
    bytes: u64,
    functions: u128,
    addresses: [u64; ADDRESS_BITS / 64],
    writes: u32,
    connections: u32,
    resets: u32,
}

impl Default for Acc {
    fn default() -> Self {
        Acc {
            requests: 0,
            exceptions: 0,
            bytes: 0,
            functions: 0,
            addresses: [0; ADDRESS_BITS / 64],
            writes: 0,
            connections: 0,
            resets: 0,
        }
    }
}

impl Acc {
    fn raw(&self) -> [f64; D] {
        let addresses: u32 = self.addresses.iter().map(|w| w.count_ones()).sum();
        let write_share = if self.requests == 0 {
            0.0
        } else {
            f64::from(self.writes) / f64::from(self.requests)
        };
        [
            f64::from(self.requests),
            f64::from(self.exceptions),
            self.bytes as f64,
            f64::from(self.functions.count_ones()),
            f64::from(addresses),
            write_share,
            f64::from(self.connections),
            f64::from(self.resets),
        ]
    }
}

/// The feature transform before standardisation.
fn transform(raw: &[f64; D]) -> [f64; D] {
    let mut out = [0.0; D];
    for (i, (o, &r)) in out.iter_mut().zip(raw).enumerate() {
        *o = if i == WRITE_SHARE {
            r.clamp(0.0, 1.0)
        } else {
            r.max(0.0).ln_1p()
        };
    }
    out
}

fn floor_of(i: usize) -> f64 {
    if i == WRITE_SHARE {
        SHARE_FLOOR
    } else {
        LOG_FLOOR
    }
}

/// Rounds to 12 significant digits, so that the value prints short and parses back exactly.
fn q(x: f64) -> f64 {
    // Below 1e-9 (standardised units, weights, nats) a value is rounding noise; flushing it
    // keeps every stored number in the range where it prints and parses back exactly.
    if !x.is_finite() || x.abs() < 1e-9 {
        return 0.0;
    }
    format!("{x:.11e}").parse().unwrap_or(0.0)
}

/// Tumbling windows of event time, per subject. Shared by learning and detection.
#[derive(Debug)]
struct Windows {
    len_us: i64,
    max_subjects: usize,
    /// The first event's time: windows that start before it are partial.
    start_us: Option<i64>,
    current: i64,
    accs: BTreeMap<WindowSubject, Acc>,
    overflow: u64,
}

impl Windows {
    fn new(len_us: i64, max_subjects: usize) -> Self {
        Windows {
            len_us: len_us.max(1),
            max_subjects,
            start_us: None,
            current: i64::MIN,
            accs: BTreeMap::new(),
            overflow: 0,
        }
    }

    /// Moves the clock to `ts`; returns the window it closed when that window was complete.
    fn roll(&mut self, ts: Timestamp) -> Option<(i64, BTreeMap<WindowSubject, Acc>)> {
        let us = ts.as_micros();
        let start = *self.start_us.get_or_insert(us);
        let id = us.div_euclid(self.len_us);
        if id <= self.current {
            // Small disorder: counted in the open window.
            return None;
        }
        let closed = std::mem::take(&mut self.accs);
        let prev = std::mem::replace(&mut self.current, id);
        let complete = prev != i64::MIN && prev.saturating_mul(self.len_us) >= start;
        (complete && !closed.is_empty()).then_some((prev, closed))
    }

    fn acc(&mut self, s: WindowSubject) -> Option<&mut Acc> {
        if !self.accs.contains_key(&s) {
            if self.accs.len() >= self.max_subjects {
                self.overflow += 1;
                return None;
            }
            self.accs.insert(s, Acc::default());
        }
        self.accs.get_mut(&s)
    }

    fn modbus(&mut self, ev: &ModbusEvent) {
        let bytes = u64::from(ev.request.as_ref().map_or(0, |p| p.len))
            + u64::from(ev.response.as_ref().map_or(0, |p| p.len));
        let address = ev.request.as_ref().and_then(|p| p.address);
        let write = FunctionClass::of(ev.func) == FunctionClass::Write;
        let func_bit = 1u128.checked_shl(u32::from(ev.func)).unwrap_or(0);
        let exception = ev.exception_code.is_some();
        for s in [
            WindowSubject::Channel {
                client: ev.src_ip,
                server: ev.dst_ip,
            },
            WindowSubject::Host(ev.src_ip),
            WindowSubject::Host(ev.dst_ip),
        ] {
            let Some(a) = self.acc(s) else { continue };
            a.requests = a.requests.saturating_add(1);
            a.exceptions = a.exceptions.saturating_add(u32::from(exception));
            a.bytes = a.bytes.saturating_add(bytes);
            a.functions |= func_bit;
            if let Some(addr) = address {
                let bit = usize::from(addr) % ADDRESS_BITS;
                if let Some(w) = a.addresses.get_mut(bit / 64) {
                    *w |= 1u64 << (bit % 64);
                }
            }
            a.writes = a.writes.saturating_add(u32::from(write));
        }
    }

    fn flow(&mut self, f: &FlowEvent) {
        let reset = matches!(
            f.state.as_ref(),
            "RSTO" | "RSTR" | "REJ" | "RSTOS0" | "RSTRH"
        );
        // Modbus bytes are counted from the ADUs; other services' from the flow.
        let bytes = if f.service.as_deref() == Some("modbus") {
            0
        } else {
            f.orig_bytes.saturating_add(f.resp_bytes)
        };
        for s in [
            WindowSubject::Channel {
                client: f.src_ip,
                server: f.dst_ip,
            },
            WindowSubject::Host(f.src_ip),
            WindowSubject::Host(f.dst_ip),
        ] {
            let Some(a) = self.acc(s) else { continue };
            a.connections = a.connections.saturating_add(1);
            a.resets = a.resets.saturating_add(u32::from(reset));
            a.bytes = a.bytes.saturating_add(bytes);
        }
    }
}

/// Training windows of one subject, thinned evenly once `max` are held.
#[derive(Debug, Default)]
struct Sample {
    rows: Vec<[f64; D]>,
    seen: u64,
    stride: u64,
}

impl Sample {
    fn push(&mut self, row: [f64; D], max: usize) {
        self.stride = self.stride.max(1);
        if self.seen.is_multiple_of(self.stride) {
            if self.rows.len() >= max.max(2) {
                let mut i = 0usize;
                self.rows.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride = self.stride.saturating_mul(2);
            }
            if self.seen.is_multiple_of(self.stride) {
                self.rows.push(row);
            }
        }
        self.seen += 1;
    }
}

#[derive(Debug)]
pub(crate) struct WindowLearner {
    config: WindowConfig,
    windows: Windows,
    samples: BTreeMap<WindowSubject, Sample>,
    refused: u64,
}

impl WindowLearner {
    pub(crate) fn new(config: &WindowConfig) -> Self {
        WindowLearner {
            config: config.clone(),
            windows: Windows::new(config.window_us, config.max_subjects),
            samples: BTreeMap::new(),
            refused: 0,
        }
    }

    fn roll(&mut self, ts: Timestamp) {
        let Some((_, closed)) = self.windows.roll(ts) else {
            return;
        };
        for (s, acc) in closed {
            if !self.samples.contains_key(&s) && self.samples.len() >= self.config.max_subjects {
                self.refused += 1;
                continue;
            }
            self.samples
                .entry(s)
                .or_default()
                .push(transform(&acc.raw()), self.config.max_windows);
        }
    }

    pub(crate) fn modbus(&mut self, ev: &ModbusEvent) {
        self.roll(ev.ts);
        self.windows.modbus(ev);
    }

    pub(crate) fn flow(&mut self, f: &FlowEvent) {
        self.roll(f.ts);
        self.windows.flow(f);
    }

    pub(crate) fn other(&mut self, ts: Timestamp) {
        self.roll(ts);
    }

    /// Fits the models. The open window is partial and left out.
    pub(crate) fn finish(self, over: &mut Overflow) -> WindowBaseline {
        over.channels += self.windows.overflow + self.refused;
        let mut base = WindowBaseline {
            window_us: self.config.window_us,
            ..WindowBaseline::default()
        };
        for (s, sample) in self.samples {
            let n = sample.rows.len();
            match (n >= self.config.min_windows)
                .then(|| fit_subject(&sample.rows, sample.seen, self.config.model))
                .flatten()
            {
                Some(m) => {
                    base.models.insert(s, m);
                }
                None => {
                    base.skipped.insert(s, sample.seen);
                }
            }
        }
        base
    }
}

fn standardise(rows: &[[f64; D]]) -> ([f64; D], [f64; D]) {
    let n = rows.len().max(1) as f64;
    let mut mean = [0.0; D];
    let mut scale = [0.0; D];
    for (i, (m, s)) in mean.iter_mut().zip(scale.iter_mut()).enumerate() {
        let mu = rows
            .iter()
            .map(|r| r.get(i).copied().unwrap_or(0.0))
            .sum::<f64>()
            / n;
        let var = rows
            .iter()
            .map(|r| (r.get(i).copied().unwrap_or(0.0) - mu).powi(2))
            .sum::<f64>()
            / n;
        *m = q(mu);
        *s = q(var.sqrt().max(floor_of(i)));
    }
    (mean, scale)
}

fn z_of(row: &[f64; D], mean: &[f64], scale: &[f64]) -> [f64; D] {
    let mut z = [0.0; D];
    for (i, o) in z.iter_mut().enumerate() {
        let (x, m, s) = (
            row.get(i).copied().unwrap_or(0.0),
            mean.get(i).copied().unwrap_or(0.0),
            scale.get(i).copied().unwrap_or(1.0),
        );
        *o = if s > 0.0 { (x - m) / s } else { 0.0 };
    }
    z
}

/// Lower-triangular Cholesky factor of a symmetric `D`×`D` matrix (row-major), or `None` when
/// it is not positive definite.
fn cholesky(a: &[f64]) -> Option<[[f64; D]; D]> {
    let mut l = [[0.0; D]; D];
    for i in 0..D {
        for j in 0..=i {
            let mut sum = a.get(i * D + j).copied()?;
            for k in 0..j {
                sum -= l.get(i)?.get(k)? * l.get(j)?.get(k)?;
            }
            if i == j {
                if sum.is_nan() || sum <= 0.0 {
                    return None;
                }
                *l.get_mut(i)?.get_mut(j)? = sum.sqrt();
            } else {
                let d = *l.get(j)?.get(j)?;
                *l.get_mut(i)?.get_mut(j)? = sum / d;
            }
        }
    }
    Some(l)
}

fn log_det(precision: &[f64]) -> Option<f64> {
    let l = cholesky(precision)?;
    Some(
        2.0 * (0..D)
            .filter_map(|i| l.get(i)?.get(i))
            .map(|d| d.ln())
            .sum::<f64>(),
    )
}

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Negative log-likelihood of `z` under the mixture.
fn gmm_score(
    z: &[f64; D],
    weights: &[f64],
    means: &[Vec<f64>],
    precs: &[Vec<f64>],
    log_dets: &[f64],
) -> f64 {
    let mut terms = Vec::with_capacity(weights.len());
    for (((w, mu), p), ld) in weights.iter().zip(means).zip(precs).zip(log_dets) {
        let mut diff = [0.0; D];
        for (i, d) in diff.iter_mut().enumerate() {
            *d = z.get(i).copied().unwrap_or(0.0) - mu.get(i).copied().unwrap_or(0.0);
        }
        let mut maha = 0.0;
        for (i, di) in diff.iter().enumerate() {
            for (j, dj) in diff.iter().enumerate() {
                maha += di * p.get(i * D + j).copied().unwrap_or(0.0) * dj;
            }
        }
        terms.push(w.max(f64::MIN_POSITIVE).ln() + 0.5 * ld - 0.5 * (D as f64 * LN_2PI + maha));
    }
    let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return f64::INFINITY;
    }
    let lse = top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln();
    -lse
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).ceil() as usize;
    sorted
        .get(idx.min(sorted.len() - 1))
        .copied()
        .unwrap_or(0.0)
}

fn fit_gmm(z: &Array2<f64>) -> Option<ScoreModel> {
    let n = z.nrows();
    let data = DatasetBase::from(z.clone());
    let mut best: Option<(f64, ScoreModel)> = None;
    for k in 1..=MAX_COMPONENTS {
        // Free parameters per component: mean, covariance; plus the weights.
        let params = k * (D + D * (D + 1) / 2) + k - 1;
        if n < params.min(3 * D) || n < k * 10 {
            break;
        }
        let Ok(g) = GaussianMixtureModel::params(k)
            .reg_covariance(REG_COVARIANCE)
            .max_n_iterations(200)
            .fit(&data)
        else {
            continue;
        };
        let weights: Vec<f64> = g.weights().iter().map(|&w| q(w)).collect();
        let means: Vec<Vec<f64>> = g
            .means()
            .outer_iter()
            .map(|r| r.iter().map(|&v| q(v)).collect())
            .collect();
        let precisions: Vec<Vec<f64>> = g
            .precisions()
            .outer_iter()
            .map(|m| m.iter().map(|&v| q(v)).collect())
            .collect();
        if weights.len() != k || means.len() != k || precisions.len() != k {
            continue;
        }
        let Some(log_dets) = precisions
            .iter()
            .map(|p| (p.len() == D * D).then(|| log_det(p)).flatten().map(q))
            .collect::<Option<Vec<f64>>>()
        else {
            continue;
        };
        let ll: f64 = z
            .outer_iter()
            .map(|r| {
                let mut row = [0.0; D];
                for (o, v) in row.iter_mut().zip(r.iter()) {
                    *o = *v;
                }
                -gmm_score(&row, &weights, &means, &precisions, &log_dets)
            })
            .sum();
        if !ll.is_finite() {
            continue;
        }
        let bic = -2.0 * ll + params as f64 * (n as f64).ln();
        if best.as_ref().is_none_or(|(b, _)| bic < *b) {
            best = Some((
                bic,
                ScoreModel::Gmm {
                    weights,
                    means,
                    precisions,
                    log_dets,
                },
            ));
        }
    }
    best.map(|(_, m)| m)
}

/// A scorer ready for detection (the SVM refitted).
#[derive(Debug)]
enum Scorer {
    Gmm,
    Svm(Box<linfa_svm::Svm<f64, bool>>),
}

fn fit_svm(rows: &[Vec<f64>], nu: f64, eps: f64) -> Option<linfa_svm::Svm<f64, bool>> {
    let n = rows.len();
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    let records = Array2::from_shape_vec((n, D), flat).ok()?;
    let data = DatasetBase::from(records);
    linfa_svm::Svm::<f64, linfa::dataset::Pr>::params()
        .nu_weight(nu)
        .gaussian_kernel(eps)
        .fit(&data)
        .ok()
}

fn svm_score(svm: &linfa_svm::Svm<f64, bool>, z: &[f64; D]) -> f64 {
    let x = Array1::from_iter(z.iter().copied());
    svm.rho - svm.weighted_sum(&x)
}

fn thin(rows: &[[f64; D]], max: usize) -> Vec<[f64; D]> {
    if rows.len() <= max {
        return rows.to_vec();
    }
    let step = rows.len().div_ceil(max.max(1));
    rows.iter().step_by(step.max(1)).copied().collect()
}

/// How the threshold's margin is derived from the training scores' high quantile.
type MarginFn = Box<dyn Fn(f64) -> f64>;

fn fit_subject(rows: &[[f64; D]], seen: u64, kind: WindowModelKind) -> Option<SubjectModel> {
    let (mean, scale) = standardise(rows);
    let zs: Vec<[f64; D]> = rows.iter().map(|r| z_of(r, &mean, &scale)).collect();
    let (model, scores, margin_of): (ScoreModel, Vec<f64>, MarginFn) = match kind {
        WindowModelKind::Gmm => {
            let flat: Vec<f64> = zs.iter().flat_map(|r| r.iter().copied()).collect();
            let z = Array2::from_shape_vec((zs.len(), D), flat).ok()?;
            let model = fit_gmm(&z)?;
            let ScoreModel::Gmm {
                weights,
                means,
                precisions,
                log_dets,
            } = &model
            else {
                return None;
            };
            let scores = zs
                .iter()
                .map(|r| gmm_score(r, weights, means, precisions, log_dets))
                .collect();
            (model, scores, Box::new(|qs| qs + GMM_MARGIN))
        }
        WindowModelKind::OneClassSvm => {
            let kept: Vec<Vec<f64>> = thin(&zs, SVM_MAX_ROWS)
                .iter()
                .map(|r| r.iter().map(|&v| q(v)).collect())
                .collect();
            let eps = D as f64;
            let svm = fit_svm(&kept, SVM_NU, eps)?;
            let scores = zs.iter().map(|r| svm_score(&svm, r)).collect();
            // Far from every support vector the score tends to rho: halfway from the training
            // quantile to that ceiling.
            let rho = svm.rho;
            (
                ScoreModel::OneClassSvm {
                    nu: SVM_NU,
                    kernel_eps: eps,
                    rows: kept,
                },
                scores,
                Box::new(move |qs| qs + 0.5 * (rho - qs).max(0.0)),
            )
        }
    };
    let mut sorted: Vec<f64> = scores;
    if sorted.iter().any(|s| !s.is_finite()) {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let qs = quantile(&sorted, TRAIN_QUANTILE);
    Some(SubjectModel {
        windows: seen,
        mean: mean.to_vec(),
        scale: scale.to_vec(),
        model,
        threshold: q(margin_of(qs)),
        train_quantile_score: q(qs),
    })
}

/// Scores closed windows against the learned models.
#[derive(Debug)]
pub(crate) struct WindowDetector {
    windows: Windows,
    scorers: BTreeMap<WindowSubject, Scorer>,
    active: bool,
    pub(crate) scored: u64,
    pub(crate) unmodelled: u64,
    pub(crate) refit_failed: u64,
}

impl WindowDetector {
    pub(crate) fn new(base: &WindowBaseline, config: &WindowConfig) -> Self {
        let active = base.model_version == WINDOW_MODEL_VERSION && base.window_us > 0;
        let mut scorers = BTreeMap::new();
        let mut refit_failed = 0;
        if active {
            for (s, m) in &base.models {
                match &m.model {
                    ScoreModel::Gmm { .. } => {
                        scorers.insert(*s, Scorer::Gmm);
                    }
                    ScoreModel::OneClassSvm {
                        nu,
                        kernel_eps,
                        rows,
                    } => match fit_svm(rows, *nu, *kernel_eps) {
                        Some(svm) => {
                            scorers.insert(*s, Scorer::Svm(Box::new(svm)));
                        }
                        None => refit_failed += 1,
                    },
                }
            }
        }
        WindowDetector {
            windows: Windows::new(base.window_us, config.max_subjects),
            scorers,
            active,
            scored: 0,
            unmodelled: 0,
            refit_failed,
        }
    }

    pub(crate) fn overflow(&self) -> u64 {
        self.windows.overflow
    }

    pub(crate) fn tick(&mut self, base: &WindowBaseline, ts: Timestamp, book: &mut AlertBook) {
        if !self.active {
            return;
        }
        let Some((id, closed)) = self.windows.roll(ts) else {
            return;
        };
        for (s, acc) in closed {
            let (Some(m), Some(scorer)) = (base.models.get(&s), self.scorers.get(&s)) else {
                self.unmodelled += 1;
                continue;
            };
            self.scored += 1;
            let raw = acc.raw();
            let z = z_of(&transform(&raw), &m.mean, &m.scale);
            let score = match (scorer, &m.model) {
                (
                    Scorer::Gmm,
                    ScoreModel::Gmm {
                        weights,
                        means,
                        precisions,
                        log_dets,
                    },
                ) => gmm_score(&z, weights, means, precisions, log_dets),
                (Scorer::Svm(svm), _) => svm_score(svm, &z),
                _ => continue,
            };
            if score.is_nan() || score <= m.threshold {
                continue;
            }
            raise(base, s, m, id, &raw, &z, score, book);
        }
    }

    pub(crate) fn modbus(&mut self, ev: &ModbusEvent) {
        if self.active {
            self.windows.modbus(ev);
        }
    }

    pub(crate) fn flow(&mut self, f: &FlowEvent) {
        if self.active {
            self.windows.flow(f);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn raise(
    base: &WindowBaseline,
    s: WindowSubject,
    m: &SubjectModel,
    id: i64,
    raw: &[f64; D],
    z: &[f64; D],
    score: f64,
    book: &mut AlertBook,
) {
    let start = id.saturating_mul(base.window_us);
    let end = start.saturating_add(base.window_us);
    let mut order: Vec<usize> = (0..D).collect();
    order.sort_by(|&a, &b| {
        let za = z.get(a).copied().unwrap_or(0.0).abs();
        let zb = z.get(b).copied().unwrap_or(0.0).abs();
        zb.total_cmp(&za).then(a.cmp(&b))
    });
    let top: Vec<serde_json::Value> = order
        .iter()
        .take(TOP_FEATURES)
        .filter_map(|&i| {
            let zi = z.get(i).copied()?;
            (zi.abs() >= 1.0).then(|| {
                json!({"feature": FEATURES.get(i), "value": raw.get(i), "z": (zi * 100.0).round() / 100.0})
            })
        })
        .collect();
    let features: BTreeMap<&str, f64> = FEATURES
        .iter()
        .zip(raw)
        .map(|(n, v)| (*n, (v * 1000.0).round() / 1000.0))
        .collect();
    let lead = order
        .first()
        .and_then(|&i| Some((FEATURES.get(i)?, raw.get(i)?, z.get(i)?)))
        .map(|(n, v, zi)| format!(" (most unusual: {n} = {v:.0}, {zi:+.1} standard deviations)"))
        .unwrap_or_default();
    let excess = score - m.threshold;
    let spread = (m.threshold - m.train_quantile_score).abs().max(1e-9);
    let severity = if excess > 4.0 * spread {
        Severity::High
    } else {
        Severity::Medium
    };
    let (src_ip, dst_ip, asset) = match s {
        WindowSubject::Channel { client, server } => {
            (Some(client), Some(server), Some(server.to_string()))
        }
        WindowSubject::Host(h) => (None, None, Some(h.to_string())),
    };
    book.raise(Raise {
        ts: Timestamp::from_micros(start),
        detector: DetectorName::TrafficWindow,
        kind: "unusual_traffic_window",
        severity,
        summary: format!(
            "{} in the {} s from {} does not look like any window learned{lead}.",
            s.describe(),
            base.window_us / 1_000_000,
            Timestamp::from_micros(start)
        ),
        src_ip,
        dst_ip,
        asset,
        subject: format!("window:{}", s.key()),
        score: 0.5 + 0.45 * (1.0 - (-excess / spread).exp()),
        evidence: evidence([
            ("window_start", json!(Timestamp::from_micros(start))),
            ("window_end", json!(Timestamp::from_micros(end))),
            ("features", json!(features)),
            ("score", json!((score * 1000.0).round() / 1000.0)),
            // The highest score of the windows folded into this alert.
            ("max_score", json!((score * 1000.0).round() / 1000.0)),
            ("threshold", json!(m.threshold)),
            ("top_deviations", json!(top)),
            (
                "model",
                json!(match m.model {
                    ScoreModel::Gmm { .. } => "gmm",
                    ScoreModel::OneClassSvm { .. } => "one_class_svm",
                }),
            ),
        ]),
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn quantised_values_print_and_parse_back_exactly() {
        for x in [0.1, 1.0 / 3.0, 12_345.678_901_234_5, -2.5e-7, 6.02e23] {
            let v = q(x);
            let s = serde_json::to_string(&v).unwrap();
            let back: f64 = serde_json::from_str(&s).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{x} → {s}");
        }
    }

    #[test]
    fn cholesky_log_det_of_a_diagonal() {
        let mut a = vec![0.0; D * D];
        for i in 0..D {
            a[i * D + i] = 2.0;
        }
        let ld = log_det(&a).unwrap();
        assert!((ld - D as f64 * 2f64.ln()).abs() < 1e-12);
        a[0] = -1.0;
        assert!(log_det(&a).is_none());
    }

    #[test]
    fn constant_training_windows_give_a_finite_model() {
        let rows = vec![transform(&[60.0, 0.0, 720.0, 2.0, 2.0, 0.0, 0.0, 0.0]); 50];
        let m = fit_subject(&rows, 50, WindowModelKind::Gmm).unwrap();
        assert!(m.threshold.is_finite());
        let same = z_of(&rows[0], &m.mean, &m.scale);
        let ScoreModel::Gmm {
            weights,
            means,
            precisions,
            log_dets,
        } = &m.model
        else {
            panic!()
        };
        assert!(gmm_score(&same, weights, means, precisions, log_dets) <= m.threshold);
        let flood = z_of(
            &transform(&[2000.0, 0.0, 24000.0, 2.0, 2.0, 0.0, 0.0, 0.0]),
            &m.mean,
            &m.scale,
        );
        assert!(gmm_score(&flood, weights, means, precisions, log_dets) > m.threshold);
    }
}
