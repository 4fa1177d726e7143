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
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mamori_sim::LIBRARY;
use mamori_sim::drill::{DrillOptions, Target, markdown, run};
use mamori_sim::http::{BaseUrl, request};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const PROMETHEUS: &str = "/usr/bin/prometheus";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Alertmanager on loopback, ready.
async fn alertmanager(dir: &Path) -> (Killed, BaseUrl) {
    std::fs::write(
        dir.join("am.yml"),
        "route:\n  receiver: soc\nreceivers:\n  - name: soc\n",
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Killed(
        Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", dir.join("am.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = BaseUrl::parse(&format!("http://{addr}")).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let r = request(&url, "GET", "/-/ready", None, None, Duration::from_secs(2)).await;
        if r.is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < end, "Alertmanager not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, url)
}

/// A real Prometheus on loopback scraping `target` every second, ready.
async fn prometheus(dir: &Path, target: SocketAddr) -> (Killed, BaseUrl) {
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: mamori-collector\n    static_configs:\n      \
             - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Killed(
        Command::new(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = BaseUrl::parse(&format!("http://{addr}")).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r = request(&url, "GET", "/-/ready", None, None, Duration::from_secs(2)).await;
        if r.is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < end, "Prometheus not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, url)
}

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
    if !Path::new(ALERTMANAGER).exists() {
        if std::env::var("MAMORI_REQUIRE_ALERTMANAGER").as_deref() == Ok("1") {
            panic!("MAMORI_REQUIRE_ALERTMANAGER=1 but {ALERTMANAGER} is missing");
        }
        println!("skipping: {ALERTMANAGER} is missing");
        return;
    }
    if !Path::new(PROMETHEUS).exists() {
        if std::env::var("MAMORI_REQUIRE_PROMETHEUS").as_deref() == Ok("1") {
            panic!("MAMORI_REQUIRE_PROMETHEUS=1 but {PROMETHEUS} is missing");
        }
        println!("skipping: {PROMETHEUS} is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_am, am) = alertmanager(dir.path()).await;
    let metrics_port = free_port();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let (_prom, prom) = prometheus(dir.path(), metrics).await;
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
