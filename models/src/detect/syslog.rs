//! Syslog templates: the messages each host's applications log, mined into templates
//! ([`TemplateMiner`], one per application name) with their rates per (host, template) over the
//! baseline period. Detection reports a template a host never logged (`new_syslog_template`),
//! one it logged only a couple of times (`rare_syslog_template`) and a template whose count in a
//! window is beyond what its learned rate makes plausible (`syslog_rate_burst`: a Poisson tail
//! at 10⁻⁶ or twice the learned peak, whichever is higher, e.g. a burst of failed logins).
//!
//! What pages and what is only recorded (docs/detection.md): a rare template that was seen
//! while learning is an observation (info). A never-seen template is an alert only when it is
//! security-relevant: of syslog severity critical or worse (≤ 2), or of a family with an ATT&CK
//! technique other than logins (default credentials, firmware, program downloads, restarts,
//! mode changes, log clearing). Any other new message is an observation: a logon, a single
//! failed password (four of one never-seen template within a window are a `syslog_rate_burst`),
//! a variant of a learned template (the same words but one: another user name).
//! An alert's severity comes from the message: low by default, one step up for the security
//! facilities or severity error or worse (≤ 3), two steps for alert or emergency (≤ 1).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::alert::{AlertBook, DetectorName, Raise, Severity, evidence};
use super::{Overflow, Scope};
use crate::event::SyslogEvent;
use crate::templates::{MinerConfig, TemplateId, TemplateMiner};

/// Learned counts at or below this make a template rare.
const RARE_MAX_COUNT: u64 = 2;
/// Messages of a never-seen template within one window beyond which they are a burst.
const NEW_TEMPLATE_BURST: u64 = 4;
/// Probability of a window count under the learned Poisson rate below which it is a burst.
const BURST_TAIL: f64 = 1e-6;
/// Application name used when a message has none.
const NO_APP: &str = "-";

/// Syslog template configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// Template counts are compared per window of this length (event time).
    pub window_us: i64,
    /// Applications mined (one template miner each); more are counted and not mined.
    pub max_apps: usize,
    /// (host, application, template) rates kept.
    pub max_keys: usize,
    /// The template miner of each application.
    pub miner: MinerConfig,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            window_us: 300_000_000,
            max_apps: 256,
            max_keys: 65_536,
            miner: MinerConfig {
                max_templates: 2048,
                ..MinerConfig::default()
            },
        }
    }
}

impl SyslogConfig {
    pub(crate) fn problems(&self, out: &mut Vec<&'static str>) {
        if self.window_us < 1_000_000 {
            out.push("syslog.window_us must be at least 1 s");
        }
        if self.miner.validate().is_err() {
            out.push("syslog.miner is invalid");
        }
    }
}

/// (host, application, template id).
type Key = (String, String, TemplateId);

/// What one (host, application, template) did during learning.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRate {
    /// The template's text when learned.
    pub template: String,
    pub count: u64,
    /// Most messages of it in one window.
    pub peak: u64,
}

/// Everything learned about syslog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogBaseline {
    pub window_us: i64,
    /// Windows the learning period spanned (the rates' denominator).
    pub windows: u64,
    /// Event time from the first to the last message learned, µs (absent in older
    /// baselines): the rates' denominator when learning was shorter than a few windows, whose
    /// first and last are partial.
    #[serde(default)]
    pub span_us: i64,
    /// One miner per application name, as learned.
    pub miners: BTreeMap<String, TemplateMiner>,
    #[serde(with = "super::entries")]
    pub rates: BTreeMap<Key, TemplateRate>,
    /// Hosts (hostname, else sender address) whose messages were learned.
    pub hosts: BTreeSet<String>,
}

impl Default for SyslogBaseline {
    fn default() -> Self {
        SyslogBaseline {
            window_us: SyslogConfig::default().window_us,
            windows: 0,
            span_us: 0,
            miners: BTreeMap::new(),
            rates: BTreeMap::new(),
            hosts: BTreeSet::new(),
        }
    }
}

