//! The collector's `/metrics` endpoint, in-process on loopback with a test PKI (rcgen) and
//! the real agent `Shipper`: the series and their values after a few batches, scraped over
//! plain HTTP; then the same endpoint scraped by a real Prometheus server (the `prometheus`
//! binary, Debian's package) and read back through its query API. That part is skipped, with
//! the reason printed, when the binary is absent, unless `MAMORI_REQUIRE_PROMETHEUS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{Pki, SERVER_NAME, event, shipper_config, value};

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mamori_agent::ship::Shipper;
use mamori_collector::{Collector, CollectorConfig, RefusalReason};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AGENT_1: &str = "agent-1.plant.test";
const AGENT_2: &str = "agent-2.plant.test";
const AGENT_3: &str = "agent-3.plant.test";

// ---------------------------------------------------------------------------------------
// Certificates and configuration (as in intake_server.rs)

fn collector_config(pki: &Pki, db: &Path) -> CollectorConfig {
    let (cert, key) = pki.server();
    let text = format!(
        r#"
[intake]
listen = "127.0.0.1:0"
cert_file = "{}"
key_file = "{}"
client_ca_file = "{}"
header_timeout_seconds = 2
shutdown_grace_seconds = 5

[[agents]]
id = "{AGENT_1}"
site = "plant-a"

[[agents]]
id = "{AGENT_2}"
site = "plant-b"

[[agents]]
id = "{AGENT_3}"
site = "plant-b"

[storage]
sqlite_path = "{}"
event_retention_days = 0

[metrics]
listen = "127.0.0.1:0"
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

/// A gzip JSON Lines body of flow events `ids`.
fn batch_body(ids: std::ops::Range<u64>) -> Vec<u8> {
    let mut jsonl = Vec::new();
    for id in ids {
        serde_json::to_writer(&mut jsonl, &event(id)).unwrap();
        jsonl.push(b'\n');
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&jsonl).unwrap();
    gz.finish().unwrap()
}

/// Posts one batch over TLS as `agent`; returns the HTTP status (0: no answer).
async fn post_batch(
    tls: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    agent: &str,
    seq: u64,
    body: &[u8],
) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut req = format!(
        "POST /v1/batches HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Encoding: gzip\r\n\
         Mamori-Agent: {agent}\r\nMamori-Sequence: {seq}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One blocking `GET` over plain HTTP/1.0 (no chunked answer, the server closes): (status,
/// body).
fn http_get(addr: SocketAddr, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Sends 25 events from agent 1 (plant-a), 10 from agent 2 (plant-b) through real shippers,
/// a batch and its duplicate from agent 3 (plant-b), and one plain-TCP connection that is
/// not TLS. Returns the running collector and the number of new batches it stored.
async fn collector_with_traffic(pki: &Pki, db: &Path) -> (Collector, u64) {
    let collector = Collector::start(&collector_config(pki, db)).await.unwrap();
    let addr = collector.local_addr();
    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a1 = Shipper::start(&shipper_config(pki, AGENT_1, addr, s1.path())).unwrap();
    let a2 = Shipper::start(&shipper_config(pki, AGENT_2, addr, s2.path())).unwrap();
    for id in 0..25 {
        a1.push(&event(id)).await.unwrap();
    }
    for id in 0..10 {
        a2.push(&event(id)).await.unwrap();
    }
    let r1 = a1.shutdown(Duration::from_secs(20)).await.unwrap();
    let r2 = a2.shutdown(Duration::from_secs(20)).await.unwrap();
    assert_eq!((r1.events_acked_total, r2.events_acked_total), (25, 10));
    // How the shippers cut their batches depends on timing; none was a duplicate.
    assert_eq!(r1.batches_duplicate_total + r2.batches_duplicate_total, 0);
    let batches = r1.batches_acked_total + r2.batches_acked_total + 1;

    let agent3 = pki.client(Some(AGENT_3));
    let body = batch_body(0..4);
    assert_eq!(
        post_batch(agent3.clone(), addr, AGENT_3, 1, &body).await,
        200
    );
    assert_eq!(post_batch(agent3, addr, AGENT_3, 1, &body).await, 200);

    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut sink)).await;
    let stats = collector.stats();
    let end = Instant::now() + Duration::from_secs(5);
    while stats.refused(RefusalReason::TlsHandshake) < 1 {
        assert!(Instant::now() < end, "handshake refusal not counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (collector, batches)
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_ingested_events_batches_refusals_and_storage() {
    let pki = Pki::new("main");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (collector, batches) = collector_with_traffic(&pki, &db).await;
    let maddr = collector.metrics_addr().unwrap();
    assert!(maddr.ip().is_loopback());
    let text = scrape(maddr).await;
    eprintln!("{text}");

    let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("{s} missing"));
    assert_eq!(
        v(r#"mamori_events_ingested_total{site="plant-a",type="flow"}"#),
        25.0
    );
    assert_eq!(
        v(r#"mamori_events_ingested_total{site="plant-b",type="flow"}"#),
        14.0
    );
    // Every configured site and type has its series, at 0 until events come.
    assert_eq!(
        v(r#"mamori_events_ingested_total{site="plant-a",type="modbus"}"#),
        0.0
    );
    assert_eq!(
        v(r#"mamori_events_ingested_total{site="plant-b",type="syslog"}"#),
        0.0
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("mamori_events_ingested_total{"))
            .count(),
        6
    );
    // The shippers' batches and agent 3's; then its duplicate.
    assert_eq!(
        v(r#"mamori_batches_total{outcome="stored"}"#),
        batches as f64
    );
    assert_eq!(v(r#"mamori_batches_total{outcome="duplicate"}"#), 1.0);
    assert_eq!(
        v(r#"mamori_intake_errors_total{reason="tls_handshake"}"#),
        1.0
    );
    for r in RefusalReason::ALL {
        let s = format!(r#"mamori_intake_errors_total{{reason="{}"}}"#, r.as_str());
        assert!(value(&text, &s).is_some(), "{s}");
    }
    for site in ["plant-a", "plant-b"] {
        let t = v(&format!(
            r#"mamori_agent_last_seen_timestamp_seconds{{site="{site}"}}"#
        ));
        assert!(t >= started.floor() && t < started + 120.0, "{site}: {t}");
    }
    let on_disk: u64 = ["collector.db", "collector.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(dir.path().join(f)).map_or(0, |m| m.len()))
        .sum();
    let storage = v("mamori_storage_bytes");
    assert!(
        storage > 0.0 && storage <= on_disk as f64 * 2.0,
        "{storage} vs {on_disk}"
    );
    assert_eq!(
        v(&format!(
            r#"mamori_collector_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    // Bounded labels: no address and no agent name anywhere.
    for never in ["127.0.0.1", AGENT_1, AGENT_2, AGENT_3] {
        assert!(!text.contains(never), "{never} in the metrics");
    }
    // Counters are totals: a second scrape gives the same values.
    let again = scrape(maddr).await;
    assert_eq!(
        value(
            &again,
            r#"mamori_events_ingested_total{site="plant-a",type="flow"}"#
        ),
        Some(25.0)
    );
    // Only /metrics.
    let (status, _) = tokio::task::spawn_blocking(move || http_get(maddr, "/"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 404);

    collector.shutdown().await.unwrap();
    // Stopped with the collector.
    assert!(std::net::TcpStream::connect(maddr).is_err());
}

/// Kills the Prometheus child when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_loopback_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_collector() {
    let binary = Path::new("/usr/bin/prometheus");
    let found = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("prometheus"))
                .find(|p| p.is_file())
        })
        .or_else(|| binary.is_file().then(|| binary.to_path_buf()));
    let Some(prometheus) = found else {
        if std::env::var("MAMORI_REQUIRE_PROMETHEUS").as_deref() == Ok("1") {
            panic!("MAMORI_REQUIRE_PROMETHEUS=1 but no `prometheus` binary on PATH");
        }
        eprintln!("SKIPPED: no `prometheus` binary (apt install prometheus to run this test)");
        return;
    };
    let pki = Pki::new("main");
    let dir = tempfile::tempdir().unwrap();
    let (collector, _) = collector_with_traffic(&pki, &dir.path().join("collector.db")).await;
    let target = collector.metrics_addr().unwrap();

    let prom_dir = tempfile::tempdir().unwrap();
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: mamori-collector\n    static_configs:\n      \
             - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web = free_loopback_port();
    let _prom = KillOnDrop(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={web}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.path().join("data").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let started = Instant::now();
    let mut last = String::new();
    let found = loop {
        let query = "/api/v1/query?query=mamori_events_ingested_total";
        if let Ok(Ok((200, body))) = tokio::task::spawn_blocking(move || http_get(web, query)).await
        {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let hit = v["data"]["result"].as_array().and_then(|series| {
                series.iter().find(|s| {
                    s["metric"]["site"] == "plant-a"
                        && s["metric"]["type"] == "flow"
                        && s["metric"]["job"] == "mamori-collector"
                })
            });
            if let Some(s) = hit {
                break s["value"][1].as_str().unwrap_or_default().to_owned();
            }
            last = body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "Prometheus did not return the series within 20 s; last answer: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "Prometheus returned mamori_events_ingested_total{{site=\"plant-a\",type=\"flow\"}} = \
         {found} after {:?}",
        started.elapsed()
    );
    assert_eq!(found, "25");
    drop(_prom);
    collector.shutdown().await.unwrap();
}
