//! Detector scenarios on a simulated plant (events generated in simulated time by
//! `mamori_tests::scenario`): every attack must raise an alert within its span and the
//! benign hours none. Also determinism and the baseline file's round trip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use mamori_models::detect::{Alert, Baseline, DetectConfig, Detector, Learner, Scope};
use mamori_models::{Event, Timestamp};
use mamori_tests::scenario::{self, AttackSpan, PLCS};

/// An hour boundary (the plant reconnects hourly).
const LEARN_START_S: i64 = 1_699_999_200;
const LEARN_HOURS: i64 = 3;
const DETECT_START_S: i64 = LEARN_START_S + LEARN_HOURS * 3600;

fn learn(events: &[Event]) -> Baseline {
    let mut l = Learner::new(DetectConfig::default()).with_site("scenario");
    for e in events {
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

/// An alert falls within an attack's span when it was raised there, or, for a traffic-window
/// alert, when its window overlaps the span.
fn within(a: &Alert, s: &AttackSpan) -> bool {
    if let (Some(from), Some(to)) = (
        window_bound(a, "window_start"),
        window_bound(a, "window_end"),
    ) {
        return from <= s.end && s.start < to;
    }
    s.start <= a.ts && a.ts <= s.end
}

fn window_bound(a: &Alert, key: &str) -> Option<Timestamp> {
    serde_json::from_value(a.evidence.get(key)?.clone()).ok()
}

fn secs(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_micros() - from.as_micros()) as f64 / 1e6
}

#[test]
fn every_attack_is_detected_and_benign_hours_are_quiet() {
    let learning = scenario::learning(LEARN_START_S, LEARN_HOURS);
    let baseline = learn(&learning);
    let (events, spans) = scenario::detection_with_attacks(DETECT_START_S);
    let alerts = detect(baseline, &events);

    println!("| attack | detected | first alert after | first alert | kinds in span |");
    println!("|---|---|---|---|---|");
    let mut missed = Vec::new();
    for s in &spans {
        let first = alerts.iter().find(|a| within(a, s));
        match first {
            Some(a) => {
                let kinds: std::collections::BTreeSet<&str> = alerts
                    .iter()
                    .filter(|a| within(a, s))
                    .map(|a| a.kind.as_str())
                    .collect();
                println!(
                    "| {} | yes | {:.1} s | {} ({}) | {} |",
                    s.name,
                    secs(s.start, a.ts),
                    a.kind,
                    a.severity.as_str(),
                    kinds.into_iter().collect::<Vec<_>>().join(", ")
                )
            }
            None => {
                println!("| {} | NO | | |", s.name);
                missed.push(s.name);
            }
        }
    }
    let false_alerts: Vec<&Alert> = alerts
        .iter()
        .filter(|a| !spans.iter().any(|s| within(a, s)))
        .collect();
    println!("benign false alerts: {}", false_alerts.len());
    for a in &false_alerts {
        println!("  {} {} {}", a.ts, a.kind, a.summary);
    }
    assert!(missed.is_empty(), "attacks not detected: {missed:?}");
    assert!(false_alerts.is_empty(), "false alerts in benign hours");
}

#[test]
fn benign_traffic_alone_raises_nothing() {
    let baseline = learn(&scenario::learning(LEARN_START_S, LEARN_HOURS));
    let benign = scenario::learning(DETECT_START_S, 2);
    let alerts = detect(baseline, &benign);
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn same_input_gives_byte_identical_baselines_and_alerts() {
    let run = || {
        let b = learn(&scenario::learning(LEARN_START_S, 1));
        let json = b.to_json().unwrap();
        let (events, _) = scenario::detection_with_attacks(DETECT_START_S);
        let alerts: Vec<String> = detect(b, &events)
            .iter()
            .map(|a| serde_json::to_string(a).unwrap())
            .collect();
        (json, alerts)
    };
    let (b1, a1) = run();
    let (b2, a2) = run();
    assert_eq!(b1, b2);
    assert_eq!(a1, a2);
    assert!(!a1.is_empty());

    // The file loads back identically, and detection from it gives the same alerts.
    let loaded = Baseline::from_json(&b1).unwrap();
    assert_eq!(loaded.to_json().unwrap(), b1);
    let (events, _) = scenario::detection_with_attacks(DETECT_START_S);
    let again: Vec<String> = detect(loaded, &events)
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    assert_eq!(again, a1);
}

/// Online detection (draining after every event, as the collector does) ends with the same
/// alerts as detecting the whole stream and finishing: each drained alert keeps its identity
/// while it grows, and its last version equals the offline one.
#[test]
fn draining_online_gives_the_offline_alerts() {
    let baseline = learn(&scenario::learning(LEARN_START_S, LEARN_HOURS));
    let (events, spans) = scenario::detection_with_attacks(DETECT_START_S);
    let offline = detect(baseline.clone(), &events);
    assert!(!offline.is_empty());

    let mut d = Detector::new(baseline, DetectConfig::default()).unwrap();
    // identity -> (position of first appearance, latest version)
    let mut online: std::collections::BTreeMap<(String, String, Timestamp), (usize, Alert)> =
        Default::default();
    let mut updates = 0usize;
    let mut first_seen_in_span = Vec::new();
    for e in &events {
        d.observe(e);
        for a in d.drain() {
            updates += 1;
            let key = (a.kind.clone(), a.subject.clone(), a.ts);
            if !online.contains_key(&key) && spans.iter().any(|s| within(&a, s)) {
                // Drained no later than the event that raised it: alert latency is one event.
                first_seen_in_span.push(e.ts().as_micros() - a.ts.as_micros());
            }
            let n = online.len();
            online
                .entry(key)
                .and_modify(|(_, v)| *v = a.clone())
                .or_insert((n, a));
        }
    }
    // What finish() still holds is the tail: open alerts already drained, none new.
    let (tail, _) = d.finish();
    for a in tail {
        let key = (a.kind.clone(), a.subject.clone(), a.ts);
        assert_eq!(
            online.get(&key).map(|(_, v)| v),
            Some(&a),
            "finish gave an undrained alert"
        );
    }
    let mut drained: Vec<(usize, Alert)> = online.into_values().collect();
    drained.sort_by_key(|(i, a)| (a.ts, *i));
    let drained: Vec<Alert> = drained.into_iter().map(|(_, a)| a).collect();
    assert_eq!(drained, offline);
    assert!(updates >= offline.len());
    assert!(!first_seen_in_span.is_empty());
    println!(
        "{} alerts, {} updates drained; max event-time delay from raise to drain: {} us",
        offline.len(),
        updates,
        first_seen_in_span.iter().max().copied().unwrap_or(0)
    );
}

#[test]
fn relearning_one_asset_keeps_the_rest() {
    let learning = scenario::learning(LEARN_START_S, 1);
    let full = learn(&learning);
    let mut partial = full.clone();
    partial.forget(&Scope::Asset(PLCS[2]));
    assert!(!partial.allowlist.hosts.contains_key(&PLCS[2]));
    assert!(partial.allowlist.hosts.contains_key(&PLCS[0]));
    // Relearning PLC 3 from the same traffic restores what was forgotten.
    partial.relearn(&Scope::Asset(PLCS[2]), &learning, &DetectConfig::default());
    assert_eq!(partial.allowlist.functions, full.allowlist.functions);
    assert_eq!(partial.cycles.channels, full.cycles.channels);
    assert_eq!(partial.values.registers, full.values.registers);
}

/// The traffic-window model alone, mixture against one-class SVM: which attacks each flags
/// (window overlapping the span) and how many windows it flags in the benign hours.
#[test]
fn traffic_window_models_compared() {
    use mamori_models::detect::{DetectorName, WindowModelKind};
    println!("| model | attacks flagged | benign false alerts (attack run + 2 benign hours) |");
    println!("|---|---|---|");
    let mut flagged_by = Vec::new();
    for kind in [WindowModelKind::Gmm, WindowModelKind::OneClassSvm] {
        let mut config = DetectConfig::default();
        config.windows.model = kind;
        let run = |events: &[Event], baseline: Baseline| {
            let mut d = Detector::new(baseline, config.clone()).unwrap();
            for e in events {
                d.observe(e);
            }
            let (alerts, summary) = d.finish();
            assert!(summary.windows_scored > 0, "{summary:?}");
            alerts
                .into_iter()
                .filter(|a| a.detector == DetectorName::TrafficWindow)
                .collect::<Vec<_>>()
        };
        let mut l = Learner::new(config.clone());
        for e in &scenario::learning(LEARN_START_S, LEARN_HOURS) {
            l.observe(e);
        }
        let baseline = l.finish();
        assert!(!baseline.windows.models.is_empty());
        let (events, spans) = scenario::detection_with_attacks(DETECT_START_S);
        let alerts = run(&events, baseline.clone());
        let hit: Vec<&str> = spans
            .iter()
            .filter(|s| alerts.iter().any(|a| within(a, s)))
            .map(|s| s.name)
            .collect();
        let false_alerts = alerts
            .iter()
            .filter(|a| !spans.iter().any(|s| within(a, s)))
            .count()
            + run(&scenario::learning(DETECT_START_S, 2), baseline).len();
        println!(
            "| {kind:?} | {} of {}: {} | {false_alerts} |",
            hit.len(),
            spans.len(),
            hit.join(", ")
        );
        flagged_by.push((kind, hit.len(), false_alerts));
    }
    // The default (mixture) must flag the flood, the sweep and the scan, with no false alert.
    let (_, hits, false_alerts) = flagged_by[0];
    assert!(hits >= 3 && false_alerts == 0, "{flagged_by:?}");
}
