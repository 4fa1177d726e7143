//! The HTTP API of a running collector fed by the real agent `Shipper`: tokens and scopes,
//! incidents with their alerts and assets, the lifecycle, exports, site modes and asset
//! criticality; refusals counted in `/metrics`. And the API facing a hostile network:
//! wrong tokens lock out their source address (only it), half-sent requests and slow bodies
//! are cut at their timeouts, the `Bearer` scheme is matched in any case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{Pki, http, shipper_config, value};

use std::io::{Read, Write};
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
const READER: &str = "reader-token-0123456789";
const WRITER: &str = "writer-token-0123456789";

fn collector_config(pki: &Pki, dir: &Path) -> CollectorConfig {
    collector_config_with(pki, dir, "")
}

/// With `api_extra` added to `[api]`.
fn collector_config_with(pki: &Pki, dir: &Path, api_extra: &str) -> CollectorConfig {
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

[metrics]
listen = "127.0.0.1:0"

[detection]
learning_period_seconds = 60
inventory_store_interval_seconds = 0.1

[api]
listen = "127.0.0.1:0"
organisation = "Test Water Utility"
sectors = ["water"]
{api_extra}

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

fn modbus(second: u32, src: &str, func: u8, name: &str, request: Value, response: Value) -> Event {
    let ts = format!(
        "2024-01-01T00:{:02}:{:02}.000000Z",
        second / 60 % 60,
        second % 60
    );
    let mut request = request;
    request["ts"] = ts.clone().into();
    let mut response = response;
    response["ts"] = ts.clone().into();
    serde_json::from_value(serde_json::json!({
        "type": "modbus", "ts": ts, "src_ip": src, "src_port": 40000,
        "dst_ip": PLC, "dst_port": 502, "tid": 1, "unit": 1,
        "func": func, "func_name": name,
        "request": request, "response": response,
        "exception": null, "exception_code": null, "latency_us": 500, "anomalies": []
    }))
    .unwrap()
}

fn poll(second: u32) -> Event {
    modbus(
        second,
        HMI,
        3,
        "READ_HOLDING_REGISTERS",
        serde_json::json!({ "len": 6, "address": 0, "quantity": 2 }),
        serde_json::json!({ "len": 7, "byte_count": 4, "values": [100, 101] }),
    )
}

fn device_id(second: u32, revision: &str) -> Event {
    modbus(
        second,
        HMI,
        43,
        "ENCAPSULATED_INTERFACE_TRANSPORT",
        serde_json::json!({ "len": 5, "mei_type": 14, "read_device_id_code": 1, "object_id": 0 }),
        serde_json::json!({ "len": 30, "mei_type": 14, "read_device_id_code": 1, "objects": [
            { "id": 0, "value": "Acme" }, { "id": 1, "value": "PLC-9" }, { "id": 2, "value": revision }
        ] }),
    )
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let (method, path, token, body) = (
        method.to_owned(),
        path.to_owned(),
        token.map(str::to_owned),
        body.map(str::to_owned),
    );
    tokio::task::spawn_blocking(move || {
        http(addr, &method, &path, token.as_deref(), body.as_deref())
    })
    .await
    .unwrap()
}

async fn json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Value {
    let (status, text) = call(addr, method, path, Some(token), body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_lifecycle_exports_modes_and_assets_through_the_api() {
    let pki = Pki::new("api");
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&collector_config(&pki, dir.path()))
        .await
        .unwrap();
    let api = collector.api_addr().unwrap();
    let metrics = collector.metrics_addr().unwrap();

    // Learn 60 s of polls (and the PLC's identity), then a firmware change and a rogue write.
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(&shipper_config(
        &pki,
        AGENT,
        collector.local_addr(),
        spool.path(),
    ))
    .unwrap();
    shipper.push(&device_id(0, "1.0")).await.unwrap();
    for s in 1..70u32 {
        shipper.push(&poll(s)).await.unwrap();
    }
    shipper.push(&device_id(71, "6.6-unsigned")).await.unwrap();
    shipper
        .push(&modbus(
            72,
            "10.0.0.66",
            6,
            "WRITE_SINGLE_REGISTER",
            serde_json::json!({ "len": 6, "address": 0, "values": [9999] }),
            serde_json::json!({ "len": 6, "address": 0, "values": [9999] }),
        ))
        .await
        .unwrap();

    // Tokens: none, unknown, read-only for a change.
    assert_eq!(
        call(api, "GET", "/api/v1/incidents", None, None).await.0,
        401
    );
    assert_eq!(
        call(
            api,
            "GET",
            "/api/v1/incidents",
            Some("guess-guess-guess-guess"),
            None
        )
        .await
        .0,
        401
    );

    let mut incidents = Value::Null;
    for _ in 0..400 {
        incidents = json(api, "GET", "/api/v1/incidents?status=open", READER, None).await;
        let list = incidents["incidents"].as_array().unwrap();
        let about_rogue = list.iter().any(|i| {
            i["actors"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "10.0.0.66"))
        });
        let about_firmware = list.iter().any(|i| {
            i["detectors"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == "inventory"))
        });
        if about_rogue && about_firmware {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = incidents["incidents"].as_array().unwrap().clone();
    // Both findings are about the same PLC within the window: one incident, or two when
    // grouped apart; either way the firmware change and the rogue host are there.
    let rogue = list
        .iter()
        .find(|i| {
            i["actors"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "10.0.0.66"))
        })
        .unwrap_or_else(|| panic!("{incidents:#}"));
    let id = rogue["id"].as_i64().unwrap();

    // The inventory is stored every 100 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let detail = json(api, "GET", &format!("/api/v1/incidents/{id}"), READER, None).await;
    assert!(
        !detail["alerts"].as_array().unwrap().is_empty(),
        "{detail:#}"
    );
    assert!(
        detail["assets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["ip"] == PLC),
        "{detail:#}"
    );
    let all_alerts = json(api, "GET", "/api/v1/alerts?limit=50", READER, None).await;
    assert!(
        all_alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["alert"]["kind"] == "device_identity_changed"),
        "{all_alerts:#}"
    );

    // Read-only tokens cannot act; the writer acknowledges, notes and resolves.
    let path = format!("/api/v1/incidents/{id}/actions");
    let ack = r#"{"action":"acknowledge"}"#;
    assert_eq!(
        call(api, "POST", &path, Some(READER), Some(ack)).await.0,
        403
    );
    let inc = json(api, "POST", &path, WRITER, Some(ack)).await;
    assert_eq!(inc["status"], "acknowledged");
    assert_eq!(inc["acknowledged_by"], "alice");
    assert_eq!(
        call(api, "POST", &path, Some(WRITER), Some(ack)).await.0,
        409
    );
    assert_eq!(
        call(
            api,
            "POST",
            &path,
            Some(WRITER),
            Some(r#"{"action":"explode"}"#)
        )
        .await
        .0,
        400
    );
    json(
        api,
        "POST",
        &path,
        WRITER,
        Some(r#"{"action":"note","note":"port 12 shut on the switch"}"#),
    )
    .await;
    let inc = json(api, "POST", &path, WRITER, Some(r#"{"action":"resolve"}"#)).await;
    assert_eq!(inc["status"], "resolved");
    let kinds: Vec<&str> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"detected"));
    assert!(
        kinds.ends_with(&["acknowledged", "note", "resolved"]),
        "{kinds:?}"
    );
    assert_eq!(
        call(api, "GET", "/api/v1/incidents/999999", Some(READER), None)
            .await
            .0,
        404
    );

    // Exports.
    let stix = json(
        api,
        "GET",
        &format!("/api/v1/incidents/{id}/stix"),
        READER,
        None,
    )
    .await;
    assert_eq!(stix["type"], "bundle");
    assert!(
        stix["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["type"] == "incident")
    );
    let (status, md) = call(
        api,
        "GET",
        &format!("/api/v1/incidents/{id}/report.md"),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(md.contains("10.0.0.66") && md.contains("resolved"), "{md}");
    let (status, html) = call(
        api,
        "GET",
        &format!("/api/v1/incidents/{id}/report.html"),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(html.contains("<html") && html.contains("10.0.0.66"));

    // Assets: criticality set by the writer, refused for an unknown host.
    let assets = json(
        api,
        "GET",
        &format!("/api/v1/assets?site={SITE}"),
        READER,
        None,
    )
    .await;
    let plc = assets["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["ip"] == PLC)
        .unwrap()
        .clone();
    assert_eq!(plc["identity"]["revision"], "6.6-unsigned");
    assert!(
        plc["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "modbus_server")
    );
    let body = r#"{"criticality":"critical","description":"main feeder PLC"}"#;
    let a = json(
        api,
        "PUT",
        &format!("/api/v1/assets/{SITE}/{PLC}"),
        WRITER,
        Some(body),
    )
    .await;
    assert_eq!(a["criticality"], "critical");
    assert_eq!(
        call(
            api,
            "PUT",
            &format!("/api/v1/assets/{SITE}/10.9.9.9"),
            Some(WRITER),
            Some(body)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            api,
            "PUT",
            &format!("/api/v1/assets/{SITE}/{PLC}"),
            Some(WRITER),
            Some(r#"{"criticality":"vital"}"#)
        )
        .await
        .0,
        400
    );

    // Modes: the site detects; back to learning and detecting again.
    let sites = json(api, "GET", "/api/v1/sites", READER, None).await;
    assert_eq!(sites["sites"][0]["mode"], "detecting", "{sites:#}");
    let baseline = json(
        api,
        "GET",
        &format!("/api/v1/baselines/{SITE}"),
        READER,
        None,
    )
    .await;
    assert!(baseline["learned"]["events"].as_u64().unwrap() >= 60);
    let s = json(
        api,
        "PUT",
        &format!("/api/v1/sites/{SITE}/mode"),
        WRITER,
        Some(r#"{"mode":"learning"}"#),
    )
    .await;
    assert_eq!(s["mode"], "learning");
    // Nothing learned since: cannot detect yet.
    assert_eq!(
        call(
            api,
            "PUT",
            &format!("/api/v1/sites/{SITE}/mode"),
            Some(WRITER),
            Some(r#"{"mode":"detecting"}"#)
        )
        .await
        .0,
        409
    );
    shipper.push(&poll(200)).await.unwrap();
    let mut switched = false;
    for _ in 0..200 {
        let (status, _) = call(
            api,
            "PUT",
            &format!("/api/v1/sites/{SITE}/mode"),
            Some(WRITER),
            Some(r#"{"mode":"detecting"}"#),
        )
        .await;
        if status == 200 {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switched);
    let s = json(
        api,
        "PUT",
        &format!("/api/v1/sites/{SITE}/exercise"),
        WRITER,
        Some(r#"{"seconds":60}"#),
    )
    .await;
    assert!(s["exercise_until_unix_ms"].as_u64().is_some());

    let text = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(metrics).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut t = String::new();
        s.read_to_string(&mut t).unwrap();
        t
    })
    .await
    .unwrap();
    assert_eq!(
        value(&text, r#"mamori_api_refused_total{reason="unauthorized"}"#),
        Some(2.0)
    );
    assert!(
        value(&text, r#"mamori_api_refused_total{reason="forbidden"}"#).is_some_and(|n| n >= 1.0)
    );
    assert!(!text.contains(WRITER) && !text.contains(READER));

    shipper.shutdown(Duration::from_secs(20)).await.unwrap();
    collector.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// A hostile network

/// One HTTP/1.0 request from `source` (a loopback address of this host) with the raw
/// `Authorization` value `auth`: (status, the whole response).
async fn request_from(
    source: &str,
    api: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(api).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {api}\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, raw)
}

async fn scrape(metrics: SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(metrics).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut t = String::new();
        s.read_to_string(&mut t).unwrap();
        t
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_lock_out_their_address_and_no_other() {
    let pki = Pki::new("api-lockout");
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&collector_config(&pki, dir.path()))
        .await
        .unwrap();
    let api = collector.api_addr().unwrap();
    let metrics = collector.metrics_addr().unwrap();
    let (guesser, other) = ("127.0.0.2", "127.0.0.3");
    let sites = "/api/v1/sites";

    // 100 wrong guesses in well under a minute: each a plain 401.
    let started = std::time::Instant::now();
    for n in 0..100 {
        let guess = format!("Bearer guess-{n:016}");
        let (status, raw) = request_from(guesser, api, "GET", sites, Some(&guess)).await;
        assert_eq!(status, 401, "guess {n}: {raw}");
    }
    // The 101st is refused before its token is looked at; so is the right token from there.
    let (status, raw) =
        request_from(guesser, api, "GET", sites, Some("Bearer guess-the-101st")).await;
    assert_eq!(status, 429, "{raw}");
    let retry: u64 = raw
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {raw}"));
    assert!((1..=60).contains(&retry), "{retry}");
    let bearer = format!("Bearer {READER}");
    assert_eq!(
        request_from(guesser, api, "GET", sites, Some(&bearer))
            .await
            .0,
        429
    );
    assert!(started.elapsed() < Duration::from_secs(50));

    // Another address is served as before, and its own wrong token is a 401, not a 429.
    assert_eq!(
        request_from(other, api, "GET", sites, Some(&bearer))
            .await
            .0,
        200
    );
    assert_eq!(
        request_from(other, api, "GET", sites, Some("Bearer wrong-wrong-wrong"))
            .await
            .0,
        401
    );

    let text = scrape(metrics).await;
    assert_eq!(value(&text, "mamori_api_lockouts_total"), Some(1.0));
    assert_eq!(
        value(&text, r#"mamori_api_refused_total{reason="locked_out"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"mamori_api_refused_total{reason="unauthorized"}"#),
        Some(101.0)
    );
    assert_eq!(
        value(&text, "mamori_api_auth_table_evictions_total"),
        Some(0.0)
    );
    assert!(!text.contains(READER) && !text.contains(guesser));
    collector.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_and_slow_bodies_are_cut_and_the_bearer_scheme_is_case_insensitive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("api-timeouts");
    let dir = tempfile::tempdir().unwrap();
    let limits = "header_timeout_seconds = 0.5\nbody_timeout_seconds = 0.5";
    let collector = Collector::start(&collector_config_with(&pki, dir.path(), limits))
        .await
        .unwrap();
    let api = collector.api_addr().unwrap();
    let metrics = collector.metrics_addr().unwrap();

    // Half a request (headers never finished), and a connection that says nothing: both are
    // disconnected once the header timeout has passed, not held for a minute.
    for partial in [
        format!("GET /api/v1/sites HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\n"),
        String::new(),
    ] {
        let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
        s.write_all(partial.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        let took = started.elapsed();
        assert!(read.is_ok(), "still connected after 5 s ({partial:?})");
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "closed after {took:?} ({partial:?})"
        );
    }

    // A keep-alive connection idle after its answer is closed as well, but that is not a
    // slow request: not counted.
    let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
    let req =
        format!("GET /api/v1/sites HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "idle keep-alive connection still open after 5 s"
    );
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"));

    // A body that stops halfway: 408 once the body timeout has passed.
    let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
    let head = format!(
        "PUT /api/v1/sites/plant-a/mode HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WRITER}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"mode\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut raw = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8_lossy(&raw[..n]).into_owned();
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
    assert!(started.elapsed() >= Duration::from_millis(400));

    // The scheme in any case (RFC 9110: case-insensitive), spaces after it tolerated.
    let sites = "/api/v1/sites";
    for auth in [
        format!("bearer {READER}"),
        format!("BEARER {READER}"),
        format!("Bearer   {READER}"),
    ] {
        let (status, raw) = request_from("127.0.0.1", api, "GET", sites, Some(&auth)).await;
        assert_eq!(status, 200, "{auth}: {raw}");
    }
    for auth in [
        format!("Basic {READER}"),
        format!("Bearer{READER}"),
        "Bearer".into(),
    ] {
        let (status, raw) = request_from("127.0.0.1", api, "GET", sites, Some(&auth)).await;
        assert_eq!(status, 401, "{auth}: {raw}");
    }

    let text = scrape(metrics).await;
    assert_eq!(
        value(
            &text,
            r#"mamori_api_refused_total{reason="header_timeout"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"mamori_api_refused_total{reason="body_timeout"}"#),
        Some(1.0)
    );
    collector.shutdown().await.unwrap();
}
