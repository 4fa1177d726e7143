//! The demo, in-process and fast: it learns, watches five minutes of normal traffic that must
//! open nothing, runs two attacks, opens at least one incident and stops cleanly (shipper flushed, collector shut down) when told to exit after them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mamori_sim::demo::{DemoOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_opens_an_incident_and_exits_after_the_attacks() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(
        DemoOptions {
            data_dir: Some(dir.path().join("demo")),
            // Ten times real time: at twenty, polls 50 ms apart are at the mercy of a loaded
            // machine's scheduler, and its jitter is no plant's.
            speed: 10.0,
            learn_seconds: 600.0,
            scenarios: vec!["recon_sweep".into(), "function_code_scan".into()],
            duration_seconds: Some(10.0),
            gap_seconds: 10.0,
            // Five minutes of normal traffic first (after the demo's ten of learning):
            // nothing may open there.
            benign_seconds: 300.0,
            exit_after_attacks: true,
            seed: 3,
            // Any free ports: tests run beside a developer's demo.
            metrics_port: 0,
            api_port: 0,
        },
        std::future::pending(),
    )
    .await
    .unwrap();
    println!("{outcome:?}");
    assert_eq!(outcome.scenarios_run, 2);
    assert_eq!(outcome.incidents_before_attacks, 0, "{outcome:?}");
    assert!(outcome.incidents_opened >= 1, "{outcome:?}");
    assert!(outcome.events_shipped > 100, "{outcome:?}");
    let after = outcome.first_incident_after_s.unwrap();
    assert!(
        after < 60.0,
        "first incident {after} s after the attacks began"
    );
    assert!(dir.path().join("demo/collector.db").exists());
}
