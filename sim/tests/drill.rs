//! A local drill of the whole scenario library, fifteen times faster than real time, with a
//! real Prometheus Alertmanager: every scenario must be detected (a detector it names fired
//! about its hosts, with a time to detect) and reach Alertmanager labelled `exercise="true"`.
//!
//! Needs `prometheus-alertmanager`: skipped with the reason when absent, mandatory under
//! `MAMORI_REQUIRE_ALERTMANAGER=1` (which CI sets).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mamori_sim::LIBRARY;
use mamori_sim::drill::{DrillOptions, Target, markdown, run};
use mamori_sim::http::{BaseUrl, request};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_drill_detects_every_scenario_and_alertmanager_gets_exercise_alerts() {
    if !Path::new(ALERTMANAGER).exists() {
        if std::env::var("MAMORI_REQUIRE_ALERTMANAGER").as_deref() == Ok("1") {
            panic!("MAMORI_REQUIRE_ALERTMANAGER=1 but {ALERTMANAGER} is missing");
        }
        println!("skipping: {ALERTMANAGER} is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_am, am) = alertmanager(dir.path()).await;
    let started = Instant::now();
    let report = run(DrillOptions {
        target: Target::Local {
            data_dir: Some(dir.path().join("drill")),
            learn_seconds: 150.0,
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
}
