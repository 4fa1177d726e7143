//! "This is normal", end to end: a running collector fed by the real agent `Shipper` learns
//! an HMI polling a PLC, then detects a host never seen reading the PLC. An operator marks
//! that alert as normal through the API; the same transaction again raises nothing, and the
//! audit trail says who, when and why. Then the same loop with the `mamori-collector normal`
//! command against the running server (an HMI reading addresses never read), the command's
//! refusals, and relearning one device through `mamori-collector relearn`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{Pki, http, shipper_config};

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mamori_agent::ship::Shipper;
use mamori_collector::{Collector, CollectorConfig};
use mamori_models::Event;
use serde_json::Value;

const AGENT: &str = "agent-1.plant.test";
const SITE: &str = "plant-a";
const HMI: &str = "10.0.0.10";
const PLC: &str = "10.0.0.2";
const ROGUE: &str = "10.0.0.66";
const READER: &str = "reader-token-0123456789";
const WRITER: &str = "writer-token-0123456789";
const BIN: &str = env!("CARGO_BIN_EXE_mamori-collector");

fn collector_config(pki: &Pki, dir: &Path) -> CollectorConfig {
    let (cert, key) = pki.server();
    std::fs::write(dir.join("reader.token"), format!("{READER}\n")).unwrap();
    std::fs::write(dir.join("writer.token"), WRITER).unwrap();
    let text = format!(
        r#"
[intake]
listen = "127.0.0.1:0"
cert_file = "{}"
key_file = "{}"
client_ca_file = "{}"

[[agents]]
id = "{AGENT}"
site = "{SITE}"

[storage]
sqlite_path = "{}"
event_retention_days = 0

[detection]
learning_period_seconds = 60

[api]
listen = "127.0.0.1:0"

[[api.tokens]]
name = "soc-dashboard"
token_file = "{}"
scopes = ["read"]

[[api.tokens]]
name = "alice"
token_file = "{}"
scopes = ["read", "write"]
"#,
        cert.display(),
        key.display(),
        pki.ca_file().display(),
        dir.join("collector.db").display(),
        dir.join("reader.token").display(),
        dir.join("writer.token").display(),
    );
    let c = CollectorConfig::parse(&text).unwrap();
    c.validate(Path::new("test.toml")).unwrap();
    c
}

/// `src` reads `values.len()` holding registers of the PLC from `address` (function 3).
fn read(second: u32, src: &str, address: u16, values: &[u16]) -> Event {
    let ts = format!(
        "2024-01-01T00:{:02}:{:02}.000000Z",
        second / 60 % 60,
        second % 60
    );
    serde_json::from_value(serde_json::json!({
        "type": "modbus", "ts": ts, "src_ip": src, "src_port": 40000,
        "dst_ip": PLC, "dst_port": 502, "tid": 1, "unit": 1,
        "func": 3, "func_name": "READ_HOLDING_REGISTERS",
        "request": { "ts": ts, "len": 6, "address": address, "quantity": values.len() },
        "response": { "ts": ts, "len": 3 + 2 * values.len(), "values": values },
        "exception": null, "exception_code": null, "latency_us": 500, "anomalies": []
    }))
    .unwrap()
}

