//! The whole chain, end to end: simulator → agent → collector → Prometheus scrape → alert in
//! Alertmanager. A local drill of the whole scenario library, fifteen times faster than real
//! time: every scenario must be detected (a detector it names fired about its hosts, with a
//! time to detect) and reach a real Prometheus Alertmanager labelled `exercise="true"`, and a
//! real Prometheus scraping the collector meanwhile must hold its incident and alert series.
//!
//! Needs `prometheus-alertmanager` and `prometheus`: skipped with the reason when absent,
//! mandatory under `MAMORI_REQUIRE_ALERTMANAGER=1` / `MAMORI_REQUIRE_PROMETHEUS=1` (which CI
//! sets).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mamori_sim::LIBRARY;
use mamori_sim::drill::{DrillOptions, Target, markdown, run};
use mamori_sim::http::{BaseUrl, request};
use mamori_tests::services;

/// The largest value Prometheus holds for `expr` over the last ten minutes.
async fn max_over_time(prom: &BaseUrl, expr: &str) -> Option<f64> {
    let query = format!("max(max_over_time({expr}[10m]))");
    let path = format!(
        "/api/v1/query?query={}",
        query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    let r = request(prom, "GET", &path, None, None, Duration::from_secs(5))
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_drill_detects_every_scenario_and_alertmanager_gets_exercise_alerts() {
    if !(services::installed(services::ALERTMANAGER, "MAMORI_REQUIRE_ALERTMANAGER")
        && services::installed(services::PROMETHEUS, "MAMORI_REQUIRE_PROMETHEUS"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = services::free_port().unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let base = dir.path().to_owned();
    let (alertmanager, prometheus) = tokio::task::spawn_blocking(move || {
        (
            services::alertmanager(&base).unwrap(),
            services::prometheus(&base, metrics).unwrap(),
        )
    })
    .await
    .unwrap();
    let am = BaseUrl::parse(&format!("http://{}", alertmanager.addr)).unwrap();
    let prom = BaseUrl::parse(&format!("http://{}", prometheus.addr)).unwrap();
    let started = Instant::now();
    let report = run(DrillOptions {
        target: Target::Local {
            data_dir: Some(dir.path().join("drill")),
            learn_seconds: 150.0,
            metrics_port,
        },
        alertmanager: Some(am.to_string()),
        scenarios: Vec::new(),
        speed: 15.0,
        duration_seconds: Some(12.0),
        gap_seconds: 12.0,
        wait_seconds: 15.0,
        seed: 7,
    })
    .await
    .unwrap();
    let took = started.elapsed();
    println!("{}", markdown(&report));
    println!("drill took {:.1} s", took.as_secs_f64());

    assert_eq!(report.total, LIBRARY.len());
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    let library: Vec<&str> = LIBRARY.iter().map(|s| s.name).collect();
    assert_eq!(names, library);
    let mut failures = Vec::new();
    for s in &report.scenarios {
        if !s.detected || s.time_to_detect_ms.is_none() {
            failures.push(format!("{}: not detected", s.name));
            continue;
        }
        let am = s.alertmanager.as_ref().unwrap();
        if !am.reached {
            failures.push(format!(
                "{}: incidents {:?} never reached Alertmanager",
                s.name, s.incidents
            ));
        } else if !am.exercise {
            failures.push(format!(
                "{}: reached Alertmanager without exercise=\"true\"",
                s.name
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(report.detected, LIBRARY.len());
    assert_eq!(report.reached_alertmanager, LIBRARY.len());

    // Prometheus scraped the collector through the drill: its incidents and alerts are there.
    let opened = max_over_time(&prom, "mamori_incidents_opened_total").await;
    let alerts = max_over_time(&prom, "mamori_alerts_total").await;
    let learning = max_over_time(&prom, "mamori_learning").await;
    println!("Prometheus: incidents opened {opened:?}, alerts (largest series) {alerts:?}");
    assert!(opened.is_some_and(|n| n >= 1.0), "{opened:?}");
    assert!(alerts.is_some_and(|n| n >= 1.0), "{alerts:?}");
    assert_eq!(learning, Some(1.0), "the learning phase was scraped too");
}
