//! Online detection in a running collector, fed by the real agent `Shipper` on loopback with a
//! test PKI (rcgen): a site learns a regular HMI poll of one PLC for a short learning period
//! (event time), stores its baseline and detects; a write from a new host is stored as an
//! alert and counted in `/metrics`; after a restart on the same database the site detects at
//! once from the stored baseline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{Pki, shipper_config, value, wait_until};

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mamori_agent::ship::Shipper;
use mamori_collector::{Collector, CollectorConfig};
use mamori_models::Event;

const AGENT: &str = "agent-1.plant.test";
const SITE: &str = "plant-a";
/// The HMI that polls the PLC during learning.
const HMI: &str = "10.0.0.10";
const PLC: &str = "10.0.0.2";

/// A collector learning for 60 s of event time, storing its inventory every 100 ms.
fn collector_config(pki: &Pki, db: &Path) -> CollectorConfig {
    let (cert, key) = pki.server();
    let text = format!(
        r#"
[intake]
listen = "127.0.0.1:0"
cert_file = "{}"
key_file = "{}"
client_ca_file = "{}"
shutdown_grace_seconds = 5

[[agents]]
id = "{AGENT}"
site = "{SITE}"

[storage]
sqlite_path = "{}"
# The test events are from 2024: keep them.
event_retention_days = 0

[metrics]
listen = "127.0.0.1:0"

[detection]
learning_period_seconds = 60
inventory_store_interval_seconds = 0.1
"#,
        cert.display(),
        key.display(),
        pki.ca_file().display(),
        db.display()
    );
    let c = CollectorConfig::parse(&text).unwrap();
    c.validate(Path::new("test.toml")).unwrap();
    c
}

/// `second` seconds after 2024-01-01T00:00:00Z, RFC 3339.
fn at(second: u32) -> String {
    format!(
        "2024-01-01T00:{:02}:{:02}.000000Z",
        second / 60 % 60,
        second % 60
    )
}

/// The HMI reads four holding registers (function 3) of the PLC.
fn poll(second: u32, tid: u16) -> Event {
    let ts = at(second);
    serde_json::from_value(serde_json::json!({
        "type": "modbus", "ts": ts, "src_ip": HMI, "src_port": 40000,
        "dst_ip": PLC, "dst_port": 502, "tid": tid, "unit": 1,
        "func": 3, "func_name": "READ_HOLDING_REGISTERS",
        "request": { "ts": ts, "len": 6, "address": 0, "quantity": 4 },
        "response": { "ts": ts, "len": 11, "byte_count": 8, "values": [100, 101, 102, 103] },
        "exception": null, "exception_code": null, "latency_us": 500, "anomalies": []
    }))
    .unwrap()
}

/// `src` writes register 0 (function 6): a host and a function never seen while learning.
fn rogue_write(second: u32, src: &str) -> Event {
    let ts = at(second);
    serde_json::from_value(serde_json::json!({
        "type": "modbus", "ts": ts, "src_ip": src, "src_port": 51000,
        "dst_ip": PLC, "dst_port": 502, "tid": 1, "unit": 1,
        "func": 6, "func_name": "WRITE_SINGLE_REGISTER",
        "request": { "ts": ts, "len": 6, "address": 0, "values": [9999] },
        "response": { "ts": ts, "len": 6, "address": 0, "values": [9999] },
        "exception": null, "exception_code": null, "latency_us": 500, "anomalies": []
    }))
    .unwrap()
}

