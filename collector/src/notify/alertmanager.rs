//! Prometheus Alertmanager, API v2 (`POST {url}/api/v2/alerts`, a JSON array of alerts).
//! Labels identify an alert (Alertmanager deduplicates and routes on them), annotations
//! explain it. Alertmanager resolves an alert without `endsAt` once it has not been re-sent
//! for its `resolve_timeout`, so the active notices are kept and posted again every
//! `resend_interval_seconds`; a resolved notice is posted once with `endsAt`, then forgotten.
//!
//! The labels are what stays put for an incident's life (site, incident, asset, kind,
//! exercise) plus `severity`, which routing needs (critical pages) and which rises when an
//! incident escalates. What grows as an incident grows (its detectors, its summary) is an
//! annotation. Since Alertmanager knows an alert only by its label set, a notice whose labels
//! differ from those last posted for its key also ends the old set (`endsAt`), in the same
//! POST: otherwise each escalation would leave the old alert firing until its
//! `resolve_timeout`.
//!
//! One dispatcher task keeps the active set and feeds one queue and task per URL, so a
//! replica that is down (its retries, its backoff) never delays the other of an HA pair.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::header;
use serde::Serialize;

use super::config::{AlertmanagerSection, load_roots, load_secret, seconds};
use super::http::{HttpTarget, sensitive, tls_connector};
use super::queue::{Policy, Queue, SinkStats, deliver};
use super::{Delivery, MAX_ACTIVE_NOTICES, Notice, NotifyError, Sink, SinkHandle, rfc3339};

/// The API path below an Alertmanager's base URL.
pub const ALERTS_PATH: &str = "/api/v2/alerts";
/// Alerts per POST (a re-send of many active notices is split).
const MAX_ALERTS_PER_POST: usize = 256;
/// Caps on annotation values (a description is "a few lines").
const MAX_SUMMARY_CHARS: usize = 1024;
const MAX_DESCRIPTION_CHARS: usize = 8192;
/// Cap on a label value.
const MAX_LABEL_CHARS: usize = 1024;

/// One alert as Alertmanager's `postableAlert`.
#[derive(Debug, Serialize)]
struct PostableAlert<'a> {
    labels: BTreeMap<&'a str, String>,
    annotations: BTreeMap<&'static str, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
    #[serde(rename = "generatorURL", skip_serializing_if = "str::is_empty")]
    generator_url: &'a str,
}

fn cut(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// The alert's identity in Alertmanager: the static `extra` labels, then Mamori's own.
fn labels<'a>(notice: &Notice, extra: &'a BTreeMap<String, String>) -> BTreeMap<&'a str, String> {
    let mut labels: BTreeMap<&str, String> =
        extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let mut put = |name: &'static str, value: &str| {
        // Alertmanager treats an empty label as absent; leave it out.
        if !value.is_empty() {
            labels.insert(name, cut(value, MAX_LABEL_CHARS));
        }
    };
    put("alertname", &notice.alertname);
    put("site", &notice.site);
    if let Some(asset) = &notice.asset {
        put("asset", asset);
    }
    put("severity", notice.severity.as_str());
    put("kind", &notice.kind);
    put("incident", &notice.incident_id.to_string());
    put("exercise", if notice.exercise { "true" } else { "false" });
    labels
}

fn alert<'a>(notice: &'a Notice, extra: &'a BTreeMap<String, String>) -> PostableAlert<'a> {
    let mut annotations = BTreeMap::new();
    annotations.insert("summary", cut(&notice.summary, MAX_SUMMARY_CHARS));
    annotations.insert(
        "description",
        cut(&notice.description, MAX_DESCRIPTION_CHARS),
    );
    if !notice.detectors.is_empty() {
        annotations.insert(
            "detectors",
            cut(&notice.detectors.join(", "), MAX_LABEL_CHARS),
        );
    }
    if let Some(url) = &notice.runbook_url {
        annotations.insert("runbook_url", url.clone());
    }
    PostableAlert {
        labels: labels(notice, extra),
        annotations,
        starts_at: rfc3339(notice.starts_at_unix_ms),
        // Alertmanager refuses an end before the start.
        ends_at: notice
            .ends_at_unix_ms
            .map(|end| rfc3339(end.max(notice.starts_at_unix_ms))),
        generator_url: &notice.generator_url,
    }
}

/// The JSON body of a POST of `notices` to `/api/v2/alerts`, with the static `extra` labels.
pub fn render_alerts<'a>(
    notices: impl IntoIterator<Item = &'a Notice>,
    extra: &BTreeMap<String, String>,
) -> Vec<u8> {
    let alerts: Vec<PostableAlert<'_>> = notices.into_iter().map(|n| alert(n, extra)).collect();
    // Serialising maps of strings cannot fail.
    serde_json::to_vec(&alerts).unwrap_or_else(|_| b"[]".to_vec())
}

