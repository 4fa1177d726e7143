//! Syslog template scenarios (events from `mamori_tests::scenario_syslog`): a burst of failed
//! logins and a never-seen firmware upload raise alerts; benign hours raise none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use mamori_models::Event;
use mamori_models::detect::{
    Alert, Baseline, DetectConfig, Detector, DetectorName, Learner, Severity,
};
use mamori_tests::scenario_syslog;

const LEARN_START_S: i64 = 1_699_999_200;
const LEARN_SECS: i64 = 6 * 3600;
const DETECT_START_S: i64 = LEARN_START_S + LEARN_SECS;

fn learn() -> Baseline {
    let mut l = Learner::new(DetectConfig::default());
    for e in &scenario_syslog::benign(LEARN_START_S, LEARN_SECS) {
        l.observe(e);
    }
    l.finish()
}

fn detect(baseline: Baseline, events: &[Event]) -> Vec<Alert> {
    let mut d = Detector::new(baseline, DetectConfig::default()).unwrap();
    for e in events {
        d.observe(e);
    }
    d.finish().0
}

#[test]
fn failed_login_burst_and_firmware_upload_are_detected() {
    let baseline = learn();
    assert!(!baseline.syslog.rates.is_empty());
    let (events, spans) = scenario_syslog::with_attacks(DETECT_START_S, 3 * 3600);
    let alerts = detect(baseline, &events);
    for a in &alerts {
        println!(
            "{} {:?} {} [{}] {}",
            a.ts,
            a.detector,
            a.kind,
            a.severity.as_str(),
            a.summary
        );
    }
    let in_span = |a: &Alert, i: usize| spans[i].start <= a.ts && a.ts <= spans[i].end;
    let burst: Vec<&Alert> = alerts.iter().filter(|a| in_span(a, 0)).collect();
    assert!(
        burst
            .iter()
            .any(|a| a.kind == "syslog_rate_burst" && a.severity >= Severity::Medium),
        "{burst:#?}"
    );
    let upload: Vec<&Alert> = alerts.iter().filter(|a| in_span(a, 1)).collect();
    assert!(
        upload.iter().any(|a| a.kind == "new_syslog_template"),
        "{upload:#?}"
    );
    let false_alerts: Vec<&Alert> = alerts
        .iter()
        .filter(|a| !(0..spans.len()).any(|i| in_span(a, i)))
        .collect();
    assert!(false_alerts.is_empty(), "{false_alerts:#?}");
    assert!(alerts.iter().all(|a| a.detector == DetectorName::Syslog));
}

#[test]
fn benign_syslog_hours_raise_nothing() {
    let alerts = detect(learn(), &scenario_syslog::benign(DETECT_START_S, 4 * 3600));
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn syslog_baseline_round_trips_and_detection_is_deterministic() {
    let b = learn();
    let json = b.to_json().unwrap();
    assert_eq!(learn().to_json().unwrap(), json);
    let loaded = Baseline::from_json(&json).unwrap();
    assert_eq!(loaded.to_json().unwrap(), json);
    let (events, _) = scenario_syslog::with_attacks(DETECT_START_S, 2 * 3600);
    let a1: Vec<String> = detect(b, &events)
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    let a2: Vec<String> = detect(loaded, &events)
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    assert_eq!(a1, a2);
    assert!(!a1.is_empty());
}