/// (detector, json) of every alert row.
fn alerts(db: &Path) -> Vec<(String, String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT site, detector, json FROM alerts ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn baselines(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM baselines WHERE site = ?1",
        [SITE],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as u64
}

/// Alert rows about `src`.
fn alerts_about(db: &Path, src: &str) -> usize {
    alerts(db)
        .iter()
        .filter(|(site, _, json)| site == SITE && json.contains(&format!("\"{src}\"")))
        .count()
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw
}

/// The sum of every `mamori_alerts_total` series.
fn alerts_total(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("mamori_alerts_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learns_then_alerts_on_a_rogue_write_and_resumes_detection_after_a_restart() {
    let pki = Pki::new("main");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let config = collector_config(&pki, &db);

    let collector = Collector::start(&config).await.unwrap();
    let metrics = collector.metrics_addr().unwrap();
    let text = tokio::task::spawn_blocking(move || scrape(metrics))
        .await
        .unwrap();
    assert_eq!(
        value(&text, &format!(r#"mamori_learning{{site="{SITE}"}}"#)),
        Some(1.0),
        "a site without a baseline learns"
    );

    // 90 s of a 1 s poll: learning ends at 60 s (event time), detection sees the rest.
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&shipper_config(
        &pki,
        AGENT,
        collector.local_addr(),
        spool.path(),
    ))
    .unwrap();
    for s in 0..90u32 {
        shipper.push(&poll(s, s as u16)).await.unwrap();
    }
    shipper.push(&rogue_write(95, "10.0.0.66")).await.unwrap();
    wait_until("the rogue write's alert", Duration::from_secs(20), || {
        alerts_about(&db, "10.0.0.66") > 0
    })
    .await;
    assert_eq!(
        baselines(&db),
        1,
        "the baseline is stored when learning ends"
    );
    assert!(
        alerts(&db)
            .iter()
            .any(|(_, d, j)| d == "allowlist" && j.contains("10.0.0.66")),
        "{:?}",
        alerts(&db)
    );
    // Counters follow the database by a moment (they are set once the transaction is in).
    let mut text = String::new();
    for _ in 0..200 {
        text = tokio::task::spawn_blocking(move || scrape(metrics))
            .await
            .unwrap();
        if value(&text, "mamori_incidents_opened_total") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        value(&text, &format!(r#"mamori_learning{{site="{SITE}"}}"#)),
        Some(0.0)
    );
    let rows = alerts(&db).len() as f64;
    assert!(rows >= 1.0);
    assert_eq!(alerts_total(&text), rows, "{text}");
    assert!(
        value(
            &text,
            r#"mamori_alerts_total{detector="allowlist",severity="high"}"#
        )
        .or_else(|| {
            value(
                &text,
                r#"mamori_alerts_total{detector="allowlist",severity="critical"}"#,
            )
        })
        .or_else(|| {
            value(
                &text,
                r#"mamori_alerts_total{detector="allowlist",severity="medium"}"#,
            )
        })
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // The alert opened an incident about the rogue host, counted open, with its latency.
    let open: f64 = ["info", "low", "medium", "high", "critical"]
        .iter()
        .filter_map(|s| {
            value(
                &text,
                &format!(r#"mamori_incidents_open{{severity="{s}"}}"#),
            )
        })
        .sum();
    assert_eq!(open, 1.0, "{text}");
    assert_eq!(value(&text, "mamori_incidents_opened_total"), Some(1.0));
    assert!(
        value(&text, &format!(r#"mamori_baseline_bytes{{site="{SITE}"}}"#))
            .is_some_and(|b| b > 100.0),
        "{text}"
    );
    assert!(value(&text, "mamori_alert_latency_seconds_count").is_some_and(|n| n >= 1.0));
    let incidents = collector
        .store()
        .call(|s| s.incidents(&Default::default()))
        .await
        .unwrap();
    assert_eq!(incidents.len(), 1);
    assert!(incidents[0].actors.contains("10.0.0.66"), "{incidents:?}");
    assert!(incidents[0].assets.contains(PLC));
    // The inventory knows the HMI, the PLC and the rogue host.
    wait_until("the inventory stored", Duration::from_secs(10), || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("SELECT COUNT(*) FROM assets", [], |r| r.get::<_, i64>(0))
            .unwrap()
            == 3
    })
    .await;
    let acked = shipper.shutdown(Duration::from_secs(20)).await.unwrap();
    assert_eq!(acked.events_acked_total, 91);
    collector.shutdown().await.unwrap();

    // Restart on the same database: the baseline is loaded and the site detects at once.
    let collector = Collector::start(&collector_config(&pki, &db))
        .await
        .unwrap();
    let metrics = collector.metrics_addr().unwrap();
    let text = tokio::task::spawn_blocking(move || scrape(metrics))
        .await
        .unwrap();
    assert_eq!(
        value(&text, &format!(r#"mamori_learning{{site="{SITE}"}}"#)),
        Some(0.0),
        "the stored baseline is loaded at start"
    );
    // The same spool: the agent's sequence goes on (a fresh one would resend sequence 1,
    // a duplicate the collector does not store again).
    let shipper = Shipper::start(&shipper_config(
        &pki,
        AGENT,
        collector.local_addr(),
        spool.path(),
    ))
    .unwrap();
    shipper.push(&poll(200, 200)).await.unwrap();
    shipper.push(&rogue_write(201, "10.0.0.77")).await.unwrap();
    wait_until(
        "an alert right after the restart",
        Duration::from_secs(20),
        || alerts_about(&db, "10.0.0.77") > 0,
    )
    .await;
    shipper.shutdown(Duration::from_secs(20)).await.unwrap();
    collector.shutdown().await.unwrap();
    assert_eq!(baselines(&db), 1, "no second learning");
}