/// Work for one URL's task.
#[derive(Debug)]
pub(crate) enum Job {
    /// New, updated or resolved alerts.
    Post { body: Bytes, alerts: u64 },
    /// Post every active alert again (rendered when taken, so it is never stale).
    Resend,
}

impl Job {
    /// The alerts it carries (for counting what a shutdown leaves behind).
    pub(crate) fn alerts(&self) -> u64 {
        match self {
            Job::Post { alerts, .. } => *alerts,
            Job::Resend => 0,
        }
    }
}

/// The active notices by key, oldest first by sequence.
#[derive(Debug, Default)]
struct Active {
    seq: u64,
    notices: HashMap<String, (u64, Arc<Delivery>)>,
}

impl Active {
    /// Takes `delivery` as its key's latest state. Returns the alert to end when the key was
    /// active under other labels (an escalation): Alertmanager would keep that one firing.
    fn apply(&mut self, delivery: &Arc<Delivery>) -> Option<Notice> {
        let key = &delivery.notice.key;
        let superseded = self.notices.get(key).and_then(|(_, before)| {
            superseded(&before.notice, &delivery.notice, delivery.at_unix_ms)
        });
        if delivery.notice.is_resolved() {
            self.notices.remove(key);
            return superseded;
        }
        self.seq = self.seq.wrapping_add(1);
        self.notices
            .insert(key.clone(), (self.seq, delivery.clone()));
        if self.notices.len() > MAX_ACTIVE_NOTICES
            && let Some(oldest) = self
                .notices
                .iter()
                .min_by_key(|(_, (s, _))| *s)
                .map(|(k, _)| k.clone())
        {
            // Counted by the notifier (it keeps the same bound on the same keys).
            self.notices.remove(&oldest);
        }
        superseded
    }

    /// Bodies of every active alert, oldest first, `MAX_ALERTS_PER_POST` per body.
    fn bodies(&self, extra: &BTreeMap<String, String>) -> Vec<(Bytes, u64)> {
        let mut all: Vec<&(u64, Arc<Delivery>)> = self.notices.values().collect();
        all.sort_by_key(|(s, _)| *s);
        all.chunks(MAX_ALERTS_PER_POST)
            .map(|chunk| {
                let body = render_alerts(chunk.iter().map(|(_, d)| &d.notice), extra);
                (Bytes::from(body), chunk.len() as u64)
            })
            .collect()
    }
}

/// `before` ended at `at_unix_ms`, when `after` (the same key) is posted under other labels;
/// `None` when the labels are the same. Static labels are the same for both, so Mamori's own
/// are compared.
fn superseded(before: &Notice, after: &Notice, at_unix_ms: u64) -> Option<Notice> {
    let none = BTreeMap::new();
    let (old, new) = (labels(before, &none), labels(after, &none));
    if old == new {
        return None;
    }
    let changed: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut ended = before.clone();
    ended.summary = format!(
        "Superseded by this incident's alert with {}: {}",
        changed.join(", "),
        before.summary
    );
    ended.ends_at_unix_ms = Some(after.ends_at_unix_ms.unwrap_or(at_unix_ms));
    Some(ended)
}

/// One Alertmanager URL: its target, queue and whether a re-send is already queued.
#[derive(Debug)]
struct Url {
    target: HttpTarget,
    queue: Arc<Queue<Job>>,
    resend_queued: AtomicBool,
}

/// The Alertmanager sink, built and not yet running.
#[derive(Debug)]
pub(crate) struct Runner {
    urls: Vec<Arc<Url>>,
    labels: Arc<BTreeMap<String, String>>,
    resend: Duration,
    policy: Policy,
    capacity: usize,
}

impl Runner {
    pub(crate) fn build(section: &AlertmanagerSection) -> Result<Runner, NotifyError> {
        let delivery = section.delivery();
        let connector = match &section.ca_file {
            Some(path) => Some(tls_connector(
                load_roots(path).map_err(NotifyError::Invalid)?,
            )?),
            None => None,
        };
        let mut headers = Vec::new();
        if let (Some(user), Some(path)) = (&section.username, &section.password_file) {
            let password = load_secret(path).map_err(NotifyError::Invalid)?;
            let basic = basic_auth(user, password.expose());
            headers.push((header::AUTHORIZATION, sensitive(&basic)?));
        }
        if let Some(path) = &section.bearer_token_file {
            let token = load_secret(path).map_err(NotifyError::Invalid)?;
            let bearer = format!("Bearer {}", token.expose());
            headers.push((header::AUTHORIZATION, sensitive(&bearer)?));
        }
        let capacity = delivery.capacity();
        let urls = section
            .urls
            .iter()
            .map(|url| {
                let target = HttpTarget::new(
                    url,
                    ALERTS_PATH,
                    connector.as_ref(),
                    delivery.timeout(),
                    headers.clone(),
                )?;
                Ok(Arc::new(Url {
                    target,
                    queue: Arc::new(Queue::new(capacity)),
                    resend_queued: AtomicBool::new(false),
                }))
            })
            .collect::<Result<Vec<_>, NotifyError>>()?;
        Ok(Runner {
            urls,
            labels: Arc::new(section.labels.clone()),
            resend: seconds(section.resend_interval_seconds),
            policy: Policy::from_settings(&delivery),
            capacity,
        })
    }

