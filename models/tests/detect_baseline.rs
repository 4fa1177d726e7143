//! The baseline file: versioned, checked on load, and configuration validation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

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
