//! The baseline file: versioned, checked on load, and configuration validation; what the
//! allowlist learns from long-lived connections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use mamori_models::Event;
use mamori_models::detect::{
    BASELINE_VERSION, Baseline, DetectConfig, DetectError, Detector, Learner,
};

#[test]
fn empty_baseline_round_trips_and_future_versions_are_refused() {
    let b = Learner::new(DetectConfig::default())
        .with_site("plant-a")
        .finish();
    let json = b.to_json().unwrap();
    assert_eq!(Baseline::from_json(&json).unwrap(), b);
    let future = json.replace(
        &format!("\"version\":{BASELINE_VERSION}"),
        &format!("\"version\":{}", BASELINE_VERSION + 1),
    );
    assert!(matches!(
        Baseline::from_json(&future),
        Err(DetectError::Version { .. })
    ));
    let other = json.replace("mamori-baseline", "something-else");
    assert!(matches!(
        Baseline::from_json(&other),
        Err(DetectError::Format(_))
    ));
    assert!(matches!(
        Baseline::from_json("{"),
        Err(DetectError::Parse(_))
    ));
}

#[test]
fn invalid_configuration_is_reported_all_at_once() {
    let mut c = DetectConfig::default();
    c.cycle.early_ratio = 2.0;
    c.values.step_factor = f64::NAN;
    let b = Learner::new(DetectConfig::default()).finish();
    let Err(DetectError::Config(msg)) = Detector::new(b, c) else {
        panic!("accepted an invalid configuration");
    };
    assert!(
        msg.contains("early_ratio") && msg.contains("step_factor"),
        "{msg}"
    );
}

fn flow(src: &str, dst: &str, port: u16, from_s: u32, to_s: u32) -> Event {
    let t = |s: u32| format!("2024-01-01T00:{:02}:{:02}.000000Z", s / 60, s % 60);
    serde_json::from_value(serde_json::json!({
        "type": "flow", "ts": t(from_s), "end_ts": t(to_s), "transport": "tcp",
        "src_ip": src, "src_port": 40000, "dst_ip": dst, "dst_port": port,
        "orig_pkts": 10, "orig_bytes": 100, "resp_pkts": 10, "resp_bytes": 100, "state": "SF",
        "reason": "fin"
    }))
    .unwrap()
}

fn poll(src: &str, dst: &str, s: u32) -> Event {
    let ts = format!("2024-01-01T00:{:02}:{:02}.000000Z", s / 60, s % 60);
    serde_json::from_value(serde_json::json!({
        "type": "modbus", "ts": ts, "src_ip": src, "src_port": 40000,
        "dst_ip": dst, "dst_port": 502, "tid": 1, "unit": 1,
        "func": 3, "func_name": "READ_HOLDING_REGISTERS",
        "request": { "ts": ts, "len": 6, "address": 0, "quantity": 2 },
        "response": { "ts": ts, "len": 7, "byte_count": 4, "values": [1, 2] },
        "exception": null, "exception_code": null, "latency_us": 500, "anomalies": []
    }))
    .unwrap()
}

/// Long-lived traffic: an HMI connection open through the whole learning (its flow record
/// comes when it closes, after learning) and a syslog-like stream that began before learning
/// ended are normal; Modbus transactions teach the TCP path. A flow that begins after
/// learning on an unknown path still alerts.
#[test]
fn connections_open_through_learning_are_normal() {
    let mut l = Learner::new(DetectConfig::default());
    for s in 0..60 {
        l.observe(&poll("10.0.0.10", "10.0.0.21", s));
    }
    let mut d = Detector::new(l.finish(), DetectConfig::default()).unwrap();
    // The HMI's connection, open since before learning, closes and reconnects.
    d.observe(&flow("10.0.0.10", "10.0.0.21", 502, 0, 70));
    d.observe(&flow("10.0.0.10", "10.0.0.21", 502, 71, 80));
    // A stream that began during learning and ends after it.
    d.observe(&flow("10.0.0.41", "10.0.0.5", 514, 30, 90));
    // New after learning: alerts.
    d.observe(&flow("10.0.0.66", "10.0.0.21", 502, 95, 96));
    let (alerts, _) = d.finish();
    // The polls stop in this test, so the cycle detector rightly misses them; only what the
    // allowlist says is checked here.
    let about: Vec<String> = alerts
        .iter()
        .filter(|a| a.detector == mamori_models::detect::DetectorName::Allowlist)
        .map(|a| {
            format!(
                "{} {}",
                a.kind,
                a.src_ip.map(|i| i.to_string()).unwrap_or_default()
            )
        })
        .collect();
    assert!(
        about
            .iter()
            .all(|a| !a.contains("10.0.0.10") && !a.contains("10.0.0.41")),
        "{about:?}"
    );
    assert!(about.iter().any(|a| a.contains("10.0.0.66")), "{about:?}");
}
