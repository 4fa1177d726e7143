//! `mamori-sim drill`: runs scenarios against a collector with the site marked as exercise, and
//! reports per scenario whether it was detected, by which alerts and incidents, how long
//! detection took (from the scenario's start to the first alert) and how long the alert took
//! to reach Alertmanager, labelled `exercise="true"` so that routing can keep drills apart.
//!
//! Two targets. `--local`: everything in-process as in the demo (the site learns first), with a
//! real Alertmanager when `--alertmanager` is given. `--against URL`: a running deployment,
//! with the drill shipping the simulator's events as an agent (identity and certificates from
//! an agent configuration's `[shipper]`); the site must already detect.
//!
//! What it sees, it sees from outside, the same way in both modes: the collector's API
//! (`GET /api/v1/alerts`, polled) and Alertmanager's (`GET /api/v2/alerts`, polled). An alert
//! belongs to the scenario whose window (its start to the next one's start) holds its event
//! time: its first occurrence when new, its latest when it grew (repeats of an alert are
//! folded into it for ten minutes, so a second scenario by the same host grows the first
//! one's alert rather than raising a new one).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use mamori_agent::ship::ShipperConfig;
use mamori_collector::incident::StoredAlert;
use mamori_models::Timestamp;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::demo::{Progress, data_folder, scenario_duration, scenario_names};
use crate::http::{self, BaseUrl};
use crate::local::{Local, LocalOptions, Simulation, short_learning_plant};
use crate::scenario::{ScenarioClass, ScenarioRecord};

/// The local drill's site.
pub const LOCAL_SITE: &str = "drill-plant";
/// Poll period of the collector's API and of Alertmanager.
const POLL: Duration = Duration::from_millis(200);
/// Timeout of one HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The exercise marking outlasts the planned drill by this much (it is ended explicitly).
const EXERCISE_MARGIN_S: f64 = 300.0;

/// `mamori-sim drill`.
#[derive(Clone, Debug, clap::Args)]
pub struct DrillArgs {
    /// Run everything in this process (collector, agent, plant); the site learns first.
    #[arg(long, conflicts_with = "against")]
    pub local: bool,
    /// The collector's API base URL of a running deployment (http://host:port).
    #[arg(long, value_name = "URL", requires_all = ["token_file", "agent_config", "alertmanager"])]
    pub against: Option<String>,
    /// A file holding an API token with the `write` scope (to mark the exercise).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// An agent configuration whose `[shipper]` is the drill's own identity (a dedicated agent
    /// id listed in the collector's `[[agents]]` for the site, with its own spool folder:
    /// never the running agent's, whose spool and sequence numbers it would disturb).
    #[arg(long, value_name = "FILE")]
    pub agent_config: Option<PathBuf>,
    /// Alertmanager's base URL, to time the alerts' arrival (required with `--against`).
    #[arg(long, value_name = "URL")]
    pub alertmanager: Option<String>,
    /// The site drilled, with `--against` (default: the only site the API lists).
    #[arg(long)]
    pub site: Option<String>,
    /// Scenarios, comma-separated, in order (default: the whole library).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub scenarios: Vec<String>,
    /// Plant seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Local: learning period, plant seconds.
    #[arg(long, default_value_t = 60.0)]
    pub learn_seconds: f64,
    /// Every scenario's duration, plant seconds (default: each its own).
    #[arg(long)]
    pub duration_seconds: Option<f64>,
    /// Normal traffic after each scenario, plant seconds.
    #[arg(long, default_value_t = 15.0)]
    pub gap_seconds: f64,
    /// After the last scenario, wait up to this long (real seconds) for alerts to reach
    /// Alertmanager.
    #[arg(long, default_value_t = 30.0)]
    pub wait_seconds: f64,
    /// Local: the data folder (default: a temporary one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The Markdown report (default: standard output).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The report as JSON too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for DrillArgs {
    fn default() -> Self {
        DrillArgs {
            local: true,
            against: None,
            token_file: None,
            agent_config: None,
            alertmanager: None,
            site: None,
            scenarios: Vec::new(),
            speed: 1.0,
            learn_seconds: 60.0,
            duration_seconds: None,
            gap_seconds: 15.0,
            wait_seconds: 30.0,
            data_dir: None,
            report: None,
            json: None,
            seed: 1,
        }
    }
}

