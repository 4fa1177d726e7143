//! `mamori-collector analyze` from the command line: learn, write the baseline, detect from
//! it, and get the same alerts both ways.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mamori-collector");

fn modbus(ts: &str, src: &str, func: u8, address: u16, value: u16) -> String {
    format!(
        r#"{{"type":"modbus","ts":"{ts}","src_ip":"{src}","src_port":40000,"dst_ip":"10.0.0.2","dst_port":502,"tid":1,"unit":1,"func":{func},"func_name":"X","request":{{"ts":"{ts}","len":6,"address":{address},"values":[{value}]}},"response":{{"ts":"{ts}","len":6,"address":{address},"values":[{value}]}},"exception":null,"exception_code":null,"latency_us":500,"anomalies":[]}}"#
    )
}

#[test]
fn learns_saves_loads_and_detects_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let learn = tmp.path().join("learn.jsonl");
    let detect = tmp.path().join("detect.jsonl");
    let baseline = tmp.path().join("baseline.json");
    let mut l = String::new();
    for m in 0..30 {
        l += &modbus(
            &format!("2024-01-01T00:{m:02}:00.000000Z"),
            "10.0.0.1",
            6,
            10,
            50 + m % 5,
        );
        l.push('\n');
    }
    std::fs::write(&learn, l).unwrap();
    let d = [
        modbus("2024-01-01T01:00:00.000000Z", "10.0.0.1", 6, 10, 52),
        modbus("2024-01-01T01:01:00.000000Z", "10.0.0.1", 6, 10, 900),
        modbus("2024-01-01T01:02:00.000000Z", "10.0.0.66", 6, 10, 51),
        "not an event".to_owned(),
    ]
    .join("\n");
    std::fs::write(&detect, d).unwrap();

    let out1 = Command::new(BIN)
        .args(["analyze", "--learn"])
        .arg(&learn)
        .arg("--detect")
        .arg(&detect)
        .arg("--baseline-out")
        .arg(&baseline)
        .output()
        .unwrap();
    assert!(
        out1.status.success(),
        "{}",
        String::from_utf8_lossy(&out1.stderr)
    );
    let alerts = String::from_utf8(out1.stdout.clone()).unwrap();
    let kinds: Vec<String> = alerts
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["type"], "alert");
            v["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        kinds.contains(&"setpoint_out_of_range".to_owned()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"new_host".to_owned()), "{kinds:?}");
    assert!(String::from_utf8_lossy(&out1.stderr).contains("1 lines skipped"));

    let out2 = Command::new(BIN)
        .args(["analyze", "--baseline"])
        .arg(&baseline)
        .arg("--detect")
        .arg(&detect)
        .output()
        .unwrap();
    assert!(out2.status.success());
    assert_eq!(out1.stdout, out2.stdout);

    let bad = Command::new(BIN)
        .args(["analyze", "--detect"])
        .arg(&detect)
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
