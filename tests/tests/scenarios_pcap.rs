//! End to end through a capture: synthesised pcaps (an HMI polling a PLC every second) go
//! through the agent's replay, the events through learning and detection. A rogue host's
//! write in the detection capture must raise alerts; the polling alone must not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::PathBuf;

use mamori_agent::pipeline::PipelineConfig;
use mamori_agent::replay::replay_to_vec;
use mamori_models::Event;
use mamori_models::detect::{Alert, DetectConfig, Detector, Learner};
use mamori_tests::pcapgen::{Link, Side, TcpConversation};

const T0_US: i64 = 1_700_000_000_000_000;

/// MBAP header (transaction id, protocol 0, length, unit 1) + PDU.
fn adu(tid: u16, pdu: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&tid.to_be_bytes());
    v.extend_from_slice(&0u16.to_be_bytes());
    v.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
    v.push(1);
    v.extend_from_slice(pdu);
    v
}

/// `polls` reads of holding registers 0–3 (function 3), one a second.
fn polling(start_us: i64, polls: u16) -> Vec<u8> {
    let hmi: SocketAddr = "192.0.2.10:50100".parse().unwrap();
    let plc: SocketAddr = "192.0.2.21:502".parse().unwrap();
    let mut c = TcpConversation::new(Link::Ethernet, hmi, plc, start_us, 200);
    c.handshake();
    for i in 0..polls {
        c.data(Side::Client, &adu(i, &[3, 0, 0, 0, 4]));
        let level = 100 + (i % 10);
        let mut resp = vec![3, 8];
        for r in 0..4u16 {
            resp.extend_from_slice(&(level + r).to_be_bytes());
        }
        c.data(Side::Server, &adu(i, &resp));
        c.pause(1_000_000);
    }
    c.fin(Side::Client);
    c.fin(Side::Server);
    c.ack(Side::Client);
    c.to_pcap()
}

/// A host never seen before writes 999 into register 0.
fn rogue_write(start_us: i64) -> Vec<u8> {
    let rogue: SocketAddr = "192.0.2.99:40000".parse().unwrap();
    let plc: SocketAddr = "192.0.2.21:502".parse().unwrap();
    let mut c = TcpConversation::new(Link::Ethernet, rogue, plc, start_us, 200);
    c.handshake();
    c.data(Side::Client, &adu(1, &[6, 0, 0, 0x03, 0xE7]));
    c.data(Side::Server, &adu(1, &[6, 0, 0, 0x03, 0xE7]));
    c.fin(Side::Client);
    c.fin(Side::Server);
    c.ack(Side::Client);
    c.to_pcap()
}

fn replay(files: &[(&str, Vec<u8>)], dir: &std::path::Path) -> Vec<Event> {
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|(name, bytes)| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect();
    let (mut events, report) = replay_to_vec(&paths, PipelineConfig::default());
    assert!(report.errors.is_empty());
    events.sort_by_key(|e| e.ts());
    events
}

fn analyse(learn: &[Event], detect: &[Event]) -> Vec<Alert> {
    let mut l = Learner::new(DetectConfig::default());
    learn.iter().for_each(|e| l.observe(e));
    let mut d = Detector::new(l.finish(), DetectConfig::default()).unwrap();
    detect.iter().for_each(|e| d.observe(e));
    d.finish().0
}