/// The HMI's regular poll.
fn poll(second: u32) -> Event {
    read(second, HMI, 0, &[100, 101])
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let (method, path, token, body) = (
        method.to_owned(),
        path.to_owned(),
        token.to_owned(),
        body.map(str::to_owned),
    );
    let (status, text) = tokio::task::spawn_blocking(move || {
        http(addr, &method, &path, Some(&token), body.as_deref())
    })
    .await
    .unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every stored alert (newest first).
async fn alerts(api: SocketAddr) -> Vec<Value> {
    let (status, list) = call(api, "GET", "/api/v1/alerts?limit=1000", READER, None).await;
    assert_eq!(status, 200, "{list}");
    list["alerts"].as_array().unwrap().clone()
}

/// Waits for the stored alert of `kind` about `src`.
async fn alert_of(api: SocketAddr, kind: &str, src: &str) -> Value {
    for _ in 0..600 {
        if let Some(a) = alerts(api)
            .await
            .into_iter()
            .find(|a| a["alert"]["kind"] == kind && a["alert"]["src_ip"] == src)
        {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {kind} alert about {src}: {:#?}", alerts(api).await);
}

/// Waits until the detecting site has seen `n` events.
async fn detected(api: SocketAddr, n: u64) -> Value {
    let mut site = Value::Null;
    for _ in 0..600 {
        let (_, sites) = call(api, "GET", "/api/v1/sites", READER, None).await;
        site = sites["sites"][0].clone();
        if site["mode"] == "detecting" && site["events"].as_u64().unwrap_or(0) >= n {
            return site;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the site did not detect {n} events: {site:#}");
}

/// Alerts (not observations) of `kind` about `src`.
async fn paging(api: SocketAddr, kind: &str, src: &str) -> Vec<Value> {
    alerts(api)
        .await
        .into_iter()
        .filter(|a| {
            a["alert"]["kind"] == kind
                && a["alert"]["src_ip"] == src
                && a["alert"]["severity"] != "info"
        })
        .collect()
}

/// Runs the command line against the running collector: (exit status, stdout, stderr).
async fn cli(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_marked_normal_is_silenced_and_the_audit_trail_says_who_when_and_why() {
    let pki = Pki::new("normal");
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&collector_config(&pki, dir.path()))
        .await
        .unwrap();
    let api = collector.api_addr().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&shipper_config(
        &pki,
        AGENT,
        collector.local_addr(),
        spool.path(),
    ))
    .unwrap();

    // A minute of polls is learned; then a host never seen reads the PLC.
    for s in 1..=70u32 {
        shipper.push(&poll(s)).await.unwrap();
    }
    shipper
        .push(&read(71, ROGUE, 0, &[100, 101]))
        .await
        .unwrap();
    let found = alert_of(api, "new_host", ROGUE).await;
    let id = found["id"].as_i64().unwrap();
    assert_eq!(found["alert"]["severity"], "high", "{found:#}");

    // Only a writer may say so, and only with a reason.
    let path = format!("/api/v1/alerts/{id}/normal");
    let why = r#"{"reason":"engineering laptop of the commissioning team, ticket CHG-1042"}"#;
    assert_eq!(call(api, "POST", &path, READER, Some(why)).await.0, 403);
    let (status, refused) = call(api, "POST", &path, WRITER, Some(r#"{"reason":"  "}"#)).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(call(api, "POST", &path, WRITER, Some("{}")).await.0, 422);
    let before = now_ms();
    let (status, entry) = call(api, "POST", &path, WRITER, Some(why)).await;
    assert_eq!(status, 200, "{entry:#}");
    assert_eq!(entry["who"], "alice");
    assert_eq!(entry["action"], "normal");
    assert_eq!(entry["alert_id"], id);
    assert_eq!(entry["kind"], "new_host");
    let changes = entry["changes"]["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["what"] == "host" && c["ip"] == ROGUE),
        "{entry:#}"
    );
    assert!(changes.iter().any(|c| c["what"] == "function"), "{entry:#}");
    // Once is enough.
    assert_eq!(call(api, "POST", &path, WRITER, Some(why)).await.0, 409);

    // The same transaction again (the polls go on): nothing about the host pages.
    for s in 72..=80u32 {
        shipper.push(&poll(s)).await.unwrap();
        if s == 75 {
            shipper
                .push(&read(75, ROGUE, 0, &[100, 101]))
                .await
                .unwrap();
        }
    }
    detected(api, 21).await;
    let after = paging(api, "new_host", ROGUE).await;
    assert_eq!(after.len(), 1, "only the alert accepted: {after:#?}");
    assert_eq!(after[0]["id"], id);
    assert!(
        alerts(api)
            .await
            .iter()
            .all(|a| a["alert"]["src_ip"] != ROGUE || a["id"] == id),
        "no new alert about the host: {:#?}",
        alerts(api).await
    );
    assert!(
        alerts(api)
            .await
            .iter()
            .any(|a| a["id"] == id && a["accepted_audit_id"] == entry["id"])
    );

    // The audit trail: who, when, why, what.
    let (_, audit) = call(
        api,
        "GET",
        &format!("/api/v1/audit?site={SITE}"),
        READER,
        None,
    )
    .await;
    let e = &audit["audit"][0];
    assert_eq!(e["who"], "alice");
    assert_eq!(
        e["reason"],
        "engineering laptop of the commissioning team, ticket CHG-1042"
    );
    let when = e["unix_ms"].as_u64().unwrap();
    assert!(before <= when && when <= now_ms(), "{e:#}");
    assert_eq!(e["changes"], entry["changes"]);

    // The command line does the same against the running server: the HMI reads addresses it
    // never read.
    shipper.push(&read(81, HMI, 100, &[7, 7])).await.unwrap();
    let found = alert_of(api, "address_out_of_range", HMI).await;
    let token = dir.path().join("writer.token").display().to_string();
    let base = format!("http://{api}");
    let normal = |alert: i64, reason: &str| {
        vec![
            "normal".to_string(),
            "--api".into(),
            base.clone(),
            "--token-file".into(),
            token.clone(),
            "--alert".into(),
            alert.to_string(),
            "--reason".into(),
            reason.into(),
        ]
    };
    let (code, stdout, stderr) = cli(normal(
        found["id"].as_i64().unwrap(),
        "the historian's new trend page reads 100-101",
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let entry: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(entry["who"], "alice");
    assert!(stderr.contains("marked as normal by \"alice\""), "{stderr}");
    for s in 82..=90u32 {
        shipper.push(&poll(s)).await.unwrap();
    }
    shipper.push(&read(90, HMI, 100, &[7, 7])).await.unwrap();
    detected(api, 32).await;
    assert_eq!(
        paging(api, "address_out_of_range", HMI).await.len(),
        1,
        "only the alert accepted"
    );

    // Refusals exit non-zero with the API's reason.
    let (code, _, stderr) = cli(normal(999_999, "no such thing")).await;
    assert_ne!(code, 0);
    assert!(
        stderr.contains("404") && stderr.contains("no such alert"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(normal(id, "again")).await;
    assert_ne!(code, 0);
    assert!(
        stderr.contains("409") && stderr.contains("already"),
        "{stderr}"
    );

    // Relearning one device: the rest of the site detects; the baseline is stored at the end.
    let (code, stdout, stderr) = cli(vec![
        "relearn".into(),
        "--api".into(),
        base.clone(),
        "--token-file".into(),
        token.clone(),
        "--site".into(),
        SITE.into(),
        "--asset".into(),
        ROGUE.into(),
        "--seconds".into(),
        "5".into(),
        "--reason".into(),
        "laptop re-imaged".into(),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let relearn: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        relearn["site"]["relearning"]["scope"],
        format!("asset {ROGUE}")
    );
    for s in 91..=100u32 {
        shipper.push(&poll(s)).await.unwrap();
    }
    let mut site = Value::Null;
    for _ in 0..600 {
        site = detected(api, 0).await;
        if site.get("relearning").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(site.get("relearning").is_none(), "{site:#}");
    // The host said nothing while it was relearned: it is forgotten, and new again.
    shipper
        .push(&read(101, ROGUE, 0, &[100, 101]))
        .await
        .unwrap();
    for _ in 0..600 {
        if paging(api, "new_host", ROGUE).await.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(paging(api, "new_host", ROGUE).await.len(), 2);
    let (code, stdout, stderr) = cli(vec![
        "audit".into(),
        "--api".into(),
        base,
        "--token-file".into(),
        token,
        "--site".into(),
        SITE.into(),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let audit: Value = serde_json::from_str(&stdout).unwrap();
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["relearn", "normal", "normal"]);

    shipper.shutdown(Duration::from_secs(20)).await.unwrap();
    collector.shutdown().await.unwrap();
}
