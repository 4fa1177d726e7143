//! Polling cycles. A channel is one poll as the master repeats it: (client, server, unit,
//! function, address, quantity). Learning estimates each channel's period and jitter from
//! the intervals between its requests (robustly: the median, so that gaps between capture
//! files or a missed poll do not shift it) and each server's busiest second. Detection flags
//! channels that fall silent (the device or the link is down: an availability incident),
//! requests that come far too early (extra or out-of-sequence polls) and request floods.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::alert::{AlertBook, DetectorName, Raise, Severity, evidence};
use super::modbus::address_quantity;
use super::{Limits, Overflow, Scope};
use crate::event::ModbusEvent;
use crate::time::Timestamp;

const MICROS_PER_SEC: i64 = 1_000_000;

/// One repeated poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelKey {
    pub client: IpAddr,
    pub server: IpAddr,
    pub unit: u8,
    pub func: u8,
    pub address: u16,
    pub quantity: u16,
}

impl ChannelKey {
    fn of(ev: &ModbusEvent) -> ChannelKey {
        let (address, quantity) = address_quantity(ev);
        ChannelKey {
            client: ev.src_ip,
            server: ev.dst_ip,
            unit: ev.unit,
            func: ev.func,
            address,
            quantity,
        }
    }
}

/// What was learned about one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelProfile {
    pub requests: u64,
    /// The polling period, when the channel is periodic.
    pub period_us: Option<u64>,
    /// The 95th percentile of the deviation from the period.
    pub jitter_us: u64,
}

/// Tuning of the polling-cycle detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CycleConfig {
    /// Intervals needed before a channel counts as periodic.
    pub min_intervals: usize,
    /// Share of intervals within ±50 % of the median needed for a channel to be periodic.
    pub min_regular_ratio: f64,
    /// A periodic channel is missing after this many periods without a request.
    pub missing_periods: u64,
    /// A request earlier than this share of the period after the previous one is extra.
    pub early_ratio: f64,
    /// A server's requests in one second above `flood_factor` × its learned busiest second
    /// (and at least `flood_min_extra_per_sec` more) are a flood.
    pub flood_factor: u32,
    pub flood_min_extra_per_sec: u32,
}

impl Default for CycleConfig {
    fn default() -> Self {
        CycleConfig {
            min_intervals: 5,
            min_regular_ratio: 0.7,
            missing_periods: 3,
            early_ratio: 0.5,
            flood_factor: 3,
            flood_min_extra_per_sec: 20,
        }
    }
}

/// The learned cycles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleBaseline {
    #[serde(with = "super::entries")]
    pub channels: BTreeMap<ChannelKey, ChannelProfile>,
    /// Each server's busiest second (requests), over learning.
    #[serde(with = "super::entries")]
    pub server_peak_per_sec: BTreeMap<IpAddr, u32>,
}

impl CycleBaseline {
    pub(crate) fn forget(&mut self, scope: &Scope) {
        match *scope {
            Scope::Asset(ip) => {
                self.channels
                    .retain(|k, _| k.client != ip && k.server != ip);
                self.server_peak_per_sec.remove(&ip);
            }
            Scope::Channel {
                client,
                server,
                unit,
                func,
            } => self.channels.retain(|k, _| {
                !(k.client == client && k.server == server && k.unit == unit && k.func == func)
            }),
        }
    }

    pub(crate) fn merge(&mut self, other: CycleBaseline) {
        self.channels.extend(other.channels);
        for (k, v) in other.server_peak_per_sec {
            let e = self.server_peak_per_sec.entry(k).or_default();
            *e = (*e).max(v);
        }
    }
}

/// Intervals kept per channel while learning; enough for a stable median.
const MAX_INTERVALS: usize = 1024;

