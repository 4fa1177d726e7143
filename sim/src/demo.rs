//! `mamori-sim demo`: the whole of Mamori on one machine, with nothing but Rust. A data
//! folder, a throwaway PKI and API token, a collector (SQLite, API, `/metrics` on loopback),
//! the plant seen through the tap, the agent's pipeline and shipper over mutual TLS; the site
//! learns, then detects while the attack and fault scenarios run one after another, and each
//! incident is printed as it opens. It runs on (the plant keeps polling) until Ctrl-C, SIGTERM
//! or the caller's stop, or ends after the last scenario when asked to; either way the
//! temporary data folder is removed.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mamori_collector::detection::{Mode, OnChange, SiteStatus};
use mamori_collector::incident::Incident;
use mamori_collector::incidents::{Change, ChangeKind};
use tokio::sync::mpsc;

use crate::local::{Local, LocalOptions, Simulation, short_learning_plant};
use crate::scenario::{self, ScenarioClass};

/// The demo's site.
pub const SITE: &str = "demo-plant";

/// What the demo does; durations are plant seconds.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where the database, certificates, token and spool go; a temporary folder (removed at
    /// the end) when `None`.
    pub data_dir: Option<PathBuf>,
    /// Plant seconds per real second.
    pub speed: f64,
    pub learn_seconds: f64,
    /// Scenario names in order; empty: every scenario of the library (attacks and faults).
    pub scenarios: Vec<String>,
    /// Every scenario's duration; `None`: its own, at most [`MAX_DEFAULT_DURATION_S`].
    pub duration_seconds: Option<f64>,
    /// Normal traffic after each scenario.
    pub gap_seconds: f64,
    /// Normal traffic watched after learning, before the first scenario (plant seconds): an
    /// incident opened then is a false alarm.
    pub benign_seconds: f64,
    /// Stop once the scenarios have run (tests, CI) instead of running until stopped.
    pub exit_after_attacks: bool,
    pub seed: u64,
    pub metrics_port: u16,
    pub api_port: u16,
}

/// A scenario's default duration in the demo is capped so that the demo stays short.
pub const MAX_DEFAULT_DURATION_S: f64 = 30.0;

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            data_dir: None,
            speed: 1.0,
            learn_seconds: 60.0,
            scenarios: Vec::new(),
            duration_seconds: None,
            gap_seconds: 10.0,
            exit_after_attacks: false,
            benign_seconds: 0.0,
            seed: 1,
            metrics_port: 9103,
            api_port: 9104,
        }
    }
}

/// What the demo did.
#[derive(Clone, Debug)]
pub struct DemoOutcome {
    /// Incidents opened while learning or watching normal traffic: false alarms.
    pub incidents_before_attacks: usize,
    pub incidents_opened: u64,
    pub first_incident: Option<i64>,
    pub scenarios_run: usize,
    pub events_shipped: u64,
    /// The first incident opened once the attacks began, and real seconds from their start
    /// to it.
    pub first_incident_after_s: Option<f64>,
}

/// The names to run: `names`, or every attack of the library, or none for `none`; unknown
/// names are an error.
pub fn scenario_names(names: &[String], classes: &[ScenarioClass]) -> Result<Vec<String>> {
    if names.len() == 1 && names.first().is_some_and(|n| n == "none") {
        return Ok(Vec::new());
    }
    if names.is_empty() {
        return Ok(scenario::LIBRARY
            .iter()
            .filter(|s| classes.contains(&s.class))
            .map(|s| s.name.to_owned())
            .collect());
    }
    for n in names {
        if scenario::find(n).is_none() {
            bail!("unknown scenario {n:?} (see `mamori-sim list`)");
        }
    }
    Ok(names.to_vec())
}

/// A scenario's plant duration: the override, or its own capped at `cap`.
pub fn scenario_duration(name: &str, over: Option<f64>, cap: f64) -> Duration {
    let own = scenario::find(name).map_or(cap, |s| s.default_duration_s as f64);
    let secs = over.unwrap_or(own.min(cap));
    Duration::try_from_secs_f64(secs.max(0.1)).unwrap_or(Duration::from_secs(1))
}

/// A data folder: the given one, or a temporary one kept alive by the guard.
pub fn data_folder(dir: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => Ok((d, None)),
        None => {
            let t = tempfile::Builder::new()
                .prefix("mamori-demo-")
                .tempdir()
                .context("creating a temporary data folder")?;
            Ok((t.path().to_owned(), Some(t)))
        }
    }
}

