//! `deploy/make-certs.sh` makes certificates that work: an agent shipping with its own and a
//! collector serving with its own, both trusting the script's CA, deliver events end to end.
//! Needs openssl: skipped with a reason when absent, mandatory with `MAMORI_REQUIRE_OPENSSL=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mamori_agent::ship::{Shipper, ShipperConfig};
use mamori_collector::config::CollectorConfig;
use mamori_collector::intake::Collector;
use mamori_collector::store::sqlite::SqliteStore;
use mamori_models::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_the_script_carry_events_from_agent_to_collector() {
    if Command::new("openssl").arg("version").output().is_err() {
        if std::env::var_os("MAMORI_REQUIRE_OPENSSL").is_some_and(|v| v == "1") {
            panic!("MAMORI_REQUIRE_OPENSSL=1 but openssl is not installed");
        }
        eprintln!("skipped: openssl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/make-certs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&pki)
        .args(["collector.plant.example", "agent-1.plant.example"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let db = dir.path().join("collector.db");
    let config = CollectorConfig::parse(&format!(
        "[intake]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{p}/collector.plant.example.crt\"\nkey_file = \"{p}/collector.plant.example.key\"\nclient_ca_file = \"{p}/ca.crt\"\n\n[[agents]]\nid = \"agent-1.plant.example\"\nsite = \"plant-north\"\n\n[storage]\nsqlite_path = \"{db}\"\nevent_retention_days = 0\n",
        p = pki.display(),
        db = db.display()
    ))
    .unwrap();
    config.validate(Path::new("collector.toml")).unwrap();
    let collector = Collector::start(&config).await.unwrap();

    let mut ship = ShipperConfig::new(
        "agent-1.plant.example",
        collector.local_addr().to_string(),
        "collector.plant.example",
        pki.join("ca.crt"),
        pki.join("agent-1.plant.example.crt"),
        pki.join("agent-1.plant.example.key"),
        dir.path().join("spool"),
    );
    ship.max_batch_events = 5;
    ship.flush_interval_seconds = 0.05;
    ship.validate().unwrap();
    let shipper = Shipper::start(&ship).unwrap();
    for i in 0..20u64 {
        let e: Event = serde_json::from_value(serde_json::json!({
            "type": "flow", "ts": "2026-01-01T00:00:00.000000Z", "end_ts": "2026-01-01T00:00:01.000000Z",
            "transport": "tcp", "src_ip": "10.0.0.1", "src_port": 40000, "dst_ip": "10.0.0.2",
            "dst_port": 502, "service": "modbus", "orig_pkts": i, "orig_bytes": 0, "resp_pkts": 0,
            "resp_bytes": 0, "state": "SF", "reason": "closed"
        }))
        .unwrap();
        shipper.push(&e).await.unwrap();
    }
    let stats = shipper.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(stats.events_acked_total, 20, "{stats:?}");
    let start = Instant::now();
    loop {
        let n = SqliteStore::open(&db)
            .unwrap()
            .events_of("agent-1.plant.example")
            .unwrap()
            .len();
        if n == 20 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{n} of 20 stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    collector.shutdown().await.unwrap();
}