impl SyslogBaseline {
    pub(crate) fn forget(&mut self, scope: &Scope) {
        if let Scope::Asset(ip) = *scope {
            let h = ip.to_string();
            self.rates.retain(|(host, _, _), _| *host != h);
            self.hosts.remove(&h);
        }
    }

    /// Template ids are per miner, so only rates mined by the same miners can be merged: the
    /// fresh rates are kept when this baseline has no syslog yet.
    pub(crate) fn merge(&mut self, other: SyslogBaseline) {
        if self.miners.is_empty() {
            *self = other;
        }
    }
}

fn host_of(ev: &SyslogEvent) -> String {
    match (&ev.hostname, ev.src_ip) {
        (Some(h), _) => h.clone(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => "-".to_owned(),
    }
}

/// Mines one message; `None` when its application cannot get a miner (limit).
fn mine(
    miners: &mut BTreeMap<String, TemplateMiner>,
    config: &SyslogConfig,
    ev: &SyslogEvent,
) -> Option<(String, TemplateId, String, bool)> {
    let app = ev.app_name.as_deref().unwrap_or(NO_APP);
    if !miners.contains_key(app) {
        if miners.len() >= config.max_apps {
            return None;
        }
        let m = TemplateMiner::new(config.miner.clone()).ok()?;
        miners.insert(app.to_owned(), m);
    }
    let miner = miners.get_mut(app)?;
    let obs = miner.add(ev.msg.as_deref().unwrap_or(""));
    let created = obs.change == crate::templates::Change::Created;
    Some((app.to_owned(), obs.id, obs.template, created))
}

#[derive(Debug)]
pub(crate) struct SyslogLearner {
    config: SyslogConfig,
    base: SyslogBaseline,
    /// (key) → (window id, count in it).
    current: BTreeMap<Key, (i64, u64)>,
    first: Option<i64>,
    last: Option<i64>,
}

impl SyslogLearner {
    pub(crate) fn new(config: &SyslogConfig) -> Self {
        SyslogLearner {
            config: config.clone(),
            base: SyslogBaseline {
                window_us: config.window_us,
                ..SyslogBaseline::default()
            },
            current: BTreeMap::new(),
            first: None,
            last: None,
        }
    }

    pub(crate) fn observe(&mut self, ev: &SyslogEvent, over: &mut Overflow) {
        let us = ev.ts.as_micros();
        self.first = Some(self.first.map_or(us, |f| f.min(us)));
        self.last = Some(self.last.map_or(us, |l| l.max(us)));
        let Some((app, id, template, _)) = mine(&mut self.base.miners, &self.config, ev) else {
            over.functions += 1;
            return;
        };
        let host = host_of(ev);
        let key = (host.clone(), app, id);
        if !self.base.rates.contains_key(&key) && self.base.rates.len() >= self.config.max_keys {
            over.functions += 1;
            return;
        }
        if self.base.hosts.len() < self.config.max_keys || self.base.hosts.contains(&host) {
            self.base.hosts.insert(host);
        }
        let r = self.base.rates.entry(key.clone()).or_default();
        r.count += 1;
        r.template = template;
        let w = us.div_euclid(self.config.window_us.max(1));
        let cur = self.current.entry(key).or_insert((w, 0));
        if cur.0 != w {
            *cur = (w, 0);
        }
        cur.1 += 1;
        r.peak = r.peak.max(cur.1);
    }

    pub(crate) fn finish(self, _over: &mut Overflow) -> SyslogBaseline {
        let mut base = self.base;
        // A template merged into another after its rate was recorded: its messages now count
        // under the surviving id, which is the one detection will see. Peaks add up, an upper
        // bound of the merged template's peak, so a merge never makes a burst out of normal.
        let mut rates = BTreeMap::new();
        for ((host, app, id), r) in std::mem::take(&mut base.rates) {
            let id = base
                .miners
                .get(&app)
                .and_then(|m| m.resolve(id))
                .unwrap_or(id);
            let e: &mut TemplateRate = rates.entry((host, app, id)).or_default();
            e.count = e.count.saturating_add(r.count);
            e.peak = e.peak.saturating_add(r.peak);
        }
        base.rates = rates;
        // Templates may have generalised after a rate was recorded: keep the final text.
        for ((_, app, id), r) in base.rates.iter_mut() {
            if let Some(v) = base.miners.get(app).and_then(|m| m.template(*id)) {
                r.template = v.template;
            }
        }
        let len = self.config.window_us.max(1);
        base.span_us = match (self.first, self.last) {
            (Some(f), Some(l)) => l.saturating_sub(f),
            _ => 0,
        };
        base.windows = match (self.first, self.last) {
            (Some(f), Some(l)) => {
                u64::try_from(l.div_euclid(len) - f.div_euclid(len) + 1).unwrap_or(1)
            }
            _ => 0,
        };
        base
    }
}

/// A learning span shorter than this is not scaled up to a window (a handful of messages
/// close together say little about a rate).
const MIN_RATE_SPAN_US: i64 = 60_000_000;

impl SyslogBaseline {
    /// A learned count as messages per window. Counted windows include a partial first and
    /// last one, which makes a short learning look quieter than it was (74 messages in two
    /// minutes are 185 per five-minute window, not 74): the learned span is the denominator
    /// when it is known and shorter than the windows counted.
    fn per_window(&self, count: u64) -> f64 {
        let by_windows = count as f64 / self.windows.max(1) as f64;
        if self.span_us <= 0 {
            return by_windows;
        }
        let span = self.span_us.max(MIN_RATE_SPAN_US) as f64;
        let by_span = count as f64 * self.window_us.max(1) as f64 / span;
        by_windows.max(by_span)
    }
}

/// Smallest count `k` with P(X ≥ k) < `tail` for X ~ Poisson(`lambda`).
fn poisson_bound(lambda: f64, tail: f64) -> u64 {
    let lambda = lambda.max(1e-9);
    let mut p = (-lambda).exp();
    let mut cdf = p;
    let mut k: u64 = 0;
    while 1.0 - cdf >= tail && k < 1_000_000 {
        k += 1;
        p *= lambda / k as f64;
        cdf += p;
        if p < 1e-300 && k as f64 > lambda {
            break;
        }
    }
    k + 1
}

fn message_severity(ev: &SyslogEvent) -> Severity {
    let mut s = Severity::Low;
    let security = matches!(ev.facility, Some(4 | 10));
    let error = ev.severity.is_some_and(|v| v <= 3);
    if security || error {
        s = Severity::Medium;
    }
    if ev.severity.is_some_and(|v| v <= 1) || (security && error) {
        s = Severity::High;
    }
    s
}

/// Learned templates of one host and application compared with a new one, at most.
const MAX_VARIANT_CANDIDATES: usize = 256;

/// A learned template of the same host and application that the new one differs from in one
/// word only (another user name, another interface): the same message with another value,
/// which the miner had too few examples to generalise. Not new behaviour.
fn variant_of(base: &SyslogBaseline, host: &str, app: &str, template: &str) -> Option<String> {
    let words: Vec<&str> = template.split_whitespace().collect();
    let lo = (host.to_owned(), app.to_owned(), TemplateId(0));
    let hi = (host.to_owned(), app.to_owned(), TemplateId(u64::MAX));
    base.rates
        .range(lo..=hi)
        .take(MAX_VARIANT_CANDIDATES)
        .map(|(_, r)| &r.template)
        .find(|learned| {
            let other: Vec<&str> = learned.split_whitespace().collect();
            other.len() == words.len()
                && words.len() >= 3
                && other.iter().zip(&words).filter(|(a, b)| a != b).count() == 1
        })
        .cloned()
}

/// Whether a never-seen message deserves an alert rather than an observation.
///
/// Logins are not enough: a user logging on, or mistyping a password once, is everyday life
/// on the auth facilities; a repeated failure is a burst (`NEW_TEMPLATE_BURST`) and alerts.
fn security_relevant(ev: &SyslogEvent, evidence: &super::Evidence) -> bool {
    let techniques =
        super::attack::techniques_for(DetectorName::Syslog, "new_syslog_template", evidence);
    ev.severity.is_some_and(|v| v <= 2) || techniques.iter().any(|t| *t != "T0859")
}

fn up(s: Severity) -> Severity {
    match s {
        Severity::Info => Severity::Low,
        Severity::Low => Severity::Medium,
        Severity::Medium => Severity::High,
        Severity::High | Severity::Critical => Severity::Critical,
    }
}

#[derive(Debug)]
pub(crate) struct SyslogDetector {
    config: SyslogConfig,
    miners: BTreeMap<String, TemplateMiner>,
    /// (key) → (window id, count in it, alerted in this window).
    windows: BTreeMap<Key, (i64, u64, bool)>,
    pub(crate) overflow: u64,
}

impl SyslogDetector {
    pub(crate) fn new(base: &SyslogBaseline, config: &SyslogConfig) -> Self {
        SyslogDetector {
            config: SyslogConfig {
                window_us: base.window_us,
                ..config.clone()
            },
            miners: base.miners.clone(),
            windows: BTreeMap::new(),
            overflow: 0,
        }
    }

    pub(crate) fn observe(
        &mut self,
        base: &SyslogBaseline,
        ev: &SyslogEvent,
        book: &mut AlertBook,
    ) {
        let Some((app, id, template, _)) = mine(&mut self.miners, &self.config, ev) else {
            self.overflow += 1;
            return;
        };
        let host = host_of(ev);
        let key = (host.clone(), app.clone(), id);
        let msg_severity = message_severity(ev);
        let sev_field = ev.severity;
        let subject = format!("{host}/{app}/{}", id.0);
        let learned = base.rates.get(&key);
        let common = |extra: [(&str, serde_json::Value); 3]| {
            let mut e = evidence([
                ("host", json!(host)),
                ("app_name", json!(app)),
                ("template_id", json!(id.0)),
                ("template", json!(template)),
                ("syslog_severity", json!(sev_field)),
                ("facility", json!(ev.facility)),
            ]);
            e.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
            e
        };
        match learned {
            None => {
                let known_elsewhere = base.rates.keys().any(|(_, a, i)| *a == app && *i == id);
                let evidence = common([
                    ("learned_count", json!(0)),
                    ("known_from_other_hosts", json!(known_elsewhere)),
                    ("message", json!(ev.msg)),
                ]);
                let variant = variant_of(base, &host, &app, &template);
                let mut evidence = evidence;
                if let Some(v) = &variant {
                    evidence.insert("variant_of".into(), json!(v));
                }
                let severity = if variant.is_none() && security_relevant(ev, &evidence) {
                    msg_severity
                } else {
                    Severity::Info
                };
                book.raise(Raise {
                    ts: ev.ts,
                    detector: DetectorName::Syslog,
                    kind: "new_syslog_template",
                    severity,
                    summary: format!(
                        "{host} logged a message from {app} it never logged during learning: \"{template}\"."
                    ),
                    src_ip: ev.src_ip,
                    dst_ip: None,
                    asset: Some(host.clone()),
                    subject: subject.clone(),
                    score: severity.base_score(),
                    evidence,
                });
            }
            Some(r) if r.count <= RARE_MAX_COUNT => {
                book.raise(Raise {
                    ts: ev.ts,
                    detector: DetectorName::Syslog,
                    kind: "rare_syslog_template",
                    // Seen while learning: recorded, never paging. A burst of it still alerts.
                    severity: Severity::Info,
                    summary: format!(
                        "{host} logged a message from {app} that it logged only {} times during learning: \"{template}\".",
                        r.count
                    ),
                    src_ip: ev.src_ip,
                    dst_ip: None,
                    asset: Some(host.clone()),
                    subject: subject.clone(),
                    score: Severity::Info.base_score(),
                    evidence: common([
                        ("learned_count", json!(r.count)),
                        ("learned_windows", json!(base.windows)),
                        ("message", json!(ev.msg)),
                    ]),
                });
            }
            Some(_) => {}
        }
        if !self.windows.contains_key(&key) && self.windows.len() >= self.config.max_keys {
            self.overflow += 1;
            return;
        }
        let w = ev.ts.as_micros().div_euclid(self.config.window_us.max(1));
        let st = self.windows.entry(key).or_insert((w, 0, false));
        if st.0 != w {
            *st = (w, 0, false);
        }
        st.1 += 1;
        // A never-seen message repeated within a window is a burst too (a password guessed
        // at under a user name never seen): its single occurrence was only an observation.
        let (lambda, peak) = learned.map_or((0.0, 0), |r| (base.per_window(r.count), r.peak));
        let limit = poisson_bound(lambda, BURST_TAIL)
            .max(peak.saturating_mul(2))
            .max(if learned.is_none() {
                NEW_TEMPLATE_BURST
            } else {
                0
            });
        if st.1 > limit && !st.2 {
            st.2 = true;
            let severity = up(msg_severity).max(Severity::Medium);
            book.raise(Raise {
                ts: ev.ts,
                detector: DetectorName::Syslog,
                kind: "syslog_rate_burst",
                severity,
                summary: format!(
                    "{host} logged \"{template}\" ({app}) {} times within {} s; it averaged {lambda:.2} per window during learning (at most {}).",
                    st.1,
                    self.config.window_us / 1_000_000,
                    peak
                ),
                src_ip: ev.src_ip,
                dst_ip: None,
                asset: Some(host.clone()),
                subject: format!("rate:{subject}"),
                score: severity.base_score(),
                evidence: common([
                    ("count_in_window", json!(st.1)),
                    ("learned_mean_per_window", json!((lambda * 1000.0).round() / 1000.0)),
                    ("limit", json!(limit)),
                ]),
            });
        }
    }

    pub(crate) fn finish(&mut self, _base: &SyslogBaseline, _book: &mut AlertBook) {}
}

impl SyslogBaseline {
    /// An operator's "this message is normal for this host": (host, app, template) becomes a
    /// template the host commonly logs (learned more often than a rare one). `id` is taken
    /// when this baseline's miner of `app` knows it; otherwise `message` is mined into it
    /// (a miner is made for an application never learned). Returns the template's id and
    /// text and its learned count before and after; `None` when there is nothing to mine.
    pub(crate) fn accept_template(
        &mut self,
        host: &str,
        app: &str,
        id: TemplateId,
        message: Option<&str>,
    ) -> Option<(TemplateId, String, u64, u64)> {
        let config = self
            .miners
            .values()
            .next()
            .map_or_else(|| SyslogConfig::default().miner, |m| m.config().clone());
        if !self.miners.contains_key(app) {
            self.miners
                .insert(app.to_owned(), TemplateMiner::new(config).ok()?);
        }
        let miner = self.miners.get_mut(app)?;
        let (id, template) = match miner.template(id) {
            Some(t) => (id, t.template),
            None => {
                let obs = miner.add(message?);
                (obs.id, obs.template)
            }
        };
        self.hosts.insert(host.to_owned());
        let r = self
            .rates
            .entry((host.to_owned(), app.to_owned(), id))
            .or_default();
        let before = r.count;
        r.count = r.count.max(RARE_MAX_COUNT + 1);
        r.peak = r.peak.max(1);
        r.template.clone_from(&template);
        Some((id, template, before, r.count))
    }

    /// Raises the learned peak of (host, app, template) to `count` per window, so that a
    /// window with as many messages is not a burst. Returns the peak before and after.
    pub(crate) fn accept_peak(
        &mut self,
        host: &str,
        app: &str,
        id: TemplateId,
        count: u64,
    ) -> Option<(u64, u64)> {
        let r = self.rates.get_mut(&(host.to_owned(), app.to_owned(), id))?;
        let before = r.peak;
        r.peak = r.peak.max(count);
        Some((before, r.peak))
    }
}

impl SyslogDetector {
    /// The miner this detector runs for `app`: the learned one plus what it mined since.
    pub(crate) fn miner(&self, app: &str) -> Option<&TemplateMiner> {
        self.miners.get(app)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::event::SyslogFormat;
    use crate::time::Timestamp;

    fn msg(t_s: i64, facility: u8, severity: u8, app: &str, text: &str) -> SyslogEvent {
        let ts = Timestamp::from_micros((1_714_557_600 + t_s) * 1_000_000);
        SyslogEvent {
            ts,
            received_ts: ts,
            src_ip: Some([10, 0, 0, 9].into()),
            src_port: Some(514),
            format: SyslogFormat::Rfc5424,
            priority: Some(facility * 8 + severity),
            facility: Some(facility),
            severity: Some(severity),
            version: Some(1),
            timestamp: None,
            hostname: Some("rtu-9".into()),
            app_name: Some(app.into()),
            procid: None,
            msgid: None,
            structured_data: None,
            msg: Some(text.into()),
            anomalies: Vec::new(),
        }
    }

    /// What a device logged for an hour: a heartbeat every minute (with a changing value),
    /// and once, a configuration backup.
    fn learned() -> SyslogBaseline {
        let mut l = SyslogLearner::new(&SyslogConfig::default());
        let mut over = Overflow::default();
        for i in 0..60 {
            let text = format!("heartbeat ok uptime {} s load {}", 1000 + i * 60, i % 7);
            l.observe(&msg(i * 60, 1, 6, "daemon", &text), &mut over);
        }
        l.observe(
            &msg(
                1_800,
                1,
                5,
                "daemon",
                "configuration backup written to flash slot 2",
            ),
            &mut over,
        );
        l.finish(&mut over)
    }

    fn detect(base: &SyslogBaseline, events: &[SyslogEvent]) -> Vec<crate::detect::Alert> {
        let mut d = SyslogDetector::new(base, &SyslogConfig::default());
        let mut book = AlertBook::new(600_000_000, 100);
        for e in events {
            d.observe(base, e, &mut book);
        }
        book.into_sorted()
    }

    #[test]
    fn benign_novelty_is_recorded_security_novelty_alerts() {
        let base = learned();
        let mut events = vec![
            // Seen once while learning: an observation.
            msg(
                3_700,
                1,
                5,
                "daemon",
                "configuration backup written to flash slot 2",
            ),
            // Never seen, nothing security about it: an observation.
            msg(3_710, 1, 6, "daemon", "fan speed adjusted to level 3"),
            // Never seen, one failed login on the security facility: recorded.
            msg(
                3_720,
                10,
                4,
                "sshd",
                "authentication failure for user admin from 10.9.9.9",
            ),
            // Never seen, a firmware upload on an ordinary facility: an alert.
            msg(
                3_730,
                1,
                5,
                "daemon",
                "firmware image upload started by 10.9.9.9",
            ),
            // The learned backup message with another slot: the rare template again (the
            // miner generalised it), folded into its observation.
            msg(
                3_740,
                10,
                5,
                "daemon",
                "configuration backup written to flash slot 3",
            ),
        ];
        // The failed login again and again: a burst.
        for i in 0..4 {
            events.push(msg(
                3_750 + i,
                10,
                4,
                "sshd",
                "authentication failure for user admin from 10.9.9.9",
            ));
        }
        let alerts = detect(&base, &events);
        let seen: Vec<(&str, Severity)> = alerts
            .iter()
            .map(|a| (a.kind.as_str(), a.severity))
            .collect();
        assert_eq!(
            seen,
            [
                ("rare_syslog_template", Severity::Info),
                ("new_syslog_template", Severity::Info),
                ("new_syslog_template", Severity::Info),
                ("new_syslog_template", Severity::Low),
                ("syslog_rate_burst", Severity::High),
            ]
        );
    }

    /// Two minutes of learning (less than one five-minute window): the rate is per minute
    /// learned, not per window touched, so a full window of the same traffic is no burst.
    #[test]
    fn a_short_learning_is_no_reason_for_a_burst() {
        let mut l = SyslogLearner::new(&SyslogConfig::default());
        let mut over = Overflow::default();
        for i in 0..74 {
            let t = 3_000 + i * 120 / 74;
            l.observe(
                &msg(
                    t,
                    1,
                    6,
                    "ntpd",
                    &format!("synchronized to 10.0.0.{}, stratum 2", i % 3),
                ),
                &mut over,
            );
        }
        let base = l.finish(&mut over);
        let normal: Vec<SyslogEvent> = (0..185)
            .map(|i| {
                msg(
                    3_300 + i * 300 / 185,
                    1,
                    6,
                    "ntpd",
                    "synchronized to 10.0.0.1, stratum 2",
                )
            })
            .collect();
        let alerts = detect(&base, &normal);
        assert!(
            alerts.iter().all(|a| a.kind != "syslog_rate_burst"),
            "{alerts:#?}"
        );
        let flood: Vec<SyslogEvent> = (0..600)
            .map(|i| {
                msg(
                    3_600 + i / 2,
                    1,
                    6,
                    "ntpd",
                    "synchronized to 10.0.0.1, stratum 2",
                )
            })
            .collect();
        let alerts = detect(&base, &flood);
        assert!(
            alerts.iter().any(|a| a.kind == "syslog_rate_burst"),
            "{alerts:#?}"
        );
    }

    #[test]
    fn poisson_bound_grows_with_the_rate() {
        assert!(poisson_bound(0.0, 1e-6) <= 2);
        let b1 = poisson_bound(1.0, 1e-6);
        let b10 = poisson_bound(10.0, 1e-6);
        assert!((8..=12).contains(&b1), "{b1}");
        assert!(b10 > b1 && b10 < 40, "{b10}");
    }
}

#[cfg(test)]
mod merge_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate::Event;
    use crate::detect::{DetectConfig, Detector, Learner};

    fn sshd(host: &str, secs: i64, msg: &str) -> Event {
        let ts = format!("2024-01-01T00:{:02}:{:02}.000000Z", secs / 60, secs % 60);
        let json = serde_json::json!({
            "type": "syslog", "ts": ts, "received_ts": ts, "src_ip": "10.0.0.9",
            "format": "rfc5424", "facility": 4, "severity": 6, "hostname": host,
            "app_name": "sshd", "msg": msg, "anomalies": []
        });
        serde_json::from_value(json).unwrap()
    }

    /// A user name is a word, not a number: the miner merges the three templates it first made
    /// into one, under the oldest id. The rates learned under the other two ids must move to
    /// it, or the host whose messages made them is told it "never logged" this message.
    #[test]
    fn rates_follow_merged_templates() {
        let mut learner = Learner::new(DetectConfig::default());
        for (i, (host, user)) in [("plc-a", "admin"), ("plc-b", "oracle"), ("plc-c", "guest")]
            .into_iter()
            .enumerate()
        {
            let msg = format!("Invalid user {user} from 10.1.1.{i}");
            learner.observe(&sshd(host, i as i64, &msg));
        }
        let baseline = learner.finish();
        let mut detector = Detector::new(baseline, DetectConfig::default()).unwrap();
        detector.observe(&sshd("plc-b", 100, "Invalid user support from 10.1.1.7"));
        let (alerts, _) = detector.finish();
        let new: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == "new_syslog_template")
            .map(|a| a.summary.clone())
            .collect();
        assert!(new.is_empty(), "{new:?}");
    }
}