#[test]
fn rogue_write_through_a_capture_is_detected_and_polling_is_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let learn = replay(&[("learn.pcap", polling(T0_US, 120))], tmp.path());
    assert!(
        learn
            .iter()
            .filter(|e| matches!(e, Event::Modbus(_)))
            .count()
            >= 120
    );

    let start = T0_US + 200_000_000;
    let quiet = replay(&[("quiet.pcap", polling(start, 60))], tmp.path());
    let alerts = analyse(&learn, &quiet);
    assert!(alerts.is_empty(), "{alerts:#?}");

    let attack_us = start + 70_000_000;
    let attacked = replay(
        &[
            ("poll.pcap", polling(start, 60)),
            ("rogue.pcap", rogue_write(attack_us)),
        ],
        tmp.path(),
    );
    let alerts = analyse(&learn, &attacked);
    let kinds: Vec<&str> = alerts.iter().map(|a| a.kind.as_str()).collect();
    assert!(kinds.contains(&"new_host"), "{kinds:?}");
    let first = alerts
        .iter()
        .filter(|a| a.kind != "missing_polls")
        .map(|a| a.ts.as_micros())
        .min()
        .unwrap();
    assert!(
        first >= attack_us && first < attack_us + 1_000_000,
        "{alerts:#?}"
    );
    // After the polling capture ends the channel is silent: missing polls are expected
    // then, and only then.
    assert!(
        alerts
            .iter()
            .all(|a| a.ts.as_micros() >= attack_us || a.kind == "missing_polls"),
        "{alerts:#?}"
    );
}

/// Reconnaissance through a capture: a host never seen probes the PLC for its function codes
/// (0 to 255, ILLEGAL FUNCTION for what it lacks), then for the unit ids behind it (0 to 255,
/// the gateway's exception for the absent ones). Each scan raises its alert, with its
/// ATT&CK for ICS technique. Before: the function-code scan opened with code 0, the agent
/// judged the connection "not Modbus" and nothing of it reached the detectors.
#[test]
fn function_code_and_unit_id_scans_through_a_capture_raise_reconnaissance_alerts() {
    use mamori_tests::modbus_recon::{OtherUnits, function_code_scan, unit_id_scan};
    let tmp = tempfile::tempdir().unwrap();
    let learn = replay(&[("learn.pcap", polling(T0_US, 120))], tmp.path());
    let start = T0_US + 200_000_000;
    let scanner: SocketAddr = "192.0.2.66:40001".parse().unwrap();
    let plc: SocketAddr = "192.0.2.21:502".parse().unwrap();
    let fc_at = start + 10_000_000;
    let unit_at = start + 30_000_000;
    let attacked = replay(
        &[
            ("poll.pcap", polling(start, 60)),
            (
                "fc_scan.pcap",
                function_code_scan(scanner, plc, fc_at, 0..=255, 20_000),
            ),
            (
                "unit_scan.pcap",
                unit_id_scan(
                    SocketAddr::new(scanner.ip(), 40002),
                    plc,
                    unit_at,
                    0..=255,
                    OtherUnits::GatewayException,
                    20_000,
                ),
            ),
        ],
        tmp.path(),
    );
    let scanned = attacked
        .iter()
        .filter(|e| matches!(e, Event::Modbus(m) if m.src_ip == scanner.ip()))
        .count();
    assert_eq!(scanned, 512, "every probe of both scans is decoded");
    let alerts = analyse(&learn, &attacked);
    let one = |kind: &str| {
        let found: Vec<&Alert> = alerts.iter().filter(|a| a.kind == kind).collect();
        assert_eq!(found.len(), 1, "{kind}: {alerts:#?}");
        found[0]
    };
    let fc = one("function_scan");
    assert_eq!(fc.src_ip, Some(scanner.ip()));
    assert!(fc.ts.as_micros() >= fc_at && fc.ts.as_micros() < fc_at + 1_000_000);
    assert_eq!(fc.attack, ["T0888"], "Remote System Information Discovery");
    assert!(
        !fc.evidence.contains_key("technique"),
        "in `attack`, not evidence"
    );
    let unit = one("unit_scan");
    assert_eq!(unit.src_ip, Some(scanner.ip()));
    assert!(unit.ts.as_micros() >= unit_at && unit.ts.as_micros() < unit_at + 1_000_000);
    assert_eq!(unit.attack, ["T0846"], "Remote System Discovery");
    // The learned unit (1) is no part of the unit scan.
    assert_eq!(unit.evidence["units"], serde_json::json!([0, 2, 3, 4, 5]));
}