    pub(crate) fn spawn(
        self,
        runtime: &tokio::runtime::Handle,
    ) -> (SinkHandle, Vec<tokio::task::JoinHandle<()>>) {
        let stats = Arc::new(SinkStats::new(Sink::Alertmanager));
        let input = Arc::new(Queue::new(self.capacity));
        let active = Arc::new(Mutex::new(Active::default()));
        let mut tasks = Vec::new();
        for url in &self.urls {
            tasks.push(runtime.spawn(post_loop(
                url.clone(),
                active.clone(),
                self.labels.clone(),
                stats.clone(),
                self.policy,
            )));
        }
        let handle = SinkHandle {
            stats: stats.clone(),
            input: input.clone(),
            posts: self.urls.iter().map(|u| u.queue.clone()).collect(),
        };
        tasks.push(runtime.spawn(dispatch(
            input,
            self.urls,
            active,
            self.labels,
            stats,
            self.resend,
        )));
        (handle, tasks)
    }
}

fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding (only for the basic-auth header; not worth a crate).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |v: u32| char::from(ALPHABET.get((v & 63) as usize).copied().unwrap_or(b'A'));
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

/// Pushes `job` to `url`'s queue, counting alerts pushed out of it.
fn enqueue(url: &Url, job: Job, stats: &SinkStats) {
    match url.queue.push(job) {
        Some(Job::Post { alerts, .. }) => stats.overflowed(alerts),
        // A dropped re-send is not lost work: the next tick queues another.
        Some(Job::Resend) => url.resend_queued.store(false, Ordering::Relaxed),
        None => {}
    }
}

/// Takes notices, keeps the active set, and hands posts and re-sends to each URL's task.
async fn dispatch(
    input: Arc<Queue<Arc<Delivery>>>,
    urls: Vec<Arc<Url>>,
    active: Arc<Mutex<Active>>,
    labels: Arc<BTreeMap<String, String>>,
    stats: Arc<SinkStats>,
    resend: Duration,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + resend, resend);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            first = input.next() => {
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < MAX_ALERTS_PER_POST {
                    match input.pop() {
                        Some(d) => batch.push(d),
                        None => break,
                    }
                }
                if input.len() == 0 {
                    stats.drained();
                }
                // Only the latest state of a key in this batch matters.
                let mut latest: Vec<&Arc<Delivery>> = Vec::with_capacity(batch.len());
                for (n, d) in batch.iter().enumerate() {
                    let later = batch.iter().skip(n + 1).any(|x| x.notice.key == d.notice.key);
                    if !later {
                        latest.push(d);
                    }
                }
                let ended: Vec<Notice> = {
                    let mut active = active.lock().unwrap_or_else(|e| e.into_inner());
                    latest.iter().filter_map(|d| active.apply(d)).collect()
                };
                // The ended label sets first: a receiver never sees two firing at once.
                let body = Bytes::from(render_alerts(
                    ended.iter().chain(latest.iter().map(|d| &d.notice)),
                    &labels,
                ));
                let alerts = (ended.len() + latest.len()) as u64;
                for url in &urls {
                    enqueue(url, Job::Post { body: body.clone(), alerts }, &stats);
                }
            }
            _ = tick.tick() => {
                let any = !active.lock().unwrap_or_else(|e| e.into_inner()).notices.is_empty();
                if any && !input.is_closed() {
                    for url in &urls {
                        if !url.resend_queued.swap(true, Ordering::Relaxed) {
                            enqueue(url, Job::Resend, &stats);
                        }
                    }
                }
            }
        }
    }
    for url in &urls {
        url.queue.close();
    }
}