#[derive(Debug, Default)]
struct ChannelLearn {
    requests: u64,
    last: Option<Timestamp>,
    intervals: Vec<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct SecondCounter {
    second: i64,
    count: u32,
    peak: u32,
}

impl SecondCounter {
    /// Counts one request at `ts`; returns the count in its second. Late events count in the
    /// current second.
    fn hit(&mut self, ts: Timestamp) -> u32 {
        let s = ts.as_micros().div_euclid(MICROS_PER_SEC);
        if s > self.second {
            self.second = s;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.peak = self.peak.max(self.count);
        self.count
    }
}

#[derive(Debug, Default)]
pub(crate) struct CycleLearner {
    channels: BTreeMap<ChannelKey, ChannelLearn>,
    servers: BTreeMap<IpAddr, SecondCounter>,
}

impl CycleLearner {
    pub(crate) fn observe(&mut self, ev: &ModbusEvent, limits: &Limits, over: &mut Overflow) {
        if ev.request.is_none() {
            return;
        }
        let key = ChannelKey::of(ev);
        let n = self.channels.len();
        let ch = match self.channels.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) if n < limits.max_channels => v.insert(ChannelLearn::default()),
            Entry::Vacant(_) => {
                over.channels += 1;
                return;
            }
        };
        ch.requests += 1;
        if let Some(last) = ch.last
            && let Some(d) = ev.ts.micros_since(last)
            && ch.intervals.len() < MAX_INTERVALS
        {
            ch.intervals.push(d);
        }
        ch.last = Some(ch.last.map_or(ev.ts, |l| l.max(ev.ts)));
        let n = self.servers.len();
        match self.servers.entry(ev.dst_ip) {
            Entry::Occupied(mut o) => {
                o.get_mut().hit(ev.ts);
            }
            Entry::Vacant(v) if n < limits.max_hosts => {
                v.insert(SecondCounter::default()).hit(ev.ts);
            }
            Entry::Vacant(_) => over.hosts += 1,
        }
    }

    pub(crate) fn finish(self, cfg: &CycleConfig) -> CycleBaseline {
        let channels = self
            .channels
            .into_iter()
            .map(|(k, c)| {
                let (period_us, jitter_us) = estimate_period(c.intervals, cfg);
                (
                    k,
                    ChannelProfile {
                        requests: c.requests,
                        period_us,
                        jitter_us,
                    },
                )
            })
            .collect();
        let server_peak_per_sec = self.servers.into_iter().map(|(k, c)| (k, c.peak)).collect();
        CycleBaseline {
            channels,
            server_peak_per_sec,
        }
    }
}

fn median(sorted: &[u64]) -> Option<u64> {
    sorted.get(sorted.len() / 2).copied()
}

