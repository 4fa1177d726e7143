//! The `mamori-agent` command line as a user meets it: output, exit codes and error messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mamori-agent"))
        .args(args)
        .output()
        .unwrap()
}

fn golden() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden/modbus_plant.pcap")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn replay_writes_one_json_event_per_line() {
    let out = agent(&["replay", "--stats", &golden()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.iter().filter(|e| e["type"] == "modbus").count(), 48);
    assert_eq!(events.iter().filter(|e| e["type"] == "flow").count(), 1);
    let stats: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(stats["events_modbus"], 48);
}

#[test]
fn help_documents_every_option() {
    let out = agent(&["replay", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--modbus-port",
        "--syslog-udp-port",
        "--syslog-tcp-port",
        "--output",
        "--max-flows",
        "--max-stream-buffer-bytes",
        "--max-reassembly-bytes",
        "--tcp-idle-timeout-seconds",
        "--udp-idle-timeout-seconds",
        "--modbus-response-timeout-seconds",
        "--stats",
        "--realtime",
        "--speed",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
}

#[test]
fn bad_arguments_and_missing_files_fail_clearly() {
    let out = agent(&["replay"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FILE"));

    let out = agent(&["replay", "--modbus-port", "0", &golden()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--modbus-port"));

    let out = agent(&["replay", "/nonexistent/capture.pcap"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/capture.pcap"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn truncated_capture_emits_what_it_read_then_fails_naming_the_record() {
    let bytes = std::fs::read(golden()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 30]).unwrap();
    let out = agent(&["replay", &cut.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.pcap") && err.contains("record") && err.contains("truncated"),
        "{err}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout
            .lines()
            .filter(|l| l.contains("\"type\":\"modbus\""))
            .count()
            >= 47
    );
}

#[test]
fn realtime_replay_keeps_the_recorded_pace() {
    // The golden capture spans 31 ms (one frame every 250 µs): at a speed of 0.5 it takes at
    // least 62 ms.
    let start = std::time::Instant::now();
    let out = agent(&["replay", "--realtime", "--speed", "0.5", &golden()]);
    assert!(out.status.success());
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(60),
        "{:?}",
        start.elapsed()
    );
    let out = agent(&["replay", "--speed", "2", &golden()]);
    assert!(!out.status.success(), "--speed needs --realtime");
}