/// An alert as the drill saw it appear or grow.
#[derive(Clone, Debug, Serialize)]
pub struct AlertSeen {
    pub id: i64,
    /// `detector/kind`.
    pub kind: String,
    pub severity: String,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<i64>,
    /// Raised now (false: an alert raised before grew).
    pub new: bool,
    /// Counts as detecting the scenario: a kind the scenario should raise, naming one of its
    /// hosts (when new) or one of the hosts that acted (when it grew).
    pub relevant: bool,
    /// When the collector had it: stored (new) or seen grown by the drill's poll (wall, ms).
    pub detected_unix_ms: u64,
    /// Event time that placed it in this scenario.
    pub event_ts: Timestamp,
}

/// What Alertmanager showed of a scenario's incidents.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AlertmanagerSeen {
    /// An alert for one of the incidents was there.
    pub reached: bool,
    /// Every such alert carried `exercise="true"`.
    pub exercise: bool,
    /// The first new or changed alert after detection (wall, ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_alertmanager_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One scenario's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioOutcome {
    pub name: String,
    pub class: ScenarioClass,
    pub technique: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub expected: Vec<String>,
    pub detected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_detect_ms: Option<u64>,
    pub incidents: Vec<i64>,
    /// Expected kinds no alert of its window had.
    pub expected_not_raised: Vec<String>,
    pub alerts: Vec<AlertSeen>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<AlertmanagerSeen>,
}

/// The drill report.
#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    pub site: String,
    /// `local` or the API's URL.
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<String>,
    pub speed: f64,
    pub started: Timestamp,
    pub ended: Timestamp,
    pub total: usize,
    pub detected: usize,
    pub reached_alertmanager: usize,
    pub scenarios: Vec<ScenarioOutcome>,
    /// Alerts outside every scenario's window (before the first: false positives on normal
    /// traffic).
    pub outside: Vec<AlertSeen>,
}

/// Where the drill runs.
#[derive(Clone, Debug)]
pub enum Target {
    Local {
        data_dir: Option<PathBuf>,
        learn_seconds: f64,
        /// The collector's `/metrics` port on 127.0.0.1 (0: any free one), so a Prometheus
        /// can scrape the drill.
        metrics_port: u16,
    },
    Deployment {
        api: String,
        token_file: PathBuf,
        agent_config: PathBuf,
        site: Option<String>,
    },
}

/// A drill's settings.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    pub target: Target,
    pub alertmanager: Option<String>,
    /// Empty: the whole library.
    pub scenarios: Vec<String>,
    pub speed: f64,
    pub duration_seconds: Option<f64>,
    pub gap_seconds: f64,
    pub wait_seconds: f64,
    pub seed: u64,
}

impl DrillOptions {
    pub fn from_args(a: &DrillArgs) -> Result<DrillOptions> {
        let target = match (&a.against, a.local) {
            (Some(api), false) => Target::Deployment {
                api: api.clone(),
                token_file: a
                    .token_file
                    .clone()
                    .context("--against needs --token-file")?,
                agent_config: a
                    .agent_config
                    .clone()
                    .context("--against needs --agent-config")?,
                site: a.site.clone(),
            },
            (None, true) => Target::Local {
                data_dir: a.data_dir.clone(),
                learn_seconds: a.learn_seconds,
                metrics_port: 0,
            },
            _ => bail!("say where to drill: --local, or --against URL"),
        };
        if matches!(target, Target::Deployment { .. }) && a.alertmanager.is_none() {
            bail!("--against needs --alertmanager URL (the drill times the alerts there)");
        }
        if !(a.speed.is_finite() && a.speed > 0.0) {
            bail!("--speed must be a positive number");
        }
        Ok(DrillOptions {
            target,
            alertmanager: a.alertmanager.clone(),
            scenarios: a.scenarios.clone(),
            speed: a.speed,
            duration_seconds: a.duration_seconds,
            gap_seconds: a.gap_seconds.max(0.0),
            wait_seconds: a.wait_seconds.max(0.0),
            seed: a.seed,
        })
    }
}