/// (period, jitter) from the intervals: the median of the intervals within ±50 % of the
/// overall median, when enough of them are.
fn estimate_period(mut intervals: Vec<u64>, cfg: &CycleConfig) -> (Option<u64>, u64) {
    intervals.sort_unstable();
    let Some(m) = median(&intervals) else {
        return (None, 0);
    };
    if m == 0 {
        return (None, 0);
    }
    let regular: Vec<u64> = intervals
        .iter()
        .copied()
        .filter(|&d| d >= m / 2 && d <= m + m / 2)
        .collect();
    let ratio = regular.len() as f64 / intervals.len() as f64;
    if regular.len() < cfg.min_intervals || ratio < cfg.min_regular_ratio {
        return (None, 0);
    }
    let Some(period) = median(&regular) else {
        return (None, 0);
    };
    let mut dev: Vec<u64> = regular.iter().map(|&d| d.abs_diff(period)).collect();
    dev.sort_unstable();
    let p95 = dev
        .get((dev.len() * 95 / 100).min(dev.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    (Some(period), p95)
}

#[derive(Debug)]
struct ChannelState {
    period_us: u64,
    jitter_us: u64,
    last: Option<Timestamp>,
    /// The interval before the last request, µs: an early request right after a late one is
    /// the master catching up on its schedule, not an extra request.
    prev_interval_us: Option<u64>,
    /// The last request that fell on the channel's schedule: a request off it (one slipped in
    /// between polls) does not move the schedule, so the next poll on time is not "early".
    anchor: Option<Timestamp>,
    /// A missing-polls alert was raised and the channel has not been heard since.
    silent: bool,
}

/// Checks requests against the learned cycles.
#[derive(Debug)]
pub(crate) struct CycleDetector {
    cfg: CycleConfig,
    channels: BTreeMap<ChannelKey, ChannelState>,
    servers: BTreeMap<IpAddr, (u32, SecondCounter, i64)>,
    start: Option<Timestamp>,
    next_check_us: i64,
}

impl CycleDetector {
    pub(crate) fn new(base: &CycleBaseline, cfg: CycleConfig) -> Self {
        let channels = base
            .channels
            .iter()
            .filter_map(|(k, p)| {
                p.period_us.map(|period_us| {
                    (
                        *k,
                        ChannelState {
                            period_us,
                            jitter_us: p.jitter_us,
                            last: None,
                            prev_interval_us: None,
                            anchor: None,
                            silent: false,
                        },
                    )
                })
            })
            .collect();
        let servers = base
            .server_peak_per_sec
            .iter()
            .map(|(k, &peak)| (*k, (peak, SecondCounter::default(), i64::MIN)))
            .collect();
        CycleDetector {
            cfg,
            channels,
            servers,
            start: None,
            next_check_us: i64::MIN,
        }
    }

    /// Lets time pass to `now`: raises missing polls that became due.
    pub(crate) fn tick(&mut self, now: Timestamp, book: &mut AlertBook) {
        let start = *self.start.get_or_insert(now);
        if now.as_micros() < self.next_check_us {
            return;
        }
        // Checking once per second of event time keeps this off the per-event path.
        self.next_check_us = now.as_micros().saturating_add(MICROS_PER_SEC);
        for (k, st) in &mut self.channels {
            if st.silent {
                continue;
            }
            let reference = st.last.unwrap_or(start);
            let allowed = st
                .period_us
                .saturating_mul(self.cfg.missing_periods)
                .saturating_add(st.jitter_us.saturating_mul(4));
            let due = reference.saturating_add_micros(i64::try_from(allowed).unwrap_or(i64::MAX));
            if now <= due {
                continue;
            }
            st.silent = true;
            let silent_s = now.micros_since(reference).unwrap_or(0) as f64 / 1e6;
            let period_s = st.period_us as f64 / 1e6;
            book.raise(Raise {
                ts: due,
                detector: DetectorName::PollingCycle,
                kind: "missing_polls",
                severity: Severity::High,
                summary: format!(
                    "{} stopped polling {} unit {}: no request with function code {} at address {} for {:.1} s, where one came every {:.1} s during learning; the device or its link may be down.",
                    k.client, k.server, k.unit, k.func, k.address, silent_s, period_s
                ),
                src_ip: Some(k.client),
                dst_ip: Some(k.server),
                asset: Some(format!("{}/{}", k.server, k.unit)),
                // One alert per silent device, whatever the number of its channels.
                subject: format!("{}>{}/{}", k.client, k.server, k.unit),
                score: (0.6 + 0.05 * (silent_s / period_s.max(1e-6))).min(1.0),
                evidence: evidence([
                    ("func", json!(k.func)),
                    ("address", json!(k.address)),
                    ("quantity", json!(k.quantity)),
                    ("silent_s", json!(silent_s)),
                    ("last_seen", json!(st.last)),
                    ("baseline_period_s", json!(period_s)),
                    ("baseline_jitter_s", json!(st.jitter_us as f64 / 1e6)),
                ]),
            });
        }
    }

    pub(crate) fn observe(&mut self, ev: &ModbusEvent, book: &mut AlertBook) {
        if ev.request.is_none() {
            return;
        }
        if let Some((peak, counter, flagged_second)) = self.servers.get_mut(&ev.dst_ip) {
            let n = counter.hit(ev.ts);
            let limit = peak
                .saturating_mul(self.cfg.flood_factor)
                .max(peak.saturating_add(self.cfg.flood_min_extra_per_sec));
            if n > limit && *flagged_second != counter.second {
                *flagged_second = counter.second;
                book.raise(Raise {
                    ts: ev.ts,
                    detector: DetectorName::PollingCycle,
                    kind: "request_flood",
                    severity: Severity::High,
                    summary: format!(
                        "{} received more than {limit} Modbus requests in one second (busiest second during learning: {peak}); latest from {}.",
                        ev.dst_ip, ev.src_ip
                    ),
                    src_ip: Some(ev.src_ip),
                    dst_ip: Some(ev.dst_ip),
                    asset: Some(ev.dst_ip.to_string()),
                    subject: ev.dst_ip.to_string(),
                    score: 0.8,
                    evidence: evidence([
                        ("requests_in_second", json!(n)),
                        ("baseline_peak_per_sec", json!(*peak)),
                        ("func", json!(ev.func)),
                    ]),
                });
            }
        }
        let key = ChannelKey::of(ev);
        let Some(st) = self.channels.get_mut(&key) else {
            return;
        };
        st.silent = false;
        if st.anchor.is_none() {
            st.anchor = Some(ev.ts);
        }
        if let Some(last) = st.last
            && let Some(d) = ev.ts.micros_since(last)
        {
            let early = (st.period_us as f64 * self.cfg.early_ratio) as u64;
            // A master late by a scheduling hiccup polls the next one early to keep its
            // schedule: the two intervals together are about two periods.
            let catching_up = st.prev_interval_us.is_some_and(|prev| {
                let slack = st.jitter_us.max(st.period_us / 4);
                prev > st.period_us && prev.saturating_add(d) <= 2 * st.period_us + slack
            });
            st.prev_interval_us = Some(d);
            // Where the request falls on the schedule kept since the last poll on time.
            let slack = st.jitter_us.max(st.period_us / 4);
            let on_schedule = st
                .anchor
                .and_then(|a| ev.ts.micros_since(a))
                .is_some_and(|da| {
                    let period = st.period_us.max(1);
                    let k = (da + period / 2) / period;
                    k >= 1 && da.abs_diff(k * period) <= slack
                });
            // A master that restarted polls on a new phase: two requests a period apart.
            let new_phase = d.abs_diff(st.period_us) <= slack;
            if on_schedule || new_phase {
                st.anchor = Some(ev.ts);
            }
            if d < early.saturating_sub(st.jitter_us) && !catching_up && !on_schedule {
                book.raise(Raise {
                    ts: ev.ts,
                    detector: DetectorName::PollingCycle,
                    kind: "extra_requests",
                    severity: Severity::Medium,
                    summary: format!(
                        "{} polled {} unit {} ({} at {}) after {:.3} s where every {:.3} s was normal: extra or out-of-sequence requests.",
                        ev.src_ip,
                        ev.dst_ip,
                        ev.unit,
                        ev.func_name,
                        key.address,
                        d as f64 / 1e6,
                        st.period_us as f64 / 1e6
                    ),
                    src_ip: Some(ev.src_ip),
                    dst_ip: Some(ev.dst_ip),
                    asset: Some(format!("{}/{}", ev.dst_ip, ev.unit)),
                    subject: format!("{}>{}/{}/{}", ev.src_ip, ev.dst_ip, ev.unit, ev.func),
                    score: 0.5,
                    evidence: evidence([
                        ("interval_s", json!(d as f64 / 1e6)),
                        ("address", json!(key.address)),
                        ("quantity", json!(key.quantity)),
                        ("baseline_period_s", json!(st.period_us as f64 / 1e6)),
                        ("baseline_jitter_s", json!(st.jitter_us as f64 / 1e6)),
                    ]),
                });
            }
        }
        st.last = Some(st.last.map_or(ev.ts, |l| l.max(ev.ts)));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use std::borrow::Cow;

    use super::*;
    use crate::event::ModbusPdu;

    fn poll(t_ms: i64) -> ModbusEvent {
        let ts = Timestamp::from_micros(1_714_557_600_000_000 + t_ms * 1000);
        let pdu = ModbusPdu {
            ts,
            address: Some(0),
            quantity: Some(4),
            ..ModbusPdu::default()
        };
        ModbusEvent {
            ts,
            src_ip: [10, 0, 0, 2].into(),
            src_port: 50_000,
            dst_ip: [10, 0, 0, 5].into(),
            dst_port: 502,
            tid: 1,
            unit: 1,
            func: 3,
            func_name: Cow::Borrowed("READ_HOLDING_REGISTERS"),
            request: Some(pdu.clone()),
            response: Some(pdu),
            exception: None,
            exception_code: None,
            latency_us: Some(1_000),
            anomalies: Vec::new(),
        }
    }

    /// A one-second poll learned for ten minutes, then: a poll 900 ms late followed by one on
    /// schedule (catching up, 100 ms after), and later an injected request 300 ms after a poll.
    #[test]
    fn catching_up_is_not_an_extra_request_but_an_injection_is() {
        let mut learner = CycleLearner::default();
        let mut over = Overflow::default();
        for i in 0..600 {
            learner.observe(&poll(i * 1000), &Limits::default(), &mut over);
        }
        let base = learner.finish(&CycleConfig::default());
        let mut d = CycleDetector::new(&base, CycleConfig::default());
        let mut book = AlertBook::new(600_000_000, 100);
        let mut times: Vec<i64> = (600..700).map(|i| i * 1000).collect();
        // Late by 900 ms, then on schedule.
        times.retain(|&t| t != 650_000);
        times.push(650_900);
        times.push(680_300);
        // A request slipped in 700 ms after a poll (not early enough to say) and the next
        // poll on time 300 ms after it: the poll is on schedule, not an extra request.
        times.push(690_700);
        times.sort_unstable();
        for t in times {
            let ev = poll(t);
            d.tick(ev.ts, &mut book);
            d.observe(&ev, &mut book);
        }
        let alerts = book.into_sorted();
        let extra: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == "extra_requests")
            .collect();
        assert_eq!(extra.len(), 1, "{alerts:#?}");
        assert_eq!(
            extra[0].ts,
            Timestamp::from_micros(1_714_557_600_000_000 + 680_300_000)
        );
    }
}
