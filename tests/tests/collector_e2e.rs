//! The collector end to end: an agent shipper replays shared captures (Lemay & Fernandez,
//! CSET 2016) over mutual TLS (certificates from `deploy/make-certs.sh`) into a real
//! collector; the site learns from one capture and detects the reconnaissance in another;
//! the test reads the incident through the API, validates its STIX export with the OASIS
//! validator, and finds the alert in a real Prometheus Alertmanager.
//!
//! Needs the corpus, openssl, `prometheus-alertmanager` and `stix2-validator`: each is
//! skipped with its reason when absent, mandatory under the `MAMORI_REQUIRE_*` variables
//! that `.ci/run` sets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mamori_agent::pipeline::PipelineConfig;
use mamori_agent::replay::replay_to_vec;
use mamori_agent::ship::{Shipper, ShipperConfig};
use mamori_collector::config::CollectorConfig;
use mamori_collector::intake::Collector;
use mamori_tests::services;
use serde_json::Value;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/corpus/modbus/lemay-cset16"
);
const TOKEN: &str = "e2e-responder-token-0123456789";
const AGENT: &str = "agent-1.plant.example";
const SITE: &str = "substation-7";
/// The host that sweeps a PLC in the characterization capture.
const ATTACKER: &str = "192.168.1.101";

fn needed(what: &str, var: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var(var).as_deref() == Ok("1") {
        panic!("{var}=1 but {what} is missing");
    }
    println!("skipping: {what} is missing");
    false
}

fn capture(name: &str) -> PathBuf {
    Path::new(CORPUS).join(name).join(format!("{name}.pcap"))
}

fn validator() -> Option<Vec<String>> {
    let path = std::env::var_os("PATH")?;
    for name in ["stix2_validate", "stix2_validator"] {
        if std::env::split_paths(&path).any(|d| d.join(name).is_file()) {
            return Some(vec![name.to_owned()]);
        }
    }
    None
}

/// One HTTP/1.0 request: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    Some((status, raw.split_once("\r\n\r\n")?.1.to_owned()))
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let (path, token) = (path.to_owned(), token.map(str::to_owned));
    tokio::task::spawn_blocking(move || http(addr, "GET", &path, token.as_deref()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_captures_become_an_incident_in_the_api_stix_and_alertmanager() {
    let openssl = Command::new("openssl").arg("version").output().is_ok();
    let stix = validator();
    if !(needed(
        "the Lemay corpus",
        "MAMORI_REQUIRE_CORPUS",
        Path::new(CORPUS).is_dir(),
    ) && needed("openssl", "MAMORI_REQUIRE_OPENSSL", openssl)
        && services::installed(services::ALERTMANAGER, "MAMORI_REQUIRE_ALERTMANAGER")
        && needed("stix2-validator", "MAMORI_REQUIRE_STIX", stix.is_some()))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/make-certs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&pki)
        .args(["collector.plant.example", AGENT])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Alertmanager on loopback.
    let am_dir = dir.path().join("am");
    std::fs::create_dir_all(&am_dir).unwrap();
    let alertmanager = tokio::task::spawn_blocking(move || services::alertmanager(&am_dir))
        .await
        .unwrap()
        .unwrap();
    let am = alertmanager.addr;

    // The collector: learning 20 minutes of event time (the first capture), then detecting.
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let config = CollectorConfig::parse(&format!(
        r#"
[intake]
listen = "127.0.0.1:0"
cert_file = "{p}/collector.plant.example.crt"
key_file = "{p}/collector.plant.example.key"
client_ca_file = "{p}/ca.crt"

[[agents]]
id = "{AGENT}"
site = "{SITE}"

[storage]
sqlite_path = "{d}/collector.db"
event_retention_days = 0

[detection]
learning_period_seconds = 1200

[api]
listen = "127.0.0.1:0"
organisation = "Example Power Distribution"
sectors = ["energy"]

[[api.tokens]]
name = "soc"
token_file = "{d}/token"
scopes = ["read", "write"]

[notify.alertmanager]
urls = ["http://{am}"]
resend_interval_seconds = 1
"#,
        p = pki.display(),
        d = dir.path().display()
    ))
    .unwrap();
    config.validate(Path::new("collector.toml")).unwrap();
    let collector = Collector::start(&config).await.unwrap();
    let api = collector.api_addr().unwrap();

    // The agent: the moving-files capture (16:49) to learn, the characterization capture
    // (17:27, a sweep of a PLC by 192.168.1.101) to detect.
    let mut ship = ShipperConfig::new(
        AGENT,
        collector.local_addr().to_string(),
        "collector.plant.example",
        pki.join("ca.crt"),
        pki.join(format!("{AGENT}.crt")),
        pki.join(format!("{AGENT}.key")),
        dir.path().join("spool"),
    );
    ship.flush_interval_seconds = 0.05;
    let shipper = Shipper::start(&ship).unwrap();
    for name in [
        "moving_two_files_modbus_6RTU",
        "characterization_modbus_6RTU_with_operate",
    ] {
        let (events, report) = replay_to_vec(&[capture(name)], PipelineConfig::default());
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        for e in &events {
            shipper.push(e).await.unwrap();
        }
    }

    // The incident, through the API.
    let end = Instant::now() + Duration::from_secs(60);
    let incident = loop {
        if let Some((200, body)) = get(api, "/api/v1/incidents", Some(TOKEN)).await {
            let v: Value = serde_json::from_str(&body).unwrap();
            let found = v["incidents"].as_array().unwrap().iter().find(|i| {
                i["actors"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == ATTACKER))
            });
            if let Some(i) = found {
                break i.clone();
            }
        }
        assert!(Instant::now() < end, "no incident about {ATTACKER}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = incident["id"].as_i64().unwrap();
    println!(
        "incident {id}: {} [{}]",
        incident["title"], incident["severity"]
    );
    let (status, detail) = get(api, &format!("/api/v1/incidents/{id}"), Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let detail: Value = serde_json::from_str(&detail).unwrap();
    let kinds: Vec<&str> = detail["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert"]["kind"].as_str().unwrap())
        .collect();
    println!("alerts: {kinds:?}");
    assert!(!kinds.is_empty());

    // Its STIX 2.1 export passes the OASIS validator.
    let (status, bundle) = get(api, &format!("/api/v1/incidents/{id}/stix"), Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let file = dir.path().join("incident.json");
    std::fs::write(&file, &bundle).unwrap();
    let cmd = stix.unwrap();
    let (program, args) = cmd.split_first().unwrap();
    let out = Command::new(program)
        .args(args)
        .args(["--enforce-refs", "--no-cache"])
        .arg(&file)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("[X]"), "{text}");

    // Alertmanager shows it, with our labels and the link to the incident.
    let end = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        if let Some((200, body)) = get(am, "/api/v2/alerts", None).await {
            let all: Vec<Value> = serde_json::from_str(&body).unwrap();
            if let Some(a) = all
                .into_iter()
                .find(|a| a["labels"]["incident"] == id.to_string().as_str())
            {
                break a;
            }
        }
        assert!(
            Instant::now() < end,
            "the incident never reached Alertmanager"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(alert["labels"]["alertname"], "MamoriIncident");
    assert_eq!(alert["labels"]["site"], SITE);
    assert_eq!(alert["labels"]["exercise"], "false");
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/v1/incidents/{id}")),
        "{alert:#}"
    );
    assert!(
        collector
            .notify_stats()
            .unwrap()
            .sinks
            .iter()
            .any(|s| s.sent_total > 0)
    );

    shipper.shutdown(Duration::from_secs(30)).await.unwrap();
    collector.shutdown().await.unwrap();
}