/// One line about an incident that opened or escalated.
pub fn incident_line(i: &Incident, what: ChangeKind) -> String {
    let detectors: Vec<&str> = i.detectors.iter().map(String::as_str).collect();
    format!(
        "incident #{} {} [{}] {}: {} ({} alert(s): {})",
        i.id,
        what.as_str(),
        i.severity.as_str(),
        i.asset.as_deref().unwrap_or("site-wide"),
        i.title,
        i.alert_count,
        detectors.join(", ")
    )
}

/// Shows the learning phase on stderr: one updating line on a terminal, a line now and then
/// otherwise.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    last_line: Option<std::time::Instant>,
    shown: bool,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last_line: None,
            shown: false,
        }
    }

    pub fn show(&mut self, s: &SiteStatus) {
        if s.mode != Mode::Learning {
            return;
        }
        let left = s.learning_until.map(|until| {
            let now = mamori_models::Timestamp::from_system_time(std::time::SystemTime::now());
            (until.as_micros() - now.as_micros()).max(0) as f64 / 1e6
        });
        let left = left.map_or_else(
            || "waiting for the first event".to_owned(),
            |l| format!("{l:.0} s left"),
        );
        let line = format!(
            "learning the plant's normal traffic: {} events learned, {left}",
            s.learned_events
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            self.shown = true;
        } else if self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            let _ = writeln!(err, "{line}");
            self.last_line = Some(std::time::Instant::now());
        }
    }

    /// Ends the updating line.
    pub fn done(&mut self, s: &SiteStatus) {
        let mut err = std::io::stderr().lock();
        if self.shown {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(
            err,
            "learning over: baseline of {} events; detecting",
            s.learned_events
        );
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the demo until the scenarios are done (`exit_after_attacks`) or `stop` resolves.
pub async fn run(options: DemoOptions, stop: impl Future<Output = ()>) -> Result<DemoOutcome> {
    let names = scenario_names(
        &options.scenarios,
        &[ScenarioClass::Attack, ScenarioClass::Fault],
    )?;
    let plant = short_learning_plant(options.seed, options.speed);
    plant.validate().context("plant configuration")?;
    let (data_dir, _guard) = data_folder(options.data_dir.clone())?;

    // Incidents as they open: the collector's hook hands them to a printing task.
    // Escalations too: an attack whose alerts join an open incident raises its severity.
    let (tx, mut rx) = mpsc::unbounded_channel::<(ChangeKind, Incident)>();
    let hook: OnChange = Arc::new(move |c: &Change| {
        if matches!(c.what, ChangeKind::Opened | ChangeKind::Escalated) {
            let _ = tx.send((c.what, c.incident.clone()));
        }
    });
    let opened = Arc::new(AtomicU64::new(0));
    let openings: Arc<std::sync::Mutex<Vec<(i64, std::time::Instant)>>> = Arc::default();
    let printer = {
        let (opened, openings) = (Arc::clone(&opened), Arc::clone(&openings));
        tokio::spawn(async move {
            while let Some((what, i)) = rx.recv().await {
                if what != ChangeKind::Opened {
                    println!("  {}", incident_line(&i, what));
                    continue;
                }
                opened.fetch_add(1, Ordering::Relaxed);
                openings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((i.id, std::time::Instant::now()));
                println!("  {}", incident_line(&i, what));
            }
        })
    };

    let gap_event_s = options.gap_seconds / options.speed;
    let local = Local::start(LocalOptions {
        data_dir: data_dir.clone(),
        site: SITE.to_owned(),
        learning_period_seconds: options.learn_seconds / options.speed,
        // Each scenario opens its own incidents: shorter than the quiet gap between two.
        incident_window_seconds: (gap_event_s * 0.8).max(0.5),
        metrics_port: options.metrics_port,
        api_port: options.api_port,
        alertmanager: Vec::new(),
        on_change: Some(hook),
    })
    .await?;
    println!("Mamori demo: everything in this process, on loopback");
    println!(
        "  data folder   {}{}",
        data_dir.display(),
        if options.data_dir.is_none() {
            " (temporary: removed at exit; --data-dir keeps it)"
        } else {
            ""
        }
    );
    println!(
        "  collector     intake {} (mutual TLS, throwaway CA in pki/)",
        local.collector.local_addr()
    );
    println!("  API           {}/api/v1  (token in api.token)", local.api);
    if let Some(m) = local.metrics {
        println!("  metrics       http://{m}/metrics");
    }
    let sim = Simulation::start(plant, &local.shipper).await?;

    let mut started: Option<std::time::Instant> = None;
    let mut benign_done: Option<std::time::Instant> = None;
    let mut scenarios_run = 0usize;
    let work = async {
        let learn_real = options.learn_seconds / options.speed;
        println!(
            "learning for {} s of plant time ({learn_real:.0} s at speed {})",
            options.learn_seconds, options.speed
        );
        let mut progress = Progress::new();
        let status = local
            .wait_detecting(Duration::from_secs_f64(learn_real * 3.0 + 30.0), |s| {
                progress.show(s)
            })
            .await?;
        progress.done(&status);
        // Printed while it is true: the API and metrics serve from here until the demo ends.
        where_to_look(&local, &openings);
        if options.benign_seconds > 0.0 {
            println!(
                "watching normal traffic for {} s of plant time ({:.0} s)",
                options.benign_seconds,
                options.benign_seconds / options.speed
            );
            sim.plant
                .idle(Duration::from_secs_f64(options.benign_seconds))
                .await;
            let before = opened.load(Ordering::Relaxed);
            println!("  {before} incident(s) opened on normal traffic");
        }
        benign_done.get_or_insert_with(std::time::Instant::now);
        println!("running {} scenario(s) (attacks and faults)", names.len());
        for name in &names {
            let spec = scenario::find(name).context("scenario")?;
            let duration =
                scenario_duration(name, options.duration_seconds, MAX_DEFAULT_DURATION_S);
            println!(
                "▶ {name} ({} {}, {:.0} s): {}",
                spec.technique,
                spec.technique_name,
                duration.as_secs_f64(),
                spec.description
            );
            started.get_or_insert_with(std::time::Instant::now);
            sim.plant.run_scenario(name, Some(duration)).await?;
            scenarios_run += 1;
            sim.plant
                .idle(Duration::from_secs_f64(options.gap_seconds.max(0.0)))
                .await;
        }
        if !options.exit_after_attacks {
            where_to_look(&local, &openings);
            println!("the plant keeps running; Ctrl-C to stop");
            std::future::pending::<()>().await;
        }
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        r = work => r,
        () = stop => {
            eprintln!("\nstopping");
            Ok(())
        }
    };
    let report = sim.stop().await;
    let shut = local.shutdown().await;
    let _ = printer.await;
    outcome?;
    let report = report?;
    let shipped = report
        .shipped
        .map_err(anyhow::Error::msg)
        .context("flushing the shipper")?;
    shut?;
    println!(
        "stopped: {} events shipped in {} batches, {} incident(s) opened",
        report.events_total,
        shipped.batches_acked_total,
        opened.load(Ordering::Relaxed)
    );
    // The addresses printed earlier no longer answer: say so, and how to keep them.
    println!(
        "the API and /metrics stopped with the demo{}; run it without --exit-after-attacks to \
         explore them while the plant runs",
        if options.data_dir.is_none() {
            " and the temporary data folder is removed (--data-dir keeps the database)"
        } else {
            ""
        }
    );
    let openings = openings
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    // The first incident of the attacks (one opened before is a false positive of learning).
    let first = started.and_then(|s| openings.iter().find(|(_, at)| *at >= s).copied());
    let incidents_before_attacks = openings
        .iter()
        .filter(|(_, at)| benign_done.is_none_or(|b| *at < b))
        .count();
    Ok(DemoOutcome {
        incidents_before_attacks,
        incidents_opened: opened.load(Ordering::Relaxed),
        first_incident: first.map(|f| f.0),
        scenarios_run,
        events_shipped: report.events_total,
        first_incident_after_s: match (first, started) {
            (Some((_, at)), Some(s)) => Some(at.saturating_duration_since(s).as_secs_f64()),
            _ => None,
        },
    })
}

fn where_to_look(local: &Local, openings: &std::sync::Mutex<Vec<(i64, std::time::Instant)>>) {
    let api = &local.api;
    let token = &local.token;
    let first = openings
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .first()
        .map(|f| f.0);
    println!();
    println!("where to look:");
    println!("  API       {api}/api/v1   token {token}");
    println!("  incidents curl -s -H 'Authorization: Bearer {token}' {api}/api/v1/incidents");
    match first {
        Some(id) => println!(
            "  report    curl -s -H 'Authorization: Bearer {token}' {api}/api/v1/incidents/{id}/report.md"
        ),
        None => println!("  report    (no incident yet) {api}/api/v1/incidents/ID/report.md"),
    }
    println!("  sites     curl -s -H 'Authorization: Bearer {token}' {api}/api/v1/sites");
    if let Some(m) = local.metrics {
        println!("  metrics   curl -s http://{m}/metrics | grep ^mamori_");
    }
}