/// `mamori-sim drill` from its arguments: runs, writes the reports, returns the report.
pub async fn run_args(args: DrillArgs, stop: impl Future<Output = ()>) -> Result<DrillReport> {
    let options = DrillOptions::from_args(&args)?;
    let report = tokio::select! {
        r = run(options) => r?,
        () = stop => bail!("drill interrupted"),
    };
    let md = markdown(&report);
    match &args.report {
        Some(p) => std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{md}"),
    }
    if let Some(p) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
        std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
    }
    eprintln!(
        "drill: {}/{} scenarios detected, {} reached Alertmanager",
        report.detected, report.total, report.reached_alertmanager
    );
    Ok(report)
}

/// What the pollers saw.
#[derive(Debug, Default)]
struct Seen {
    /// Alerts new or grown, in the order seen.
    alerts: Vec<(u64, bool, StoredAlert)>,
    /// Alertmanager: (wall ms, incident, exercise) at each new or changed alert.
    am: Vec<(u64, i64, bool)>,
    errors: BTreeMap<String, u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms_of(ts: Timestamp) -> u64 {
    u64::try_from(ts.as_micros() / 1000).unwrap_or(0)
}

/// Polls the collector's alerts of `site`, noting each new or grown alert.
async fn poll_alerts(
    api: BaseUrl,
    token: String,
    site: String,
    seen: Arc<Mutex<Seen>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut known: BTreeMap<i64, (u64, Timestamp)> = BTreeMap::new();
    let path = format!("/api/v1/alerts?site={site}&limit=10000");
    loop {
        let r = http::request(&api, "GET", &path, Some(&token), None, HTTP_TIMEOUT).await;
        let at = now_ms();
        let parsed = r.and_then(|r| match r.status {
            200 => serde_json::from_str::<Value>(&r.body).map_err(|e| e.to_string()),
            s => Err(format!("GET /api/v1/alerts: {s}")),
        });
        {
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            match parsed {
                Ok(v) => {
                    let list = v.get("alerts").cloned().unwrap_or(Value::Null);
                    let alerts: Vec<StoredAlert> = serde_json::from_value(list).unwrap_or_default();
                    for a in alerts {
                        let now = (a.alert.count, a.alert.last_ts);
                        match known.insert(a.id, now) {
                            None => seen.alerts.push((at, true, a)),
                            Some(before) if before != now => seen.alerts.push((at, false, a)),
                            Some(_) => {}
                        }
                    }
                }
                Err(e) => *seen.errors.entry(e).or_default() += 1,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Polls Alertmanager, noting each of `site`'s incident alerts when it appears or changes.
async fn poll_alertmanager(
    am: BaseUrl,
    site: String,
    seen: Arc<Mutex<Seen>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let r = http::request(&am, "GET", "/api/v2/alerts", None, None, HTTP_TIMEOUT).await;
        let at = now_ms();
        let parsed = r.and_then(|r| match r.status {
            200 => serde_json::from_str::<Vec<Value>>(&r.body).map_err(|e| e.to_string()),
            s => Err(format!("GET Alertmanager /api/v2/alerts: {s}")),
        });
        {
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            match parsed {
                Ok(all) => {
                    for a in all {
                        let label = |k: &str| {
                            a.get("labels")
                                .and_then(|l| l.get(k))
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        };
                        if label("site").as_deref() != Some(site.as_str()) {
                            continue;
                        }
                        let Some(incident) = label("incident").and_then(|i| i.parse().ok()) else {
                            continue;
                        };
                        let fingerprint = a
                            .get("fingerprint")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                        let state = a
                            .get("annotations")
                            .map(Value::to_string)
                            .unwrap_or_default();
                        if known.get(&fingerprint) != Some(&state) {
                            known.insert(fingerprint, state);
                            let exercise = label("exercise").as_deref() == Some("true");
                            seen.am.push((at, incident, exercise));
                        }
                    }
                }
                Err(e) => *seen.errors.entry(e).or_default() += 1,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The `[shipper]` table of an agent configuration; the rest (capture, receivers) is not the
/// drill's business and is not checked.
fn drill_shipper(path: &std::path::Path) -> Result<ShipperConfig> {
    #[derive(serde::Deserialize)]
    struct AgentFile {
        shipper: Option<ShipperConfig>,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: AgentFile =
        toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let shipper = file
        .shipper
        .with_context(|| format!("{} has no [shipper] table", path.display()))?;
    shipper
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(shipper)
}

/// The API's view of the sites: (site, mode, learned events).
async fn sites(api: &BaseUrl, token: &str) -> Result<Vec<Value>> {
    let r = http::request(api, "GET", "/api/v1/sites", Some(token), None, HTTP_TIMEOUT)
        .await
        .map_err(anyhow::Error::msg)?;
    if r.status != 200 {
        bail!("GET /api/v1/sites: {} {}", r.status, r.body.trim());
    }
    let v: Value = serde_json::from_str(&r.body).context("GET /api/v1/sites")?;
    Ok(v.get("sites")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

async fn exercise(api: &BaseUrl, token: &str, site: &str, seconds: Option<f64>) -> Result<()> {
    let path = format!("/api/v1/sites/{site}/exercise");
    let body = seconds.map(|s| format!("{{\"seconds\": {s:.0}}}"));
    let method = if body.is_some() { "PUT" } else { "DELETE" };
    let r = http::request(
        api,
        method,
        &path,
        Some(token),
        body.as_deref(),
        HTTP_TIMEOUT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    if r.status != 200 {
        bail!("{method} {path}: {} {}", r.status, r.body.trim());
    }
    Ok(())
}

/// Runs the drill and builds its report.
pub async fn run(options: DrillOptions) -> Result<DrillReport> {
    let names = scenario_names(
        &options.scenarios,
        &[ScenarioClass::Attack, ScenarioClass::Fault],
    )?;
    let plant = short_learning_plant(options.seed, options.speed);
    plant.validate().context("plant configuration")?;
    let durations: Vec<Duration> = names
        .iter()
        .map(|n| scenario_duration(n, options.duration_seconds, f64::INFINITY))
        .collect();
    let planned_s = (durations.iter().map(Duration::as_secs_f64).sum::<f64>()
        + options.gap_seconds * names.len() as f64)
        / options.speed
        + options.wait_seconds;
    let am = options
        .alertmanager
        .as_deref()
        .map(BaseUrl::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;

    // The collector, the agent and the plant.
    let mut _guard = None;
    let (local, api, token, site, shipper, target) = match &options.target {
        Target::Local {
            data_dir,
            learn_seconds,
            metrics_port,
        } => {
            let (dir, guard) = data_folder(data_dir.clone())?;
            _guard = guard;
            let gap_event_s = options.gap_seconds / options.speed;
            let local = Local::start(LocalOptions {
                data_dir: dir,
                site: LOCAL_SITE.to_owned(),
                learning_period_seconds: learn_seconds / options.speed,
                incident_window_seconds: (gap_event_s * 0.8).max(0.5),
                metrics_port: *metrics_port,
                api_port: 0,
                alertmanager: options.alertmanager.iter().cloned().collect(),
                on_change: None,
            })
            .await?;
            let (api, token, site, shipper) = (
                local.api.clone(),
                local.token.clone(),
                local.site.clone(),
                local.shipper.clone(),
            );
            (Some(local), api, token, site, shipper, "local".to_owned())
        }
        Target::Deployment {
            api,
            token_file,
            agent_config,
            site,
        } => {
            let base = BaseUrl::parse(api).map_err(anyhow::Error::msg)?;
            let token = std::fs::read_to_string(token_file)
                .with_context(|| format!("reading {}", token_file.display()))?
                .trim()
                .to_owned();
            let shipper = drill_shipper(agent_config)?;
            let listed = sites(&base, &token).await?;
            let name = |s: &Value| {
                s.get("site")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let site = match site {
                Some(s) => s.clone(),
                None if listed.len() == 1 => listed.first().map(name).unwrap_or_default(),
                None => bail!(
                    "the collector has {} sites ({}): say which with --site",
                    listed.len(),
                    listed.iter().map(name).collect::<Vec<_>>().join(", ")
                ),
            };
            let Some(status) = listed.iter().find(|s| name(s) == site) else {
                bail!("the collector has no site {site:?}");
            };
            if status.get("mode").and_then(Value::as_str) != Some("detecting") {
                bail!(
                    "site {site} is still learning ({} events learned{}): a drill needs a \
                     detecting site. Wait for the learning period to end, or switch it: \
                     PUT /api/v1/sites/{site}/mode {{\"mode\": \"detecting\"}}",
                    status.get("learned_events").unwrap_or(&Value::Null),
                    status
                        .get("learning_until")
                        .and_then(Value::as_str)
                        .map_or(String::new(), |u| format!(", until {u}"))
                );
            }
            (None, base, token, site, shipper, api.clone())
        }
    };
    let sim = Simulation::start(plant, &shipper).await?;

    let learn_real = match &options.target {
        Target::Local { learn_seconds, .. } => learn_seconds / options.speed,
        Target::Deployment { .. } => 0.0,
    };
    let outcome = async {
        // A local deployment is all drill: marked before it learns, so that even a false
        // positive on normal traffic right after learning is exercise traffic.
        exercise(
            &api,
            &token,
            &site,
            Some(learn_real + planned_s + EXERCISE_MARGIN_S),
        )
        .await
        .context("marking the site as exercise")?;
        if let Some(local) = &local {
            let mut progress = Progress::new();
            let status = local
                .wait_detecting(Duration::from_secs_f64(learn_real * 3.0 + 30.0), |s| {
                    progress.show(s)
                })
                .await?;
            progress.done(&status);
        }
        let started = Timestamp::from_system_time(SystemTime::now());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stop_rx) = watch::channel(false);
        let mut pollers = vec![tokio::spawn(poll_alerts(
            api.clone(),
            token.clone(),
            site.clone(),
            Arc::clone(&seen),
            stop_rx.clone(),
        ))];
        if let Some(am) = &am {
            pollers.push(tokio::spawn(poll_alertmanager(
                am.clone(),
                site.clone(),
                Arc::clone(&seen),
                stop_rx,
            )));
        }
        let mut records = Vec::new();
        for (name, duration) in names.iter().zip(&durations) {
            eprintln!(
                "drill: {name} ({:.1} s)",
                duration.as_secs_f64() / options.speed
            );
            records.push(sim.plant.run_scenario(name, Some(*duration)).await?);
            sim.plant
                .idle(Duration::from_secs_f64(options.gap_seconds))
                .await;
        }
        // Until every detected scenario's incident is in Alertmanager, or the wait is over.
        let wait_end = tokio::time::Instant::now() + Duration::from_secs_f64(options.wait_seconds);
        loop {
            let done = {
                let s = seen.lock().unwrap_or_else(PoisonError::into_inner);
                let outcomes = attribute(&records, &s, am.is_some());
                outcomes
                    .iter()
                    .all(|o| o.detected && o.alertmanager.as_ref().is_none_or(|a| a.reached))
            };
            if done || tokio::time::Instant::now() >= wait_end {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        anyhow::Ok((started, records, seen, stop, pollers))
    }
    .await;

    // The plant stops and its last events are delivered before the exercise ends, so that
    // nothing the drill caused is filed as real.
    let report = sim.stop().await;
    let (started, records, seen, stop, pollers) = match outcome {
        Ok(o) => o,
        Err(e) => {
            let _ = exercise(&api, &token, &site, None).await;
            if let Some(local) = local {
                let _ = local.shutdown().await;
            }
            return Err(e);
        }
    };
    tokio::time::sleep(POLL * 3).await;
    let _ = stop.send(true);
    for p in pollers {
        let _ = p.await;
    }
    let ended = exercise(&api, &token, &site, None)
        .await
        .context("ending the exercise");
    if let Some(local) = local {
        local.shutdown().await?;
    }
    ended?;
    let report = report?;
    if let Err(e) = &report.shipped {
        tracing::warn!(error = %e, "the shipper did not stop cleanly");
    }
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    for (e, n) in &seen.errors {
        tracing::warn!(error = %e, times = n, "polling failed");
    }
    let scenarios = attribute(&records, &seen, am.is_some());
    let first = records.first().map(|r| r.start.as_micros());
    let outside = seen
        .alerts
        .iter()
        .filter(|(_, new, a)| first.is_none_or(|f| placed_at(*new, a).as_micros() < f))
        .map(|(at, new, a)| alert_seen(*at, *new, a, false))
        .collect();
    let outside = one_per_alert(outside);
    Ok(DrillReport {
        site,
        target,
        alertmanager: options.alertmanager.clone(),
        speed: options.speed,
        started,
        ended: Timestamp::from_system_time(SystemTime::now()),
        total: scenarios.len(),
        detected: scenarios.iter().filter(|s| s.detected).count(),
        reached_alertmanager: scenarios
            .iter()
            .filter(|s| {
                s.alertmanager
                    .as_ref()
                    .is_some_and(|a| a.reached && a.exercise)
            })
            .count(),
        scenarios,
        outside,
    })
}

/// The event time that places an alert in a scenario's window.
fn placed_at(new: bool, a: &StoredAlert) -> Timestamp {
    if new { a.alert.ts } else { a.alert.last_ts }
}

fn alert_seen(observed_ms: u64, new: bool, a: &StoredAlert, relevant: bool) -> AlertSeen {
    AlertSeen {
        id: a.id,
        kind: format!("{}/{}", a.alert.detector.as_str(), a.alert.kind),
        severity: a.alert.severity.as_str().to_owned(),
        summary: a.alert.summary.clone(),
        src_ip: a.alert.src_ip,
        dst_ip: a.alert.dst_ip,
        incident: a.incident_id,
        new,
        relevant,
        detected_unix_ms: if new { a.received_unix_ms } else { observed_ms },
        event_ts: placed_at(new, a),
    }
}

/// One entry per alert (the poll sees an alert that keeps growing many times): the first
/// sighting, tied if any sighting was, detected at the earliest tied sighting.
fn one_per_alert(seen: Vec<AlertSeen>) -> Vec<AlertSeen> {
    let mut out: Vec<AlertSeen> = Vec::new();
    for a in seen {
        match out.iter_mut().find(|o| o.id == a.id) {
            None => out.push(a),
            Some(o) if a.relevant && !o.relevant => {
                o.relevant = true;
                o.detected_unix_ms = a.detected_unix_ms;
            }
            Some(o) => o.detected_unix_ms = o.detected_unix_ms.min(a.detected_unix_ms),
        }
    }
    out
}

/// Each scenario's alerts, incidents and Alertmanager arrivals, from what the pollers saw.
fn attribute(records: &[ScenarioRecord], seen: &Seen, with_am: bool) -> Vec<ScenarioOutcome> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let from = r.start.as_micros();
        let to = records
            .get(i + 1)
            .map_or(i64::MAX, |next| next.start.as_micros());
        let hosts: BTreeSet<IpAddr> = r.sources.iter().chain(&r.targets).copied().collect();
        let alerts: Vec<AlertSeen> = seen
            .alerts
            .iter()
            .filter(|(_, new, a)| (from..to).contains(&placed_at(*new, a).as_micros()))
            .map(|(at, new, a)| {
                let kind = format!("{}/{}", a.alert.detector.as_str(), a.alert.kind);
                let asset = a
                    .alert
                    .asset
                    .as_deref()
                    .and_then(|s| s.split('/').next())
                    .and_then(|s| s.parse::<IpAddr>().ok());
                let named: Vec<IpAddr> = [a.alert.src_ip, a.alert.dst_ip, asset]
                    .into_iter()
                    .flatten()
                    .collect();
                // Tied to the scenario: a kind it should raise, about its hosts. An alert
                // that only grew must name a host that acted (a process value that had been
                // drifting on a target since before is not this scenario's doing).
                let acted = named.iter().any(|ip| r.sources.contains(ip));
                let involved = named.iter().any(|ip| hosts.contains(ip));
                let tied = r.expected.contains(&kind) && if *new { involved } else { acted };
                alert_seen(*at, *new, a, tied)
            })
            .collect();
        let alerts = one_per_alert(alerts);
        let relevant: Vec<&AlertSeen> = alerts.iter().filter(|a| a.relevant).collect();
        let start_ms = ms_of(r.start);
        let detected_ms = relevant.iter().map(|a| a.detected_unix_ms).min();
        let incidents: BTreeSet<i64> = relevant.iter().filter_map(|a| a.incident).collect();
        let raised: BTreeSet<&str> = alerts.iter().map(|a| a.kind.as_str()).collect();
        let alertmanager = with_am.then(|| {
            let arrivals: Vec<&(u64, i64, bool)> = seen
                .am
                .iter()
                .filter(|(_, inc, _)| incidents.contains(inc))
                .collect();
            let after = detected_ms.map_or(u64::MAX, |d| d.saturating_sub(1000));
            let first = arrivals
                .iter()
                .map(|(at, ..)| *at)
                .filter(|at| *at >= after)
                .min();
            AlertmanagerSeen {
                reached: !arrivals.is_empty(),
                exercise: !arrivals.is_empty() && arrivals.iter().all(|(.., ex)| *ex),
                seen_unix_ms: first,
                time_to_alertmanager_ms: first.map(|f| f.saturating_sub(start_ms)),
                note: (!arrivals.is_empty() && first.is_none()).then(|| {
                    "its incident was in Alertmanager before the scenario and did not change"
                        .to_owned()
                }),
            }
        });
        out.push(ScenarioOutcome {
            name: r.name.clone(),
            class: r.class,
            technique: r.technique.clone(),
            start: r.start,
            end: r.end,
            expected: r.expected.clone(),
            detected: detected_ms.is_some(),
            time_to_detect_ms: detected_ms.map(|d| d.saturating_sub(start_ms)),
            incidents: incidents.into_iter().collect(),
            expected_not_raised: r
                .expected
                .iter()
                .filter(|k| !raised.contains(k.as_str()))
                .cloned()
                .collect(),
            alerts,
            alertmanager,
        });
    }
    out
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or_else(|| "–".to_owned(), |m| format!("{:.1} s", m as f64 / 1000.0))
}

/// The report as Markdown.
pub fn markdown(r: &DrillReport) -> String {
    let mut md = String::new();
    let mut line = |s: String| {
        md.push_str(&s);
        md.push('\n');
    };
    line("# Mamori drill report".into());
    line(String::new());
    line(format!(
        "Site `{}`, collector {}, Alertmanager {}. From {} to {}, plant speed {}.",
        r.site,
        if r.target == "local" {
            "in-process (local drill)".to_owned()
        } else {
            r.target.clone()
        },
        r.alertmanager.as_deref().unwrap_or("not checked"),
        r.started,
        r.ended,
        r.speed
    ));
    line(String::new());
    line(format!(
        "**{} of {} scenarios detected; {} reached Alertmanager labelled `exercise=\"true\"`.**",
        r.detected, r.total, r.reached_alertmanager
    ));
    line(String::new());
    line("| Scenario | ATT&CK | Detected | Time to detect | Incidents | Alertmanager | Time to Alertmanager | Alerts |".into());
    line("|---|---|---|---|---|---|---|---|".into());
    for s in &r.scenarios {
        let am = match &s.alertmanager {
            None => "not checked".to_owned(),
            Some(a) if a.reached && a.exercise => "yes, exercise".to_owned(),
            Some(a) if a.reached => "yes, NOT labelled exercise".to_owned(),
            Some(_) => "no".to_owned(),
        };
        let incidents: Vec<String> = s.incidents.iter().map(|i| format!("#{i}")).collect();
        line(format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            s.technique,
            if s.detected { "yes" } else { "**no**" },
            secs(s.time_to_detect_ms),
            if incidents.is_empty() {
                "–".to_owned()
            } else {
                incidents.join(", ")
            },
            am,
            secs(
                s.alertmanager
                    .as_ref()
                    .and_then(|a| a.time_to_alertmanager_ms)
            ),
            s.alerts.len()
        ));
    }
    line(String::new());
    line("Time to detect: from the scenario's start to the collector storing its first alert (or, for an alert raised earlier that grew, to the drill seeing it grow). Time to Alertmanager: from the scenario's start to Alertmanager listing the incident's alert, new or changed.".into());
    for s in &r.scenarios {
        line(String::new());
        line(format!("## {} ({})", s.name, s.technique));
        line(String::new());
        line(format!("From {} to {}.", s.start, s.end));
        if let Some(note) = s.alertmanager.as_ref().and_then(|a| a.note.as_deref()) {
            line(format!("Alertmanager: {note}."));
        }
        if !s.expected_not_raised.is_empty() {
            line(format!(
                "Expected but not raised: {}.",
                s.expected_not_raised
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        line(String::new());
        let (tied, other): (Vec<&AlertSeen>, Vec<&AlertSeen>) =
            s.alerts.iter().partition(|a| a.relevant);
        if tied.is_empty() {
            line("No alert tied to the scenario.".into());
        }
        for a in tied {
            line(alert_line(a, Some(ms_of(s.start))));
        }
        if !other.is_empty() {
            line(String::new());
            line(format!(
                "Also in its window, not tied to it ({}):",
                other.len()
            ));
            line(String::new());
            for a in other {
                line(alert_line(a, None));
            }
        }
    }
    if !r.outside.is_empty() {
        line(String::new());
        line("## Alerts before the first scenario".into());
        line(String::new());
        line(
            "Raised on normal traffic after learning: false positives, or a baseline too short."
                .into(),
        );
        line(String::new());
        for a in &r.outside {
            line(alert_line(a, None));
        }
    }
    md
}

/// One alert; with the scenario's start (ms), when it was detected after it.
fn alert_line(a: &AlertSeen, start_ms: Option<u64>) -> String {
    format!(
        "- `{}` ({}{}{}): {}{}",
        a.kind,
        a.severity,
        if a.new { "" } else { ", grew" },
        a.incident
            .map_or(String::new(), |i| format!(", incident #{i}")),
        a.summary,
        start_ms.map_or(String::new(), |s| format!(
            " (after {})",
            secs(Some(a.detected_unix_ms.saturating_sub(s)))
        ))
    )
}