/// One URL's task: posts each job with retries.
async fn post_loop(
    url: Arc<Url>,
    active: Arc<Mutex<Active>>,
    labels: Arc<BTreeMap<String, String>>,
    stats: Arc<SinkStats>,
    policy: Policy,
) {
    while let Some(job) = url.queue.next().await {
        let bodies = match job {
            Job::Post { body, alerts } => vec![(body, alerts)],
            Job::Resend => {
                url.resend_queued.store(false, Ordering::Relaxed);
                active
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .bodies(&labels)
            }
        };
        for (body, alerts) in bodies {
            let target = &url.target;
            deliver(&stats, policy, target.url(), alerts, || {
                let body = body.clone();
                async move { target.post(body, &[]).await.map_err(|e| (e.retry(), e)) }
            })
            .await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::notify::tests::notice;
    use mamori_models::detect::Severity;

    #[test]
    fn an_alert_has_identifying_labels_and_explaining_annotations() {
        let mut extra = BTreeMap::new();
        extra.insert("team".to_owned(), "ot-soc".to_owned());
        let body = render_alerts([&notice("plant-a/17")], &extra);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let a = &v[0];
        assert_eq!(
            a["labels"],
            serde_json::json!({
                "alertname": "MamoriIncident", "site": "plant-a", "asset": "10.0.0.5/1",
                "severity": "high", "kind": "new_modbus_path",
                "incident": "17", "exercise": "false", "team": "ot-soc",
            })
        );
        assert_eq!(a["annotations"]["detectors"], "allowlist");
        assert_eq!(
            a["annotations"]["runbook_url"],
            "https://wiki.example/runbooks/new-path"
        );
        assert_eq!(a["startsAt"], "2023-11-14T22:13:20.123000Z");
        assert!(a.get("endsAt").is_none());
        assert_eq!(a["generatorURL"], "http://collector:8080/v1/incidents/17");
    }

    #[test]
    fn a_resolved_alert_ends_and_never_before_it_starts() {
        let mut n = notice("k");
        n.asset = None;
        n.runbook_url = None;
        n.exercise = true;
        n.ends_at_unix_ms = Some(n.starts_at_unix_ms - 5);
        let v: serde_json::Value =
            serde_json::from_slice(&render_alerts([&n], &BTreeMap::new())).unwrap();
        assert_eq!(v[0]["endsAt"], v[0]["startsAt"]);
        assert!(v[0]["labels"].get("asset").is_none());
        assert_eq!(v[0]["labels"]["exercise"], "true");
        assert!(v[0]["annotations"].get("runbook_url").is_none());
    }

    #[test]
    fn the_active_set_resends_in_order_and_forgets_resolved() {
        let mut active = Active::default();
        let d = |n: Notice| {
            Arc::new(Delivery {
                event: super::super::Event::Opened,
                notice: n,
                at_unix_ms: 0,
            })
        };
        for i in 0..300 {
            active.apply(&d(notice(&format!("k{i}"))));
        }
        let mut resolved = notice("k5");
        resolved.ends_at_unix_ms = Some(resolved.starts_at_unix_ms + 1);
        active.apply(&d(resolved));
        let bodies = active.bodies(&BTreeMap::new());
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0].1 + bodies[1].1, 299);
    }

    fn delivery(n: Notice, at_unix_ms: u64) -> Arc<Delivery> {
        Arc::new(Delivery {
            event: super::super::Event::Updated,
            notice: n,
            at_unix_ms,
        })
    }

    #[test]
    fn growing_detectors_keep_the_alert_and_an_escalation_ends_the_old_one() {
        let mut active = Active::default();
        assert!(active.apply(&delivery(notice("plant-a/17"), 1)).is_none());
        // A second detector joins: same labels, the same alert.
        let mut grown = notice("plant-a/17");
        grown.detectors.push("cycle".into());
        grown.summary = "Something else".into();
        assert!(active.apply(&delivery(grown.clone(), 2)).is_none());
        // Escalation: the high alert ends when the critical one is posted.
        let mut critical = grown.clone();
        critical.severity = Severity::Critical;
        let ended = active.apply(&delivery(critical.clone(), 3_000)).unwrap();
        assert_eq!(ended.severity, Severity::High);
        assert_eq!(ended.ends_at_unix_ms, Some(3_000));
        assert!(
            ended
                .summary
                .starts_with("Superseded by this incident's alert with severity=critical"),
            "{}",
            ended.summary
        );
        assert_eq!(active.notices.len(), 1);
        // Resolved under labels Alertmanager never saw (updates folded in one batch): the
        // critical one ends too, at the resolution time.
        let mut resolved = critical.clone();
        resolved.asset = None;
        resolved.ends_at_unix_ms = Some(4_000);
        let ended = active.apply(&delivery(resolved, 4_100)).unwrap();
        assert_eq!(ended.severity, Severity::Critical);
        assert_eq!(ended.ends_at_unix_ms, Some(4_000));
        assert!(active.notices.is_empty());
    }

    #[test]
    fn basic_auth_is_base64_of_user_colon_password() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert!(hyper::header::HeaderValue::from_str(&basic_auth("a", "b")).is_ok());
    }
}
